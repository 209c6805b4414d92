"""/cable with the Rails app in the loop (--cable-rpc-url): connects per
second and ``perform`` round trips through an AnyCable RPC endpoint, beside
the JWT path (no call) in the same run against the same gateway, with the
RPC's own share of the time shown.

By default the endpoint is the stand-alone RPC server of the tests
(tests/cable_rpc_app.py: Python, Tornado, its own process); give
``--rpc-url`` (and ``--rpc-secret``, ``--cookie``, ``--identifier``,
``--action``) to measure another one, such as the Rails bridge's endpoint
under puma or WEBrick. ``--action`` must transmit something back (the
test app's ``echo`` does).

* connects: N WebSocket clients per path, at most --concurrency at once,
  each timed from the TCP connect to its ``welcome`` (the JWT path's is
  pushgate's own; the RPC path's is the app's, after one connect call);
* perform: --performers clients subscribed to the channel, each doing
  --performs ``perform`` calls one after the other, each timed from the
  send to the app's transmission; the RPC share is the mean call time the
  gateway measured (``pushgate_proxy_latency_seconds{proxy="cable_rpc"}``)
  over the mean round trip.

The load client is Python (asyncio + websockets) on the same cores: it shows
what the RPC adds, not the gateway's ceiling.

    .venv/bin/python bench/cable_rpc.py --clients 1000 --concurrency 50 --performers 20 --performs 100
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import cpu_seconds, percentile  # noqa: E402
from tests.cable_rpc_app import RPC_SECRET, signed_cookie  # noqa: E402
from tests.stack import SECRET, Gateway, Nsqd, free_port  # noqa: E402

from auth import connection_token  # noqa: E402

V1 = "actioncable-v1-json"


async def welcome(url: str, headers: dict) -> float:
    started = time.perf_counter()
    async with websockets.connect(url, subprotocols=[V1], additional_headers=headers, open_timeout=30,
                                  ping_interval=None) as ws:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if reply.get("type") != "welcome":
            raise RuntimeError(f"refused: {reply}")
        return time.perf_counter() - started


async def connects(url: str, clients: int, concurrency: int, headers_of) -> dict:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors = 0

    async def client(i: int) -> None:
        nonlocal errors
        async with gate:
            try:
                latencies.append(await welcome(url, headers_of(i)))
            except Exception:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    seconds = time.perf_counter() - started
    return {"ready": len(latencies), "errors": errors, "rate": len(latencies) / seconds,
            "p50_ms": percentile(latencies, 0.5) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000}


async def performs(url: str, headers_of, identifier: str, action: str, performers: int, count: int) -> list[float]:
    latencies: list[float] = []

    async def client(i: int) -> None:
        async with websockets.connect(url, subprotocols=[V1], additional_headers=headers_of(i),
                                      ping_interval=None) as ws:
            assert json.loads(await ws.recv())["type"] == "welcome"
            await ws.send(json.dumps({"command": "subscribe", "identifier": identifier}))
            while '"confirm_subscription"' not in await ws.recv():
                pass
            data = json.dumps({"action": action})
            for _ in range(count):
                started = time.perf_counter()
                await ws.send(json.dumps({"command": "message", "identifier": identifier, "data": data}))
                while True:
                    frame = await asyncio.wait_for(ws.recv(), 30)
                    if '"message"' in frame and '"ping"' not in frame and action in frame:
                        break
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(client(i) for i in range(performers)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--performers", type=int, default=20)
    parser.add_argument("--performs", type=int, default=100)
    parser.add_argument("--rpc-concurrency", type=int, default=28)
    parser.add_argument("--rpc-url", help="another endpoint (default: tests/cable_rpc_app.py, started here)")
    parser.add_argument("--rpc-secret", default=RPC_SECRET)
    parser.add_argument("--cookie", help="the Cookie header that signs a client in (default: the test app's)")
    parser.add_argument("--identifier", default=json.dumps({"channel": "ChatChannel", "room": 1}))
    parser.add_argument("--action", default="echo")
    args = parser.parse_args()
    app = None
    nsqd = gateway = None
    try:
        work = Path(tempfile.mkdtemp(prefix="pushgate-bench-"))
        nsqd = Nsqd(work / "nsqd").start()
        rpc_url = args.rpc_url
        if rpc_url is None:
            port = free_port()
            app = subprocess.Popen([sys.executable, str(ROOT / "tests" / "cable_rpc_app.py"), f"--port={port}",
                                    f"--nsqd-http=http://{nsqd.http_address}", "--record=/dev/null"],
                                   cwd=ROOT, stdout=subprocess.PIPE)
            assert app.stdout is not None and app.stdout.readline().strip() == b"ready"
            rpc_url = f"http://127.0.0.1:{port}/_anycable"
        gateway = Gateway(work / "gw", nsqd, None, "--public-channels=bench", "--log-level=warning",
                          "--connect-rate=1000000", "--connect-burst=1000000", "--shed-loop-lag=1000",
                          f"--cable-rpc-url={rpc_url}", f"--cable-rpc-secret={args.rpc_secret}",
                          f"--cable-rpc-concurrency={args.rpc_concurrency}").start()
        url = f"ws://127.0.0.1:{gateway.port}/cable"
        cookie_of = (lambda i: {"Cookie": args.cookie}) if args.cookie else \
            (lambda i: {"Cookie": signed_cookie(f"user{i}")})
        token_of = lambda i: {"X-JID": connection_token(SECRET, f"t{i}", ttl=3600)}  # noqa: E731
        results = {}
        for name, headers_of in (("JWT (no call)", token_of), ("RPC connect", cookie_of)):
            before = cpu_seconds(gateway.proc.pid)
            results[name] = asyncio.run(connects(url, args.clients, args.concurrency, headers_of))
            results[name]["cpu_ms"] = (cpu_seconds(gateway.proc.pid) - before) / max(results[name]["ready"], 1) * 1000
        print(f"connects: {args.clients} clients per path, {args.concurrency} connecting at once, "
              f"--cable-rpc-concurrency={args.rpc_concurrency}, one gateway worker, endpoint {rpc_url}")
        for name, r in results.items():
            print(f"  {name:14} {r['ready']} ready, {r['errors']} errors, {r['rate']:,.0f}/s, "
                  f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, gateway CPU {r['cpu_ms']:.3f} ms/connect")
        sum_before = gateway.metric("pushgate_proxy_latency_seconds_sum", proxy="cable_rpc")
        count_before = gateway.metric("pushgate_proxy_latency_seconds_count", proxy="cable_rpc")
        latencies = asyncio.run(performs(url, cookie_of, args.identifier, args.action, args.performers,
                                         args.performs))
        calls = gateway.metric("pushgate_proxy_latency_seconds_count", proxy="cable_rpc") - count_before
        rpc_mean = (gateway.metric("pushgate_proxy_latency_seconds_sum", proxy="cable_rpc") - sum_before) / max(calls, 1)
        mean = sum(latencies) / max(len(latencies), 1)
        print(f"perform round trip: {args.performers} clients x {args.performs} performs of {args.action!r}, "
              f"one after the other")
        print(f"  {len(latencies)} round trips, p50 {percentile(latencies, 0.5) * 1000:.2f} ms, "
              f"p99 {percentile(latencies, 0.99) * 1000:.2f} ms, mean {mean * 1000:.2f} ms")
        print(f"  the RPC call itself (gateway's measure, {calls:.0f} calls incl. connects/subscribes): "
              f"mean {rpc_mean * 1000:.2f} ms = {100 * rpc_mean / mean if mean else 0:.0f}% of the mean round trip")
        failed = any(r["errors"] for r in results.values()) or len(latencies) != args.performers * args.performs
        sys.exit(1 if failed else 0)
    finally:
        if gateway is not None:
            gateway.stop()
        if nsqd is not None:
            nsqd.stop()
        if app is not None:
            app.kill()
            app.wait()


if __name__ == "__main__":
    main()
