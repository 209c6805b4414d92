"""The cluster-wide decisions behind the backend's events, without I/O:
who holds a user, when a user (or a channel) goes online or offline, and
when a receipted message was delivered nowhere (docs/events.md).

**Replicated state, one speaker.** Every node keeps the same tables from the
same messages (its own changes, and the others' over the control bus), so
every node reaches the same decision about every user; only the *owner* of a
key says it out loud. The owner is the live, ready node with the highest
rendezvous hash of (node, key) (:func:`owner`): every node computes it from
the nodes it knows, so no election runs, and when a node joins or leaves
only the keys it owned move. Because every node followed every key all
along, the new owner already knows where its keys stand: a key owned by a
node that died mid-grace is declared by its new owner when the grace ends.

A node's view can differ from the others' for as long as a control message
takes to arrive, or when it lost one; docs/events.md lists what a duplicate
or a miss takes.
"""
from __future__ import annotations

import hashlib
import sys
from typing import Callable, Iterable

ONLINE = -1.0   # a key's state: occupied (else the time it became empty)


def owner(key: str, nodes: Iterable[str]) -> str | None:
    """The node among ``nodes`` that speaks for ``key`` (rendezvous hashing:
    the highest hash of node and key wins)."""
    best, best_score = None, b""
    encoded = key.encode()
    for node in nodes:
        score = hashlib.blake2b(encoded, digest_size=8, key=node.encode()[:64]).digest()
        if best is None or score > best_score or (score == best_score and node > best):
            best, best_score = node, score
    return best


class Holders:
    """Which nodes hold each key (a user with connections there), with the
    round each node last confirmed it in, so that an entry a lost "down"
    left behind is dropped two snapshot rounds later (as presence does).

    Kept per node (``by_origin``: node -> {key: round}) with a count of
    holders per key, and the keys interned: a key held by one node, the
    usual case, costs one entry in each of two dicts, about 200 bytes."""

    def __init__(self) -> None:
        self.by_origin: dict[str, dict[str, int]] = {}   # origin -> {key: round}
        self.counts: dict[str, int] = {}                  # key -> how many origins hold it
        self.rounds: dict[str, int] = {}                  # origin -> highest round heard

    def add(self, origin: str, key: str, round_: int = 0) -> bool:
        """``origin`` holds ``key``; returns whether ``key`` was held nowhere before."""
        keys = self.by_origin.get(origin)
        if keys is None:
            keys = self.by_origin[origin] = {}
        known = keys.get(key)
        if known is not None:
            if round_ > known:
                keys[key] = round_
            return False
        key = sys.intern(key)
        keys[key] = round_
        count = self.counts.get(key, 0)
        self.counts[key] = count + 1
        return count == 0

    def remove(self, origin: str, key: str) -> bool:
        """``origin`` no longer holds ``key``; returns whether nobody holds it now."""
        keys = self.by_origin.get(origin)
        if keys is None or keys.pop(key, None) is None:
            return False
        return self._uncount(key)

    def _uncount(self, key: str) -> bool:
        count = self.counts[key] - 1
        if count:
            self.counts[key] = count
            return False
        del self.counts[key]
        return True

    def held(self, key: str) -> bool:
        return key in self.counts

    def drop_origin(self, origin: str) -> list[str]:
        """Everything ``origin`` held goes; returns the keys now held nowhere."""
        self.rounds.pop(origin, None)
        return [key for key in self.by_origin.pop(origin, ()) if self._uncount(key)]

    def snapshot(self, origin: str, round_: int, keys: Iterable[str]) -> list[str]:
        """One part of ``origin``'s snapshot of ``round_``: it holds ``keys``.
        Returns the keys newly held."""
        if round_ > self.rounds.get(origin, 0):
            self.rounds[origin] = round_
        return [key for key in keys if self.add(origin, key, round_)]

    def sweep(self, origin: str) -> list[str]:
        """Entries of ``origin`` it has confirmed in neither of its last two
        rounds go; returns the keys now held nowhere."""
        latest = self.rounds.get(origin, 0)
        keys = self.by_origin.get(origin, {})
        stale = [key for key, round_ in keys.items() if round_ < latest - 1]
        return [key for key in stale if self.remove(origin, key)]


class Transitions:
    """Occupied and empty keys (users online, channels occupied), and the
    events a transition yields: one ``on`` when a key becomes occupied, one
    ``off`` when it has been empty for ``grace`` seconds; a key occupied again
    within the grace yields neither. ``speak(key, occupied)`` is called for
    every transition, on every node; it emits only where this node owns ``key``."""

    def __init__(self, *, grace: float, clock: Callable[[], float], speak: Callable[[str, bool], None]):
        self.grace = grace
        self.clock = clock
        self.speak = speak
        self.states: dict[str, float] = {}   # key -> ONLINE, or when it became empty
        self.pending: dict[str, float] = {}  # key -> when its "off" is due

    def occupied(self, key: str) -> None:
        state = self.states.get(key)
        if state is None:
            self.states[sys.intern(key)] = ONLINE
            self.speak(key, True)
        elif state != ONLINE:
            self.states[key] = ONLINE
            self.pending.pop(key, None)

    def emptied(self, key: str, immediate: bool = False) -> None:
        """``key`` is held nowhere now; ``immediate``: its holder died without a
        word, and waited out the presence TTL already (no grace on top)."""
        if self.states.get(key) != ONLINE:
            return
        now = self.clock()
        self.states[key] = now
        self.pending[key] = now if immediate else now + self.grace

    def tick(self) -> int:
        """Say ``off`` for every key whose grace is over; returns how many."""
        if not self.pending:
            return 0
        now = self.clock()
        due = [key for key, at in self.pending.items() if at <= now]
        for key in due:
            del self.pending[key]
            del self.states[key]
            self.speak(key, False)
        return len(due)


class Receipts:
    """Receipted messages waiting for some node to deliver them to a user.

    Every node expects every (message id, user) it reads, and hears every
    node's delivery reports; when ``timeout`` passes with none,
    ``undelivered(id, user)`` is called on every node (it emits where this
    node owns the pair). Bounded: past ``limit`` pairs waiting, a new one is
    not followed (``refused`` counts them) rather than memory growing."""

    def __init__(self, *, timeout: float, clock: Callable[[], float], undelivered: Callable[[str, str], None],
                 limit: int = 200_000):
        self.timeout = timeout
        self.clock = clock
        self.undelivered = undelivered
        self.limit = limit
        self.waiting: dict[tuple[str, str], float] = {}   # (id, user) -> deadline, in order of deadline
        self.delivered_at: dict[tuple[str, str], float] = {}  # reported delivered -> until when remembered
        self.refused = 0

    def expect(self, msg_id: str, user: str) -> None:
        pair = (msg_id, user)
        if pair in self.delivered_at or pair in self.waiting:
            return
        if len(self.waiting) >= self.limit:
            self.refused += 1
            return
        self.waiting[pair] = self.clock() + self.timeout

    def delivered(self, msg_id: str, user: str) -> None:
        """Some node wrote the message to a connection of ``user``."""
        pair = (msg_id, user)
        self.waiting.pop(pair, None)
        if pair not in self.delivered_at and len(self.delivered_at) < 2 * self.limit:
            # Remembered for as long as the message could still arrive at this
            # node (its own read of it may come after another node's report).
            self.delivered_at[pair] = self.clock() + 2 * self.timeout

    def tick(self) -> int:
        """Declare every pair past its deadline undelivered; returns how many."""
        now = self.clock()
        due = []
        for pair, deadline in self.waiting.items():
            if deadline > now:
                break   # deadlines are in insertion order: the rest are later
            due.append(pair)
        for pair in due:
            del self.waiting[pair]
            self.undelivered(*pair)
        if self.delivered_at:
            old = []
            for pair, until in self.delivered_at.items():
                if until > now:
                    break
                old.append(pair)
            for pair in old:
                del self.delivered_at[pair]
        return len(due)
