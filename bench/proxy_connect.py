"""Connect rate and latency with the connect proxy, beside the token path, in
the same run against the same gateway.

One gateway with --jwt-secret and --connect-proxy-url pointing at a local
backend (tests/proxy_backend.py, its own process, Tornado): the token path
connects with an HS256 token (no call), the proxy path with the backend's
session cookie (one POST per connect). Each path: N WebSocket clients, at
most --concurrency connecting at once, each timed from the TCP connect to
the connect reply. Prints the rate and p50/p99 of each, and the backend's
calls. The load client is Python (asyncio + websockets), on the same cores:
it measures the difference between the paths, not the gateway's ceiling
(bench/connect_storm.py does that with the C client).

    .venv/bin/python bench/proxy_connect.py --clients 2000 --concurrency 100
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import cpu_seconds, percentile, start_stack  # noqa: E402
from tests.proxy_backend import sign  # noqa: E402
from tests.stack import SECRET, free_port, http  # noqa: E402
from tests.helpers import wait_until  # noqa: E402

from auth import connection_token  # noqa: E402


async def one(url: str, connect: dict, headers: dict) -> float:
    started = time.perf_counter()
    async with websockets.connect(url, additional_headers=headers, open_timeout=30) as ws:
        await ws.send(json.dumps({"id": 1, "connect": connect}))
        while True:
            reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if reply:
                if "connect" not in reply:
                    raise RuntimeError(f"refused: {reply}")
                return time.perf_counter() - started


async def path(url: str, clients: int, concurrency: int, proxied: bool) -> dict:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors = 0

    async def client(i: int) -> None:
        nonlocal errors
        user = f"{'p' if proxied else 't'}{i}"
        connect = {} if proxied else {"token": connection_token(SECRET, user, ttl=3600)}
        headers = {"Cookie": f"session={sign(user)}"} if proxied else {}
        async with gate:
            try:
                latencies.append(await one(url, connect, headers))
            except Exception:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    seconds = time.perf_counter() - started
    return {"ready": len(latencies), "errors": errors, "seconds": seconds, "rate": len(latencies) / seconds,
            "p50_ms": percentile(latencies, 0.5) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--proxy-concurrency", type=int, default=64)
    args = parser.parse_args()
    port = free_port()
    backend = subprocess.Popen([sys.executable, "-m", "tests.proxy_backend", "--port", str(port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL)
    work = nsqd = gateway = None
    try:
        wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/login?user=x")[0] == 200, what="the backend")
        work, nsqd, gateway = start_stack(1, f"--connect-proxy-url=http://127.0.0.1:{port}/centrifugo/connect",
                                          "--proxy-headers=cookie", f"--proxy-concurrency={args.proxy_concurrency}")
        results = {}
        for name, proxied in (("token", False), ("connect proxy", True)):
            before = cpu_seconds(gateway.proc.pid)
            results[name] = asyncio.run(path(gateway.ws_url, args.clients, args.concurrency, proxied))
            results[name]["cpu_ms"] = (cpu_seconds(gateway.proc.pid) - before) / max(results[name]["ready"], 1) * 1000
        print(f"connect: {args.clients} clients per path, {args.concurrency} connecting at once, "
              f"--proxy-concurrency={args.proxy_concurrency}, one gateway worker")
        for name, r in results.items():
            print(f"  {name:14} {r['ready']} ready, {r['errors']} errors, {r['rate']:,.0f}/s, "
                  f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, gateway CPU {r['cpu_ms']:.3f} ms/connect")
        calls = gateway.metric("pushgate_proxy_calls_total", proxy="connect", outcome="answer")
        print(f"  backend answered {calls:.0f} connect calls")
        sys.exit(1 if any(r["errors"] for r in results.values()) else 0)
    finally:
        if gateway is not None:
            gateway.stop()
        if nsqd is not None:
            nsqd.stop()
        backend.kill()
        backend.wait()


if __name__ == "__main__":
    main()
