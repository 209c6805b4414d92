"""Remembering recent message ids, so an at-least-once stream is delivered once."""
from __future__ import annotations


class RecentIds:
    """The last ``capacity`` ids seen, oldest forgotten first.

    A dict keeps insertion order, which makes it a FIFO set with O(1) add,
    lookup and eviction.
    """

    __slots__ = ("capacity", "_ids")

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ids: dict[object, None] = {}

    def seen(self, key: object) -> bool:
        """True if ``key`` was seen within the window; otherwise remember it."""
        ids = self._ids
        if key in ids:
            return True
        ids[key] = None
        if len(ids) > self.capacity:
            del ids[next(iter(ids))]
        return False

    def __len__(self) -> int:
        return len(self._ids)
