"""This node among the others: heartbeats, presence exchange, cluster-wide
actions and surveys, all over the control bus (:mod:`gateway.cluster.bus`).

* Every ``--presence-interval`` seconds the node sends its heartbeat
  (``node``: its figures, for ``info`` and /admin) and its presence snapshot
  (``presence-snapshot``), and sweeps what the others told it
  (:meth:`gateway.cluster.presence.Presence.sweep`). Joins and leaves go out as
  ``presence`` deltas within ``DELTA_DELAY``.
* Cluster-wide actions of the server API (``api-subscribe``,
  ``api-unsubscribe``, ``api-disconnect``, ``api-refresh``,
  ``api-history-remove``) are applied here at once and sent to every other
  node, which applies them to its own connections when it reads them.
* A node that stops says ``node-bye``: the others forget it at once.
* ``channels-survey`` asks every node for its channels; each answers the
  asker alone (``channels-reply``), which waits at most ``SURVEY_TIMEOUT``.
  ``trends-survey`` likewise asks for the last hour of figures
  (``trends-reply``: the node's :class:`gateway.core.trends.Trends` export).

Message kinds are this module's own; other features register theirs.
"""
from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import resource
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

from tornado.ioloop import PeriodicCallback

from gateway import __version__
from gateway.core import vocabulary
from gateway.core.vocabulary import Ending, Reason, Refusal
from gateway.cluster.presence import KIND_BYE, KIND_DELTA, KIND_NODE, KIND_SNAPSHOT, KIND_SYNC
from gateway.nsq.publisher import NsqdUnavailable, PublishError
from gateway.core.session import CONNECTED, ServerSubscription

if TYPE_CHECKING:
    from gateway.cluster.bus import ControlBus
    from gateway.cluster.presence import Presence
    from gateway.config import Settings
    from gateway.core.host import SessionHost
    from gateway.core.metrics import Metrics
    from gateway.core.session import Session
    from gateway.core.trends import Trends

log = logging.getLogger("pushgate.peering")

DELTA_DELAY = 0.02       # seconds joins and leaves wait to share one control message
SURVEY_TIMEOUT = 1.0     # seconds a survey waits for the other nodes
SURVEY_MAX_CHANNELS = 10000  # channels one node reports to a survey (its busiest)
DROPS_WINDOW = 300.0     # seconds of "recent" drops in the heartbeat
SYNC_DEBOUNCE = 0.5      # seconds: a burst of presence-sync requests gets one snapshot
EXPIRE_EVERY = 0.25      # seconds between checks for silent nodes (a dead node's clients
                         # leave presence at most this long after --presence-ttl)

ACTIONS = ("api-subscribe", "api-unsubscribe", "api-disconnect", "api-refresh", "api-history-remove")


class PeeringHost(Protocol):
    """What peering needs of its node (gateway.node.Node is one): the session
    host whose connections the cluster's actions reach, the control bus, the
    presence table, and the figures it reports."""

    name: str
    settings: Settings
    metrics: Metrics
    host: SessionHost
    bus: ControlBus
    presence: Presence
    trends: Trends
    draining: bool
    loop_lag: float

    def reading(self) -> bool: ...


class ControlNotSent(Exception):
    """The control message could not be published: the other nodes were not told."""


class Peering:
    def __init__(self, node: PeeringHost):
        self.node = node
        self.host = node.host
        self.bus = node.bus
        self.presence = node.presence
        self.started = time.time()
        self.uid = self.presence.uid
        self._timer: PeriodicCallback | None = None
        self._expiry: PeriodicCallback | None = None
        self._delta_handle: asyncio.TimerHandle | None = None
        self._sync_handle: asyncio.TimerHandle | None = None
        self._surveys: dict[str, tuple[asyncio.Future, dict, set]] = {}
        self._drops: deque[tuple[float, dict]] = deque()
        self._tasks: set[asyncio.Future] = set()
        self.presence.on_delta = self._delta_soon
        bus = self.bus
        bus.on(KIND_DELTA, self.presence.receive)
        bus.on(KIND_SNAPSHOT, self.presence.receive)
        bus.on(KIND_SYNC, self._sync_requested)
        bus.on(KIND_NODE, self._heartbeat_received)
        bus.on(KIND_BYE, self._goodbye)
        bus.on("channels-survey", self._survey_requested)
        bus.on("channels-reply", self._survey_answered)
        bus.on("trends-survey", self._trends_requested)
        bus.on("trends-reply", self._trends_answered)
        bus.on("act-reply", self._act_answered)
        for kind in ACTIONS:
            bus.on(kind, self._action_received)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._timer = PeriodicCallback(self._beat, self.node.settings.presence_interval * 1000)
        self._timer.start()
        self._expiry = PeriodicCallback(self.presence.expire_peers, EXPIRE_EVERY * 1000)
        self._expiry.start()
        # Say hello at once: peers learn this node, and send their presence.
        self._spawn(self._send(KIND_SYNC))
        self._beat()

    async def stop(self, timeout: float = 1.0) -> None:
        """The node stops: the last leaves go out now, and a goodbye, so the
        other nodes drop this one at once rather than after --presence-ttl.
        Waits (at most ``timeout``) until nsqd has them, so that the node
        closes its NSQ connections only after its last words."""
        for timer in (self._timer, self._expiry):
            if timer is not None:
                timer.stop()
        if self._sync_handle is not None:
            self._sync_handle.cancel()
        if self._delta_handle is not None:
            self._delta_handle.cancel()
            self._send_deltas()
        self._spawn(self._send(KIND_BYE))
        for future, _, _ in self._surveys.values():
            if not future.done():
                future.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    def _beat(self) -> None:
        self._spawn(self._send(KIND_NODE, **self.status()))
        self._send_snapshot()
        self.presence.sweep()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, kind: str, to: str = "", **fields: Any) -> bool:
        try:
            await self.bus.send(kind, to=to, uid=self.uid, **fields)
            return True
        except (NsqdUnavailable, PublishError, ValueError) as exc:
            # A goodbye often races nsqd's own shutdown (`make run`'s Ctrl-C):
            # without it the others forget this node after --presence-ttl.
            log.log(logging.INFO if kind == KIND_BYE else logging.WARNING,
                    "control message %s not sent: %s", kind, exc)
            return False

    # --- presence ----------------------------------------------------------------------------

    def _delta_soon(self) -> None:
        if self._delta_handle is None:
            self._delta_handle = asyncio.get_running_loop().call_later(DELTA_DELAY, self._send_deltas)

    def _send_deltas(self) -> None:
        self._delta_handle = None
        for fields in self.presence.take_deltas():
            fields.pop("uid", None)
            self._spawn(self._send(KIND_DELTA, **fields))

    def _send_snapshot(self) -> None:
        if not self.presence.active:
            return
        for fields in self.presence.snapshot():
            fields.pop("uid", None)
            self._spawn(self._send(KIND_SNAPSHOT, **fields))

    def _sync_requested(self, message: dict) -> None:
        self.presence.heard(message)
        if self._sync_handle is None and self.presence.active:
            self._sync_handle = asyncio.get_running_loop().call_later(SYNC_DEBOUNCE, self._sync_now)

    def _sync_now(self) -> None:
        self._sync_handle = None
        self._send_snapshot()

    # --- heartbeats and info -------------------------------------------------------------------

    def status(self) -> dict:
        """This node's figures: what ``info`` and /admin show for it."""
        host = self.host
        node = self.node
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "name": node.name, "version": __version__, "started": self.started,
            "uptime": int(time.time() - self.started),
            "num_clients": len(host.sessions), "num_users": len(host.user_connections),
            "num_subs": host.hub.subscriptions(), "num_channels": host.hub.channels(),
            "ready": node.reading(),
            "draining": node.draining, "loop_lag": round(node.loop_lag, 4),
            "rss": _rss(), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "presence_entries": self.presence.entries, "drops": self._recent_drops(),
        }

    def _recent_drops(self) -> dict[str, int]:
        """NSQ messages dropped in the last DROPS_WINDOW seconds, by reason."""
        now = time.monotonic()
        totals = {}
        for metric in self.node.metrics.nsq_dropped.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    totals[sample.labels["reason"]] = int(sample.value)
        self._drops.append((now, totals))
        while len(self._drops) > 1 and self._drops[1][0] <= now - DROPS_WINDOW:
            self._drops.popleft()
        base = self._drops[0][1]
        return {reason: count - base.get(reason, 0) for reason, count in totals.items()
                if count - base.get(reason, 0) > 0}

    def _heartbeat_received(self, message: dict) -> None:
        peer = self.presence.heard(message)
        if peer is not None:
            peer.status = {k: v for k, v in message.items() if k not in ("kind", "to", "from")}

    def _goodbye(self, message: dict) -> None:
        uid = message.get("uid")
        if isinstance(uid, str) and uid != self.uid:
            self.presence.peers.forget(uid)

    def nodes(self) -> list[dict]:
        """Every node up, this one first: Centrifugo's ``info`` Node objects,
        with pushgate's own figures beside them."""
        mine = self.status()
        nodes = [_node_result(self.uid, mine, 0.0)]
        now = self.presence.clock()
        for peer in self.presence.peers:
            if peer.status:
                nodes.append(_node_result(peer.uid, peer.status, now - peer.last_seen))
        return nodes

    # --- surveys ---------------------------------------------------------------------------------

    def local_channels(self, pattern: str | None) -> dict[str, int]:
        counts = self.host.hub.counts()
        if pattern:
            counts = {c: n for c, n in counts.items() if fnmatch.fnmatchcase(c, pattern)}
        if len(counts) > SURVEY_MAX_CHANNELS:
            counts = dict(sorted(counts.items(), key=lambda kv: -kv[1])[:SURVEY_MAX_CHANNELS])
        return counts

    async def channels(self, pattern: str | None) -> tuple[dict[str, int], list[str]]:
        """Subscribers per channel on every node: this node's own, and what the
        others answer within SURVEY_TIMEOUT. Returns the counts and the names
        of the nodes that did not answer."""
        total = self.local_channels(pattern)
        expected = {peer.uid: peer.name for peer in self.presence.peers if peer.status}
        if not expected:
            return total, []

        async def ask(rid: str) -> None:
            if not await self._send("channels-survey", rid=rid, pattern=pattern or ""):
                raise ControlNotSent("channels-survey")
        try:
            replies = await self._gather(set(expected), ask)
        except ControlNotSent:
            return total, sorted(expected.values())
        for counts in replies.values():
            for channel, count in counts.items():
                total[channel] = total.get(channel, 0) + count
        return total, sorted(name for uid, name in expected.items() if uid not in replies)

    def _survey_requested(self, message: dict) -> None:
        self.presence.heard(message)
        rid, pattern, sender = message.get("rid"), message.get("pattern"), message.get("from")
        if isinstance(rid, str) and isinstance(sender, str):
            self._spawn(self._send("channels-reply", to=sender, rid=rid,
                                   channels=self.local_channels(pattern if isinstance(pattern, str) else "")))

    def _survey_answered(self, message: dict) -> None:
        channels = message.get("channels")
        if isinstance(channels, dict):
            self._answered(message, {c: n for c, n in channels.items() if isinstance(c, str) and isinstance(n, int)})

    async def trends(self) -> tuple[list[dict], list[str]]:
        """Every node's last hour of figures (:meth:`Trends.export`, with its
        ``name`` and ``uid``), this node first, from what the others answer
        within SURVEY_TIMEOUT; and the names of those that did not answer."""
        nodes = [{"name": self.node.name, "uid": self.uid, **self.node.trends.export()}]
        expected = {peer.uid: peer.name for peer in self.presence.peers if peer.status}
        if not expected:
            return nodes, []

        async def ask(rid: str) -> None:
            if not await self._send("trends-survey", rid=rid):
                raise ControlNotSent("trends-survey")
        try:
            replies = await self._gather(set(expected), ask)
        except ControlNotSent:
            return nodes, sorted(expected.values())
        nodes += sorted(({"name": expected[uid], "uid": uid, **series} for uid, series in replies.items()),
                        key=lambda node: node["name"])
        return nodes, sorted(name for uid, name in expected.items() if uid not in replies)

    def _trends_requested(self, message: dict) -> None:
        self.presence.heard(message)
        rid, sender = message.get("rid"), message.get("from")
        if isinstance(rid, str) and isinstance(sender, str):
            self._spawn(self._send("trends-reply", to=sender, rid=rid, trends=self.node.trends.export()))

    def _trends_answered(self, message: dict) -> None:
        trends = message.get("trends")
        if isinstance(trends, dict) and isinstance(trends.get("connections"), list):
            self._answered(message, trends)

    async def _gather(self, expected: set[str], ask: Callable[[str], Awaitable[None]]) -> dict[str, dict]:
        """Ask every node (``ask(rid)`` sends the request with its id) and
        collect the answers of the ``expected`` ones (uids) that come within
        SURVEY_TIMEOUT, by uid."""
        rid = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        replies: dict[str, dict] = {}
        self._surveys[rid] = (future, replies, expected)
        try:
            await ask(rid)
            if expected:
                try:
                    await asyncio.wait_for(asyncio.shield(future), SURVEY_TIMEOUT)
                except asyncio.TimeoutError:
                    pass
        finally:
            self._surveys.pop(rid, None)
        return replies

    def _answered(self, message: dict, reply: dict) -> None:
        """A node's ``reply`` to the request ``message["rid"]``."""
        rid, uid = message.get("rid"), message.get("uid")
        survey = self._surveys.get(rid) if isinstance(rid, str) else None
        if survey is None or not isinstance(uid, str):
            return
        future, replies, expected = survey
        replies[uid] = reply
        if expected <= set(replies) and not future.done():
            future.set_result(None)

    # --- cluster-wide actions ----------------------------------------------------------------------

    async def act(self, kind: str, **fields: Any) -> int:
        """Apply an action to this node's connections now, and send it to every
        other node. Returns how many local connections it touched; raises
        ControlNotSent when the others could not be told."""
        touched = self.apply(kind, fields)
        try:
            await self.bus.send(kind, uid=self.uid, **fields)
        except (NsqdUnavailable, PublishError) as exc:
            raise ControlNotSent(str(exc)) from None
        return touched

    async def act_everywhere(self, kind: str, **fields: Any) -> tuple[int, list[str]]:
        """:meth:`act`, then wait (SURVEY_TIMEOUT at most) for every other node
        to say what it did: returns the connections touched on every node that
        answered, and why connections refused (a protocol that cannot do it)."""
        refused: list[Refusal] = []
        touched = self.apply(kind, fields, refused)
        reasons = [r.reason for r in refused]

        async def ask(rid: str) -> None:
            try:
                await self.bus.send(kind, uid=self.uid, rid=rid, **fields)
            except (NsqdUnavailable, PublishError) as exc:
                raise ControlNotSent(str(exc)) from None
        replies = await self._gather({peer.uid for peer in self.presence.peers if peer.status}, ask)
        for reply in replies.values():
            touched += reply["touched"]
            reasons.extend(reply["refused"])
        return touched, reasons

    def _action_received(self, message: dict) -> None:
        rid, sender = message.get("rid"), message.get("from")
        if not isinstance(rid, str) or not isinstance(sender, str):
            self.apply(message["kind"], message)
            return
        refused: list[Refusal] = []
        touched = self.apply(message["kind"], message, refused)
        self._spawn(self._send("act-reply", to=sender, rid=rid, touched=touched,
                               refused=sorted({r.reason for r in refused})))

    def _act_answered(self, message: dict) -> None:
        touched, refused = message.get("touched"), message.get("refused")
        if isinstance(touched, int) and isinstance(refused, list):
            self._answered(message, {"touched": touched, "refused": [r for r in refused if isinstance(r, str)]})

    def apply(self, kind: str, fields: dict, refused: list[Refusal] | None = None) -> int:
        """Apply an action to this node's connections; returns how many it
        touched, and adds to ``refused`` why a connection did not do it."""
        if kind == "api-history-remove":
            channel = fields.get("channel")
            if isinstance(channel, str) and self.host.history.remove(channel, time.time_ns()):
                return 1
            return 0
        user = fields.get("user")
        if not isinstance(user, str) or not user:
            return 0
        client = fields.get("client") or None
        session_id = fields.get("session") or None
        touched = 0
        for session in self._connections(user, client, session_id if isinstance(session_id, str) else None):
            if kind == "api-disconnect":
                whitelist = fields.get("whitelist") or ()
                if session.client_id not in whitelist:
                    session.close(api_ending(fields.get("code"), fields.get("reason")))
                    touched += 1
            elif kind == "api-subscribe":
                channel = fields.get("channel")
                if isinstance(channel, str):
                    refusal = session.server_subscribe(channel, _subscription(fields))
                    if refusal is None:
                        touched += 1
                    elif refused is not None:
                        refused.append(refusal)
            elif kind == "api-unsubscribe":
                channel = fields.get("channel")
                if isinstance(channel, str) and session.server_unsubscribe(channel):
                    touched += 1
            elif kind == "api-refresh":
                touched += self._refresh(session, fields)
        return touched

    def _connections(self, user: str, client: str | None, session_id: str | None = None) -> list[Session]:
        # A scan: an administrative action is rare, and an index of sessions by
        # user would cost every connection memory (docs/api.md). ``session_id``:
        # the ``session`` of a connect result (emulation transports have one).
        return [s for s in self.host.sessions
                if s.user == user and s.state is CONNECTED and (client is None or s.client_id == client)
                and (session_id is None or s.transport.session_id == session_id)]

    @staticmethod
    def _refresh(session: Session, fields: dict) -> int:
        if fields.get("expired"):
            session.close(vocabulary.EXPIRED)
            return 1
        expire_at = fields.get("expire_at")
        expire_at = expire_at if isinstance(expire_at, int) and expire_at > 0 else None
        session.server_refresh(expire_at, _bytes(fields.get("info")) if expire_at is not None else None)
        return 1


def api_ending(code: object, reason: object) -> Ending:
    """The end the server API's ``disconnect`` asked for: its own code and words
    when valid (whether the client comes back follows Centrifugo's code
    ranges), else a plain force disconnect."""
    if not valid_disconnect(code, reason):
        return vocabulary.FORCE_DISCONNECT
    assert isinstance(code, int) and isinstance(reason, str)
    terminal = 3500 <= code <= 3999 or 4500 <= code <= 4999
    return Ending(Reason.FORCE_DISCONNECT if terminal else Reason.FORCE_RECONNECT, reason, code)


def valid_disconnect(code: object, reason: object) -> bool:
    """A code the SDKs act on (3000-4999) and a reason that fits a close frame."""
    return (isinstance(code, int) and not isinstance(code, bool) and 3000 <= code <= 4999
            and isinstance(reason, str) and len(reason.encode()) <= 123)


def _node_result(uid: str, status: dict, silent_for: float) -> dict:
    result = {"uid": uid, "name": status.get("name", ""), "version": f"pushgate {status.get('version', '')}"}
    for key in ("num_clients", "num_users", "num_subs", "num_channels", "uptime"):
        value = status.get(key)
        result[key] = value if isinstance(value, int) else 0
    rss = status.get("rss")
    result["process"] = {"rss": rss if isinstance(rss, int) else 0}
    extra = {k: status.get(k) for k in ("ready", "draining", "loop_lag", "presence_entries", "drops", "cpu_seconds",
                                        "started")}
    extra["silent_for"] = round(silent_for, 1)
    result["pushgate"] = extra
    return result


def _rss() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _bytes(text: object) -> bytes | None:
    return text.encode() if isinstance(text, str) else None


def _subscription(fields: dict) -> ServerSubscription:
    """The server API's subscribe options, as the control message carries them."""
    expires_at, since = fields.get("expire_at"), fields.get("since")
    return ServerSubscription(
        chan_info=_bytes(fields.get("info")), data=_bytes(fields.get("data")),
        expires_at=expires_at if type(expires_at) is int and expires_at > 0 else None,
        since=(since[0], since[1]) if type(since) is list and len(since) == 2 and type(since[0]) is str
        and type(since[1]) is int else None,
        override=fields.get("override"))
