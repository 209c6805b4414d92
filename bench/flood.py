"""Flood benchmark: what hostile clients do to honest clients' latency.

Honest clients (bench/ws_clients.py) sit on one channel that receives
``--rate`` publications a second, each carrying its publish time. The run
has three phases of ``--phase`` seconds: quiet (the baseline, measured in
the same run), the flood, and after it. Latency is reported per phase.

Floods (``--mode``):

* ``pong``: ``--attackers`` connections (default 4) send pong frames as fast
  as the socket takes them, and reconnect at once whenever they are cut off.
* ``connect``: ``--attackers`` processes open WebSocket connections as fast
  as they can (valid tokens, connect, then hold them), up to ``--flood``
  connections in all; it reports how many were admitted and how many got
  HTTP 503.

    .venv/bin/python bench/flood.py --mode pong
    .venv/bin/python bench/flood.py --mode connect --flood 15000
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from auth import connection_token  # noqa: E402
from tests.stack import SECRET, Gateway, Nsqd, http  # noqa: E402
from ws_clients import masked  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


async def handshake(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, int(head[9:12])


async def pong_attacker(port: int, seconds: float, counts: dict) -> None:
    connect = masked(json.dumps({"id": 1, "connect": {"token": connection_token(SECRET, "attacker")}}).encode())
    pongs = masked(b"{}") * 256
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            reader, writer, status = await handshake(port)
            if status != 101:
                counts["refused"] += 1
                writer.close()
                await asyncio.sleep(0.05)
                continue
            counts["connections"] += 1
            writer.write(connect)
            while time.monotonic() < deadline:
                writer.write(pongs)
                counts["frames"] += 256
                await writer.drain()
                if reader.at_eof():
                    break
                await asyncio.sleep(0)
            writer.close()
        except (OSError, asyncio.IncompleteReadError):
            counts["cut"] += 1


async def connect_attacker(port: int, count: int, out: dict) -> None:
    frames = [masked(json.dumps({"id": 1, "connect": {"token": connection_token(SECRET, f"flood-{i}")}}).encode())
              for i in range(count)]
    held = []

    async def one(frame: bytes) -> None:
        try:
            reader, writer, status = await handshake(port)
        except (OSError, asyncio.IncompleteReadError):
            out["errors"] += 1
            return
        if status != 101:
            out["refused"] += 1
            writer.close()
            return
        writer.write(frame)
        out["admitted"] += 1
        held.append(writer)

    for start in range(0, count, 500):
        await asyncio.gather(*(one(f) for f in frames[start:start + 500]))
    out["done_at"] = time.time()
    await asyncio.sleep(3600)


def attacker_main() -> None:
    mode, port, amount, seconds = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    if mode == "pong":
        counts = {"connections": 0, "frames": 0, "refused": 0, "cut": 0}

        async def run():
            await asyncio.gather(*(pong_attacker(port, seconds, counts) for _ in range(amount)))
        asyncio.run(run())
        print(json.dumps(counts), flush=True)
    else:
        out = {"admitted": 0, "refused": 0, "errors": 0, "done_at": 0}

        async def run():
            task = asyncio.ensure_future(connect_attacker(port, amount, out))
            while not out["done_at"]:
                await asyncio.sleep(0.1)
            print(json.dumps(out), flush=True)
            await asyncio.sleep(seconds)
            task.cancel()
        try:
            asyncio.run(run())
        except asyncio.CancelledError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("pong", "connect"), default="pong")
    parser.add_argument("--clients", type=int, default=2000, help="honest clients")
    parser.add_argument("--rate", type=float, default=10.0, help="publications per second")
    parser.add_argument("--phase", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--attackers", type=int, default=4)
    parser.add_argument("--flood", type=int, default=15000, help="connections, for --mode connect")
    parser.add_argument("--gateway-arg", action="append", default=[], help="extra flag for pushgate serve")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pushgate-flood-"))
    nsqd = Nsqd(work / "nsqd").start()
    gateway = Gateway(work / "gw", nsqd, None, "--public-channels=bench", "--log-level=error",
                      *args.gateway_arg).start()
    total = int(args.rate * args.phase * 3)
    honest = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "ws_clients.py"), f"--port={gateway.port}", f"--count={args.clients}",
         f"--token={connection_token(SECRET, 'honest')}", f"--lat={total}", "--tp=0", "--sample-every=10",
         f"--timeout={args.phase * 3 + 60}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    attackers: list[subprocess.Popen] = []
    try:
        ready = json.loads(honest.stdout.readline())
        print(f"pushgate flood benchmark ({args.mode}): {ready['ready']} honest clients, "
              f"{args.rate:g} msg/s, phases of {args.phase:g} s")
        bounds = []
        stop = threading.Event()

        def publish() -> None:
            for _ in range(total):
                body = json.dumps({"channel": "bench", "data": {"ts": time.time()}}).encode()
                http("POST", f"http://{nsqd.http_address}/pub?topic=pushgate", body)
                time.sleep(1 / args.rate)
        publisher = threading.Thread(target=publish)
        bounds.append(time.time())
        publisher.start()
        time.sleep(args.phase)
        bounds.append(time.time())
        per = -(-args.flood // args.attackers)
        for _ in range(args.attackers if args.mode == "connect" else 1):
            amount = args.attackers if args.mode == "pong" else per
            attackers.append(subprocess.Popen(
                [sys.executable, __file__, "--attacker", args.mode, str(gateway.port), str(amount), str(args.phase)],
                stdout=subprocess.PIPE, text=True))
        attack = [json.loads(a.stdout.readline()) for a in attackers]
        flood_end = time.time()
        if args.mode == "pong":
            for a in attackers:
                a.wait()
        bounds.append(max(flood_end, bounds[1] + args.phase))
        publisher.join()
        stop.set()
        result = json.loads(honest.stdout.readline())
        bounds.append(time.time())
        samples = result["samples"]
        for name, lo, hi in (("quiet (baseline)", bounds[0], bounds[1]), ("flood", bounds[1], bounds[2]),
                             ("after", bounds[2], bounds[3])):
            lat = [latency for sent, latency in samples if lo <= sent < hi]
            print(f"  {name:17s} p50 {percentile(lat, .5) * 1000:8.1f} ms   p99 {percentile(lat, .99) * 1000:8.1f} ms"
                  f"   max {max(lat, default=float('nan')) * 1000:8.1f} ms   ({len(lat)} samples)")
        print(f"  delivered to honest clients: {result['lat_received']}/{result['lat_expected']}, "
              f"{result['closed']} closed")
        if args.mode == "pong":
            counts = attack[0]
            print(f"  attackers: {counts['connections']} connections admitted, {counts['frames']:,} pong frames "
                  f"written, {counts['refused']} handshakes refused")
            print(f"  cut off with 3013: {gateway.metric('pushgate_refused_commands_total'):.0f}")
        else:
            admitted = sum(a["admitted"] for a in attack)
            refused = sum(a["refused"] for a in attack)
            took = max(a["done_at"] for a in attack) - bounds[1]
            print(f"  flood: {admitted + refused + sum(a['errors'] for a in attack)} handshakes in {took:.1f} s: "
                  f"{admitted} admitted, {refused} refused with 503, {sum(a['errors'] for a in attack)} errors")
            for limit in ("rate", "overloaded", "capacity"):
                print(f"    refused for {limit}: {gateway.metric('pushgate_refused_connects_total', limit=limit):.0f}")
    finally:
        for proc in [honest, *attackers]:
            proc.kill()
            proc.wait()
        gateway.stop()
        nsqd.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--attacker":
        attacker_main()
    else:
        main()
