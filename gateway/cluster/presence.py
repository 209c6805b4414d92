"""Presence: who is subscribed to a channel on every node, and join/leave.

Only channels that match ``--presence`` or ``--join-leave`` are tracked; for
every other channel a subscribe costs one pattern check.

**Where the truth is.** Each node knows its own subscribers for sure. It
tells the others through the control bus (NSQ; no other server):

* *deltas* as they happen: who joined, who left, collected for a few
  milliseconds into one control message;
* *snapshots* every ``--presence-interval`` seconds: everyone subscribed on
  it to a tracked channel, numbered by a *round* that grows by one each time,
  in parts of at most ``MAX_PART_BYTES``.

Every node keeps the merged table: per channel, client id → (user, origin
node, round last confirmed, conn_info, chan_info), and per channel a count
per user, so ``presence_stats`` is two ``len()`` calls, never a scan.

**Consistency.** The bus delivers at least once, unordered, and may lose
messages (docs/presence.md). Upserts and removals are idempotent, so
duplicates are harmless. A lost or overtaken delta is repaired by the
snapshots: a peer's entry that was in neither of its last two rounds is
dropped (so a lost leave lasts at most two intervals), and a lost join
appears with the next snapshot (one interval). A node that dies without a
word is forgotten ``--presence-ttl`` seconds after the last thing it said,
and its clients with it; one that was only silent (paused, stalled) is
taken back when it speaks again (:mod:`gateway.cluster.peers`). A node just started asks its
peers for a snapshot at once (``presence-sync``).

**Bounds.** At most ``--presence-max-clients`` entries per channel, all
nodes together: a subscriber past it is not listed, not counted and not
announced (``pushgate_presence_refused_total``), and its subscription works
as usual. A token's ``info`` over ``INFO_LIMIT`` bytes is left out of
presence.

The table has no I/O and no timers: the node sends what :meth:`take_deltas`
and :meth:`snapshot` return and hands every presence message it receives
to :meth:`receive`. Tests drive two tables on a fake clock that way.
"""
from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Callable, Iterable

import ujson

from gateway.core.channels import Patterns
from gateway.core.presence import EXPLICIT, INFO_LIMIT
from gateway.cluster.peers import Peer, Peers

if TYPE_CHECKING:
    from gateway.core.hub import Hub
    from gateway.core.metrics import Metrics
    from gateway.core.session import Session

log = logging.getLogger("pushgate.presence")

MAX_PART_BYTES = 256 << 10  # one control message of presence, at most (nsqd takes 1 MiB)
KIND_DELTA = "presence"
KIND_SNAPSHOT = "presence-snapshot"
KIND_SYNC = "presence-sync"
KIND_NODE = "node"
KIND_BYE = "node-bye"

# An entry: (user, origin uid, round, conn_info, chan_info). A tuple is the
# smallest record CPython has short of a class with slots (docs/presence.md).
USER, ORIGIN, ROUND, CONN_INFO, CHAN_INFO = range(5)


class _Channel:
    __slots__ = ("entries", "users")

    def __init__(self) -> None:
        self.entries: dict[str, tuple] = {}
        self.users: dict[str, int] = {}


class Presence:
    def __init__(self, *, uid: str, name: str, presence: Iterable[str], join_leave: Iterable[str],
                 max_clients: int, ttl: float, hub: Hub, metrics: Metrics, clock: Callable[[], float],
                 on_delta: Callable[[], None] = lambda: None, explicit: bool = False):
        self.uid = sys.intern(uid)
        self.name = name
        self.presence = Patterns(presence)
        self.join_leave = Patterns(join_leave)
        # Explicit presence (AnyCable's join/leave/info on /cable, with --cable-rpc-url):
        # entries under EXPLICIT + channel, the user being the id the client gave.
        self.explicit = explicit
        self.active = bool(self.presence or self.join_leave or explicit)
        self.max_clients = max_clients
        self.hub = hub
        self.metrics = metrics
        self.clock = clock
        self.on_delta = on_delta   # called when the first delta of a batch is queued
        self.channels: dict[str, _Channel] = {}
        self.entries = 0
        self.round = 0
        self.peers = Peers(ttl=ttl, clock=clock, on_gone=self._peer_gone, on_back=self._peer_back,
                           own_name=name, own_uid=self.uid)
        self._up: list[list] = []
        self._down: list[list] = []
        self._warned: set[str] = set()
        # Told when a channel with presence gains its first entry or loses its
        # last, on every node (the backend's channel_occupied and
        # channel_vacated, gateway/cluster/events.py); and when a peer is gone.
        self.on_channel: Callable[[str, bool, bool], None] | None = None
        self.on_peer_gone: Callable[[Peer], None] | None = None
        self._dropping_silent = False   # a silent node's entries are going (no grace for them)

    # --- what the session core calls -------------------------------------------------

    def tracks(self, channel: str) -> bool:
        return self.presence.match(channel) or self.join_leave.match(channel) or \
            (self.explicit and channel[:1] == EXPLICIT)

    def enabled(self, channel: str) -> bool:
        """Whether ``presence`` and ``presence_stats`` answer for ``channel``."""
        return self.presence.match(channel)

    def announces(self, channel: str) -> bool:
        return self.join_leave.match(channel)

    def join(self, session: Session, channel: str, chan_info: bytes | None = None) -> None:
        """A local subscriber of a tracked channel (the session calls it from join)."""
        client = session.client_id
        if chan_info is not None and len(chan_info) > INFO_LIMIT:
            chan_info = None   # as every other node drops it (_bytes): one view of the channel
        entry = (session.user, self.uid, 0, session.conn_info, chan_info)
        if self._add(channel, client, entry):
            self._queue(self._up, [channel, client, session.user, _text(session.conn_info), _text(chan_info)])

    def leave(self, session: Session, channel: str) -> None:
        if self._remove(channel, session.client_id, self.uid):
            self._queue(self._down, [channel, session.client_id])

    def update(self, session: Session, channel: str, chan_info: bytes | None = None) -> None:
        """A local subscriber's conn_info changed, or its ``chan_info`` (None:
        unchanged): its entry takes them here, and the other nodes replace
        theirs with the next delta (an upsert; no join is announced). A
        subscriber kept out of presence has no entry: nothing."""
        ch = self.channels.get(channel)
        if ch is None:
            return
        client = session.client_id
        entry = ch.entries.get(client)
        if entry is None or entry[ORIGIN] is not self.uid:
            return
        conn_info = session.conn_info
        if chan_info is None:
            chan_info = entry[CHAN_INFO]
        elif len(chan_info) > INFO_LIMIT:
            chan_info = None   # as join leaves it out
        ch.entries[client] = (entry[USER], entry[ORIGIN], entry[ROUND], conn_info, chan_info)
        self._queue(self._up, [channel, client, entry[USER], _text(conn_info), _text(chan_info)])

    def explicit_join(self, session: Session, channel: str, pid: str, info: bytes | None) -> bool:
        if not self.explicit:
            return False
        key = EXPLICIT + channel
        client = session.client_id
        if info is not None and len(info) > INFO_LIMIT:
            info = None
        ch = self.channels.get(key)
        old = ch.entries.get(client) if ch is not None else None
        if old is not None and old[USER] != pid:
            self.explicit_leave(session, channel)   # a new id for this connection: the old one leaves first
        pid = sys.intern(pid)
        if self._add(key, client, (pid, self.uid, 0, None, info)):
            self._queue(self._up, [key, client, pid, None, _text(info)])
        elif old is not None and old[CHAN_INFO] != info:
            self._queue(self._up, [key, client, pid, None, _text(info)])   # the same id with new info
        return True

    def explicit_leave(self, session: Session, channel: str) -> None:
        key = EXPLICIT + channel
        if self._remove(key, session.client_id, self.uid):
            self._queue(self._down, [key, session.client_id])

    def explicit_info(self, channel: str) -> tuple[int, list[tuple[str, bytes | None]]] | None:
        if not self.explicit:
            return None
        ch = self.channels.get(EXPLICIT + channel)
        if ch is None:
            return 0, []
        records: dict[str, bytes | None] = {}
        for entry in ch.entries.values():
            if entry[USER] not in records:
                records[entry[USER]] = entry[CHAN_INFO]
        return len(ch.users), list(records.items())

    def _explicit_event(self, key: str, kind: str, entry: tuple) -> None:
        """AnyCable's presence event, to the stream's subscribers on this node
        (every node hears the join or leave and tells its own)."""
        body = b'{"type":"%s","id":%s' % (kind.encode(), _dumps(entry[USER]).encode())
        if kind == "join" and entry[CHAN_INFO] is not None:
            body += b',"info":' + entry[CHAN_INFO]
        self.hub.push(key[1:], "cable_presence", {"message": body + b"}"})

    # --- queries ---------------------------------------------------------------------------

    def stats(self, channel: str) -> tuple[int, int]:
        """(clients, unique users) in ``channel``, every node's together."""
        ch = self.channels.get(channel)
        return (len(ch.entries), len(ch.users)) if ch is not None else (0, 0)

    def clients(self, channel: str) -> dict[str, dict]:
        """ClientInfo by client id, as both codecs render it."""
        ch = self.channels.get(channel)
        if ch is None:
            return {}
        return {client: client_info(client, entry) for client, entry in ch.entries.items()}

    def clients_json(self, channel: str) -> bytes:
        """:meth:`clients` as the JSON protocol and the server API render it,
        built as text in one pass: the generic encoder takes 10 times as long
        for a channel of 10,000 (bench/presence.py)."""
        ch = self.channels.get(channel)
        if ch is None:
            return b"{}"
        dumps = _dumps
        parts = []
        for client, e in ch.entries.items():
            conn_info, chan_info = e[CONN_INFO], e[CHAN_INFO]
            head = dumps(client)
            body = f'{{"user":{dumps(e[USER])},"client":{head}'
            if conn_info is not None:
                body += ',"conn_info":' + conn_info.decode()
            if chan_info is not None:
                body += ',"chan_info":' + chan_info.decode()
            parts.append(f"{head}:{body}}}")
        return ("{" + ",".join(parts) + "}").encode()

    # --- the table -----------------------------------------------------------------------

    def _add(self, channel: str, client: str, entry: tuple) -> bool:
        """Insert or refresh an entry; returns whether it is new."""
        ch = self.channels.get(channel)
        if ch is None:
            ch = self.channels[channel] = _Channel()
        old = ch.entries.get(client)
        if old is None:
            if len(ch.entries) >= self.max_clients:
                if entry[ORIGIN] == self.uid:
                    # This node's subscriber, counted once; another node's comes
                    # again with each of its snapshots, and counts there.
                    self.metrics.presence_refused.inc()
                if channel not in self._warned and len(self._warned) < 1000:
                    self._warned.add(channel)
                    log.warning("channel %s: presence holds --presence-max-clients (%d) entries; more "
                                "subscribers are left out of presence and join/leave", channel, self.max_clients)
                if not ch.entries:
                    del self.channels[channel]
                return False
            ch.entries[client] = entry
            user = entry[USER]
            count = ch.users[user] = ch.users.get(user, 0) + 1
            self.entries += 1
            if channel[:1] == EXPLICIT:
                if count == 1:
                    self._explicit_event(channel, "join", entry)
            elif self.on_channel is not None and len(ch.entries) == 1 and self.presence.match(channel):
                self.on_channel(channel, True, False)
            if self.join_leave.match(channel):
                self.hub.push(channel, "join", {"info": client_info(client, entry)})
            return True
        ch.entries[client] = entry
        if old[USER] != entry[USER]:  # the same client id for another user: never, but keep counts right
            self._uncount(ch, old[USER])
            ch.users[entry[USER]] = ch.users.get(entry[USER], 0) + 1
        return False

    def _remove(self, channel: str, client: str, origin: str) -> bool:
        ch = self.channels.get(channel)
        if ch is None:
            return False
        entry = ch.entries.get(client)
        if entry is None or entry[ORIGIN] is not origin and entry[ORIGIN] != origin:
            return False
        del ch.entries[client]
        self._uncount(ch, entry[USER])
        self.entries -= 1
        if channel[:1] == EXPLICIT and entry[USER] not in ch.users:
            self._explicit_event(channel, "leave", entry)
        if not ch.entries:
            del self.channels[channel]
            self._warned.discard(channel)
            if self.on_channel is not None and channel[:1] != EXPLICIT and self.presence.match(channel):
                self.on_channel(channel, False, self._dropping_silent)
        if self.join_leave.match(channel):
            self.hub.push(channel, "leave", {"info": client_info(client, entry)})
        return True

    @staticmethod
    def _uncount(ch: _Channel, user: str) -> None:
        count = ch.users[user] - 1
        if count:
            ch.users[user] = count
        else:
            del ch.users[user]

    # --- to the other nodes ------------------------------------------------------------------

    def _queue(self, target: list, item: list) -> None:
        first = not self._up and not self._down
        target.append(item)
        if first:
            self.on_delta()

    def take_deltas(self) -> list[dict]:
        """The queued joins and leaves as control-message fields, in parts."""
        up, down = self._up, self._down
        self._up, self._down = [], []
        if not up and not down:
            return []
        messages = [{"uid": self.uid, "round": self.round, "up": part, "down": []} for part in _parts(up)]
        for part in _parts(down):
            messages.append({"uid": self.uid, "round": self.round, "up": [], "down": part})
        return messages

    def snapshot(self) -> list[dict]:
        """Everyone subscribed here to a tracked channel, as the next round's
        parts (at least one, so peers hear the round even when it is empty)."""
        self.round += 1
        me = self.uid
        items = [[channel, client, e[USER], _text(e[CONN_INFO]), _text(e[CHAN_INFO])]
                 for channel, ch in self.channels.items()
                 for client, e in ch.entries.items() if e[ORIGIN] is me]
        parts = _parts(items) or [[]]
        return [{"uid": me, "round": self.round, "part": i, "parts": len(parts), "up": part}
                for i, part in enumerate(parts)]

    # --- from the other nodes ----------------------------------------------------------------

    def receive(self, message: dict) -> None:
        """A presence delta or snapshot part from another node."""
        uid, name = message.get("uid"), message.get("from")
        if not isinstance(uid, str) or not isinstance(name, str) or uid == self.uid:
            return
        peer = self.peers.heard(uid, name)
        if peer is None:
            return
        round_ = message.get("round")
        if isinstance(round_, int) and round_ > peer.round:
            peer.round = round_
        else:
            round_ = peer.round
        origin = peer.uid
        for item in message.get("up") or ():
            if type(item) is list and len(item) == 5:
                channel, client, user, conn_info, chan_info = item
                if isinstance(channel, str) and isinstance(client, str) and isinstance(user, str) \
                        and self.tracks(channel):
                    self._add(channel, client, (sys.intern(user), origin, round_, _bytes(conn_info),
                                                _bytes(chan_info)))
        for item in message.get("down") or ():
            if type(item) is list and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], str):
                self._remove(item[0], item[1], origin)

    def heard(self, message: dict) -> Peer | None:
        """Any other message from a node (its heartbeat) keeps it alive."""
        uid, name = message.get("uid"), message.get("from")
        if not isinstance(uid, str) or not isinstance(name, str) or uid == self.uid:
            return None
        return self.peers.heard(uid, name)

    def sweep(self) -> None:
        """Forget silent nodes (their clients leave) and entries a node has not
        confirmed in its last two rounds. Run every --presence-interval."""
        self.peers.expire()
        rounds = {peer.uid: peer.round for peer in self.peers}
        stale = [(channel, client, e[ORIGIN]) for channel, ch in self.channels.items()
                 for client, e in ch.entries.items()
                 if e[ORIGIN] is not self.uid and e[ROUND] < rounds.get(e[ORIGIN], 1 << 62) - 1]
        for channel, client, origin in stale:
            self._remove(channel, client, origin)
        self.metrics.presence_entries.set(self.entries)

    def expire_peers(self) -> None:
        """Forget nodes silent for longer than --presence-ttl (every second)."""
        self.peers.expire()

    def drop_origin(self, uid: str) -> int:
        """Every entry of node ``uid`` leaves; returns how many."""
        gone = [(channel, client) for channel, ch in self.channels.items()
                for client, e in ch.entries.items() if e[ORIGIN] == uid]
        for channel, client in gone:
            self._remove(channel, client, uid)
        return len(gone)

    def _peer_gone(self, peer: Peer) -> None:
        self._dropping_silent = peer.silent
        try:
            count = self.drop_origin(peer.uid)
        finally:
            self._dropping_silent = False
        if self.on_peer_gone is not None:
            self.on_peer_gone(peer)
        log.info("node %s (%s) went silent or restarted: %d presence entries removed", peer.name, peer.uid[:8], count)

    @staticmethod
    def _peer_back(peer: Peer, silent: float) -> None:
        log.warning("node %s (%s) speaks again after %.1f s of silence (longer than --presence-ttl): taken "
                    "back; its clients return with its next snapshot", peer.name, peer.uid[:8], silent)


def client_info(client: str, entry: tuple) -> dict:
    info = {"user": entry[USER], "client": client}
    if entry[CONN_INFO] is not None:
        info["conn_info"] = entry[CONN_INFO]
    if entry[CHAN_INFO] is not None:
        info["chan_info"] = entry[CHAN_INFO]
    return info


def _dumps(value: str) -> str:
    return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False)


def _text(data: bytes | None) -> str | None:
    return data.decode() if data is not None else None


def _bytes(text: object) -> bytes | None:
    return text.encode() if isinstance(text, str) and len(text) <= INFO_LIMIT else None


def _parts(items: list[list]) -> list[list[list]]:
    """``items`` in lists of at most MAX_PART_BYTES (counted generously)."""
    parts: list[list[list]] = []
    current: list[list] = []
    size = 0
    for item in items:
        cost = 32 + sum(len(x) for x in item if x is not None)
        if current and size + cost > MAX_PART_BYTES:
            parts.append(current)
            current, size = [], 0
        current.append(item)
        size += cost
    if current:
        parts.append(current)
    return parts
