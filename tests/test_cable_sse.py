"""Action Cable over SSE (/events) with a plain EventSource in Debian's
headless Chromium: Turbo stream broadcasts through nsqd arrive as the HTML
Rails sent, each with its position as the event id; after a network cut
the browser reconnects by itself, through the proxy, to another node, sends
Last-Event-ID, and that node replays exactly what was missed."""
from __future__ import annotations

import asyncio
import json
import os
import time

from auth import connection_token
from tests.proxy import SwitchingProxy
from tests.stack import ROOT, SECRET, wait_until
from tests.test_browser_demo import chromium_path, node  # noqa: F401  (fixtures)
from tests.test_cable_sse_core import sign

SCRIPT = ROOT / "tests" / "browser" / "cable_sse_e2e.mjs"
TURBO_SECRET = "turbo-secret-for-the-sse-tests-0123456789"
STREAM = "gid://app/Room/1:messages"


def turbo(n: int) -> str:
    return f'<turbo-stream action="append" target="messages">\n<template><p>{n}</p></template>\n</turbo-stream>'


class Page:
    """The browser script's events, read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.events: list[dict] = []
        self.lines: list[str] = []
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            text = line.decode(errors="replace").rstrip("\n")
            self.lines.append(text)
            try:
                self.events.append(json.loads(text))
            except ValueError:
                pass

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == kind]

    async def until(self, check, what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline or self.proc.returncode is not None:
                raise AssertionError(f"timed out waiting for {what}; the page saw:\n" + "\n".join(self.lines[-40:]))
            await asyncio.sleep(0.05)


def test_a_plain_eventsource_gets_turbo_broadcasts_and_resumes_on_another_node(chromium_path, node, start_gateway,  # noqa: F811
                                                                                nsqd):
    flags = (f"--turbo-streams-secret={TURBO_SECRET}", "--history-margin=0.2")
    a, b = start_gateway(*flags), start_gateway(*flags)
    token = connection_token(SECRET, "ana", ttl=600)
    query = f"/events?turbo_signed_stream_name={sign(STREAM, TURBO_SECRET)}&jid={token}"

    async def scenario() -> None:
        proxy = await SwitchingProxy().start()
        proxy.route(a.port)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
        env.update(ORIGIN=f"http://127.0.0.1:{proxy.port}", EVENTS=query, CHROMIUM=chromium_path)
        proc = await asyncio.create_subprocess_exec(node, str(SCRIPT), cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                    start_new_session=True)
        page = Page(proc)
        try:
            await page.until(lambda: page.of("confirm_subscription"), "the subscription's confirmation")
            assert json.loads(page.of("welcome")[0]["data"]) == {"type": "welcome"}
            for n in range(3):
                nsqd.publish({"channel": STREAM, "data": turbo(n)})
            await page.until(lambda: len(page.of("message")) == 3, "three broadcasts from node A")
            first = page.of("message")
            assert [m["data"] for m in first] == [turbo(n) for n in range(3)]   # the HTML, as Rails sent it
            offsets = [int(m["id"].split("/")[0]) for m in first]
            assert offsets == sorted(offsets) and all(m["id"].endswith(f"/{STREAM}") for m in first)

            # The network fails; the load balancer sends the browser to node B.
            proxy.route(None)
            proxy.cut()
            await page.until(lambda: page.of("error"), "the EventSource noticing the cut")
            for n in range(3, 6):
                nsqd.publish({"channel": STREAM, "data": turbo(n)})
            # Node B has them (it reads every message too) before the browser comes.
            await asyncio.get_running_loop().run_in_executor(None, lambda: wait_until(
                lambda: b.metric("pushgate_publications_total") >= 6, what="node B's six publications"))
            proxy.route(b.port)
            await page.until(lambda: page.of("confirm_history"), "node B's answer to Last-Event-ID", timeout=30)
            nsqd.publish({"channel": STREAM, "data": turbo(6)})
            await page.until(lambda: len(page.of("message")) == 7, "the missed broadcasts and a live one")
            assert [m["data"] for m in page.of("message")] == [turbo(n) for n in range(7)]
            assert len(page.of("welcome")) == 2 and not page.of("reject_history")
        finally:
            if proc.returncode is None:
                proc.stdin.write(b"exit\n")
                await proc.stdin.drain()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except asyncio.TimeoutError:
                    proc.kill()
            page._reader.cancel()
            await proxy.close()

    asyncio.run(scenario())
    assert b.metric("pushgate_recoveries_total", recovered="true") >= 1
