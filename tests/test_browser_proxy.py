"""The backend decides, in a real browser: the stock centrifuge-js in Debian's
headless Chromium (tests/browser/proxy_e2e.mjs), with no token anywhere,
signs in through a cookie set by the test backend (tests/proxy_backend.py)
and the connect proxy; a room it may not enter is refused with the backend's
code, an allowed one gives the backend's initial data; ``sub.publish()`` in
one tab reaches a subscriber on another node with the publisher's info;
``client.rpc()`` returns the backend's answer; the connection's proxied
``expire_at`` is refreshed by the backend without the client. Alice does
it over WebSocket, then over each fallback (http_stream, SSE) through the
backend's origin, as a reverse proxy in front of both would serve them:
the fallbacks' ``fetch`` and ``EventSource`` send the cookie only there."""
from __future__ import annotations

import asyncio
import os

import pytest

from tests.helpers import wait_for
from tests.proxy_backend import Backend
from tests.stack import ROOT, free_port
from tests.test_browser_demo import chromium_path, node  # noqa: F401  (fixtures)

SCRIPT = ROOT / "tests" / "browser" / "proxy_e2e.mjs"
DEADLINE = 90


@pytest.mark.parametrize("transport", ["websocket", "http_stream", "sse"])
def test_centrifuge_js_without_a_token_through_the_proxies(chromium_path, node, start_gateway,  # noqa: F811
                                                           transport):
    port = free_port()
    base = f"http://127.0.0.1:{port}/centrifugo"
    flags = (f"--connect-proxy-url={base}/connect", f"--refresh-proxy-url={base}/refresh",
             f"--subscribe-proxy-url={base}/subscribe", "--subscribe-proxy=room:*",
             f"--publish-proxy-url={base}/publish", "--publish-proxy=room:*", f"--rpc-proxy-url={base}/rpc",
             "--proxy-headers=cookie", f"--allowed-origins=http://127.0.0.1:{port}")
    a, b = start_gateway(*flags), start_gateway(*flags)

    async def scenario() -> tuple[int, list[str], Backend]:
        backend = await Backend(gateway=None if transport == "websocket" else a.url).start(port)
        backend.expire_in = 2    # alice's connection expires in 2 s, and each refresh gives 2 s more
        backend.extend = 2
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
        env.update(BACKEND=f"http://127.0.0.1:{port}", NODE_A=a.ws_url, NODE_B=b.ws_url, CHROMIUM=chromium_path,
                   TRANSPORT=transport)
        script = await asyncio.create_subprocess_exec(node, str(SCRIPT), cwd=ROOT, env=env,
                                                      stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                      stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        transcript: list[str] = []
        try:
            async def converse() -> None:
                assert script.stdout is not None and script.stdin is not None
                while line := await script.stdout.readline():
                    text = line.decode(errors="replace").rstrip("\n")
                    transcript.append(text)
                    print(text, flush=True)
                    if text == "REFRESHED":
                        await wait_for(lambda: sum(body["user"] == "alice" for _, body in backend.calls["refresh"])
                                       >= 2, timeout=20, what="two refreshes of alice's connection")
                        script.stdin.write(b"refreshed\n")
                        await script.stdin.drain()
            await asyncio.wait_for(converse(), DEADLINE)
            return await asyncio.wait_for(script.wait(), 10), transcript, backend
        finally:
            if script.returncode is None:
                script.terminate()
                try:
                    await asyncio.wait_for(script.wait(), 10)
                except asyncio.TimeoutError:
                    script.kill()
            await backend.stop()

    returncode, transcript, backend = asyncio.run(scenario())
    assert returncode == 0 and transcript[-1:] == ["PASS"], (
        "the browser scenario failed:\n" + "\n".join(transcript)
        + f"\n--- node A ---\n{a.log()[-5000:]}\n--- node B ---\n{b.log()[-5000:]}")
    # The browser sent its cookie, and nothing but what --proxy-headers names went to the backend.
    headers, body = backend.calls["connect"][0]
    assert headers["Cookie"].startswith("session=") and "Origin" not in headers
    assert body["transport"] == transport and "token" not in body
    assert a.metric("pushgate_disconnects_total", reason="expired") == 0
