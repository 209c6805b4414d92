"""The backend's events on NSQ (``--events-topic``; docs/events.md).

One JSON object per NSQ message, with ``type``, ``time`` (Unix seconds),
``node`` and the ids that matter:

* this node's own: ``connect``, ``disconnect``, ``subscribe`` and
  ``unsubscribe`` (channels matching ``--events-channels``), and
  ``delivered`` (a receipted message written to a user's connections here);
* the cluster's, said once by the owner of the user or channel
  (:mod:`gateway.cluster.transitions`): ``user_online``, ``user_offline``,
  ``channel_occupied``, ``channel_vacated`` and ``undelivered``.

**Who holds which user.** Every node tells the others over the control bus
which users have connections on it (``ev-users``): a delta within
``DELTA_DELAY`` of a user's first connection here or last one gone, and its
whole list every ``--presence-interval`` (numbered rounds, as presence
does), so a lost delta is repaired within two rounds. A node that dies
without a word leaves with the presence TTL (:mod:`gateway.cluster.peers`),
and the users only it held are offline at once (no grace on top). Channels
come from the presence table, which every node already shares.

**Receipts.** Every node reading a receipted message expects an outcome per
target user; a node that wrote it to some of the user's connections says
``delivered`` and tells the others (``ev-receipts``); when
``--receipt-timeout`` passes with no such report, the user's owner says
``undelivered``.

**Ready.** A node just started knows nobody's users until it has heard each
node's list: it does not speak for any user or channel until
``--presence-interval`` plus ``WARMUP_MARGIN`` seconds have passed, and says
it is ready in its ``ev-users`` messages; only ready nodes own keys.

Events go through a bounded queue (:class:`gateway.nsq.outbox.Outbox`):
nsqd being slow or down never stalls a client; what does not fit is
dropped and counted. Bodies of messages never appear in events.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

import ujson
from tornado.ioloop import PeriodicCallback

from gateway.cluster.transitions import Holders, Receipts, Transitions, owner
from gateway.core.channels import Patterns
from gateway.nsq.outbox import Outbox
from gateway.nsq.publisher import NsqdUnavailable, PublishError

if TYPE_CHECKING:
    from gateway.cluster.bus import ControlBus
    from gateway.cluster.peers import Peer
    from gateway.cluster.presence import Presence
    from gateway.config import Settings
    from gateway.core.metrics import Metrics
    from gateway.core.session import Session

log = logging.getLogger("pushgate.events")

KIND_USERS = "ev-users"
KIND_RECEIPTS = "ev-receipts"
KIND_SYNC = "ev-sync"
DELTA_DELAY = 0.02      # seconds deltas and delivery reports wait to share one control message
TICK = 0.1              # seconds between checks of graces and receipt deadlines
WARMUP_MARGIN = 1.0     # seconds past one --presence-interval before a new node speaks
PART_USERS = 5000       # users per snapshot part (well under nsqd's 1 MiB)
REPORTS_PER_MESSAGE = 2000
SYNC_DEBOUNCE = 0.5


class Events:
    """The node's events: what the session core calls (ConnectionEvents),
    the receipts Ingest reports, and the cluster-wide decisions."""

    active = True

    def __init__(self, *, settings: Settings, name: str, uid: str, metrics: Metrics, bus: ControlBus,
                 presence: Presence, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        assert settings.events_topic
        self.name = name
        self.uid = uid
        self.metrics = metrics
        self.bus = bus
        self.presence = presence
        self.clock = clock
        self.wall = wall
        self.interval = settings.presence_interval
        self.channels = Patterns(settings.events_channels)
        self.outbox = Outbox(http_address=settings.nsqd_http_address, topic=settings.events_topic,
                             limit=settings.events_queue, on_drop=self._dropped,
                             on_size=metrics.events_queued.set)
        self.users = Holders()
        self.user_states = Transitions(grace=settings.offline_grace, clock=clock, speak=self._speak_user)
        self.channel_states = Transitions(grace=settings.offline_grace, clock=clock, speak=self._speak_channel)
        self.receipts = Receipts(timeout=settings.receipt_timeout, clock=clock, undelivered=self._undelivered)
        self.since: dict[Session, float] = {}   # connections announced, and when
        self.ready_at = clock() + self.interval + WARMUP_MARGIN
        self.ready = False
        self.ready_peers: set[str] = set()
        self.round = 0
        self._up: list[str] = []
        self._down: list[str] = []
        self._reports: list[list[str]] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._sync_handle: asyncio.TimerHandle | None = None
        self._timers: list[PeriodicCallback] = []
        self._tasks: set[asyncio.Future] = set()
        self._counters: dict[str, Any] = {}
        presence.on_channel = self._channel_changed
        presence.on_peer_gone = self._peer_gone
        bus.on(KIND_USERS, self._users_received)
        bus.on(KIND_RECEIPTS, self._reports_received)
        bus.on(KIND_SYNC, self._sync_requested)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.outbox.start()
        self._timers = [PeriodicCallback(self._tick, TICK * 1000),
                        PeriodicCallback(self._beat, self.interval * 1000)]
        for timer in self._timers:
            timer.start()
        self._spawn(self._send(KIND_SYNC))
        self._beat()

    async def stop(self) -> None:
        """Send the last deltas and publish what is queued (at most a second)."""
        for timer in self._timers:
            timer.stop()
        for handle in (self._flush_handle, self._sync_handle):
            if handle is not None:
                handle.cancel()
        self._flush()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        await self.outbox.close()

    def _tick(self) -> None:
        if not self.ready and self.clock() >= self.ready_at:
            self.ready = True
            log.info("events: ready to speak for users and channels (the cluster's lists are in)")
            self._send_snapshot()
        self.user_states.tick()
        self.channel_states.tick()
        self.receipts.tick()
        self.metrics.events_queued.set(len(self.outbox.queue))
        self.metrics.events_owners.set(len(self._eligible()))

    def _beat(self) -> None:
        self._send_snapshot()
        for origin in list(self.users.rounds):
            for user in self.users.sweep(origin):
                self.user_states.emptied(user)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, kind: str, **fields: Any) -> None:
        try:
            await self.bus.send(kind, uid=self.uid, **fields)
        except (NsqdUnavailable, PublishError, ValueError) as exc:
            log.warning("events: control message %s not sent: %s", kind, exc)

    # --- events out --------------------------------------------------------------------------

    def emit(self, kind: str, fields: dict) -> None:
        event = {"type": kind, "time": round(self.wall(), 3), "node": self.name}
        event.update(fields)
        if self.outbox.put(ujson.dumps(event, ensure_ascii=False, escape_forward_slashes=False).encode()):
            counter = self._counters.get(kind)
            if counter is None:
                counter = self._counters[kind] = self.metrics.events.labels(kind)
            counter.inc()

    def _dropped(self, reason: str, count: int) -> None:
        self.metrics.events_dropped.labels(reason).inc(count)

    def _eligible(self) -> list[str]:
        nodes = [uid for uid in self.ready_peers if uid in self.presence.peers.by_uid]
        if self.ready:
            nodes.append(self.uid)
        return nodes

    def owns(self, key: str) -> bool:
        return owner(key, self._eligible()) == self.uid

    def _speak_user(self, user: str, online: bool) -> None:
        if self.owns(user):
            self.emit("user_online" if online else "user_offline", {"user": user})

    def _speak_channel(self, channel: str, occupied: bool) -> None:
        if self.owns(channel):
            self.emit("channel_occupied" if occupied else "channel_vacated", {"channel": channel})

    def _undelivered(self, msg_id: str, user: str) -> None:
        if self.owns(user):
            self.emit("undelivered", {"id": msg_id, "user": user})

    # --- what the session core calls (gateway.core.events.ConnectionEvents) --------------------

    def watches(self, channel: str) -> bool:
        return self.channels.match(channel)

    def connected(self, session: Session) -> None:
        self.since[session] = self.clock()
        self.emit("connect", {"user": session.user, "client": session.client_id,
                              "transport": session.transport.wire.name, "protocol": session.protocol})

    def disconnected(self, session: Session, code: int, reason: str) -> None:
        since = self.since.pop(session, None)
        if since is None:
            return   # never announced (its connect did not complete)
        self.emit("disconnect", {"user": session.user, "client": session.client_id,
                                 "transport": session.transport.wire.name, "protocol": session.protocol,
                                 "code": code, "reason": reason,
                                 "duration": round(self.clock() - since, 3)})

    def subscribed(self, session: Session, channel: str) -> None:
        self.emit("subscribe", {"user": session.user, "client": session.client_id, "channel": channel})

    def unsubscribed(self, session: Session, channel: str) -> None:
        self.emit("unsubscribe", {"user": session.user, "client": session.client_id, "channel": channel})

    def user_here(self, user: str) -> None:
        if self.users.add(self.uid, user, self.round):
            self.user_states.occupied(user)
        self._up.append(user)
        self._flush_soon()

    def user_gone(self, user: str) -> None:
        if self.users.remove(self.uid, user):
            self.user_states.emptied(user)
        self._down.append(user)
        self._flush_soon()

    # --- receipts (Ingest) -----------------------------------------------------------------------

    def receipt(self, msg_id: str, user: str, connections: int) -> None:
        """This node read receipted message ``msg_id`` for ``user`` and wrote it
        to ``connections`` of theirs."""
        self.receipts.expect(msg_id, user)
        if connections:
            self.receipts.delivered(msg_id, user)
            self.emit("delivered", {"id": msg_id, "user": user, "connections": connections})
            self._reports.append([msg_id, user])
            self._flush_soon()
        if self.receipts.refused:
            self._dropped("untracked", self.receipts.refused)
            self.receipts.refused = 0

    # --- to and from the other nodes -------------------------------------------------------------

    def _flush_soon(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(DELTA_DELAY, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._up or self._down:
            up, down = self._up, self._down
            self._up, self._down = [], []
            for i in range(0, max(len(up), len(down)), PART_USERS):
                self._spawn(self._send(KIND_USERS, round=self.round, ready=self.ready,
                                       up=up[i:i + PART_USERS], down=down[i:i + PART_USERS]))
        reports, self._reports = self._reports, []
        for i in range(0, len(reports), REPORTS_PER_MESSAGE):
            self._spawn(self._send(KIND_RECEIPTS, d=reports[i:i + REPORTS_PER_MESSAGE]))

    def _send_snapshot(self) -> None:
        self.round += 1
        mine = sorted(self.users.by_origin.get(self.uid, ()))
        parts = [mine[i:i + PART_USERS] for i in range(0, len(mine), PART_USERS)] or [[]]
        for i, part in enumerate(parts):
            self._spawn(self._send(KIND_USERS, round=self.round, ready=self.ready, part=i, parts=len(parts),
                                   users=part))

    def _sync_requested(self, message: dict) -> None:
        self.presence.heard(message)
        if self._sync_handle is None:
            self._sync_handle = asyncio.get_running_loop().call_later(SYNC_DEBOUNCE, self._sync_now)

    def _sync_now(self) -> None:
        self._sync_handle = None
        self._send_snapshot()

    def _users_received(self, message: dict) -> None:
        peer = self.presence.heard(message)
        if peer is None:
            return
        origin = peer.uid
        if message.get("ready") is True:
            self.ready_peers.add(origin)
        else:
            self.ready_peers.discard(origin)
        round_ = message.get("round")
        if not isinstance(round_, int) or isinstance(round_, bool):
            return
        users = message.get("users")
        if isinstance(users, list):
            for user in self.users.snapshot(origin, round_, [u for u in users if isinstance(u, str)]):
                self.user_states.occupied(user)
            return
        for user in message.get("up") or ():
            if isinstance(user, str) and self.users.add(origin, user, round_):
                self.user_states.occupied(user)
        for user in message.get("down") or ():
            if isinstance(user, str) and self.users.remove(origin, user):
                self.user_states.emptied(user)

    def _reports_received(self, message: dict) -> None:
        self.presence.heard(message)
        for item in message.get("d") or ():
            if type(item) is list and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], str):
                self.receipts.delivered(item[0], item[1])

    def _peer_gone(self, peer: Peer) -> None:
        self.ready_peers.discard(peer.uid)
        for user in self.users.drop_origin(peer.uid):
            self.user_states.emptied(user, immediate=peer.silent)

    def _channel_changed(self, channel: str, occupied: bool, immediate: bool) -> None:
        if occupied:
            self.channel_states.occupied(channel)
        else:
            self.channel_states.emptied(channel, immediate=immediate)
