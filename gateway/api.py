"""HTTP endpoints beside the client transports: the publish API, health, metrics."""
from __future__ import annotations

import hmac
import logging
import os

import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.envelope import BadMessage, parse_envelope
from gateway.node import Node
from gateway.publisher import NsqdUnavailable, PublishError, publish

log = logging.getLogger("pushgate.api")


class JsonHandler(tornado.web.RequestHandler):
    def initialize(self, node: Node) -> None:
        self.node = node

    def answer(self, status: int, body: dict) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(body)


@tornado.web.stream_request_body
class PublishHandler(JsonHandler):
    """``POST /api/publish``: the envelope as the body, published into nsqd so
    that every node delivers it.

    200 published; 400 bad envelope (with the reason); 401 missing or wrong
    key; 403 the API is disabled (no --api-key); 413 too big; 503 nsqd
    unreachable.

    The body is streamed: the key is checked on the headers, before a byte of
    the body is read, and reading stops at --max-message-bytes, so an
    unauthenticated or oversized request costs no memory.
    """

    def initialize(self, node: Node) -> None:
        super().initialize(node)
        self._chunks: list[bytes] = []
        self._size = 0

    def prepare(self) -> None:
        settings = self.node.settings
        if self.request.method != "POST":
            return
        refusal = self._refusal()
        if refusal is None:
            limit = settings.max_message_bytes
            declared = self.request.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                refusal = 413, {"error": f"body over --max-message-bytes ({limit})"}
            else:
                # Tornado stops reading (and closes) past this. It hands the body
                # over in pieces of at most 64 KB, so data_received sees the one
                # that crosses the limit, and answers 413, first.
                self.request.connection.set_max_body_size(limit + 65536)
        if refusal is not None:
            status, body = refusal
            self.node.metrics.api_publishes.labels(str(status)).inc()
            self.set_header("Connection", "close")  # the unread body must not be parsed as a request
            self.answer(status, body)

    def _refusal(self) -> tuple[int, dict] | None:
        settings = self.node.settings
        if not settings.api_key:
            return 403, {"error": "publish API disabled: the gateway has no --api-key"}
        scheme, _, key = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "apikey" or not hmac.compare_digest(key.strip().encode(), settings.api_key.encode()):
            self.set_header("WWW-Authenticate", "apikey")
            return 401, {"error": "missing or wrong API key (Authorization: apikey <key>)"}
        return None

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self._size += len(chunk)
        if self._size > self.node.settings.max_message_bytes:
            self.node.metrics.api_publishes.labels("413").inc()
            self.set_header("Connection", "close")
            self.answer(413, {"error": f"body over --max-message-bytes ({self.node.settings.max_message_bytes})"})
            self._chunks = []
            return
        self._chunks.append(chunk)

    async def post(self) -> None:
        if self._finished:
            return
        status, body = await self._publish(b"".join(self._chunks))
        self.node.metrics.api_publishes.labels(str(status)).inc()
        self.answer(status, body)

    async def _publish(self, body: bytes) -> tuple[int, dict]:
        settings = self.node.settings
        try:
            parse_envelope(body)
        except BadMessage as exc:
            return 400, {"error": exc.detail}
        try:
            await publish(settings.nsqd_http_address, settings.topic, body)
        except NsqdUnavailable as exc:
            log.warning("publish API: nsqd at %s unreachable: %s", settings.nsqd_http_address, exc)
            return 503, {"error": "nsqd unreachable"}
        except PublishError as exc:
            log.warning("publish API: nsqd refused: %s", exc)
            return (exc.status if 400 <= exc.status < 500 else 502), {"error": f"nsqd: {exc.message}"}
        return 200, {}


def node_health(node: Node) -> tuple[int, dict]:
    """This node's own health: 200 once every topic (the control topic too) is
    read from at least one nsqd, 503 before and while draining."""
    source = node.source
    ready = source.reading_every_topic() and node.bus.ready() and not node.draining
    return (200 if ready else 503), {
        "node": node.name,
        "pid": os.getpid(),
        "draining": node.draining,
        "connections": len(node.sessions),
        "nsqd_connections": source.connection_count(),
    }


class HealthHandler(JsonHandler):
    """``GET /health``: this node's health (:func:`node_health`); on a box of
    workers, the box's: 200 when every worker is up and ready (gateway/box.py)."""

    own = False  # the private per-worker endpoint sets it

    async def get(self) -> None:
        node = self.node
        status, body = node_health(node)
        if node.box is not None and not self.own:
            status, body = await node.box.health((status, body))
        self.answer(status, body)


class MetricsHandler(JsonHandler):
    """``GET /metrics``: this node's metrics; on a box of workers, every
    worker's with a ``worker`` label, and the box's totals (gateway/box.py)."""

    own = False

    async def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        text = generate_latest(self.node.metrics.registry)
        if self.node.box is not None and not self.own:
            text = await self.node.box.metrics(text)
        self.finish(text)


class OwnHealthHandler(HealthHandler):
    own = True


class OwnMetricsHandler(MetricsHandler):
    own = True
