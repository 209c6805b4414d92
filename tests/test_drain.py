"""Graceful drain: SIGTERM with 1,000 connected clients."""
from __future__ import annotations

import asyncio
import signal
import time

import websockets

from auth import connection_token
from tests.clients import RawClient
from tests.stack import SECRET, wait_until

CLIENTS = 1000
DRAIN = 3.0


def test_sigterm_drains_1000_clients_with_a_reconnect_code_and_exits_0(start_gateway):
    gateway = start_gateway(f"--drain-period={DRAIN:g}")
    token = connection_token(SECRET, "drained")

    async def scenario():
        async def client():
            raw = await RawClient.open(gateway.ws_url)
            assert "connect" in await raw.connect(token)
            return raw
        raws = []
        for start in range(0, CLIENTS, 100):
            raws += await asyncio.gather(*(client() for _ in range(100)))

        async def close_of(raw):
            code, reason = await raw.closed(timeout=DRAIN + 5)
            return code, reason, time.monotonic()
        waiting = [asyncio.create_task(close_of(raw)) for raw in raws]
        signalled = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        try:  # the listener is closed: nobody new gets in while draining
            await RawClient.open(gateway.ws_url, open_timeout=2)
            raise AssertionError("a new connection was accepted while draining")
        except (OSError, websockets.InvalidStatus, asyncio.TimeoutError):
            pass
        closes = await asyncio.gather(*waiting)
        assert {(code, reason) for code, reason, _ in closes} == {(3001, "shutdown")}
        times = sorted(t - signalled for _, _, t in closes)
        assert times[-1] - times[0] > DRAIN / 2, "closes are spread over the drain period"
        return signalled
    signalled = asyncio.run(scenario())
    wait_until(lambda: not gateway.running(), timeout=DRAIN + 5, what="gateway exit")
    assert time.monotonic() - signalled < DRAIN + 3
    assert gateway.stop() == 0
    log = gateway.log()
    assert "ERROR" not in log and "Traceback" not in log, log[-2000:]
    assert "drained, exiting" in log


def test_an_idle_node_drains_and_exits_0(start_gateway):
    gateway = start_gateway()
    gateway.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: not gateway.running(), timeout=5, what="gateway exit")
    assert gateway.stop() == 0
    assert "Traceback" not in gateway.log()
