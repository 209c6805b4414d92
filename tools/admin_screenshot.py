"""Retake docs/admin.png: the status page of two real nodes after some minutes
of traffic that changes, so that its charts have something to show.

    .venv/bin/python tools/admin_screenshot.py [--minutes 12] [--out docs/admin.png]

It starts nsqlookupd, nsqd and two gateway nodes as the tests do
(tests/stack.py, on free ports, in a temporary directory), then for the
given minutes: stock centrifuge-python clients come and go on both nodes
(more and more, then fewer), a publisher sends to their channel at a rate
that rises and falls, the second node (--max-connections=30) turns some
connects away at the peak, and the server API disconnects a user now and
then. At the end, with the clients still there, headless Chromium
(tools/admin_screenshot.mjs) takes the picture.
Needs what `make test` installs (the venv, .tools/bin, node_modules, Debian's
chromium). Takes the minutes given, plus a few seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from centrifuge import Client  # noqa: E402

from auth import connection_token  # noqa: E402
from tests.stack import API_KEY, SECRET, Gateway, Lookupd, Nsqd, http  # noqa: E402

ADMIN_SECRET = "admin-secret-for-the-picture"
CHANNEL = "room"


async def traffic(a: Gateway, b: Gateway, nsqd: Nsqd, minutes: float, out: str) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    length = minutes * 60
    clients: list[tuple[Gateway, Client, str]] = []
    serial = 0

    async def connect(node: Gateway) -> None:
        nonlocal serial
        serial += 1
        user = f"user{serial}"
        client = Client(node.ws_url, token=connection_token(SECRET, user))
        client.new_subscription(CHANNEL)
        await client.connect()   # returns once it tries; a refused one keeps trying with backoff
        subscription = client.get_subscription(CHANNEL)
        if subscription is not None:
            await subscription.subscribe()
        clients.append((node, client, user))

    async def publish() -> None:
        sent = 0
        while (elapsed := loop.time() - started) < length:
            rate = 6 + 14 * math.sin(math.pi * elapsed / length) ** 2 + 4 * math.sin(elapsed / 25)
            body = json.dumps({"channel": CHANNEL, "data": {"n": sent}}).encode()
            await loop.run_in_executor(None, http, "POST", f"http://{nsqd.http_address}/pub?topic=pushgate", body)
            sent += 1
            await asyncio.sleep(1 / max(rate, 1))

    publisher = asyncio.create_task(publish())
    next_disconnect = 90.0
    while (elapsed := loop.time() - started) < length:
        # Up to 70 clients at two thirds of the run, then down to 20.
        phase = elapsed / length
        wanted = int(20 + 50 * min(phase * 1.5, 1.0)) if phase < 0.67 else int(70 - 150 * (phase - 0.67))
        wanted = max(wanted, 20)
        if len(clients) < wanted:
            await connect(b if random.random() < 0.55 else a)
        elif len(clients) > wanted:
            _, client, _ = clients.pop(random.randrange(len(clients)))
            await client.disconnect()
        if elapsed > next_disconnect and clients:
            node, _, user = random.choice(clients)
            await loop.run_in_executor(None, http, "POST", f"{node.url}/api/disconnect",
                                       json.dumps({"user": user}).encode(), {"X-API-Key": API_KEY})
            next_disconnect = elapsed + random.uniform(60, 150)
        await asyncio.sleep(random.uniform(2, 6))
    await publisher
    # The picture, while the clients are still there.
    shot = await asyncio.create_subprocess_exec(
        "node", str(ROOT / "tools" / "admin_screenshot.mjs"), cwd=ROOT,
        env=dict(os.environ, ADMIN_URL=f"{a.url}/admin", SECRET=ADMIN_SECRET, OUT=out))
    if await shot.wait() != 0:
        raise SystemExit("the screenshot failed")
    for _, client, _ in clients:
        await client.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=12)
    parser.add_argument("--out", default=str(ROOT / "docs" / "admin.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="admin-screenshot-") as tmp:
        base = Path(tmp)
        lookupd = Lookupd(base / "lookupd").start()
        nsqd = Nsqd(base / "nsqd", lookupd).start()
        flags = (f"--admin-secret={ADMIN_SECRET}", f"--public-channels={CHANNEL}", f"--presence={CHANNEL}")
        nodes = [Gateway(base / "a", nsqd, lookupd, *flags).start(),
                 Gateway(base / "b", nsqd, lookupd, *flags, "--max-connections=30").start()]
        try:
            print(f"traffic for {args.minutes:g} minutes on {nodes[0].url} and {nodes[1].url}", flush=True)
            asyncio.run(traffic(*nodes, nsqd, args.minutes, args.out))
            print(f"wrote {args.out}")
        finally:
            for process in (*nodes, nsqd, lookupd):
                process.stop()


if __name__ == "__main__":
    main()
