"""What this node knows of the other nodes: who is up, and what each said
of itself last.

Every node sends a heartbeat on the control bus every ``--presence-interval``
seconds: its incarnation id (``uid``, new at every start), name, version,
start time and a few figures (connections, subscriptions, drops). A peer
that has said nothing for ``--presence-ttl`` seconds is gone: its presence
entries go with it (:meth:`gateway.cluster.presence.Presence.drop_origin`). A peer
that restarts comes back with a new ``uid`` under the same name; the old
incarnation is dropped at once.
"""
from __future__ import annotations

import sys
from typing import Callable, Iterator


RETIRED_KEPT = 1024


class Peer:
    __slots__ = ("uid", "name", "last_seen", "round", "status")

    def __init__(self, uid: str, name: str, now: float):
        self.uid = uid
        self.name = name
        self.last_seen = now
        self.round = 0          # the highest presence round heard from it
        self.status: dict = {}  # its last heartbeat's figures


class Peers:
    def __init__(self, *, ttl: float, clock: Callable[[], float], on_gone: Callable[[Peer], None]):
        self.ttl = ttl
        self.clock = clock
        self.on_gone = on_gone
        self.by_uid: dict[str, Peer] = {}
        self._uid_of: dict[str, str] = {}   # name -> uid of its current incarnation
        # Incarnations replaced or expired: a late message from one (NSQ does not
        # order) must not bring it back. Bounded: the oldest are forgotten.
        self._retired: dict[str, None] = {}

    def heard(self, uid: str, name: str) -> Peer | None:
        """A message from ``uid`` (``name``) arrived. Returns the peer, or None
        for an incarnation that is already replaced."""
        now = self.clock()
        peer = self.by_uid.get(uid)
        if peer is None:
            if uid in self._retired:
                return None
            old = self._uid_of.get(name)
            if old is not None and old in self.by_uid:
                # The same name with a new uid: the node restarted. Its old
                # incarnation's clients are gone.
                self.forget(old)
            peer = self.by_uid[uid] = Peer(sys.intern(uid), sys.intern(name), now)
            self._uid_of[name] = uid
        else:
            peer.last_seen = now
        return peer

    def forget(self, uid: str) -> None:
        peer = self.by_uid.pop(uid, None)
        if peer is None:
            return
        self._retired[uid] = None
        if len(self._retired) > RETIRED_KEPT:
            del self._retired[next(iter(self._retired))]
        if self._uid_of.get(peer.name) == uid:
            del self._uid_of[peer.name]
        self.on_gone(peer)

    def expire(self) -> list[Peer]:
        """Forget peers silent for longer than the TTL; returns them."""
        cutoff = self.clock() - self.ttl
        gone = [p for p in self.by_uid.values() if p.last_seen < cutoff]
        for peer in gone:
            self.forget(peer.uid)
        return gone

    def __iter__(self) -> Iterator[Peer]:
        return iter(list(self.by_uid.values()))

    def __len__(self) -> int:
        return len(self.by_uid)
