"""The control bus: nodes talk to each other through NSQ alone."""
from __future__ import annotations

import asyncio

from gateway.cluster.bus import ControlBus
from gateway.core.metrics import Metrics
from tests.helpers import wait_for
from tests.stack import http


def bus(name: str, nsqd, lookupd) -> ControlBus:
    return ControlBus(node=name, topic="test-control", channel=f"{name}#ephemeral",
                      nsqd_http_address=f"http://{nsqd.http_address}", nsqd_tcp_addresses=[],
                      lookupd_http_addresses=[f"http://{lookupd.http_address}"], lookupd_poll_interval=1,
                      metrics=Metrics())


def test_a_message_reaches_its_node_a_broadcast_every_node_and_nobody_hears_itself(nsqd, lookupd):
    async def scenario():
        a, b, c = bus("a", nsqd, lookupd), bus("b", nsqd, lookupd), bus("c", nsqd, lookupd)
        heard = {"a": [], "b": [], "c": []}
        for node in (a, b, c):
            node.on("hello", lambda m, name=node.node: heard[name].append((m["from"], m["n"])))
        http("POST", f"http://{nsqd.http_address}/topic/create?topic=test-control")  # lookupd finds it
        for node in (a, b, c):
            node.start()
        await wait_for(lambda: a.ready() and b.ready() and c.ready())
        await a.send("hello", to="b", n=1)      # to one node
        await a.send("hello", n=2)              # to all
        await wait_for(lambda: len(heard["b"]) == 2 and len(heard["c"]) == 1)
        assert heard == {"a": [], "b": [("a", 1), ("a", 2)], "c": [("a", 2)]}
        for node in (a, b, c):
            await node.close()
    asyncio.run(scenario())

