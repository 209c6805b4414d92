"""The node: one gateway process, wiring the session host, NSQ, timers and
the door.

* The :class:`~gateway.core.host.SessionHost` holds what sessions share (hub,
  history, expiry, heartbeat, token verifier, subscribe rules, metrics) and
  the registry of open sessions; sessions see only it.
* NSQ comes in through :class:`NsqSource`, :class:`Ingest` and
  :class:`ChannelWatch` (which tells when nsqd lost messages for this node).
* One one-second timer runs the heartbeat, token expiry, housekeeping and
  the samples of the last hour's figures (/admin's charts); a 100 ms probe
  measures how late the loop runs.
* The door: admission before the WebSocket upgrade (drain, capacity, rate,
  overload), pending-socket bookkeeping, browser origins. Transports see the
  node; sessions do not.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
import urllib.parse
from typing import TYPE_CHECKING, Callable

from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.ioloop import PeriodicCallback

from auth.jwks import KeyStore
from auth.tokens import TokenVerifier
from gateway.backend import jwks
from gateway.core import vocabulary
from gateway.cluster.bus import ControlBus
from gateway.cluster.events import Events
from gateway.config import Settings, default_node_name
from gateway.core.expiry import Expiry
from gateway.core.heartbeat import Heartbeat
from gateway.core.history import History, Retention
from gateway.core.host import SessionHost
from gateway.core.hub import Hub
from gateway.nsq.ingest import Ingest
from gateway.core.limits import TokenBucket, connection_capacity
from gateway.core.metrics import Metrics
from gateway.core.trends import Trends
from gateway.core.wire import SessionIds
from gateway.heap import HeapTrim
from gateway.nsq import publisher
from gateway.nsq.source import NsqSource
from gateway.nsq.watch import ChannelWatch
from gateway.cluster.peering import Peering
from gateway.cluster.peers import incarnation_id
from gateway.cluster.presence import Presence
from gateway.transports.door import PendingConnections, client_address
from gateway.transports.stream import Closing, WriteBatcher

if TYPE_CHECKING:
    from gateway.workers.box import Box
    from gateway.core.session import Session

log = logging.getLogger("pushgate.node")

HISTORY_SWEEP_EVERY = 10  # seconds for a sweep of every channel's history, a slice a second
LAG_PROBE = 0.1           # seconds between event-loop lag probes
DRAIN_STEP = 0.005  # seconds: the finest grain of the drain's schedule
LAST_WORDS_WAIT = 15.0  # seconds the backend's last calls may take at shutdown, all together
ANNOUNCE_RETRY_EVERY = 2  # seconds between tries to create topics on an nsqd that was down


class Node:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = settings.node_name or default_node_name(settings.port)
        self.metrics = Metrics()
        hub = Hub()
        history = History(
            Retention(settings.history_size, settings.history_ttl),
            [(pattern, Retention(size, settings.history_ttl if ttl is None else ttl))
             for pattern, size, ttl in settings.history],
            memory_budget=settings.history_memory_bytes,
            margin_ns=int(settings.history_margin * 1e9),
        )
        verifier = None
        # The keys of --jwks-url, by kid: fetched at start (start()), hourly, and on an unknown kid.
        self.jwks = KeyStore(jwks.fetcher(settings.jwks_url), url=settings.jwks_url,
                             min_interval=settings.jwks_refetch_interval,
                             on_fetch=lambda outcome: self.metrics.jwks_fetches.labels(outcome).inc()) if settings.jwks_url else None
        if settings.jwt_secret or settings.jwt_public_key or self.jwks is not None:
            verifier = TokenVerifier(secret=settings.jwt_secret, public_key_pem=settings.jwt_public_key,
                                     audience=settings.jwt_audience, issuer=settings.jwt_issuer,
                                     previous_secret=settings.jwt_previous_secret, jwks=self.jwks,
                                     user_claim=settings.jwt_user_claim)
        # Presence and join/leave: every node's subscribers of the tracked channels,
        # kept in step by peering; without --presence or --join-leave it tracks nothing.
        self.presence = Presence(uid=incarnation_id(), name=self.name, presence=settings.presence,
                                 join_leave=settings.join_leave, max_clients=settings.presence_max_clients,
                                 ttl=settings.presence_ttl, hub=hub, metrics=self.metrics, clock=time.monotonic,
                                 explicit=bool(settings.cable_rpc_url))
        self.host = SessionHost(
            settings, self.metrics, hub=hub, history=history, verifier=verifier, name=self.name,
            presence=self.presence,
            expiry=Expiry(settings.expired_close_delay),
            heartbeat=Heartbeat(settings.ping_interval, settings.pong_timeout, settings.connect_timeout,
                                behind=self._behind))
        self.batcher = WriteBatcher(last_publication=lambda: hub.last_publication,
                                    on_flush=self.metrics.writes.inc)
        self.pending = PendingConnections(settings.max_pending_connections, self.metrics)
        self.capacity = connection_capacity(settings.max_connections, settings.max_pending_connections)
        self.trusted_networks = settings.trusted_networks
        # Emulated streams' session ids, which the other nodes check before they
        # forward a command to one (gateway/protocols/centrifugo/emulation.py).
        self.session_ids = SessionIds()
        self.connect_limiter = TokenBucket(settings.connect_rate, settings.connect_burst)
        self.draining = False
        self.mapped = dict(settings.map_topic)
        self.ingest = Ingest(hub, self.metrics, history, envelope_topic=settings.topic, mapped=self.mapped,
                             max_message_bytes=settings.max_message_bytes,
                             max_message_age=settings.max_message_age,
                             dedupe_window=settings.dedupe_window, on_gap=self.host.streams_broken,
                             sockets=self.host.sockets)
        self.host.publish = self._publish
        self.source = NsqSource(topics=[settings.topic, *self.mapped], channel=settings.nsq_channel,
                                handler=self.ingest.handle, on_change=self._nsq_changed,
                                on_drop=self._nsq_dropped,
                                nsqd_tcp_addresses=settings.nsqd_tcp_address,
                                lookupd_http_addresses=settings.lookupd_http_address,
                                lookupd_poll_interval=settings.lookupd_poll_interval,
                                max_in_flight=settings.max_in_flight)
        self.bus = ControlBus(node=self.name, topic=settings.control_topic, channel=settings.nsq_channel,
                              nsqd_http_address=settings.nsqd_http_address,
                              nsqd_tcp_addresses=settings.nsqd_tcp_address,
                              lookupd_http_addresses=settings.lookupd_http_address,
                              lookupd_poll_interval=settings.lookupd_poll_interval, metrics=self.metrics,
                              cluster=settings.topic)
        # The backend's events (--events-topic): off, nothing is built and the
        # session host keeps NO_EVENTS.
        self.events: Events | None = None
        if settings.events_topic:
            self.events = Events(settings=settings, name=self.name, uid=self.presence.uid, metrics=self.metrics,
                                 bus=self.bus, presence=self.presence)
            self.host.events = self.events
            self.ingest.on_receipt = self.events.receipt
        # The last hour of figures for /admin's charts, sampled by _tick.
        self.trends = Trends(self.metrics, connections=lambda: len(self.host.sessions), started=time.monotonic())
        # Heartbeats, presence and the server API's cluster-wide actions over the bus.
        self.peering = Peering(self)
        self.loss_watch = ChannelWatch(channel=settings.nsq_channel, topics=self.source.topics,
                                       connected=self.source.connected_addresses, on_loss=self._nsq_lost,
                                       lookupd_http_addresses=settings.lookupd_http_address,
                                       nsqd_http_address=settings.nsqd_http_address,
                                       on_settled=self._nsq_settled)
        self.heap = HeapTrim()            # gives what a burst left freed back to the system
        self.loop_lag = 0.0               # seconds the loop ran late, recent maximum
        self._lag_probe: PeriodicCallback | None = None
        self._lag_expected = 0.0
        self._origins = settings.origins
        self._ticker: PeriodicCallback | None = None
        self._ticks = 0
        self.closing = Closing()   # WebSockets and streams finishing their close, cut after CLOSE_WAIT
        self.loop: asyncio.AbstractEventLoop | None = None
        self.box: Box | None = None  # the other workers of this box (gateway/workers/box.py), when there are any
        self._unannounced: set[str] = set()  # topics not created on nsqd yet
        self._announcing = False
        self._announce_task: asyncio.Future | None = None

    @property
    def sessions(self) -> set[Session]:
        return self.host.sessions

    # --- what transports use (gateway.transports.host.TransportHost) ------------------------

    @property
    def session_host(self) -> SessionHost:
        return self.host

    @property
    def max_queue_bytes(self) -> int:
        return self.settings.max_queue_bytes

    def watch(self, fd: int, on_readable: Callable[[], None]) -> None:
        assert self.loop is not None, "the node has not started"
        self.loop.add_reader(fd, on_readable)

    def unwatch(self, fd: int) -> None:
        assert self.loop is not None
        self.loop.remove_reader(fd)

    def client_address(self, peer: str, forwarded_for: str, real_ip: str) -> str:
        return client_address(peer, forwarded_for, real_ip, self.trusted_networks)

    def emulation_session_id(self) -> str:
        return self.session_ids.new()

    def reading(self) -> bool:
        """Every topic, the control topic too, has an nsqd to read from."""
        return self.source.reading_every_topic() and self.bus.ready()

    async def start(self) -> None:
        """Start reading NSQ and the timers. Runs inside the event loop."""
        self.loop = asyncio.get_running_loop()
        if self.jwks is not None:
            self.jwks.refresh()   # in the background: a connect before it ends waits for it (KeyPending)
        if self.settings.lookupd_http_address:
            events_topics = [self.settings.events_topic] if self.settings.events_topic else []
            await self._announce_topics([*self.source.topics, self.bus.topic, *events_topics])
        self.source.start()
        self.bus.start()
        self.peering.start()
        if self.events is not None:
            self.events.start()
        self.loss_watch.start()
        self._ticker = PeriodicCallback(self._tick, 1000)
        self._ticker.start()
        self._lag_expected = time.monotonic() + LAG_PROBE
        self._lag_probe = PeriodicCallback(self._probe_lag, LAG_PROBE * 1000)
        self._lag_probe.start()
        log.info("node %s reading topics %s and control topic %s on channel %s", self.name,
                 ", ".join(self.source.topics), self.bus.topic, self.source.channel)

    def _tick(self) -> None:
        host = self.host
        deferred = host.heartbeat.deferred
        host.heartbeat.tick()
        if host.heartbeat.deferred > deferred:
            self.metrics.pong_checks_deferred.inc(host.heartbeat.deferred - deferred)
        host.fast_heartbeat.tick()
        host.expiry.check(time.time())
        self.pending.sweep(time.monotonic(), self.settings.handshake_timeout)
        self.closing.sweep(time.monotonic())
        self._ticks += 1
        host.history.sweep(time.time_ns(), slices=HISTORY_SWEEP_EVERY)
        self.metrics.history_bytes.set(host.history.memory)
        released = self.heap.released
        if self.heap.tick(time.monotonic()):
            self.metrics.heap_released.inc(self.heap.released - released)
        self.metrics.heap_free.set(self.heap.free)
        self.metrics.loop_lag.set(self.loop_lag)
        now = time.monotonic()
        self.trends.tick(time.time(), now)  # a sample every trends.STEP seconds, from the counters
        self.source.report(now)
        self.loss_watch.settle_overdue(now)
        self.host.history.live_positions = not self.loss_watch.unsure
        self.bus.source.report(now)   # without the control topic /health is 503 too: say why
        if self._unannounced and not self._announcing and self._ticks % ANNOUNCE_RETRY_EVERY == 0:
            self._announcing = True
            self._announce_task = asyncio.ensure_future(self._announce_topics(sorted(self._unannounced)))

    def _behind(self) -> float:
        """How far behind this node is: its loop's lag, or the age of the
        oldest frame its write path has not written yet (the heartbeat does
        not blame clients for it)."""
        return max(self.loop_lag, self.batcher.behind(time.perf_counter()))

    def _probe_lag(self) -> None:
        """How late the loop runs a timer: the one figure that says whether
        clients are being served on time. Admission sheds new connections while
        it is high (:meth:`admit_handshake`)."""
        now = time.monotonic()
        lag = max(0.0, now - self._lag_expected)
        self._lag_expected = now + LAG_PROBE
        # A recent maximum that decays, so one busy moment does not shed for long.
        self.loop_lag = max(lag, self.loop_lag * 0.5)

    # --- NSQ ----------------------------------------------------------------------------

    def _nsq_changed(self) -> None:
        # Recovery can only be vouched for from the moment the node reads every
        # topic without a gap; any connection lost or made starts that anew.
        if self.source.reading_every_topic():
            self.host.history.continuity_from(time.time_ns())
        else:
            self.host.history.continuity_lost()
        self.loss_watch.poll_soon()  # knows each nsqd's instance from the first connection on

    def _nsq_dropped(self, topic: str, nsqd: str) -> None:
        """A reader's connection to ``nsqd`` dropped: what its channel held may be lost.
        Until the watch has read the channel it reconnects to, publications go
        live without positions (gateway/nsq/watch.py, "unsure until read")."""
        self.loss_watch.dropped(topic, nsqd)
        self.host.history.live_positions = False

    def _nsq_settled(self) -> None:
        """Every dropped connection is settled: a loss, if any, is known and told."""
        self.host.history.live_positions = True

    def _nsq_lost(self, topic: str, nsqd: str, count: int) -> None:
        """nsqd dropped messages of ``topic`` meant for this node (ChannelWatch;
        ``count`` 0: how many is unknown, its channel for this node was made anew)."""
        self.metrics.nsq_lost.labels(topic).inc(count)
        channel = self.mapped.get(topic)
        if channel is None:
            # The envelope topic names any channel: which ones lost a message is unknown.
            self.host.everything_broken()
        elif self.host.history.gap(channel, time.time_ns()):
            self.host.streams_broken((channel,))

    async def _publish(self, envelope: bytes) -> bool:
        """An envelope to every node through nsqd (a client's whisper)."""
        try:
            await publisher.publish(self.settings.nsqd_http_address, self.settings.topic, envelope,
                                    timeout=self.settings.cable_rpc_timeout)
        except (publisher.PublishError, publisher.NsqdUnavailable) as exc:
            log.error("publish through nsqd at %s failed: %s", self.settings.nsqd_http_address, exc)
            return False
        return True

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

    # --- shutdown -------------------------------------------------------------------------

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
            session.close(vocabulary.SHUTDOWN)
        for session in list(self.sessions):  # any whose upgrade was under way when draining began
            session.close(vocabulary.SHUTDOWN)
        await self.last_words()

    async def last_words(self) -> None:
        """Wait for the backend calls closed connections still owe (the Rails
        app's disconnect), each bounded by its own timeout and retries."""
        pending = self.host.last_words
        if pending:
            log.info("waiting for %d closed connections' last calls to the backend", len(pending))
            await asyncio.wait(list(pending), timeout=LAST_WORDS_WAIT)

    async def stop(self) -> None:
        """Stop timers, say goodbye to the other nodes, then close the NSQ
        connections (in that order: nsqd still has to take the goodbye)."""
        for timer in (self._ticker, self._lag_probe):
            if timer is not None:
                timer.stop()
        await self.peering.stop()
        self.loss_watch.stop()
        if self.events is not None:
            # The last disconnects are events: published before the node lets go of nsqd.
            for session in list(self.sessions):
                session.close(vocabulary.SHUTDOWN)
            await self.events.stop()
        await asyncio.gather(self.source.close(), self.bus.close())
        for session in list(self.sessions):
            session.close(vocabulary.SHUTDOWN)
        await self.last_words()

    # --- the door: used by transports ----------------------------------------------------

    def overloaded(self) -> bool:
        """The loop runs late: new client connections are refused at admission."""
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

    def explain_refusal(self, reason: str) -> str:
        """The refusal ``reason`` of :meth:`admit_handshake` in words, naming
        the limit (the flag, its value): for the log line of the 503."""
        s = self.settings
        if reason == "draining":
            return "refused: the node is draining (SIGTERM), the client reconnects to another node"
        if reason == "capacity":
            limit = s.max_connections or f"0, so {self.capacity} from the open-file limit"
            return f"refused: at capacity, {len(self.sessions)} connections (--max-connections {limit})"
        if reason == "overloaded":
            return (f"refused: overloaded, the event loop runs {self.loop_lag * 1000:.0f} ms late "
                    f"(--shed-loop-lag {s.shed_loop_lag:g} s)")
        if reason == "rate":
            return f"refused: over --connect-rate {s.connect_rate:g}/s (--connect-burst {s.connect_burst})"
        return f"refused: {reason}"

    def origin_allowed(self, origin: str, host: str) -> bool:
        if not origin:
            return True
        origin = origin.lower().rstrip("/")
        if "*" in self._origins or origin in self._origins:
            return True
        # Same host as the request, whatever the scheme (Tornado's default rule).
        return urllib.parse.urlparse(origin).netloc == host.lower()
