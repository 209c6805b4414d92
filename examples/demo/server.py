"""The browser demo started by `make run`: a small backend in front of pushgate.

    python examples/demo/server.py            # then open http://127.0.0.1:8080

It does what your own backend would do:

- lets a browser "log in" under any name (no password: it is a demo) and
  keeps the name in a signed cookie (derived from the JWT secret, so it
  survives a restart);
- hands the page a connection token for that user
  (``pushgate_bridge.connection_token``), and a fresh one at ``/token``
  when the SDK asks for it (401 once the user has logged out);
- publishes through NSQ with the Python bridge: chat messages to the shared
  channel ``chat``, notifications to a user's personal channel ``#<user>``,
  and every ``--tick-interval`` seconds a personal event to each user whose
  page is open. A page says it is open at ``/online`` each time it connects
  to the gateway and every minute after, so after a restart of this backend
  (``make run`` stopped and started again) the events resume without a
  reload.

The page itself (``index.html``, ``static/``) uses the stock centrifuge-js
SDK from npm (``node_modules/centrifuge``, installed by `make run`),
served from here. The browser connects to the gateway directly, so the
gateway must allow this page's origin (``--allowed-origins``, see
``Procfile.dev``).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import re
import signal
import sys
import time
import urllib.parse
from pathlib import Path

import tornado.escape
import tornado.web

import pushgate_bridge
from pushgate_bridge import AsyncPublisher, PublishError, Publisher

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CENTRIFUGE_DIST = ROOT / "node_modules" / "centrifuge" / "dist"
DEV_SECRET = "dev-secret-change-me-in-production"

USER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
MAX_TEXT = 500
CHECK_IN_EVERY = 60  # seconds between a page's /online calls; a user counts for 3 of them

log = logging.getLogger("demo")


class Users:
    """Whose page is open: a user counts for ``keep`` seconds after their
    page last said so (``/online``, or a token fetch). In memory only: after
    a restart, the pages say so again when they reconnect."""

    def __init__(self, keep: float):
        self.keep = keep
        self.last_seen: dict[str, float] = {}

    def seen(self, user: str) -> None:
        self.last_seen[user] = time.monotonic()

    def gone(self, user: str) -> None:
        self.last_seen.pop(user, None)

    def active(self) -> list[str]:
        cutoff = time.monotonic() - self.keep
        for user in [u for u, t in self.last_seen.items() if t < cutoff]:
            del self.last_seen[user]
        return sorted(self.last_seen)


class Handler(tornado.web.RequestHandler):
    @property
    def demo(self) -> "Demo":
        return self.application.settings["demo"]

    def get_current_user(self) -> str | None:
        raw = self.get_signed_cookie("user")
        name = raw.decode() if raw else None
        return name if name and USER_NAME.match(name) else None

    def json_body(self) -> dict:
        try:
            body = tornado.escape.json_decode(self.request.body or b"{}")
        except ValueError:
            raise tornado.web.HTTPError(400, reason="body is not JSON") from None
        if not isinstance(body, dict):
            raise tornado.web.HTTPError(400, reason="body is not a JSON object")
        return body

    def text(self, body: dict, key: str, default: str = "") -> str:
        value = body.get(key, default)
        text = value.strip() if isinstance(value, str) else ""
        if not text or len(text) > MAX_TEXT:
            raise tornado.web.HTTPError(400, reason=f"{key}: 1 to {MAX_TEXT} characters")
        return text

    async def publish(self, call, *args) -> None:
        try:
            await call(*args)
        except PublishError as exc:  # nsqd down or refusing: tell the page
            log.warning("publish failed: %s", exc)
            raise tornado.web.HTTPError(503, reason="could not publish: is nsqd running?") from None
        self.set_status(204)

    def write_error(self, status_code: int, **kwargs) -> None:
        self.finish({"error": self._reason})

    def page_query(self, raw: str) -> str:
        """The page's own query string (``?transports=sse``), carried through
        logging in and out: rebuilt from its parameters, so it can only ever
        be a query for ``/``."""
        return urllib.parse.urlencode(urllib.parse.parse_qsl(raw)[:10], safe=",")

    def back_to_page(self, query: str) -> None:
        self.redirect("/?" + query if query else "/")


class PageHandler(Handler):
    def get(self) -> None:
        user = self.current_user
        config = None
        if user:
            self.demo.users.seen(user)
            config = {
                "user": user,
                "token": self.demo.token(user),
                "gatewayUrl": self.demo.gateway_url(self.request.host_name),
                "xsrf": self.xsrf_token.decode(),
                "tickInterval": self.demo.tick_interval,
                "checkInEvery": CHECK_IN_EVERY,
            }
        self.set_header("Cache-Control", "no-store")
        self.render("index.html", user=user, config=config, error=None, query=self.page_query(self.request.query))


class LoginHandler(Handler):
    def post(self) -> None:
        name = self.get_body_argument("name", "").strip()
        query = self.page_query(self.get_body_argument("query", ""))
        if not USER_NAME.match(name):
            self.set_status(400)
            self.render("index.html", user=None, config=None, query=query,
                        error="A name is 1 to 32 letters, digits, '.', '_' or '-'.")
            return
        self.set_signed_cookie("user", name, expires_days=7, httponly=True, samesite="Lax")
        self.demo.users.seen(name)
        log.info("%s logged in", name)
        self.back_to_page(query)  # the page as it was asked for: ?transports=sse stays


class LogoutHandler(Handler):
    @tornado.web.authenticated
    def post(self) -> None:
        self.demo.users.gone(self.current_user)
        self.clear_cookie("user")
        self.back_to_page(self.page_query(self.get_body_argument("query", "")))


class TokenHandler(Handler):
    """A fresh connection token: the SDK's getToken calls this when the one
    in the page has expired."""

    def get(self) -> None:
        if not self.current_user:
            raise tornado.web.HTTPError(401, reason="not logged in")
        self.demo.users.seen(self.current_user)
        self.set_header("Cache-Control", "no-store")
        self.finish({"token": self.demo.token(self.current_user)})


class OnlineHandler(Handler):
    """The page is open (it says so at every connect to the gateway, and
    every CHECK_IN_EVERY seconds): its user gets the periodic events."""

    def post(self) -> None:
        if not self.current_user:
            raise tornado.web.HTTPError(401, reason="not logged in")
        self.demo.users.seen(self.current_user)
        self.set_status(204)


class ChatHandler(Handler):
    """A message for the shared room: published to the channel ``chat``."""

    async def post(self) -> None:
        if not self.current_user:
            raise tornado.web.HTTPError(401, reason="not logged in")
        text = self.text(self.json_body(), "text")
        message = {"type": "chat", "from": self.current_user, "text": text, "sent_at": time.time()}
        await self.publish(self.demo.publisher.broadcast, "chat", message)


class NotifyHandler(Handler):
    """A notification for one user: published to their personal channel ``#<user>``."""

    async def post(self) -> None:
        if not self.current_user:
            raise tornado.web.HTTPError(401, reason="not logged in")
        body = self.json_body()
        to = body.get("to")
        if not isinstance(to, str) or not USER_NAME.match(to.strip()):
            raise tornado.web.HTTPError(400, reason="to: a user name")
        text = self.text(body, "text", default=f"ping from {self.current_user}")
        message = {"type": "notify", "from": self.current_user, "text": text, "sent_at": time.time()}
        await self.publish(self.demo.publisher.publish_to_user, to.strip(), message)


class Demo:
    def __init__(self, args: argparse.Namespace):
        pushgate_bridge.configure(secret=args.jwt_secret)
        self.publisher = AsyncPublisher(Publisher(nsqd_http_address=args.nsqd_http_address, topic=args.topic))
        self.token_ttl = args.token_ttl
        self.tick_interval = args.tick_interval
        self.users = Users(keep=3 * CHECK_IN_EVERY)
        self._gateway_url = args.gateway_url
        self._gateway_port = args.gateway_port

    def token(self, user: str) -> str:
        # The personal channel #<user> comes with every connection; the page
        # subscribes itself to the public channel "chat".
        return pushgate_bridge.connection_token(user, ttl=self.token_ttl)

    def gateway_url(self, request_host: str) -> str:
        """The gateway on the host the browser used for this page (so that
        localhost and 127.0.0.1 both work), unless --gateway-url says otherwise."""
        if self._gateway_url:
            return self._gateway_url
        host = f"[{request_host}]" if ":" in request_host and not request_host.startswith("[") else request_host
        return f"ws://{host}:{self._gateway_port}/connection/websocket"

    async def tick(self) -> None:
        """Every user who is logged in gets a personal event, all in one /mpub."""
        n = 0
        while True:
            await asyncio.sleep(self.tick_interval)
            users = self.users.active()
            if not users:
                continue
            n += 1
            now = time.time()
            try:
                async with self.publisher.batch():
                    for user in users:
                        await self.publisher.publish_to_user(user, {
                            "type": "tick", "n": n, "sent_at": now,
                            "text": f"Personal event #{n} for {user}, from the demo backend",
                        })
            except PublishError as exc:
                log.warning("tick #%d not published: %s", n, exc)


def make_app(demo: Demo, cookie_secret: str) -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/", PageHandler),
            (r"/login", LoginHandler),
            (r"/logout", LogoutHandler),
            (r"/token", TokenHandler),
            (r"/online", OnlineHandler),
            (r"/chat", ChatHandler),
            (r"/notify", NotifyHandler),
            (r"/vendor/centrifuge/(.*)", tornado.web.StaticFileHandler, {"path": str(CENTRIFUGE_DIST)}),
        ],
        demo=demo,
        template_path=str(HERE),
        static_path=str(HERE / "static"),
        cookie_secret=cookie_secret,
        xsrf_cookies=True,
        login_url="/",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=int(env("DEMO_PORT", "8080")),
                        help="port of this demo (default 8080, or DEMO_PORT)")
    parser.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--gateway-port", type=int, default=int(env("PUSHGATE_PORT", "8000")),
                        help="the gateway's port, on the host the page was loaded from (default 8000, or PUSHGATE_PORT)")
    parser.add_argument("--gateway-url", default=env("DEMO_GATEWAY_URL"),
                        help="the gateway's WebSocket URL, when it is not on the page's host "
                             "(default ws://<page host>:<gateway port>/connection/websocket, or DEMO_GATEWAY_URL)")
    parser.add_argument("--nsqd-http-address", default=env("PUSHGATE_NSQD_HTTP_ADDRESS", "127.0.0.1:4151"),
                        help="nsqd's HTTP address to publish to (default 127.0.0.1:4151)")
    parser.add_argument("--topic", default=env("PUSHGATE_TOPIC", "pushgate"), help="the envelope topic")
    parser.add_argument("--jwt-secret", default=env("PUSHGATE_JWT_SECRET", DEV_SECRET),
                        help="the gateway's JWT secret (default: PUSHGATE_JWT_SECRET, or the dev secret of `make run`)")
    parser.add_argument("--token-ttl", type=int, default=600,
                        help="lifetime of connection tokens, seconds (default 600)")
    parser.add_argument("--tick-interval", type=float, default=10,
                        help="seconds between the personal events sent to each logged-in user (default 10)")
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    if not (CENTRIFUGE_DIST / "centrifuge.js").exists():
        sys.exit(f"demo: {CENTRIFUGE_DIST / 'centrifuge.js'} is missing: run `make run` "
                 "(or `npm ci` in the repository root) to install centrifuge-js")
    demo = Demo(args)
    # Derived from the JWT secret, so logins survive a restart of the demo.
    cookie_secret = hashlib.sha256(b"pushgate-demo-cookie:" + args.jwt_secret.encode()).hexdigest()
    try:
        make_app(demo, cookie_secret).listen(args.port, args.address)
    except OSError as exc:
        sys.exit(f"demo: cannot listen on {args.address}:{args.port} ({exc.strerror or exc}): "
                 "choose another port with DEMO_PORT (or --port)")
    shown = "127.0.0.1" if args.address in ("0.0.0.0", "") else args.address
    log.info("open http://%s:%d in a browser (gateway %s, nsqd %s)", shown, args.port,
             demo.gateway_url(shown), args.nsqd_http_address)
    ticks = asyncio.create_task(demo.tick())
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    ticks.cancel()


if __name__ == "__main__":
    asyncio.run(main())
