"""Graceful drain: what SIGTERM does to a node with clients, and to one
started from the production Procfile by honcho."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import websockets

from auth import connection_token
from tests.clients import RawClient
from tests.helpers import wait_for, wait_until
from tests.stack import ROOT, SECRET, free_port, http

CLIENTS = 1000
DRAIN = 3.0


async def connected_clients(gateway, count: int) -> list[RawClient]:
    token = connection_token(SECRET, "drained")

    async def client():
        raw = await RawClient.open(gateway.ws_url)
        assert "connect" in await raw.connect(token)
        return raw
    raws = []
    for start in range(0, count, 100):
        raws += await asyncio.gather(*(client() for _ in range(min(100, count - start))))
    return raws


async def close_times(raws: list[RawClient], timeout: float) -> list[tuple[int, str, float]]:
    async def close_of(raw):
        code, reason = await raw.closed(timeout=timeout)
        return code, reason, time.monotonic()
    return await asyncio.gather(*(close_of(raw) for raw in raws))


def test_sigterm_drains_1000_clients_with_a_reconnect_code_and_exits_0(start_gateway):
    gateway = start_gateway(f"--drain-period={DRAIN:g}")

    async def scenario():
        raws = await connected_clients(gateway, CLIENTS)
        waiting = asyncio.ensure_future(close_times(raws, DRAIN + 5))
        signalled = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        # Draining: the node still answers, and says no to readiness checks and to newcomers.
        # (From a thread: this loop is timing the clients' closes.)
        await wait_for(lambda: asyncio.to_thread(lambda: http("GET", f"{gateway.url}/health")[0] == 503),
                       what="/health to answer 503 while draining")
        try:
            await RawClient.open(gateway.ws_url, open_timeout=2)
            raise AssertionError("a new connection was accepted while draining")
        except websockets.InvalidStatus as refused:
            assert refused.response.status_code == 503
        closes = await waiting
        assert {(code, reason) for code, reason, _ in closes} == {(3001, "shutdown")}
        times = sorted(t - signalled for _, _, t in closes)
        assert times[-1] - times[0] > DRAIN * 0.7, "closes are spread over the drain period"
        first_half = sum(t - times[0] < DRAIN / 2 for t in times) / len(times)
        assert 0.3 < first_half < 0.7, f"{first_half:.0%} of the closes came in the first half of the period"
        return signalled
    signalled = asyncio.run(scenario())
    wait_until(lambda: not gateway.running(), timeout=DRAIN + 5, what="gateway exit")
    assert time.monotonic() - signalled < DRAIN + 3
    assert gateway.stop() == 0
    log = gateway.log()
    assert "ERROR" not in log and "Traceback" not in log, log[-2000:]
    assert "drained, exiting" in log


def test_a_few_clients_are_closed_evenly_over_the_period_not_at_once(start_gateway):
    period, count = 2.0, 5
    gateway = start_gateway(f"--drain-period={period:g}")

    async def scenario():
        raws = await connected_clients(gateway, count)
        waiting = asyncio.ensure_future(close_times(raws, period + 5))
        gateway.proc.send_signal(signal.SIGTERM)
        times = sorted(t for _, _, t in await waiting)
        gaps = [b - a for a, b in zip(times, times[1:])]
        # One every period / count = 0.4 s (it used to be one every 50 ms).
        assert times[-1] - times[0] > 0.6 * period * (count - 1) / count, gaps
        assert sorted(gaps)[len(gaps) // 2] > 0.2, gaps
    asyncio.run(scenario())
    wait_until(lambda: not gateway.running(), timeout=period + 5, what="gateway exit")
    assert gateway.stop() == 0


def test_an_idle_node_drains_and_exits_0(start_gateway):
    gateway = start_gateway()
    gateway.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: not gateway.running(), timeout=5, what="gateway exit")
    assert gateway.stop() == 0
    assert "Traceback" not in gateway.log()


def test_honcho_stops_the_procfile_gateway_with_exit_0(tmp_path, nsqd):
    """`Procfile` as a platform (here honcho) runs it: PORT from the runner,
    settings from the environment, SIGTERM to stop."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
    env.update(PATH=f"{os.path.dirname(sys.executable)}:{env['PATH']}", PUSHGATE_JWT_SECRET=SECRET,
               PUSHGATE_NSQD_TCP_ADDRESS=nsqd.tcp_address, PUSHGATE_NSQD_HTTP_ADDRESS=nsqd.http_address,
               PUSHGATE_ADDRESS="127.0.0.1", PUSHGATE_DRAIN_PERIOD="1", PUSHGATE_NODE_NAME=f"procfile-{port}")
    out = open(tmp_path / "honcho.log", "w+")
    honcho = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "honcho"), "-f", "Procfile",
                               "start", "-p", str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/health")[0] == 200, timeout=15,
                   what="the Procfile's gateway on honcho's PORT")
        honcho.send_signal(signal.SIGTERM)
        honcho.wait(15)
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
        out.seek(0)
        transcript = out.read()
        out.close()
    assert "web.1 stopped (rc=0)" in transcript, transcript
    assert "drained, exiting" in transcript, transcript
