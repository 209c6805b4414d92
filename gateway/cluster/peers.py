"""What this node knows of the other nodes: who is up, and what each said
of itself last.

Every node sends a heartbeat on the control bus every ``--presence-interval``
seconds: its incarnation id (``uid``, new at every start), name, version,
start time and a few figures (connections, subscriptions, drops). A peer
that has said nothing for ``--presence-ttl`` seconds is taken for gone: its
presence entries go with it (:meth:`gateway.cluster.presence.Presence.drop_origin`).

**Incarnations.** A peer is an incarnation (a ``uid``), not a name. An
incarnation ends for good only when it is *replaced* (a message under the
same name with a new ``uid``: the node restarted, and the old one's clients
left with it) or when it said goodbye (``node-bye``); a late message from it
(NSQ does not order) changes nothing. A peer that only went *silent* is not
retired: silence is all this node sees of a process that is stopped, paused
(a GC pause, a VM freeze, SIGSTOP) or too busy to talk, and such a process
may resume. When it speaks again it is taken back at once, and its clients
come back with its next snapshot, which it sends when it resumes.

**Which incarnation is newer.** A node restarted while its old processes
still drain (a box whose supervisor was killed: its orphaned workers serve
on for a drain period beside the new ones, under the same names) talks under
two uids at once, and a node that starts meanwhile may hear the new one
first. So "the last uid heard under a name" is not "the newest": an
incarnation id is a UUIDv7 (:func:`incarnation_id`), whose text sorts by its
start time to the millisecond, and a word from an incarnation that started
before the one this node holds for that name is a late word of a replaced
one. Ids of another form (a node of an older version) are compared by
arrival, as before. Messages under this node's own name come from its own
earlier incarnation (an orphan draining) and are not a peer.

**This node's own pauses.** Silence is measured on this node's clock, which
also runs while this node itself is not running. If the checks find the
clock moved on by more than ``STALL`` seconds since the last one, this node
was stopped or stalled, and read nothing meanwhile: that time is not counted
as the peers' silence (their last word is moved on by as much), so a node
that resumes reads what its peers said while it was away before it judges
them, instead of dropping every one of them at once.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Callable, Iterator

log = logging.getLogger("pushgate.presence")


RETIRED_KEPT = 1024
STALL = 1.0  # seconds between two checks past which this node was not running (they run every 0.25 s)


_last_ms = 0


def incarnation_id(now_ms: int | None = None) -> str:
    """A new incarnation's uid: a UUIDv7 (RFC 9562), 48 bits of Unix
    milliseconds, then random bits, so that two incarnations' ids sort by
    their start (:func:`started_before`). Ids one process makes sort in the
    order it made them, even within a millisecond (the in-process tests make
    several nodes at once)."""
    global _last_ms
    if now_ms is None:
        now_ms = _last_ms = max(time.time_ns() // 1_000_000, _last_ms + 1)
    ms = now_ms
    value = (ms & (1 << 48) - 1) << 80 | int.from_bytes(os.urandom(10), "big") & ((1 << 80) - 1)
    value = value & ~(0xF << 76) | 0x7 << 76          # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62          # variant 10
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def started_before(uid: str, other: str) -> bool:
    """Whether incarnation ``uid`` started before ``other``, both UUIDv7 (the
    same-width hex, so the text compares as the time does). Ids of another
    form are never known to be older."""
    return len(uid) == len(other) == 36 and uid[14] == other[14] == "7" and uid < other


class Peer:
    __slots__ = ("uid", "name", "last_seen", "round", "status", "silent")

    def __init__(self, uid: str, name: str, now: float):
        self.uid = uid
        self.name = name
        self.last_seen = now
        self.round = 0          # the highest presence round heard from it
        self.status: dict = {}  # its last heartbeat's figures
        self.silent = False     # gone by silence (the TTL), not by a goodbye or a restart


class Peers:
    def __init__(self, *, ttl: float, clock: Callable[[], float], on_gone: Callable[[Peer], None],
                 on_back: Callable[[Peer, float], None] = lambda peer, silent: None, own_name: str | None = None,
                 own_uid: str = ""):
        self.ttl = ttl
        self.own_name = own_name  # this node's: words under it are its own earlier incarnation's
        self.own_uid = own_uid
        self._namesakes: set[str] = set()   # later incarnations under this node's name, told once each
        self.clock = clock
        self.on_gone = on_gone
        self.on_back = on_back   # a silent peer spoke again: (peer, seconds it was silent)
        self.by_uid: dict[str, Peer] = {}
        self._uid_of: dict[str, str] = {}   # name -> uid of its current incarnation
        # Incarnations replaced or gone for good: a late message from one (NSQ
        # does not order) must not bring it back. Bounded: the oldest are forgotten.
        self._retired: dict[str, None] = {}
        # Incarnations that went silent, by name (name -> (uid, last heard)):
        # taken back if they speak again, retired if a new one of that name does.
        self._silent: dict[str, tuple[str, float]] = {}
        self._checked: float | None = None  # when expire() last ran

    def heard(self, uid: str, name: str) -> Peer | None:
        """A message from ``uid`` (``name``) arrived. Returns the peer, or None
        for an incarnation that is already replaced."""
        now = self.clock()
        peer = self.by_uid.get(uid)
        if peer is not None:
            peer.last_seen = now
            return peer
        if name == self.own_name:
            if not started_before(uid, self.own_uid) and uid not in self._namesakes \
                    and len(self._namesakes) < RETIRED_KEPT:
                # Not this node's orphan (it started later, or its id cannot
                # tell): another node runs under this name, and neither sees the other.
                self._namesakes.add(uid)
                log.warning("a node %s (%s) other than this one (%s) speaks under this node's name: its "
                            "presence and info are ignored here; give each node its own --node-name",
                            name, uid[:8], self.own_uid[:8])
            return None
        if uid in self._retired:
            return None
        held = self._uid_of.get(name)
        silent = self._silent.get(name)
        if (held is not None and started_before(uid, held)) or (silent is not None and started_before(uid, silent[0])):
            self._retire(uid)                # a late word of an incarnation already replaced
            return None
        silent = self._silent.pop(name, None)
        if silent is not None and silent[0] != uid:
            self._retire(silent[0])          # a new incarnation: the silent one will not come back
        old = self._uid_of.get(name)
        if old is not None and old in self.by_uid:
            # The same name with a new uid: the node restarted. Its old
            # incarnation's clients are gone.
            self.forget(old)
        peer = self.by_uid[uid] = Peer(sys.intern(uid), sys.intern(name), now)
        self._uid_of[name] = uid
        if silent is not None and silent[0] == uid:
            self.on_back(peer, now - silent[1])
        return peer

    def forget(self, uid: str) -> None:
        """The incarnation ``uid`` is gone for good (replaced, or it said goodbye)."""
        peer = self.by_uid.pop(uid, None)
        self._retire(uid)
        if peer is None:
            return
        if self._uid_of.get(peer.name) == uid:
            del self._uid_of[peer.name]
        self.on_gone(peer)

    def _retire(self, uid: str) -> None:
        self._retired[uid] = None
        if len(self._retired) > RETIRED_KEPT:
            del self._retired[next(iter(self._retired))]

    def expire(self) -> list[Peer]:
        """Drop peers silent for longer than the TTL (until they speak again);
        returns them. Time this node was not running does not count (see the
        module doc)."""
        now = self.clock()
        if self._checked is not None and now - self._checked > STALL:
            paused = now - self._checked
            for peer in self.by_uid.values():
                peer.last_seen = min(now, peer.last_seen + paused)
        self._checked = now
        cutoff = now - self.ttl
        gone = [p for p in self.by_uid.values() if p.last_seen < cutoff]
        for peer in gone:
            del self.by_uid[peer.uid]
            if self._uid_of.get(peer.name) == peer.uid:
                del self._uid_of[peer.name]
            self._silent.pop(peer.name, None)
            self._silent[peer.name] = (peer.uid, peer.last_seen)
            if len(self._silent) > RETIRED_KEPT:
                del self._silent[next(iter(self._silent))]
            peer.silent = True
            self.on_gone(peer)
        return gone

    def __iter__(self) -> Iterator[Peer]:
        return iter(list(self.by_uid.values()))

    def __len__(self) -> int:
        return len(self.by_uid)
