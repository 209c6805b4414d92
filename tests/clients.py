"""Clients for integration tests: the stock centrifuge-python SDK, and a raw
WebSocket for what an SDK would never send (malformed frames, no pongs)."""
from __future__ import annotations

import asyncio
import json

import websockets
from centrifuge import Client, ClientEventHandler, SubscriptionEventHandler

from auth import connection_token
from tests.helpers import wait_for
from tests.stack import SECRET


class Recorder(ClientEventHandler):
    """Collects what one SDK client sees: publications (channel, data), subscribe
    results, errors and disconnects."""

    def __init__(self) -> None:
        self.publications: asyncio.Queue = asyncio.Queue()
        self.subscribed: dict[str, object] = {}
        self.disconnects: list[tuple[int, str]] = []
        self.connecting: list[tuple[int, str]] = []
        self.sub_errors: dict[str, list] = {}
        self.unsubscribed: dict[str, object] = {}
        self.connected = asyncio.Event()

    async def on_connected(self, ctx) -> None:
        self.connected.set()

    async def on_connecting(self, ctx) -> None:
        self.connecting.append((ctx.code, ctx.reason))

    async def on_disconnected(self, ctx) -> None:
        self.disconnects.append((ctx.code, ctx.reason))

    async def on_subscribed(self, ctx) -> None:
        self.subscribed[ctx.channel] = ctx

    async def on_publication(self, ctx) -> None:
        await self.publications.put((ctx.channel, ctx.pub.data))

    def channel(self, name: str) -> "ChannelRecorder":
        return ChannelRecorder(self, name)

    async def next(self, timeout: float = 5.0) -> tuple[str, object]:
        return await asyncio.wait_for(self.publications.get(), timeout)

    async def collect(self, count: int, timeout: float = 5.0) -> list[tuple[str, object]]:
        return [await self.next(timeout) for _ in range(count)]

    async def nothing_more(self, wait: float = 0.5) -> bool:
        try:
            got = await asyncio.wait_for(self.publications.get(), wait)
        except asyncio.TimeoutError:
            return True
        raise AssertionError(f"unexpected publication {got}")


class ChannelRecorder(SubscriptionEventHandler):
    def __init__(self, parent: Recorder, channel: str) -> None:
        self.parent = parent
        self.channel = channel

    async def on_subscribed(self, ctx) -> None:
        self.parent.subscribed[self.channel] = ctx

    async def on_unsubscribed(self, ctx) -> None:
        self.parent.unsubscribed[self.channel] = ctx

    async def on_error(self, ctx) -> None:
        self.parent.sub_errors.setdefault(self.channel, []).append(ctx)

    async def on_publication(self, ctx) -> None:
        await self.parent.publications.put((self.channel, ctx.pub.data))


async def sdk_client(url: str, user: str | None = "u", *, token: str | None = None,
                     channels: tuple[str, ...] = (), token_channels: tuple[str, ...] = (),
                     wait_subscribed: bool = True, **options) -> tuple[Client, Recorder]:
    """A connected centrifuge-python client, subscribed to ``channels``."""
    if token is None and user is not None:
        token = connection_token(SECRET, user, channels=list(token_channels) or None)
    recorder = Recorder()
    client = Client(url, token=token or "", events=recorder, **options)
    subs = []
    for channel in channels:
        sub = client.new_subscription(channel, events=recorder.channel(channel))
        subs.append(sub)
    await client.connect()
    await asyncio.wait_for(recorder.connected.wait(), 5)
    for sub in subs:
        await sub.subscribe()
    if wait_subscribed:
        for channel in channels:
            await wait_for(lambda: channel in recorder.subscribed or channel in recorder.unsubscribed)
    return client, recorder


class RawClient:
    """A bare WebSocket speaking the JSON protocol by hand."""

    def __init__(self, ws) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, url: str, **kwargs) -> "RawClient":
        return cls(await websockets.connect(url, **kwargs))

    async def send(self, frame: str | bytes | dict) -> None:
        await self.ws.send(json.dumps(frame) if isinstance(frame, dict) else frame)

    async def recv(self, timeout: float = 5.0, pings: bool = False) -> dict:
        """The next frame; server pings (``{}``) are skipped unless ``pings``.

        The heartbeat puts a new connection in a random one-second bucket, so
        its first ping may come at any moment after connect: a test that waits
        for a reply must not trip over one.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), max(left, 0)))
            if frame or pings:
                return frame

    async def connect(self, token: str, cmd_id: int = 1) -> dict:
        await self.send({"id": cmd_id, "connect": {"token": token}})
        return await self.recv()

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str]:
        """Wait for the server to close; returns (code, reason)."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as exc:
            rcvd = exc.rcvd
            return (rcvd.code, rcvd.reason) if rcvd else (None, "")

    async def close(self) -> None:
        await self.ws.close()


# Nodes for recovery tests: a short history margin, and a public channel.
RECOVERY_FLAGS = ("--history-margin=0.2", "--public-channels=news")


def publish_while_offline(nsqd, user: str, count: int) -> None:
    """``count`` numbered messages to ``user``'s personal channel and to news."""
    bodies = []
    for n in range(count):
        bodies.append(f'{{"user":"{user}","data":{{"n":{n}}}}}'.encode())
        bodies.append(f'{{"channel":"news","data":{{"n":{n}}}}}'.encode())
    for start in range(0, len(bodies), 100):
        nsqd.mpublish(bodies[start:start + 100])
