"""What each transport costs, beside WebSocket in the same run, and what a
forwarded /emulation request adds.

1. Per transport (websocket, http_stream, sse, uni_http_stream, uni_sse),
   on a fresh gateway node each: N idle clients subscribed to one channel
   (bench/ws_clients.py, bench/stream_clients.py; at most 5,000 per client
   process), then

   * gateway RSS per connection: (RSS with the clients - RSS before) / N;
   * fan-out, paced: L publications at R a second, each carrying its
     publish time: nothing shares a socket write, so every delivery is a
     frame handed over and a send(); gateway CPU-seconds (from /proc) per
     million deliveries;
   * fan-out, burst: M publications through nsqd /mpub as fast as it takes
     them: CPU per million deliveries, delivered messages/s and frames per
     socket write (how many publications the write batcher put in one
     send(): the figure that moves the CPU most, and varies from run to run).

   Pings are an hour apart, and a missing pong is noticed an hour after its
   ping, for every transport: a bench stream client sends no pongs (they
   would be /emulation requests), and none pays for pongs the others do not.

2. Forwarded emulation: one http_stream client on node A; a ``history``
   command (its reply is one line on the stream) sent through ``POST
   /emulation`` to node A itself, then to node B, which forwards it through
   NSQ, alternately; the time from the POST to the reply on the stream.

    .venv/bin/python bench/transports.py                       # 2,000 clients per transport
    .venv/bin/python bench/transports.py --clients 5000 --messages 100
    .venv/bin/python bench/transports.py --only emulation      # just part 2
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auth import connection_token  # noqa: E402
from bench.common import cpu_seconds, percentile, publish, rss_bytes  # noqa: E402
from bench.fanout import PER_PROCESS  # noqa: E402
from tests.httpstream import HttpStreamClient  # noqa: E402
from tests.stack import SECRET, Gateway, Nsqd  # noqa: E402

KINDS = ("websocket", "http_stream", "sse", "uni_http_stream", "uni_sse")
FLAGS = ("--public-channels=bench", "--log-level=warning", "--connect-rate=1000000", "--connect-burst=1000000",
         "--shed-loop-lag=1000", "--ping-interval=3600", "--pong-timeout=3599",
         "--client-command-rate=100000", "--client-command-burst=100000")
HERE = Path(__file__).resolve().parent


def clients_command(kind: str, port: int, count: int, n: int, args, sources: str) -> list[str]:
    phases = [f"--lat={args.paced}", f"--tp={args.messages}", f"--sources={sources}", f"--batch={args.batch}"]
    if kind == "websocket":
        token = connection_token(SECRET, f"bench-{n}")
        return [sys.executable, str(HERE / "ws_clients.py"), f"--port={port}", f"--count={count}",
                f"--token={token}", "--sample-every=1000000", *phases]
    token = connection_token(SECRET, f"bench-{n}", channels=["bench"])  # server-side: no subscribe to send
    return [sys.executable, str(HERE / "stream_clients.py"), f"--kind={kind}", f"--port={port}",
            f"--count={count}", f"--token={token}", *phases]


def measure(kind: str, gateway: Gateway, nsqd: Nsqd, args) -> dict:
    children: list[subprocess.Popen] = []
    pid = gateway.proc.pid
    try:
        time.sleep(0.5)
        rss_idle = rss_bytes(pid)
        processes = max(1, -(-args.clients // PER_PROCESS))
        sources = ",".join(f"127.0.0.{i}" for i in range(1, 9))
        t0 = time.monotonic()
        for n in range(processes):
            count = args.clients // processes + (1 if n < args.clients % processes else 0)
            children.append(subprocess.Popen(clients_command(kind, gateway.port, count, n, args, sources),
                                             stdout=subprocess.PIPE, text=True))
        for child in children:
            ready = json.loads(child.stdout.readline())
            if ready.get("refused"):
                raise RuntimeError(f"{kind}: {ready['refused']} connects refused")
        connect_time = time.monotonic() - t0
        time.sleep(2.0)
        rss_loaded = rss_bytes(pid)

        # Paced: one publication at a time, nothing shares a write.
        cpu_before = cpu_seconds(pid)
        filler = "x" * args.payload
        for _ in range(args.paced):
            publish(nsqd, [json.dumps({"channel": "bench", "data": {"f": filler, "ts": time.time()}}).encode()])
            time.sleep(1 / args.rate)
        time.sleep(1.0)
        paced_cpu = cpu_seconds(pid) - cpu_before

        # Burst: as fast as nsqd takes them, many share a write.
        writes_before = gateway.metric("pushgate_connection_writes_total")
        cpu_before = cpu_seconds(pid)
        t_start = time.time()
        body = json.dumps({"channel": "bench", "data": {"phase": "tp", "f": filler}}).encode()
        for start in range(0, args.messages, 100):
            publish(nsqd, [body] * min(100, args.messages - start))
        results = [json.loads(child.stdout.readline()) for child in children]
        cpu = cpu_seconds(pid) - cpu_before
        writes = gateway.metric("pushgate_connection_writes_total") - writes_before
    finally:
        for child in children:
            child.kill()
            child.wait()
    deliveries = sum(r["tp_received"] for r in results)
    expected = sum(r["tp_expected"] for r in results)
    elapsed = max(r["tp_last"] for r in results) - t_start
    paced = sum(r["lat_received"] for r in results)
    figures = {"kind": kind, "connect": connect_time, "kb": (rss_loaded - rss_idle) / args.clients / 1024,
               "paced_cpu": paced_cpu / max(paced, 1) * 1e6,
               "tp_cpu": cpu / max(deliveries, 1) * 1e6, "rate": deliveries / max(elapsed, 1e-9),
               "per_write": deliveries / max(writes, 1),
               "lost": deliveries != expected or paced != sum(r["lat_expected"] for r in results),
               "closed": sum(r["closed"] for r in results)}
    print(f"{kind}: {args.clients} clients in {processes} process(es), connected in {connect_time:.1f} s; "
          f"RSS {rss_idle / 2**20:.1f} -> {rss_loaded / 2**20:.1f} MiB = {figures['kb']:.1f} KB per connection; "
          f"paced: {args.paced} msgs at {args.rate:g}/s, {figures['paced_cpu']:.2f} CPU-s per million deliveries; "
          f"burst: {args.messages} msgs, {deliveries}/{expected} delivered, {figures['rate']:,.0f}/s, "
          f"{figures['per_write']:.1f} frames per write, {figures['tp_cpu']:.2f} CPU-s per million deliveries",
          flush=True)
    return figures


async def emulation_latency(a: Gateway, b: Gateway, samples: int) -> dict:
    """POST /emulation to A (the owner) and to B (forwarded), alternately; the
    time from sending the POST to the reply line on the stream."""
    stream = await HttpStreamClient.open(a.port, "POST", "/connection/http_stream",
                                         {"id": 1, "connect": {"token": connection_token(SECRET, "latency")}})
    connect = (await stream.line())["connect"]
    posters = {}
    for name, node in (("local", a), ("forwarded", b)):
        posters[name] = await asyncio.open_connection("127.0.0.1", node.port)  # one keep-alive connection each
    times: dict[str, list[float]] = {"local": [], "forwarded": []}
    post_times: dict[str, list[float]] = {"local": [], "forwarded": []}
    cmd_id = 1
    for i in range(samples * 2 + 20):
        name = "local" if i % 2 == 0 else "forwarded"
        cmd_id += 1
        data = json.dumps({"id": cmd_id, "history": {"channel": "#latency", "limit": 0}})
        body = json.dumps({"session": connect["session"], "node": connect["node"], "data": data}).encode()
        reader, writer = posters[name]
        started = time.perf_counter()
        writer.write(b"POST /emulation HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        head = await reader.readuntil(b"\r\n\r\n")
        answered = time.perf_counter()
        assert head.startswith(b"HTTP/1.1 204"), head
        while True:
            line = await stream.line(timeout=5)
            if line and line.get("id") == cmd_id:
                break
        replied = time.perf_counter()
        if i >= 20:  # the first ones warm up connections and caches
            times[name].append(replied - started)
            post_times[name].append(answered - started)
        await asyncio.sleep(0.02)
    stream.close()
    for reader, writer in posters.values():
        writer.close()
    figures = {}
    for name in ("local", "forwarded"):
        ms = [t * 1000 for t in times[name]]
        figures[name] = {"p50": percentile(ms, 0.5), "p90": percentile(ms, 0.9), "p99": percentile(ms, 0.99),
                         "mean": statistics.fmean(ms), "post_p50": percentile([t * 1000 for t in post_times[name]], 0.5)}
        f = figures[name]
        print(f"emulation, {name:9s} ({len(ms)} samples): POST -> reply on the stream p50 {f['p50']:.1f} ms, "
              f"p90 {f['p90']:.1f} ms, p99 {f['p99']:.1f} ms, mean {f['mean']:.1f} ms; "
              f"the POST itself answered in p50 {f['post_p50']:.1f} ms", flush=True)
    print(f"forwarding adds {figures['forwarded']['p50'] - figures['local']['p50']:.1f} ms at the median", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=2000, help="clients per transport")
    parser.add_argument("--messages", type=int, default=200, help="publications in the burst phase")
    parser.add_argument("--paced", type=int, default=20, help="publications in the paced phase")
    parser.add_argument("--rate", type=float, default=4.0, help="paced-phase publications per second")
    parser.add_argument("--payload", type=int, default=64, help="bytes of filler in each publication")
    parser.add_argument("--samples", type=int, default=200, help="emulation requests per route")
    parser.add_argument("--batch", type=int, default=500, help="connections a client process opens at once "
                        "(1: one after the other)")
    parser.add_argument("--only", choices=("fanout", "emulation"), help="run one part")
    parser.add_argument("--kinds", default=",".join(KINDS), help="transports to measure, comma-separated")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pushgate-bench-"))
    nsqd = Nsqd(work / "nsqd").start()
    runs = []
    try:
        if args.only != "emulation":
            for kind in args.kinds.split(","):
                gateway = Gateway(work / f"gw-{kind}", nsqd, None, *FLAGS).start()
                try:
                    runs.append(measure(kind, gateway, nsqd, args))
                finally:
                    gateway.stop()
        if args.only != "fanout":
            a = Gateway(work / "gw-a", nsqd, None, *FLAGS).start()
            b = Gateway(work / "gw-b", nsqd, None, *FLAGS).start()
            try:
                asyncio.run(emulation_latency(a, b, args.samples))
            finally:
                a.stop()
                b.stop()
    finally:
        nsqd.stop()
    if runs:
        print("\nside by side:")
        print(f"  {'transport':16s} {'KB/conn':>8s} {'paced CPU-s/M':>14s} {'burst CPU-s/M':>14s} "
              f"{'deliveries/s':>13s} {'frames/write':>13s}")
        for r in runs:
            print(f"  {r['kind']:16s} {r['kb']:8.1f} {r['paced_cpu']:14.2f} {r['tp_cpu']:14.2f} {r['rate']:13,.0f} "
                  f"{r['per_write']:13.1f}")
    if any(r["lost"] or r["closed"] for r in runs):
        print("WARNING: lost deliveries or closed connections")
        sys.exit(1)


if __name__ == "__main__":
    main()
