"""Watch a channel with the stock centrifuge-python SDK.

    .venv/bin/python examples/watch.py demo          # a public channel
    .venv/bin/python examples/watch.py --user 42     # only the personal channel of user 42

It mints its own connection token from PUSHGATE_JWT_SECRET (the dev default
of `make run` otherwise), as a backend would hand one to a browser, and
connects to the gateway on PUSHGATE_PORT (8000) unless --url says otherwise.
"""
import argparse
import asyncio
import os

from centrifuge import Client, ClientEventHandler, PublicationContext, SubscriptionEventHandler

from auth import connection_token


class Printer(ClientEventHandler):
    """Connection events and publications on server-side channels (#user, token channels)."""

    async def on_connected(self, ctx):
        print(f"connected as client {ctx.client}", flush=True)

    async def on_disconnected(self, ctx):
        print(f"disconnected: {ctx.code} {ctx.reason}", flush=True)

    async def on_publication(self, ctx):
        print(f"[{ctx.channel}] {ctx.pub.data}", flush=True)


class ChannelPrinter(SubscriptionEventHandler):
    """Publications on a channel this client subscribed to itself."""

    def __init__(self, channel: str):
        self.channel = channel

    async def on_unsubscribed(self, ctx):
        print(f"[{self.channel}] unsubscribed: {ctx.code} {ctx.reason}", flush=True)

    async def on_publication(self, ctx: PublicationContext):
        print(f"[{self.channel}] {ctx.pub.data}", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("channel", nargs="?", help="a public channel to subscribe to")
    parser.add_argument("--user", default="demo-user", help="user id for the token (default demo-user)")
    parser.add_argument("--url", default=f"ws://127.0.0.1:{os.environ.get('PUSHGATE_PORT', '8000')}/connection/websocket")
    args = parser.parse_args()
    secret = os.environ.get("PUSHGATE_JWT_SECRET", "dev-secret-change-me-in-production")
    printer = Printer()
    client = Client(args.url, token=connection_token(secret, args.user), events=printer)
    if args.channel:
        sub = client.new_subscription(args.channel, events=ChannelPrinter(args.channel))
        await sub.subscribe()
    await client.connect()
    watched = f"{args.channel} and #{args.user}" if args.channel else f"#{args.user}"
    print(f"watching {watched}; Ctrl-C to stop", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
