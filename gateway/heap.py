"""Giving freed memory back to the system after a burst.

What a burst leaves behind is freed by Python but kept by the C allocator:
a publication's data above 512 bytes (and every buffer of a connection) is
allocated by glibc's ``malloc``, not by Python's own small-object allocator,
and glibc returns freed memory to the system only from the top of its heap.
After history held ``--history-memory-bytes`` of large publications for
their TTL, the heap below its top is free but still resident: measured on a
worker of the soak (bench/soak.py), 8.4 MiB of history emptied by its TTL
left the worker 8.5 MiB larger for good, until ``malloc_trim(0)`` gave it
back (65.8 -> 57.7 MiB). Not a leak, the memory is reused, but a box whose
workers each keep their largest burst resident holds that much per worker
for nothing.

So every ``CHECK_EVERY`` seconds the node looks at its resident size
(``/proc/self/statm``) and, when that grew by ``TRIM_AFTER`` or more since
the last trim (or the first look) while glibc holds at least that much free
(``mallinfo2``, which walks its free lists: well under a millisecond),
trims (``malloc_trim(0)``: returns the free pages inside the heap, under a
millisecond for tens of MiB). Steady traffic neither grows nor frees much,
so it never trims; a burst trims once, after what it left is freed; memory
that grew and is in use (free below the threshold) is left alone.

What this does not cover: Python's own small-object allocator (pymalloc)
keeps a 1 MiB arena until every object in it is gone, so many small objects
freed among a few that live on (a channel-count explosion) stay resident
as free space Python reuses itself (docs/recovery.md, "Memory after a burst").

glibc only (``malloc_trim`` and ``mallinfo2``, glibc 2.33+); elsewhere
:class:`HeapTrim` does nothing.
"""
from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger("pushgate.heap")
_PAGE = os.sysconf("SC_PAGE_SIZE")

CHECK_EVERY = 10          # seconds between looks at the allocator's free memory
TRIM_AFTER = 4 * 2**20    # bytes of free memory gained since the last trim that make it worth one


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)   # the process and its libraries: libc among them
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.mallinfo2.restype = _MallInfo2
        return libc
    except (OSError, AttributeError):   # not glibc, or one older than 2.33
        return None


class HeapTrim:
    """Trims the C heap after a burst was freed (see the module doc)."""

    def __init__(self, trim_after: int = TRIM_AFTER, check_every: float = CHECK_EVERY) -> None:
        self._libc = _libc()
        self._trim_after = trim_after
        self._check_every = check_every
        self._next_check = 0.0
        self._resident_after_trim: int | None = None   # resident bytes after the last trim, or lower since
        self.free = 0                 # free bytes glibc held at the last look
        self.trims = 0
        self.released = 0             # resident bytes the trims gave back, as /proc/self/statm saw it

    @property
    def available(self) -> bool:
        return self._libc is not None

    def free_held(self) -> int:
        """Bytes the C allocator holds free (its heap's free chunks, resident or not)."""
        return int(self._libc.mallinfo2().fordblks) if self._libc is not None else 0

    def tick(self, now: float) -> bool:
        """Called every second with ``time.monotonic()``; returns whether it trimmed."""
        if self._libc is None or now < self._next_check:
            return False
        self._next_check = now + self._check_every
        resident = _resident()
        if self._resident_after_trim is None or resident < self._resident_after_trim:
            self._resident_after_trim = resident   # the level to grow from
        if resident - self._resident_after_trim < self._trim_after:
            return False
        self.free = self.free_held()
        if self.free < self._trim_after:
            return False   # grown, and in use: nothing worth giving back
        self.trim()
        return True

    def trim(self) -> None:
        if self._libc is None:
            return
        before = _resident()
        self._libc.malloc_trim(0)
        released = max(0, before - _resident())
        self.trims += 1
        self.released += released
        self._resident_after_trim = _resident()
        self.free = self.free_held()
        log.debug("gave %.1f MiB of freed memory back to the system", released / 2**20)


def _resident() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0
