"""The Rails app's RPC endpoint down for 10 s under 1,000 connected /cable
clients that all have to come back meanwhile (their connections dropped):
no crash, bounded memory, connects refused with a reconnect (never a pile-up
of calls), every client back within 30 s of the endpoint's return, and the
app's disconnect called exactly once for every connection that ended."""
from __future__ import annotations

import asyncio
import collections
import json
import random

import websockets

from tests.cable_rpc_app import signed_cookie
from tests.helpers import run, wait_for, wait_until
from tests.test_cable_rpc import V1, chat, rpc_app, rpc_gateway  # noqa: F401  (fixtures)

CLIENTS = 1000
OUTAGE = 10.0


class PoolClient:
    """A bare Action Cable client that behaves as the stock one does: it
    reconnects after a drop or a disconnect message, with a jittered delay,
    and subscribes again after every welcome."""

    def __init__(self, url: str, user: str):
        self.url = url
        self.cookie = signed_cookie(user)
        self.up = asyncio.Event()
        self.ws: websockets.ClientConnection | None = None
        self.refusals: collections.Counter = collections.Counter()
        self.done = False

    async def run(self) -> None:
        while not self.done:
            try:
                ws = await websockets.connect(self.url, subprotocols=[V1], additional_headers={"Cookie": self.cookie},
                                              ping_interval=None, open_timeout=10)
            except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake):
                self.refusals["handshake"] += 1
                await asyncio.sleep(random.uniform(0.5, 2.0))
                continue
            try:
                welcome = json.loads(await ws.recv())
                if welcome.get("type") != "welcome":
                    self.refusals[welcome.get("reason", "?")] += 1
                    assert welcome.get("reconnect") is True, welcome
                    await ws.close()
                else:
                    await ws.send(json.dumps({"command": "subscribe", "identifier": chat(1)}))
                    self.ws = ws
                    async for frame in ws:
                        if '"confirm_subscription"' in frame:
                            self.up.set()
            except websockets.ConnectionClosed:
                pass
            self.up.clear()
            self.ws = None
            if not self.done:
                await asyncio.sleep(random.uniform(0.5, 3.0))   # the stock client's back-off, roughly

    async def drop(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def stop(self) -> None:
        self.done = True
        if self.ws is not None:
            await self.ws.close()


def test_rpc_down_for_10s_under_1000_clients(rpc_app, rpc_gateway):  # noqa: F811
    app = rpc_app()
    gateway = rpc_gateway(app, "--cable-rpc-queue=200")

    async def scenario():
        loop = asyncio.get_running_loop()
        url = f"ws://127.0.0.1:{gateway.port}/cable"
        clients = [PoolClient(url, f"user{i}") for i in range(CLIENTS)]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        try:
            await wait_for(lambda: all(c.up.is_set() for c in clients), timeout=60, what="1,000 clients subscribed")
            rss_before = gateway.rss()
            await loop.run_in_executor(None, app.stop)
            down_at = loop.time()
            await asyncio.gather(*(c.drop() for c in clients))   # every client has to come back meanwhile
            await asyncio.sleep(0.5)
            while loop.time() - down_at < OUTAGE:
                assert gateway.running()
                assert gateway.metric("pushgate_proxy_queue_depth", proxy="cable_rpc") <= 200
                await asyncio.sleep(1.0)
            assert not any(c.up.is_set() for c in clients)
            await loop.run_in_executor(None, app.start)
            back_at = loop.time()
            await wait_for(lambda: all(c.up.is_set() for c in clients), timeout=30,
                           what="every client back within 30 s of the endpoint's return")
            back_in = loop.time() - back_at
            assert gateway.rss() - rss_before < 64 << 20, "memory grew by more than 64 MB"
            refusals = sum((c.refusals for c in clients), collections.Counter())
            assert refusals["rpc_unavailable"] >= CLIENTS, refusals
            print(f"all {CLIENTS} back {back_in:.1f} s after the endpoint's return; refusals {dict(refusals)}")
        finally:
            await asyncio.gather(*(c.stop() for c in clients))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    run(scenario())
    # Every connection the app accepted ended (dropped in the outage, or closed
    # at the end): each gets exactly one disconnect, the outage's once the app is back.
    def settled():
        accepted = {c["headers"]["x-anycable-meta-sid"] for c in app.calls("connect")}
        told = [c["headers"]["x-anycable-meta-sid"] for c in app.calls("disconnect")]
        return len(accepted) >= 2 * CLIENTS and set(told) == accepted and (accepted, told)
    accepted, told = wait_until(settled, timeout=60, what="one disconnect call for every ended connection")
    assert len(told) == len(set(told)), "a disconnect was called twice"
    assert gateway.running()
