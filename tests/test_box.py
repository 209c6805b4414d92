"""One box's /metrics in process: two nodes built but not started (no NSQ),
each serving its own /metrics on its UNIX socket as a worker does
(gateway/app.py worker_server), and the box's answer made by one of them.
tests/test_workers.py runs real worker processes."""
from __future__ import annotations

import asyncio
import tempfile

from prometheus_client import generate_latest

from gateway.app import worker_server
from gateway.config import Settings
from gateway.node import Node
from gateway.workers.box import Box
from gateway.workers.supervisor import worker_socket
from tests.inprocess import FakeClock
from tests.stack import SECRET


def node(name: str) -> Node:
    return Node(Settings(jwt_secret=SECRET, nsqd_tcp_address=["127.0.0.1:1"], node_name=name))


def connects(text: bytes, worker: str) -> float:
    want = f'pushgate_connects_total{{worker="{worker}"}} '
    return next(float(line.split()[-1]) for line in text.decode().splitlines() if line.startswith(want))


def test_the_box_metrics_are_made_at_most_once_a_second_whatever_the_requests():
    clock = FakeClock()

    async def scenario(run_dir: str):
        nodes = [node("w-0"), node("w-1")]
        servers = [worker_server(n, worker_socket(run_dir, i)) for i, n in enumerate(nodes)]
        box = Box(0, 2, run_dir, clock=clock.monotonic)
        own = nodes[0].metrics.registry
        made = 0

        def own_text() -> bytes:
            nonlocal made
            made += 1
            return generate_latest(own)

        try:
            first = await box.metrics(own_text)
            assert connects(first, "1") == 0
            nodes[1].metrics.connects.inc(5)
            # Within the second: the same answer, without asking anyone again,
            # for requests one after the other and at the same time.
            clock.advance(0.5)
            again = await asyncio.gather(*(box.metrics(own_text) for _ in range(20)))
            assert all(text == first for text in again) and made == 1
            clock.advance(0.6)
            # A second later the box is asked again: the siblings' figures are fresh,
            # and requests that come while it is made wait for that one answer.
            fresh = await asyncio.gather(*(box.metrics(own_text) for _ in range(20)))
            assert connects(fresh[0], "1") == 5 and all(text == fresh[0] for text in fresh) and made == 2
        finally:
            for server in servers:
                server.stop()

    with tempfile.TemporaryDirectory(prefix="box-") as run_dir:   # short: a UNIX socket path is
        asyncio.run(scenario(run_dir))                             # at most 107 bytes
