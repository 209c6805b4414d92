"""HTTP endpoints beside the client transports: the server API, health, metrics."""
from __future__ import annotations

import hmac
import logging
import os

import tornado.web
import ujson
from tornado.http1connection import HTTP1Connection
from tornado.httputil import HTTPServerRequest
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.protocols.centrifugo.json_codec import encode
from gateway.nsq.envelope import BadMessage, parse_envelope
from gateway.node import Node
from gateway.nsq.publisher import NsqdUnavailable, PublishError, publish
from gateway.ops.server_api import BadRequest, ServerApi
from gateway.transports.http import over

log = logging.getLogger("pushgate.api")


class JsonHandler(tornado.web.RequestHandler):
    node: Node  # set by each handler's initialize

    def answer(self, status: int, body: dict) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(body)


API_BODY_LIMIT = 65536          # bytes of a server API request other than a publication
BATCH_BODY_LIMIT = 1 << 20      # bytes of a batch, or of /api commands


def api_key_of(request: HTTPServerRequest) -> tuple[str | None, bool]:
    """The key a request presents, and whether it came in ``X-API-Key``."""
    key = request.headers.get("X-API-Key")
    if key is not None:
        return key.strip(), True
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "apikey":
        return value.strip(), False
    return None, False


@tornado.web.stream_request_body
class ApiHandler(JsonHandler):
    """The server API: ``POST /api/<method>`` and ``POST /api`` (Centrifugo's,
    :mod:`gateway.ops.server_api`), and pushgate's own ``POST /api/publish``.

    ``/api/publish`` authenticated with ``Authorization: apikey`` (and no
    ``X-API-Key``) answers as documented in docs/nsq-contract.md: the body is
    an envelope; 200 ``{}``; 400 bad envelope (with the reason); 401 missing
    or wrong key; 403 the API is disabled (no --api-key); 413 too big; 503
    nsqd unreachable.

    The body is streamed: the key is checked on the headers, before a byte of
    the body is read, and reading stops at the method's limit, so an
    unauthenticated or oversized request costs no memory.
    """

    def initialize(self, node: Node, api: ServerApi) -> None:
        self.node = node
        self.api = api
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = API_BODY_LIMIT
        self._method = ""
        self._envelope = False   # pushgate's /api/publish answers

    def prepare(self) -> None:
        if self.request.method != "POST":
            return
        settings = self.node.settings
        self._method = method = self.path_args[0] if self.path_args else ""
        key, x_api_key = api_key_of(self.request)
        self._envelope = method == "publish" and not x_api_key
        if self._envelope or method in ("publish", "broadcast"):
            self._limit = settings.max_message_bytes + (0 if self._envelope else 4096)
        elif method in ("", "batch"):
            self._limit = max(BATCH_BODY_LIMIT, settings.max_message_bytes)
        refusal = self._refusal(key)
        if refusal is None:
            if method and method != "batch" and method not in self.api.methods:
                refusal = 404, {"error": f"no such server API method: {method}"}
            else:
                declared = self.request.headers.get("Content-Length")
                if declared is not None and over(declared, self._limit):
                    refusal = 413, {"error": self._too_big()}
                else:
                    # Tornado stops reading (and closes) past this. It hands the body
                    # over in pieces of at most 64 KB, so data_received sees the one
                    # that crosses the limit, and answers 413, first. (Tornado's server
                    # connections are HTTP1Connections; the interface has no such method.)
                    connection = self.request.connection
                    if isinstance(connection, HTTP1Connection):
                        connection.set_max_body_size(self._limit + 65536)
        if refusal is not None:
            status, body = refusal
            self._count(str(status))
            self.set_header("Connection", "close")  # the unread body must not be parsed as a request
            self.answer(status, body)

    def _too_big(self) -> str:
        if self._envelope or self._method in ("publish", "broadcast"):
            return f"body over --max-message-bytes ({self.node.settings.max_message_bytes})"
        return f"body over {self._limit} bytes"

    def _count(self, result: str) -> None:
        if self._envelope:
            self.node.metrics.api_publishes.labels(result).inc()
        else:
            self.node.metrics.api_calls.labels(self._method or "api", result).inc()

    def _refusal(self, key: str | None) -> tuple[int, dict] | None:
        settings = self.node.settings
        if not settings.api_key:
            what = "publish API" if self._envelope else "server API"
            return 403, {"error": f"{what} disabled: the gateway has no --api-key"}
        if key is None or not hmac.compare_digest(key.encode(), settings.api_key.encode()):
            self.set_header("WWW-Authenticate", "apikey")
            return 401, {"error": "missing or wrong API key (X-API-Key: <key>, or Authorization: apikey <key>)"
                         if not self._envelope else "missing or wrong API key (Authorization: apikey <key>)"}
        return None

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self._size += len(chunk)
        if self._size > self._limit:
            self._count("413")
            self.set_header("Connection", "close")
            self.answer(413, {"error": self._too_big()})
            self._chunks = []
            return
        self._chunks.append(chunk)

    async def post(self, method: str = "") -> None:
        if self._finished:
            return
        body = b"".join(self._chunks)
        if self._envelope:
            status, answer = await self._publish(body)
            self.node.metrics.api_publishes.labels(str(status)).inc()
            self.answer(status, answer)
            return
        if not method:
            await self._commands(body)
            return
        try:
            params = ujson.loads(body) if body.strip() else {}
        except (ValueError, OverflowError):
            params = None
        if type(params) is not dict:
            self._count("400")
            self.answer(400, {"error": "the body is not a JSON object"})
            return
        try:
            if method == "batch":
                reply = encode(await self.api.batch(params))
            else:
                reply = encode(await self.api.reply(method, params))
        except BadRequest as exc:
            self._count("400")
            self.answer(400, {"error": f"bad request: {exc}"})
            return
        self._reply(reply)

    async def _commands(self, body: bytes) -> None:
        """``/api``: Centrifugo v4's commands, ``{"id", "method", "params"}``, one a line."""
        try:
            replies = await self.api.commands(body)
        except BadRequest as exc:
            self._count("400")
            self.answer(400, {"error": str(exc)})
            return
        self._reply(b"\n".join(replies))

    def _reply(self, body: bytes) -> None:
        self.set_status(200)
        self.set_header("Content-Type", "application/json")
        self.finish(body)

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
    ready = node.reading() and not node.draining
    return (200 if ready else 503), {
        "node": node.name,
        "pid": os.getpid(),
        "draining": node.draining,
        "connections": len(node.sessions),
        "nsqd_connections": source.connection_count(),
    }


class HealthHandler(JsonHandler):
    """``GET /health``: this node's health (:func:`node_health`); on a box of
    workers, the box's: 200 when every worker is up and ready (gateway/workers/box.py)."""

    own = False  # the private per-worker endpoint sets it

    def initialize(self, node: Node) -> None:
        self.node = node

    async def get(self) -> None:
        node = self.node
        status, body = node_health(node)
        if node.box is not None and not self.own:
            status, body = await node.box.health((status, body))
        self.answer(status, body)


class MetricsHandler(JsonHandler):
    """``GET /metrics``: this node's metrics; on a box of workers, every
    worker's with a ``worker`` label, and the box's totals, made at most once
    a second (gateway/workers/box.py)."""

    own = False

    def initialize(self, node: Node) -> None:
        self.node = node

    async def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        registry = self.node.metrics.registry
        if self.node.box is not None and not self.own:
            text = await self.node.box.metrics(lambda: generate_latest(registry))   # at most a second old
        else:
            text = generate_latest(registry)
        self.finish(text)


class OwnHealthHandler(HealthHandler):
    own = True


class OwnMetricsHandler(MetricsHandler):
    own = True
