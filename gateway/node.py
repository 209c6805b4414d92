"""The node: one gateway process, wiring hub, sessions, history, timers and NSQ.

Sessions, transports and the NSQ source all talk to the rest of the gateway
through the node, which owns the shared parts: the :class:`Hub`, the
:class:`History`, the :class:`Heartbeat` and :class:`Expiry` (both run from
one one-second timer), the :class:`WriteBatcher`, the admission limits, the
token verifier, the settings and the metrics.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
import urllib.parse

from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.ioloop import PeriodicCallback

from auth.tokens import ConnectionClaims, TokenInvalid, TokenVerifier
from gateway import __version__, protocol
from gateway.config import Settings, default_node_name
from gateway.envelope import PERSONAL_PREFIX
from gateway.expiry import Expiry
from gateway.heartbeat import Heartbeat
from gateway.history import History, Retention
from gateway.hub import Hub
from gateway.ingest import Ingest
from gateway.limits import TokenBucket, connection_capacity
from gateway.metrics import Metrics
from gateway.nsq_source import NsqSource
from gateway.nsq_watch import ChannelWatch
from gateway.server import PendingConnections
from gateway.session import Session
from gateway.transports.stream import WriteBatcher

log = logging.getLogger("pushgate.node")

HISTORY_SWEEP_EVERY = 10  # seconds
HOLD_POLL = 0.05          # seconds between checks of held recoveries (one timer for all)
LAG_PROBE = 0.1           # seconds between event-loop lag probes
DRAIN_STEP = 0.005  # seconds: the finest grain of the drain's schedule
ANNOUNCE_RETRY_EVERY = 2  # seconds between tries to create topics on an nsqd that was down


class Node:
    version = f"pushgate {__version__}"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = settings.node_name or default_node_name(settings.port)
        self.metrics = Metrics()
        self.hub = Hub()
        self.batcher = WriteBatcher(last_publication=lambda: self.hub.last_publication,
                                    on_flush=self.metrics.writes.inc)
        self.heartbeat = Heartbeat(settings.ping_interval, settings.pong_timeout, settings.connect_timeout)
        self.expiry = Expiry(settings.expired_close_delay)
        self.history = History(
            Retention(settings.history_size, settings.history_ttl),
            [(pattern, Retention(size, settings.history_ttl if ttl is None else ttl))
             for pattern, size, ttl in settings.history],
            memory_budget=settings.history_memory_bytes,
            margin_ns=int(settings.history_margin * 1e9),
        )
        self.sessions: set[Session] = set()
        self.user_connections: dict[str, int] = {}
        self.pending = PendingConnections(settings.max_pending_connections, self.metrics)
        self.capacity = connection_capacity(settings.max_connections, settings.max_pending_connections)
        self.trusted_networks = settings.trusted_networks
        self.connect_limiter = TokenBucket(settings.connect_rate, settings.connect_burst)
        self.draining = False
        self.verifier = None
        if settings.jwt_secret or settings.jwt_public_key:
            self.verifier = TokenVerifier(secret=settings.jwt_secret, public_key_pem=settings.jwt_public_key,
                                          audience=settings.jwt_audience, issuer=settings.jwt_issuer)
        mapped = dict(settings.map_topic)
        self.mapped = mapped
        self.ingest = Ingest(self.hub, self.metrics, self.history, envelope_topic=settings.topic, mapped=mapped,
                             max_message_bytes=settings.max_message_bytes,
                             max_message_age=settings.max_message_age,
                             dedupe_window=settings.dedupe_window, on_gap=self.streams_broken)
        self.source = NsqSource(topics=[settings.topic, *mapped], channel=settings.nsq_channel,
                                handler=self.ingest.handle, on_change=self._nsq_changed,
                                nsqd_tcp_addresses=settings.nsqd_tcp_address,
                                lookupd_http_addresses=settings.lookupd_http_address,
                                lookupd_poll_interval=settings.lookupd_poll_interval,
                                max_in_flight=settings.max_in_flight)
        self.watch = ChannelWatch(channel=settings.nsq_channel, topics=self.source.topics,
                                  connected=self.source.connected_addresses, on_loss=self._nsq_lost,
                                  lookupd_http_addresses=settings.lookupd_http_address,
                                  nsqd_http_address=settings.nsqd_http_address)
        self.held: set[Session] = set()   # sessions whose recovery waits for this node to catch up
        self._hold_timer: asyncio.TimerHandle | None = None
        self.loop_lag = 0.0               # seconds the loop ran late, recent maximum
        self._lag_probe: PeriodicCallback | None = None
        self._lag_expected = 0.0
        self._public_exact = frozenset(p for p in settings.public_channel_patterns if not p.endswith("*"))
        self._public_prefixes = tuple(p[:-1] for p in settings.public_channel_patterns if p.endswith("*"))
        self._origins = settings.origins
        self._ticker: PeriodicCallback | None = None
        self._ticks = 0
        self._unannounced: set[str] = set()  # topics not created on nsqd yet
        self._announcing = False
        self._announce_task: asyncio.Future | None = None

    async def start(self) -> None:
        """Start reading NSQ and the one-second timer. Runs inside the event loop."""
        if self.settings.lookupd_http_address:
            await self._announce_topics(self.source.topics)
        self.source.start()
        self.watch.start()
        self._ticker = PeriodicCallback(self._tick, 1000)
        self._ticker.start()
        self._lag_expected = time.monotonic() + LAG_PROBE
        self._lag_probe = PeriodicCallback(self._probe_lag, LAG_PROBE * 1000)
        self._lag_probe.start()
        log.info("node %s reading topics %s on channel %s", self.name, ", ".join(self.source.topics),
                 self.source.channel)

    def _tick(self) -> None:
        self.heartbeat.tick()
        self.expiry.check(time.time())
        self.pending.sweep()
        self._ticks += 1
        if self._ticks % HISTORY_SWEEP_EVERY == 0:
            self.history.sweep(time.time_ns())
        self.metrics.history_bytes.set(self.history.memory)
        self.metrics.loop_lag.set(self.loop_lag)
        self.source.report(time.monotonic())
        if self._unannounced and not self._announcing and self._ticks % ANNOUNCE_RETRY_EVERY == 0:
            self._announcing = True
            self._announce_task = asyncio.ensure_future(self._announce_topics(sorted(self._unannounced)))

    def _probe_lag(self) -> None:
        """How late the loop runs a timer: the one figure that says whether
        clients are being served on time. Admission sheds new connections while
        it is high (:meth:`admit_handshake`)."""
        now = time.monotonic()
        lag = max(0.0, now - self._lag_expected)
        self._lag_expected = now + LAG_PROBE
        # A recent maximum that decays, so one busy moment does not shed for long.
        self.loop_lag = max(lag, self.loop_lag * 0.5)

    def _nsq_changed(self) -> None:
        # Recovery can only be vouched for from the moment the node reads every
        # topic without a gap; any connection lost or made starts that anew.
        if self.source.reading_every_topic():
            self.history.continuity_from(time.time_ns())
        else:
            self.history.continuity_lost()

    def _nsq_lost(self, topic: str, nsqd: str, count: int) -> None:
        """nsqd dropped messages of ``topic`` meant for this node (ChannelWatch)."""
        self.metrics.nsq_lost.labels(topic).inc(count)
        channel = self.mapped.get(topic)
        if channel is not None:
            if self.history.gap(channel, time.time_ns()):
                self.streams_broken((channel,))
            return
        # The envelope topic names any channel: which ones lost a message is
        # unknown, so every position handed out so far is unrecoverable, and
        # every positioned subscriber is told.
        self.history.continuity_from(time.time_ns())
        for session in list(self.sessions):
            for channel in [c for c in session.channels if self.history.enabled(c)]:
                session.stream_broken(channel)

    def streams_broken(self, channels: tuple[str, ...]) -> None:
        """Publications of ``channels`` were lost here (history already has the
        gap): their subscribers missed them live too. Each is told, as
        Centrifugo's position check would: an unsubscribe push 2500 for a
        client-side subscription, a disconnect 3010 for a server-side one; the
        SDKs recover from their last position and learn the truth."""
        for channel in channels:
            for session in self.hub.subscribers(channel):
                session.stream_broken(channel)

    async def _announce_topics(self, topics: list[str]) -> None:
        # nsqlookupd only knows a topic once some nsqd has it; creating it on our
        # nsqd lets the readers find it before the first publish. An nsqd that is
        # not up yet is tried again every few seconds (see _tick).
        client = AsyncHTTPClient()
        self._announcing = True
        try:
            for topic in topics:
                url = f"{self.settings.nsqd_http_address}/topic/create?{urllib.parse.urlencode({'topic': topic})}"
                try:
                    await client.fetch(url, method="POST", body=b"", request_timeout=3, connect_timeout=2)
                except (HTTPClientError, OSError) as exc:
                    if topic not in self._unannounced:
                        log.warning("could not create topic %s at nsqd %s (%s); trying again every %d s "
                                    "(--nsqd-http-address)", topic, self.settings.nsqd_http_address, exc,
                                    ANNOUNCE_RETRY_EVERY)
                    self._unannounced.add(topic)
                else:
                    if topic in self._unannounced:
                        log.info("created topic %s at nsqd %s", topic, self.settings.nsqd_http_address)
                    self._unannounced.discard(topic)
        finally:
            self._announcing = False

    async def drain(self, period: float) -> None:
        """Stop taking connections and close the open ones with 3001, in random
        order and evenly spread over ``period`` seconds, so clients reconnect
        elsewhere with jitter instead of all at once. Meanwhile new WebSocket
        upgrades and /health get 503."""
        self.draining = True
        sessions = list(self.sessions)
        random.shuffle(sessions)
        log.info("draining %d connections over %.1f s", len(sessions), period)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i, session in enumerate(sessions):
            wait = started + period * i / len(sessions) - loop.time()
            if wait > DRAIN_STEP:  # closes due within a few ms of each other go together
                await asyncio.sleep(wait)
            session.close(protocol.DISCONNECT_SHUTDOWN)
        for session in list(self.sessions):  # any whose upgrade was under way when draining began
            session.close(protocol.DISCONNECT_SHUTDOWN)

    def stop(self) -> None:
        for timer in (self._ticker, self._lag_probe):
            if timer is not None:
                timer.stop()
        self.watch.stop()
        self.source.close()
        for session in list(self.sessions):
            session.close(protocol.DISCONNECT_SHUTDOWN)

    # --- used by transports and sessions -------------------------------------

    def accept(self, transport) -> Session:
        session = Session(self, transport)
        self.sessions.add(session)
        self.heartbeat.expect_connect(session)
        self.metrics.connections.inc()
        return session

    def overloaded(self) -> bool:
        """The loop runs late: new connections are turned away at the door."""
        return self.loop_lag > self.settings.shed_loop_lag

    def admit_handshake(self) -> str | None:
        """Whether a new connection may start its handshake; else the reason it
        is refused (HTTP 503; the SDKs retry with backoff). Checked before the
        WebSocket upgrade, the costliest part of a connect, so a flood is shed
        before it slows the clients already connected."""
        if self.draining:
            reason = "draining"
        elif len(self.sessions) >= self.capacity:
            reason = "capacity"
        elif self.overloaded():
            reason = "overloaded"
        elif not self.connect_limiter.take():
            reason = "rate"
        else:
            return None
        self.metrics.refused_connects.labels(reason).inc()
        return reason

    def admit(self, user: str) -> protocol.Disconnect | None:
        """The per-user cap, checked at connect."""
        cap = self.settings.max_user_connections
        if cap and user and self.user_connections.get(user, 0) >= cap:
            self.metrics.refused_connects.labels("user_limit").inc()
            return protocol.DISCONNECT_CONNECTION_LIMIT
        return None

    def hold(self, session: Session) -> None:
        """Poll ``session``'s held recovery from the one shared timer."""
        self.held.add(session)
        if self._hold_timer is None:
            self._hold_timer = asyncio.get_running_loop().call_later(HOLD_POLL, self._poll_held)

    def _poll_held(self) -> None:
        self._hold_timer = None
        now = time.monotonic()
        for session in list(self.held):
            if session.resume(now):
                self.held.discard(session)
        if self.held:
            self._hold_timer = asyncio.get_running_loop().call_later(HOLD_POLL, self._poll_held)

    def connected(self, session: Session) -> None:
        self.heartbeat.add(session)
        if session.user:
            self.user_connections[session.user] = self.user_connections.get(session.user, 0) + 1
        self.metrics.connects.inc()

    def forget(self, session: Session) -> None:
        self.held.discard(session)
        if session in self.sessions:
            self.sessions.discard(session)
            self.heartbeat.remove(session)
            self.metrics.connections.dec()
            if session.client_id and session.user:
                count = self.user_connections.get(session.user, 0) - 1
                if count > 0:
                    self.user_connections[session.user] = count
                else:
                    self.user_connections.pop(session.user, None)

    def verify_token(self, token: str) -> ConnectionClaims:
        if self.verifier is None:
            raise TokenInvalid("this gateway has no JWT key configured")
        return self.verifier.verify_connection(token)

    def verify_subscription_token(self, token: object, user: str, channel: str, client: str):
        if self.verifier is None:
            raise TokenInvalid("this gateway has no JWT key configured")
        return self.verifier.verify_subscription(token, user, channel, client)  # type: ignore[arg-type]

    def may_subscribe(self, user: str, channel: str) -> bool:
        """Client-side subscribe: only channels matched by --public-channels.

        Personal channels are never public: a user reads their own through the
        server-side subscription and nobody else's.
        """
        if channel.startswith(PERSONAL_PREFIX):
            return False
        return channel in self._public_exact or channel.startswith(self._public_prefixes)

    def subscribe_result(self, channel: str, request: dict | None) -> tuple[dict, bool | None]:
        """The SubscribeResult for ``channel``: its stream position when it keeps
        history, and the recovery answer when ``request`` asks to recover.
        Returns the result and whether it recovered (None: nothing asked)."""
        history = self.history
        if not history.enabled(channel):
            return {}, None
        now_ns = time.time_ns()
        offset = request.get("offset") if request else None
        if request and request.get("recover") and isinstance(offset, int) and not isinstance(offset, bool):
            answer = history.recover(channel, str(request.get("epoch") or ""), offset, now_ns)
            self.metrics.recoveries.labels("true" if answer.recovered else "false").inc()
            result = {"recoverable": True, "positioned": True, "epoch": answer.epoch, "offset": answer.offset,
                      "was_recovering": True, "recovered": answer.recovered}
            if answer.publications:
                result["publications"] = [protocol.publication(p.data, p.offset) for p in answer.publications]
            return result, answer.recovered
        epoch, top = history.top(channel, now_ns)
        return {"recoverable": True, "positioned": True, "epoch": epoch, "offset": top}, None

    def recovery_behind(self, cmd) -> bool:
        """A recovering connect or subscribe asks for a position this node has
        not received yet (the client came from a node that was ahead)."""
        now_ns = time.time_ns()
        if cmd.method == "subscribe":
            channel = cmd.params.get("channel")
            requests = {channel: cmd.params} if isinstance(channel, str) else {}
        else:
            subs = cmd.params.get("subs")
            requests = subs if isinstance(subs, dict) else {}
        return any(
            isinstance(request, dict) and request.get("recover") and isinstance(channel, str)
            and self.history.enabled(channel)
            and self.history.behind(channel, str(request.get("epoch") or ""), request.get("offset"), now_ns)
            for channel, request in requests.items())

    def origin_allowed(self, origin: str, host: str) -> bool:
        if not origin:
            return True
        origin = origin.lower().rstrip("/")
        if "*" in self._origins or origin in self._origins:
            return True
        # Same host as the request, whatever the scheme (Tornado's default rule).
        return urllib.parse.urlparse(origin).netloc == host.lower()
