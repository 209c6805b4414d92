"""Churn benchmark: rounds of connect/close with long-lived tokens, and what
they leave behind in the gateway's memory.

Each round opens M WebSocket connections (connect with a one-hour token
that also names a shared channel), waits for each connect reply, and closes
them. After each round the gateway's RSS is read. A gateway that forgets
closed connections stays flat after the first rounds (allocator warm-up);
one that keeps them grows by the same amount every round.

With ``--ref`` the same rounds also run against another commit of pushgate
(checked out in a temporary git worktree), in the same run, as the baseline.

    .venv/bin/python bench/churn.py --rounds 20 --connections 2000
    .venv/bin/python bench/churn.py --rounds 10 --connections 2000 --ref 69bf6cf
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from auth import connection_token  # noqa: E402
from tests.stack import SECRET, Gateway, Nsqd  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from common import RefGateway, worktree  # noqa: E402
from ws_clients import masked  # noqa: E402

CLOSE = b"\x88\x82\x00\x00\x00\x00\x03\xe8"  # masked close frame, code 1000


async def connect_and_close(port: int, frame: bytes) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    ok = head.startswith(b"HTTP/1.1 101")
    if ok:
        writer.write(frame)
        header = await reader.readexactly(2)
        length = header[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        reply = await reader.readexactly(length)
        ok = b'"connect"' in reply
        writer.write(CLOSE)
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return ok


async def one_round(port: int, frames: list[bytes], concurrency: int) -> int:
    failed = 0
    for start in range(0, len(frames), concurrency):
        results = await asyncio.gather(*(connect_and_close(port, f) for f in frames[start:start + concurrency]))
        failed += results.count(False)
    return failed


def measure(label: str, gateway: Gateway, args) -> list[float]:
    frames = [masked(json.dumps({"id": 1, "connect": {"token": connection_token(
        SECRET, f"churn-{i}", ttl=3600, channels=["news"])}}).encode()) for i in range(args.connections)]
    rss = []
    print(f"{label}: {args.rounds} rounds of {args.connections} connect/close, one-hour tokens")
    for n in range(args.rounds):
        failed = asyncio.run(one_round(gateway.port, frames, args.concurrency))
        asyncio.run(asyncio.sleep(0.5))
        rss.append(gateway.rss() / 2**20)
        print(f"  round {n + 1:3d}: RSS {rss[-1]:7.1f} MiB" + (f"  ({failed} failed)" if failed else ""),
              flush=True)
    tail = rss[2:] if len(rss) > 4 else rss
    slope = (tail[-1] - tail[0]) / max(1, len(tail) - 1)
    print(f"  growth after warm-up: {slope:+.2f} MiB per round = {slope * 2**20 / args.connections:+.0f} "
          f"bytes per closed connection")
    return rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=2000, help="connect/close per round (M)")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--ref", help="also measure this git commit of pushgate, as the baseline")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pushgate-churn-"))
    nsqd = Nsqd(work / "nsqd").start()
    flags = ("--log-level=warning", "--connect-rate=1000000", "--connect-burst=1000000")
    try:
        if args.ref:
            with worktree(args.ref) as tree:
                old = RefGateway(tree, work / "gw-ref", nsqd, None, *flags).start()
                try:
                    measure(f"pushgate {args.ref} (baseline)", old, args)
                finally:
                    old.stop()
        # The current tree; extra flags keep the handshake limits out of the way.
        gateway = Gateway(work / "gw", nsqd, None, *flags, "--shed-loop-lag=1000").start()
        try:
            measure("pushgate (this tree)", gateway, args)
        finally:
            gateway.stop()
    finally:
        nsqd.stop()


if __name__ == "__main__":
    main()
