"""The node: one gateway process, wiring hub, sessions, heartbeat and NSQ.

Sessions, transports and the NSQ source all talk to the rest of the gateway
through the node, which owns the shared parts: the :class:`Hub`, the
:class:`Heartbeat`, the :class:`WriteBatcher`, the token verifier, the
settings and the metrics.
"""
from __future__ import annotations

import logging
import urllib.parse

from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.ioloop import PeriodicCallback

from auth.tokens import ConnectionClaims, TokenInvalid, TokenVerifier
from gateway import __version__, protocol
from gateway.config import Settings, default_node_name
from gateway.envelope import PERSONAL_PREFIX
from gateway.heartbeat import Heartbeat
from gateway.hub import Hub
from gateway.ingest import Ingest
from gateway.metrics import Metrics
from gateway.nsq_source import NsqSource
from gateway.session import Session
from gateway.transports.stream import WriteBatcher

log = logging.getLogger("pushgate.node")


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
        self.sessions: set[Session] = set()
        self.verifier = None
        if settings.jwt_secret or settings.jwt_public_key:
            self.verifier = TokenVerifier(secret=settings.jwt_secret, public_key_pem=settings.jwt_public_key,
                                          audience=settings.jwt_audience, issuer=settings.jwt_issuer)
        mapped = dict(settings.map_topic)
        self.ingest = Ingest(self.hub, self.metrics, envelope_topic=settings.topic, mapped=mapped,
                             max_message_bytes=settings.max_message_bytes,
                             max_message_age=settings.max_message_age,
                             dedupe_window=settings.dedupe_window)
        self.source = NsqSource(topics=[settings.topic, *mapped], channel=settings.nsq_channel,
                                handler=self.ingest.handle,
                                nsqd_tcp_addresses=settings.nsqd_tcp_address,
                                lookupd_http_addresses=settings.lookupd_http_address,
                                lookupd_poll_interval=settings.lookupd_poll_interval,
                                max_in_flight=settings.max_in_flight)
        self._public_exact = frozenset(p for p in settings.public_channel_patterns if not p.endswith("*"))
        self._public_prefixes = tuple(p[:-1] for p in settings.public_channel_patterns if p.endswith("*"))
        self._origins = settings.origins
        self._ticker: PeriodicCallback | None = None

    async def start(self) -> None:
        """Start reading NSQ and the heartbeat. Runs inside the event loop."""
        if self.settings.lookupd_http_address:
            await self._announce_topics()
        self.source.start()
        self._ticker = PeriodicCallback(self.heartbeat.tick, 1000)
        self._ticker.start()
        log.info("node %s reading topics %s on channel %s", self.name, ", ".join(self.source.topics),
                 self.source.channel)

    async def _announce_topics(self) -> None:
        # nsqlookupd only knows a topic once some nsqd has it; creating it on our
        # nsqd lets the readers find it before the first publish.
        client = AsyncHTTPClient()
        for topic in self.source.topics:
            url = f"{self.settings.nsqd_http_address}/topic/create?{urllib.parse.urlencode({'topic': topic})}"
            try:
                await client.fetch(url, method="POST", body=b"", request_timeout=3, connect_timeout=2)
            except (HTTPClientError, OSError) as exc:
                log.warning("could not create topic %s at %s (%s); it is read once a publisher creates it",
                            topic, self.settings.nsqd_http_address, exc)

    def stop(self, disconnect: protocol.Disconnect = protocol.DISCONNECT_SHUTDOWN) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        self.source.close()
        for session in list(self.sessions):
            session.close(disconnect)

    # --- used by transports and sessions ------------------------------------

    def accept(self, transport) -> Session:
        session = Session(self, transport)
        self.sessions.add(session)
        self.heartbeat.expect_connect(session)
        self.metrics.connections.inc()
        return session

    def connected(self, session: Session) -> None:
        self.heartbeat.add(session)
        self.metrics.connects.inc()

    def forget(self, session: Session) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            self.heartbeat.remove(session)
            self.metrics.connections.dec()

    def verify_token(self, token: str) -> ConnectionClaims:
        if self.verifier is None:
            raise TokenInvalid("this gateway has no JWT key configured")
        return self.verifier.verify_connection(token)

    def verify_subscription_token(self, token: object, user: str, channel: str) -> None:
        if self.verifier is None:
            raise TokenInvalid("this gateway has no JWT key configured")
        self.verifier.verify_subscription(token, user, channel)  # type: ignore[arg-type]

    def may_subscribe(self, user: str, channel: str) -> bool:
        """Client-side subscribe: only channels matched by --public-channels.

        Personal channels are never public: a user reads their own through the
        server-side subscription and nobody else's.
        """
        if channel.startswith(PERSONAL_PREFIX):
            return False
        return channel in self._public_exact or channel.startswith(self._public_prefixes)

    def origin_allowed(self, origin: str, host: str) -> bool:
        if not origin:
            return True
        origin = origin.lower().rstrip("/")
        if "*" in self._origins or origin in self._origins:
            return True
        # Same host as the request, whatever the scheme (Tornado's default rule).
        return urllib.parse.urlparse(origin).netloc == host.lower()
