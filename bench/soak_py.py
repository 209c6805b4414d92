"""One honest client of the soak (bench/soak.py): the stock centrifuge-python
SDK (PyPI, unchanged) in JSON or Protobuf mode, subscribed to its personal
channel (server-side) and to the channels given (client-side, recoverable).
It prints one JSON object a line per SDK event, in the vocabulary of
bench/soak_js.mjs, and exits when its stdin closes.

    python bench/soak_py.py URL USER CHANNELS json|protobuf

The secret comes from SECRET in the environment.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from centrifuge import Client, ClientEventHandler, SubscriptionEventHandler  # noqa: E402

from auth import connection_token  # noqa: E402


def emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def data_of(pub) -> object:
    data = pub.data
    if isinstance(data, (bytes, bytearray)):   # Protobuf: the bytes the backend published
        try:
            return json.loads(data)
        except ValueError:
            return {"undecodable": data.decode(errors="replace")}
    return data


def subscribed(channel: str, server: bool, ctx) -> dict:
    fields = {"ev": "subscribed", "ch": channel, "server": server, "recovered": bool(ctx.recovered),
              "was_recovering": bool(ctx.was_recovering), "recoverable": bool(ctx.recoverable)}
    if ctx.stream_position is not None:
        fields.update(offset=ctx.stream_position.offset, epoch=ctx.stream_position.epoch)
    return fields


class ClientEvents(ClientEventHandler):
    async def on_connecting(self, ctx) -> None:
        emit(ev="connecting", code=ctx.code, reason=ctx.reason)

    async def on_connected(self, ctx) -> None:
        emit(ev="connected", client=ctx.client, transport="websocket")

    async def on_disconnected(self, ctx) -> None:
        emit(ev="disconnected", code=ctx.code, reason=ctx.reason)

    async def on_error(self, ctx) -> None:
        emit(ev="error", code=ctx.code, message=repr(ctx.error))

    async def on_subscribing(self, ctx) -> None:
        emit(ev="subscribing", ch=ctx.channel, server=True)

    async def on_subscribed(self, ctx) -> None:
        emit(**subscribed(ctx.channel, True, ctx))

    async def on_unsubscribed(self, ctx) -> None:
        emit(ev="unsubscribed", ch=ctx.channel, server=True)

    async def on_publication(self, ctx) -> None:
        emit(ev="pub", ch=ctx.channel, data=data_of(ctx.pub), offset=ctx.pub.offset)


class SubscriptionEvents(SubscriptionEventHandler):
    def __init__(self, channel: str) -> None:
        self.channel = channel

    async def on_subscribing(self, ctx) -> None:
        emit(ev="subscribing", ch=self.channel, code=ctx.code, reason=ctx.reason)

    async def on_subscribed(self, ctx) -> None:
        emit(**subscribed(self.channel, False, ctx))

    async def on_unsubscribed(self, ctx) -> None:
        emit(ev="unsubscribed", ch=self.channel, code=ctx.code, reason=ctx.reason)

    async def on_error(self, ctx) -> None:
        emit(ev="sub_error", ch=self.channel, code=ctx.code, message=repr(ctx.error))

    async def on_publication(self, ctx) -> None:
        emit(ev="pub", ch=self.channel, data=data_of(ctx.pub), offset=ctx.pub.offset)


async def stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def main(url: str, user: str, channels: str, protocol: str) -> int:
    secret = os.environ["SECRET"]

    async def get_token() -> str:
        return connection_token(secret, user, ttl=4 * 3600)

    # An application's settings, not a test's: back off from 0.2 s to 5 s.
    client = Client(url, events=ClientEvents(), token=await get_token(), get_token=get_token,
                    use_protobuf=(protocol == "protobuf"), name="pushgate-soak",
                    min_reconnect_delay=0.2, max_reconnect_delay=5.0)
    for channel in filter(None, channels.split(",")):
        sub = client.new_subscription(channel, events=SubscriptionEvents(channel), recoverable=True)
        await sub.subscribe()
    await client.connect()
    await stdin_closed()
    await client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:5])))
