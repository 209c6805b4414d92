"""Drives the stock centrifuge-python SDK with ``use_protobuf=True`` for
tests/test_sdks.py and prints one JSON object per SDK event on stdout, in the
event vocabulary the four SDK harnesses share:

    python tests/sdk/python/harness.py URL TOKEN [CHANNEL]

CHANNEL, if given, is subscribed client-side and recoverable. The program
runs until its stdin closes, then disconnects and exits 0.

It runs as a process of its own, like the Java, Go and JS harnesses, so that
one test drives all four the same way. centrifuge-python is in the test
virtualenv (setup.cfg's test extra).
"""
from __future__ import annotations

import asyncio
import base64
import json
import sys

from centrifuge import Client, ClientEventHandler, SubscriptionEventHandler

# Reconnect fast: the tests cut the network and wait for the SDK to come back.
MIN_RECONNECT_DELAY = 0.05
MAX_RECONNECT_DELAY = 0.5


def emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def publication(channel: str, server_side: bool, pub) -> dict:
    """In Protobuf mode publication data is opaque bytes: hand them to the
    test as they came."""
    return {"event": "publication", "channel": channel, "server_side": server_side,
            "offset": pub.offset, "data_b64": base64.b64encode(pub.data or b"").decode()}


def subscribed(channel: str, server_side: bool, ctx) -> dict:
    fields = {"event": "subscribed", "channel": channel, "server_side": server_side,
              "recoverable": ctx.recoverable, "was_recovering": ctx.was_recovering,
              "recovered": ctx.recovered}
    if ctx.stream_position is not None:
        fields["offset"] = ctx.stream_position.offset
        fields["epoch"] = ctx.stream_position.epoch
    if ctx.data:   # the subscription's data (a token's subs claim, a proxy's answer): bytes as they came
        fields["data_b64"] = base64.b64encode(ctx.data).decode()
    return fields


class ClientEvents(ClientEventHandler):
    async def on_connecting(self, ctx) -> None:
        emit(event="connecting", code=ctx.code, reason=ctx.reason)

    async def on_connected(self, ctx) -> None:
        emit(event="connected", client=ctx.client)

    async def on_disconnected(self, ctx) -> None:
        emit(event="disconnected", code=ctx.code, reason=ctx.reason)

    async def on_error(self, ctx) -> None:
        emit(event="error", error=repr(ctx.error))

    async def on_subscribed(self, ctx) -> None:
        emit(**subscribed(ctx.channel, True, ctx))

    async def on_unsubscribed(self, ctx) -> None:
        emit(event="unsubscribed", channel=ctx.channel, server_side=True)

    async def on_publication(self, ctx) -> None:
        emit(**publication(ctx.channel, True, ctx.pub))


class SubscriptionEvents(SubscriptionEventHandler):
    def __init__(self, channel: str) -> None:
        self.channel = channel

    async def on_subscribing(self, ctx) -> None:
        emit(event="subscribing", channel=self.channel, code=ctx.code, reason=ctx.reason)

    async def on_subscribed(self, ctx) -> None:
        emit(**subscribed(self.channel, False, ctx))

    async def on_unsubscribed(self, ctx) -> None:
        emit(event="unsubscribed", channel=self.channel, code=ctx.code, reason=ctx.reason)

    async def on_error(self, ctx) -> None:
        emit(event="error", channel=self.channel, error=repr(ctx.error))

    async def on_publication(self, ctx) -> None:
        emit(**publication(self.channel, False, ctx.pub))


async def stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def main(args: list[str]) -> int:
    if len(args) not in (2, 3):
        sys.stderr.write("usage: harness.py URL TOKEN [CHANNEL]\n")
        return 2
    client = Client(args[0], events=ClientEvents(), token=args[1], use_protobuf=True,
                    name="pushgate-sdk-test-python", min_reconnect_delay=MIN_RECONNECT_DELAY,
                    max_reconnect_delay=MAX_RECONNECT_DELAY)
    if len(args) == 3:
        sub = client.new_subscription(args[2], events=SubscriptionEvents(args[2]), recoverable=True)
        await sub.subscribe()
    await client.connect()
    await stdin_closed()
    await client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
