"""WebSocket blocked, in a real browser: the stock centrifuge-js SDK in
Debian's headless Chromium (tests/browser/fallback_e2e.mjs) with the
standard fallback list whose websocket endpoint nothing answers. It falls
back to http_stream, and in a second run (http_stream blocked too) to sse;
each time it receives its personal channel and a public one, subscribes and
unsubscribes, refreshes a 3-second token, and recovers exactly after a
network cut. Its stream goes through a proxy to node A while every
/emulation request goes to node B, which forwards it through NSQ. Then a
plain EventSource on /connection/uni_sse, no SDK, receives and recovers
after a cut, from the positions it sends.

The page is served from its own origin (a server in this test), so every
request to the gateway is cross-origin: CORS with --allowed-origins.
"""
from __future__ import annotations

import asyncio
import os

import tornado.web

from auth import connection_token
from tests.helpers import wait_until_time
from tests.proxy import SwitchingProxy
from tests.stack import ROOT, SECRET, free_port
from tests.test_browser_demo import chromium_path, node  # noqa: F401  (fixtures)

SCRIPT = ROOT / "tests" / "browser" / "fallback_e2e.mjs"
PAGE = ROOT / "tests" / "browser" / "fallback.html"
CENTRIFUGE = ROOT / "node_modules" / "centrifuge" / "dist" / "centrifuge.js"
DEADLINE = 150  # seconds for the whole browser scenario


class PageHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(PAGE.read_bytes())


class ScriptHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/javascript")
        self.finish(CENTRIFUGE.read_bytes())


class TokenHandler(tornado.web.RequestHandler):
    """What the application's backend does: a connection token for the page's user."""

    def get(self) -> None:
        user = self.get_query_argument("user")
        ttl = int(self.get_query_argument("ttl", "600"))
        self.set_header("Cache-Control", "no-store")
        self.finish({"token": connection_token(SECRET, user, ttl=ttl)})


def test_centrifuge_js_falls_back_when_websocket_is_blocked(chromium_path, node, start_gateway, nsqd):  # noqa: F811
    page_port, blocked = free_port(), free_port()
    flags = (f"--allowed-origins=http://127.0.0.1:{page_port}", "--public-channels=news", "--ping-interval=3",
             "--pong-timeout=2", "--expired-close-delay=1", "--history-margin=0.2")
    a, b = start_gateway(*flags), start_gateway(*flags)
    wait_until_time(max(a.recovers_from(), b.recovers_from()))  # both vouch for the first position handed out

    async def scenario() -> tuple[int, list[str]]:
        server = tornado.web.Application([(r"/", PageHandler), (r"/centrifuge.js", ScriptHandler),
                                          (r"/token", TokenHandler)]).listen(page_port, "127.0.0.1")
        proxy = await SwitchingProxy().start()
        proxy.route(a.port)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
        env.update(PAGE_URL=f"http://127.0.0.1:{page_port}/", PROXY=f"http://127.0.0.1:{proxy.port}",
                   NODE_B=b.url, BLOCKED=str(blocked), NSQD=nsqd.http_address, CHROMIUM=chromium_path)
        script = await asyncio.create_subprocess_exec(node, str(SCRIPT), cwd=ROOT, env=env,
                                                      stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                      stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        transcript: list[str] = []
        try:
            async def converse() -> None:
                while line := await script.stdout.readline():
                    text = line.decode(errors="replace").rstrip("\n")
                    transcript.append(text)
                    print(text, flush=True)
                    if text in ("CUT", "RESTORE"):
                        if text == "CUT":
                            proxy.route(None)
                            proxy.cut()
                        else:
                            proxy.route(a.port)
                        script.stdin.write(b"cut\n" if text == "CUT" else b"restored\n")
                        await script.stdin.drain()
            await asyncio.wait_for(converse(), DEADLINE)
            return await asyncio.wait_for(script.wait(), 10), transcript
        finally:
            if script.returncode is None:
                script.terminate()
                try:
                    await asyncio.wait_for(script.wait(), 10)
                except asyncio.TimeoutError:
                    script.kill()
            await proxy.close()
            server.stop()

    returncode, transcript = asyncio.run(scenario())
    assert returncode == 0 and transcript[-1:] == ["PASS"], (
        "the browser scenario failed:\n" + "\n".join(transcript)
        + f"\n--- node A ---\n{a.log()[-5000:]}\n--- node B ---\n{b.log()[-5000:]}")
    # Commands (subscribes, unsubscribes, refreshes, pongs) went to B and were handled on A.
    assert b.metric("pushgate_emulation_requests_total", result="forwarded") >= 8
    assert a.metric("pushgate_emulation_requests_total", result="received") >= 8
    assert a.metric("pushgate_disconnects_total", reason="no_pong") == 0
    assert a.metric("pushgate_disconnects_total", reason="expired") == 0
