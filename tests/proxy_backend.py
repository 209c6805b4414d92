"""A small backend that answers Centrifugo's proxy calls, as an application
would: a real Tornado app on a real port. It signs users in with a cookie
(``GET /login?user=alice`` sets ``session``), and its proxy handlers decide
from that cookie and its rooms:

* ``/centrifugo/connect``: the signed-in user, with ``data`` (a greeting),
  ``info``, ``meta`` (kept by the gateway) and, when ``expire_in`` is set,
  ``expire_at``; no cookie: ``disconnect`` 4501 "unauthorized";
* ``/centrifugo/subscribe``: ``room:*`` channels, each with its members
  (``ROOMS``); a member gets ``data`` and ``info``, anyone else error 403;
* ``/centrifugo/publish``: allowed in rooms one belongs to, the data
  rewritten (``{"text": ..., "by": user}``), its ``tags`` and ``key`` as the
  result's ``tags`` and ``idempotency_key``;
* ``/centrifugo/rpc``: ``whoami``, ``echo``, ``fail`` (error 1000);
* ``/centrifugo/refresh``, ``/centrifugo/sub_refresh``: extend by
  ``extend`` seconds, or ``expired`` for users in ``expired_users``.

``mode`` makes every proxy handler misbehave: ``slow`` (5 s), ``500``,
``garbage`` (not JSON), ``bad-shape`` (JSON of the wrong shape). Every call
is recorded (``calls[kind]``: headers and body), and ``max_in_flight`` is
the most calls it ever had at once.

Run alone (``python -m tests.proxy_backend --port N``) it serves the same,
plus the browser test's page (``/``, with the centrifuge-js bundle).

With ``gateway`` (a node's http://host:port) it also forwards
``/connection/*`` and ``/emulation`` there, streaming, as a reverse proxy in
front of both would (nginx): the fallback transports' ``fetch`` and
``EventSource`` send the session cookie only to the page's own origin.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import time
from collections import defaultdict
from pathlib import Path

import tornado.web
from tornado.httpserver import HTTPServer

from pushgate_bridge import proxy as bridge

ROOT = Path(__file__).resolve().parents[1]
COOKIE_SECRET = b"proxy-backend-test-secret"
ROOMS = {"room:lobby": None, "room:staff": {"alice"}, "chat:index": None}   # None: everyone


def sign(user: str) -> str:
    mac = hmac.new(COOKIE_SECRET, user.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{user}.{mac}"


def signed_in(cookie_header: str) -> str | None:
    """The user of a ``session`` cookie, if its signature holds."""
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "session":
            user, _, mac = value.rpartition(".")
            if user and hmac.compare_digest(sign(user), value):
                return user
    return None


class Backend:
    def __init__(self, gateway: str | None = None) -> None:
        self.gateway = gateway
        self.calls: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
        self.mode: str | None = None
        self.delay = 0.0               # seconds each proxy call takes
        self.expire_in: int | None = None      # connect result's expire_at = now + expire_in
        self.sub_expire_in: int | None = None  # subscribe result's expire_at likewise
        self.extend = 60
        self.sub_override: dict | None = None   # the subscribe result's override
        self.refresh_info: object = None        # the refresh result's info
        self.expired_users: set[str] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self._server: HTTPServer | None = None
        self.port = 0

    # --- the decisions, one per proxy: request body (and headers) in, answer out ---------

    def connect(self, request: bridge.ProxyRequest) -> dict:
        user = signed_in(request.headers.get("Cookie", ""))
        if user is None:
            return bridge.disconnect(4501, "unauthorized")
        result = {"user": user, "data": {"hello": user, "sent": request.body.get("data")}, "info": {"name": user.title()},
                  "meta": {"session": f"s-{user}"}}
        if self.expire_in is not None:
            result["expire_at"] = int(time.time()) + self.expire_in
        return bridge.result(**result)

    def subscribe(self, request: bridge.ProxyRequest) -> dict:
        members = ROOMS.get(request.channel, set())
        if members is not None and request.user not in members:
            return bridge.error(403, "not in this room")
        result = {"data": {"welcome": request.channel, "user": request.user}, "info": {"role": "member"}}
        if self.sub_expire_in is not None:
            result["expire_at"] = int(time.time()) + self.sub_expire_in
        if self.sub_override is not None:
            result["override"] = self.sub_override
        return bridge.result(**result)

    def publish(self, request: bridge.ProxyRequest) -> dict:
        members = ROOMS.get(request.channel, set())
        if members is not None and request.user not in members:
            return bridge.error(403, "not in this room")
        fields = request.data if isinstance(request.data, dict) else {}
        text = fields.get("text")
        # A "!" message is not kept in history; "tags" and "key" become the
        # publication's tags and idempotency key.
        return bridge.result(data={"text": text, "by": request.user},
                             skip_history=True if str(text).startswith("!") else None,
                             tags=fields.get("tags"), idempotency_key=fields.get("key"))

    def rpc(self, request: bridge.ProxyRequest) -> dict:
        if request.method == "whoami":
            return bridge.result(data={"user": request.user, "meta": request.meta})
        if request.method == "echo":
            return bridge.result(data=request.data)
        if request.method == "getCurrentPrice":   # Centrifugo's documented example
            return bridge.result(data={"answer": "2019"})
        return bridge.error(1000, f"no method {request.method}")

    def refresh(self, request: bridge.ProxyRequest) -> dict:
        if request.user in self.expired_users:
            return bridge.result(expired=True)
        return bridge.result(expire_at=int(time.time()) + self.extend,
                             **({"info": self.refresh_info} if self.refresh_info is not None else {}))

    sub_refresh = refresh

    # --- the app ---------------------------------------------------------------------------

    def app(self) -> tornado.web.Application:
        routes: list = [
            (r"/login", LoginHandler),
            (r"/centrifugo/([a-z_]+)", ProxyHandler, {"backend": self}),
            (r"/", PageHandler),
            (r"/centrifuge\.js", BundleHandler),
        ]
        if self.gateway:
            routes.append((r"/(?:connection/.*|emulation)", GatewayHandler, {"upstream": self.gateway}))
        return tornado.web.Application(routes)

    async def start(self, port: int = 0) -> "Backend":
        self._server = HTTPServer(self.app())
        from tornado.netutil import bind_sockets
        sockets = bind_sockets(port, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self._server.add_sockets(sockets)
        return self

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.port}/centrifugo/{kind}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None


class LoginHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        user = self.get_argument("user")
        self.set_header("Set-Cookie", f"session={sign(user)}; Path=/; HttpOnly; SameSite=Lax")
        self.write({"user": user})


class ProxyHandler(tornado.web.RequestHandler):
    def initialize(self, backend: Backend) -> None:
        self.backend = backend

    async def post(self, kind: str) -> None:
        backend = self.backend
        body = json.loads(self.request.body)
        backend.calls[kind].append((dict(self.request.headers), body))
        backend.in_flight += 1
        backend.max_in_flight = max(backend.max_in_flight, backend.in_flight)
        try:
            if backend.delay:
                await asyncio.sleep(backend.delay)
            mode = backend.mode
            if mode == "slow":
                await asyncio.sleep(5)
            elif mode == "500":
                self.set_status(500)
                self.write("backend error")
                return
            elif mode == "garbage":
                self.write("<html>this is not JSON</html>")
                return
            elif mode == "bad-shape":
                self.write({"result": {"user": 42, "data": 1}, "error": "not an object"})
                return
            handler = getattr(backend, kind, None)
            if handler is None:
                self.set_status(404)
                return
            request = bridge.parse_request(self.request.body, dict(self.request.headers))
            self.set_header("Content-Type", "application/json")
            self.write(json.dumps(handler(request)))
        finally:
            backend.in_flight -= 1


class GatewayHandler(tornado.web.RequestHandler):
    """Forwards a request to the gateway and streams its answer back (an HTTP
    stream, an SSE stream, an /emulation call). Only the headers a reverse
    proxy would pass on go through."""

    PASSED = ("cookie", "content-type", "accept", "origin", "last-event-id")

    def initialize(self, upstream: str) -> None:
        self.upstream = upstream
        self.gone = False

    def on_connection_close(self) -> None:
        self.gone = True

    async def forward(self) -> None:
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest

        def header(line: str) -> None:
            if line.startswith("HTTP/"):
                self.set_status(int(line.split()[1]))
                return
            name, _, value = line.partition(":")
            if name.strip().lower() in ("content-type", "cache-control"):
                self.set_header(name.strip(), value.strip())

        def chunk(data: bytes) -> None:
            if self.gone:
                raise ConnectionError("the browser went away")   # ends the upstream request too
            self.write(data)
            self.flush()

        headers = {k: v for k, v in self.request.headers.get_all() if k.lower() in self.PASSED}
        request = HTTPRequest(self.upstream + self.request.uri, method=self.request.method, headers=headers,
                              body=self.request.body if self.request.method == "POST" else None,
                              header_callback=header, streaming_callback=chunk, request_timeout=3600)
        try:
            await AsyncHTTPClient(max_clients=50).fetch(request, raise_error=False)
        except ConnectionError:
            return
        if not self.gone:
            self.finish()

    get = post = forward


class PageHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write((ROOT / "tests" / "browser" / "proxy.html").read_text())


class BundleHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/javascript")
        self.write((ROOT / "node_modules" / "centrifuge" / "dist" / "centrifuge.js").read_bytes())


async def main(port: int) -> None:
    backend = await Backend().start(port)
    print(f"proxy backend on http://127.0.0.1:{backend.port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
