"""Rails channels through the RPC: connects per second and the round trip of a
`perform`, through the gateway and the bridge's Rack endpoint
(Pushgate::Cable::RPC) in the Rails 6.1 test app under WEBrick (Debian's;
puma is packaged too but not installed by `make test`), with the endpoint's
own share: the time inside the Rack endpoint, from the app's
"call.pushgate_cable_rpc" notifications.

Beside them, in the same run: the same number of /cable connects with a JWT
(no call to Rails), and a trivial Rails route under the same WEBrick (the
floor any RPC call pays: HTTP parsing, Rails' middleware, WEBrick's thread).

    .venv/bin/python bench/rails_rpc.py --clients 300 --concurrency 20 --performs 300

The load client is Python (asyncio + websockets) on the same 2 cores as the
gateway, nsqd and Ruby: the figures compare paths, they are no ceiling.
"""
from __future__ import annotations

import argparse
import base64
import asyncio
import http.client as httpclient
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import cpu_seconds, percentile, start_stack  # noqa: E402
from tests.helpers import wait_until  # noqa: E402
from tests.stack import SECRET, free_port, http  # noqa: E402

from auth import connection_token  # noqa: E402

RPC_SECRET = "bench-rpc-secret"
V1 = "actioncable-v1-json"
LOBBY = json.dumps({"channel": "ChatChannel", "room": 1}, separators=(",", ":"))
# ChatChannel's stream_for(room 1): "chat:" + the room's GlobalID parameter (the app is "cable-app").
LOBBY_STREAM = "chat:" + base64.urlsafe_b64encode(b"gid://cable-app/Room/1").decode().rstrip("=")


def start_app(port: int, nsqd_http: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
    env.update(PUSHGATE_NSQD_HTTP_ADDRESS=nsqd_http, PUSHGATE_TOPIC="pushgate", PUSHGATE_CABLE_RPC_SECRET=RPC_SECRET,
               RPC_TIMINGS="1")
    app = subprocess.Popen(["ruby", str(ROOT / "tests" / "ruby" / "rails_app" / "app.rb"), "serve", str(port)],
                           env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=ROOT)
    wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/up")[0] == 200, timeout=60, what="the Rails app")
    return app


def endpoint_times(app_url: str, kind: str) -> list[float]:
    status, body = http("GET", f"{app_url}/bench/rpc_timings")
    assert status == 200, body
    return [ms for name, ms in json.loads(body) if name == kind]


async def connect_once(url: str, headers: dict) -> float:
    started = time.perf_counter()
    async with websockets.connect(url, subprotocols=[V1], additional_headers=headers, open_timeout=30) as ws:
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if frame.get("type") == "welcome":
                return time.perf_counter() - started
            if frame.get("type") == "disconnect":
                raise RuntimeError(f"refused: {frame}")


async def connects(url: str, clients: int, concurrency: int, headers: dict) -> dict:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors = 0

    async def client() -> None:
        nonlocal errors
        async with gate:
            try:
                latencies.append(await connect_once(url, headers))
            except Exception:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - started
    return {"ready": len(latencies), "errors": errors, "rate": len(latencies) / seconds,
            "p50_ms": percentile(latencies, 0.5) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000}


async def performs(url: str, count: int, headers: dict, nsqd_http: str) -> dict:
    """One subscriber of the lobby: perform("speak"), timed until its own
    broadcast comes back (RPC command, broadcast_to through NSQ, delivery);
    and, alternating with it, the same message published straight into nsqd
    (delivery alone: what a perform costs beyond it is the RPC's)."""
    performed: list[float] = []
    delivered: list[float] = []
    async with websockets.connect(url, subprotocols=[V1], additional_headers=headers, open_timeout=30) as ws:
        await ws.send(json.dumps({"command": "subscribe", "identifier": LOBBY}))
        while json.loads(await ws.recv()).get("type") != "confirm_subscription":
            pass

        async def back(text: str) -> None:
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30)).get("message")  # a ping's is a number
                if isinstance(message, dict) and message.get("text") == text:
                    return

        for i in range(count):
            text = f"bench {i}"
            started = time.perf_counter()
            await ws.send(json.dumps({"command": "message", "identifier": LOBBY,
                                      "data": json.dumps({"action": "speak", "text": text})}))
            await back(text)
            performed.append(time.perf_counter() - started)
            text = f"direct {i}"
            body = json.dumps({"channel": LOBBY_STREAM, "data": {"from": "nsqd", "text": text}}).encode()
            started = time.perf_counter()
            status, answer = await asyncio.to_thread(http, "POST", f"http://{nsqd_http}/pub?topic=pushgate", body)
            assert status == 200, answer
            await back(text)
            delivered.append(time.perf_counter() - started)
    return {"count": len(performed), "p50_ms": percentile(performed, 0.5) * 1000,
            "p99_ms": percentile(performed, 0.99) * 1000, "direct_p50_ms": percentile(delivered, 0.5) * 1000,
            "direct_p99_ms": percentile(delivered, 0.99) * 1000}


def signed_in_cookie(port: int, name: str) -> str:
    """The encrypted cookie the app's sign-in sets, as a browser would send it back."""
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", f"/login?name={name}")
    response = conn.getresponse()
    response.read()
    conn.close()
    return next(c.split(";")[0] for c in response.headers.get_all("Set-Cookie") or [] if c.startswith("user_id="))


def floor(port: int, count: int) -> dict:
    """A trivial Rails route under the same WEBrick, one keep-alive connection."""
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        conn.request("GET", "/up")
        conn.getresponse().read()
        latencies.append(time.perf_counter() - started)
    conn.close()
    return {"p50_ms": percentile(latencies, 0.5) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000}


def share(times: list[float]) -> str:
    return f"p50 {percentile(times, 0.5):.2f} ms, p99 {percentile(times, 0.99):.2f} ms ({len(times)} calls)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--performs", type=int, default=300)
    parser.add_argument("--rpc-concurrency", type=int, default=28)
    args = parser.parse_args()
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}"
    work, nsqd, gateway = start_stack(1, f"--cable-rpc-url={app_url}/_pushgate", f"--cable-rpc-secret={RPC_SECRET}",
                                      f"--cable-rpc-concurrency={args.rpc_concurrency}")
    app = start_app(app_port, nsqd.http_address, work / "rails.log")
    try:
        cookie = signed_in_cookie(app_port, "alice")
        cable = f"ws://127.0.0.1:{gateway.port}/cable"
        rpc_headers = {"Cookie": cookie}
        endpoint_times(app_url, "connect")  # clear the sign-in's noise

        before = cpu_seconds(gateway.proc.pid)
        jwt = asyncio.run(connects(f"{cable}?jid={connection_token(SECRET, 'bench', ttl=3600)}", args.clients,
                                   args.concurrency, {}))
        jwt["gw_cpu_ms"] = (cpu_seconds(gateway.proc.pid) - before) / max(jwt["ready"], 1) * 1000
        before, app_before = cpu_seconds(gateway.proc.pid), cpu_seconds(app.pid)
        rpc = asyncio.run(connects(cable, args.clients, args.concurrency, rpc_headers))
        rpc["gw_cpu_ms"] = (cpu_seconds(gateway.proc.pid) - before) / max(rpc["ready"], 1) * 1000
        rpc["app_cpu_ms"] = (cpu_seconds(app.pid) - app_before) / max(rpc["ready"], 1) * 1000
        connect_inside = endpoint_times(app_url, "connect")
        perform = asyncio.run(performs(cable, args.performs, rpc_headers, nsqd.http_address))
        message_inside = endpoint_times(app_url, "message")
        base = floor(app_port, args.performs)

        print(f"Rails RPC (Rails 6.1, WEBrick, one gateway worker, --cable-rpc-concurrency={args.rpc_concurrency}); "
              f"{args.clients} clients, {args.concurrency} connecting at once")
        for name, r in (("connect, JWT (no RPC)", jwt), ("connect, cookie via RPC", rpc)):
            extra = f", Rails CPU {r['app_cpu_ms']:.2f} ms/connect" if "app_cpu_ms" in r else ""
            print(f"  {name:26} {r['ready']} ready, {r['errors']} errors, {r['rate']:,.0f}/s, p50 {r['p50_ms']:.1f} ms, "
                  f"p99 {r['p99_ms']:.1f} ms, gateway CPU {r['gw_cpu_ms']:.2f} ms/connect{extra}")
        print(f"    inside the Rack endpoint (connect): {share(connect_inside)}")
        print(f"  perform round trip        {perform['count']} performs, p50 {perform['p50_ms']:.1f} ms, "
              f"p99 {perform['p99_ms']:.1f} ms (RPC command + broadcast through NSQ + delivery)")
        print(f"  published into nsqd       p50 {perform['direct_p50_ms']:.1f} ms, p99 {perform['direct_p99_ms']:.1f} ms "
              f"(delivery alone, the same subscriber, alternating with the performs)")
        print(f"    inside the Rack endpoint (perform): {share(message_inside)}")
        print(f"  floor: GET /up, same WEBrick  p50 {base['p50_ms']:.2f} ms, p99 {base['p99_ms']:.2f} ms")
        sys.exit(1 if jwt["errors"] or rpc["errors"] else 0)
    finally:
        app.terminate()
        app.wait()
        gateway.stop()
        nsqd.stop()


if __name__ == "__main__":
    main()
