"""Fan-out benchmark: N clients on one channel, M messages through nsqd.

Starts a real nsqd and one gateway node, spreads N bare WebSocket clients
over several processes (bench/ws_clients.py; mind the 20,000 open files per
process), then:

1. latency phase: L messages at a modest rate, each carrying its publish
   time; clients measure publish→receive;
2. throughput phase: M messages published as fast as nsqd takes them.

Prints delivered messages/s, gateway CPU-seconds per million deliveries
(from /proc, throughput phase only), p50/p99 latency, and gateway RSS per
connection. Targets: ≤ 10 CPU-s per million deliveries, ≤ 20 KB/connection.

    .venv/bin/python bench/fanout.py --clients 10000 --messages 200
    .venv/bin/python bench/fanout.py --protocol both          # JSON and Protobuf clients, side by side
    .venv/bin/python bench/fanout.py --protocol both --ref 7e92305   # and an older commit as the baseline
    .venv/bin/python bench/fanout.py --protocol json,cable,cable-ext --clients 3000   # Action Cable beside Centrifugo

Protocols: ``json`` and ``protobuf`` are the Centrifugo protocol at
/connection/websocket; ``cable`` and ``cable-ext`` are Action Cable at /cable
(actioncable-v1-json, and AnyCable's actioncable-v1-ext-json with stream
positions in every message), every client on the same ``$pubsub`` stream
identifier. Each protocol gets its own gateway, one after the other, in the
same run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auth import connection_token  # noqa: E402
from bench.common import RefGateway, cpu_seconds, percentile, publish, rss_bytes, worktree  # noqa: E402
from tests.stack import SECRET, Gateway, Nsqd  # noqa: E402

PER_PROCESS = 5000


PROTOCOLS = {"json": "Centrifugo JSON", "protobuf": "Centrifugo Protobuf", "cable": "Action Cable v1-json",
             "cable-ext": "Action Cable ext-json"}


def measure(label: str, gateway: Gateway, nsqd: Nsqd, protocol: str, args) -> dict:
    """One run: N clients of one protocol on one gateway. Prints and returns the figures."""
    children: list[subprocess.Popen] = []
    try:
        pid = gateway.proc.pid
        time.sleep(0.5)
        rss_idle = rss_bytes(pid)
        processes = max(1, -(-args.clients // PER_PROCESS))
        sources = ",".join(f"127.0.0.{i}" for i in range(1, 9))
        t0 = time.monotonic()
        for n in range(processes):
            count = args.clients // processes + (1 if n < args.clients % processes else 0)
            children.append(subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("ws_clients.py")), f"--port={gateway.port}",
                 f"--count={count}", f"--token={connection_token(SECRET, f'bench-{n}')}",
                 f"--lat={args.latency_messages}", f"--tp={args.messages}", f"--sources={sources}",
                 f"--protocol={protocol}"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for child in children:
            ready = json.loads(child.stdout.readline())
            if ready.get("refused"):
                raise RuntimeError(f"{ready['refused']} subscribes refused")
        connect_time = time.monotonic() - t0
        time.sleep(1.0)
        rss_loaded = rss_bytes(pid)
        filler = "x" * args.payload

        cpu_lat_before = cpu_seconds(pid)
        for i in range(args.latency_messages):
            publish(nsqd, [json.dumps({"channel": "bench", "data": {"f": filler, "ts": time.time()}}).encode()])
            time.sleep(1 / args.rate)
        time.sleep(1.0)
        cpu_lat = cpu_seconds(pid) - cpu_lat_before

        writes_before = gateway.metric("pushgate_connection_writes_total")
        cpu_before = cpu_seconds(pid)
        t_start = time.time()
        body = json.dumps({"channel": "bench", "data": {"phase": "tp", "f": filler}}).encode()
        for start in range(0, args.messages, 100):
            publish(nsqd, [body] * min(100, args.messages - start))
        results = [json.loads(child.stdout.readline()) for child in children]
        cpu_after = cpu_seconds(pid)
        writes = gateway.metric("pushgate_connection_writes_total") - writes_before
        t_end = max(r["tp_last"] for r in results)
    finally:
        for child in children:
            child.kill()
            child.wait()

    deliveries = sum(r["tp_received"] for r in results)
    expected = sum(r["tp_expected"] for r in results)
    latencies = [x for r in results for x in r["latencies"]]
    lat_received = sum(r["lat_received"] for r in results)
    lat_expected = sum(r["lat_expected"] for r in results)
    elapsed = t_end - t_start
    cpu = cpu_after - cpu_before
    figures = {
        "label": label, "connect": connect_time, "p50": percentile(latencies, 0.50) * 1000,
        "p99": percentile(latencies, 0.99) * 1000, "lat_cpu": cpu_lat / max(lat_received, 1) * 1e6,
        "rate": deliveries / elapsed, "per_write": deliveries / max(writes, 1),
        "tp_cpu": cpu / max(deliveries, 1) * 1e6, "kb": (rss_loaded - rss_idle) / args.clients / 1024,
        "lost": deliveries != expected or lat_received != lat_expected,
        "closed": sum(r["closed"] for r in results),
    }
    print(f"{label}: {args.clients} clients in {processes} processes, one channel")
    print(f"  connect + subscribe all:     {connect_time:.1f} s")
    print(f"  latency phase:               {args.latency_messages} msgs at {args.rate:g}/s, "
          f"{lat_received}/{lat_expected} delivered")
    print(f"    publish->receive p50/p99:  {figures['p50']:.1f} / {figures['p99']:.1f} ms ({len(latencies)} samples)")
    print(f"    gateway CPU:               {figures['lat_cpu']:.2f} CPU-s per million deliveries")
    print(f"  throughput phase:            {args.messages} msgs, {deliveries}/{expected} delivered "
          f"in {elapsed:.2f} s")
    print(f"    delivered messages/s:      {figures['rate']:,.0f}")
    print(f"    frames per socket write:   {figures['per_write']:.2f}")
    print(f"    gateway CPU:               {figures['tp_cpu']:.2f} CPU-s per million deliveries (target <= 10)")
    print(f"  gateway RSS:                 {rss_idle / 2**20:.1f} MiB idle, {rss_loaded / 2**20:.1f} MiB loaded "
          f"= {figures['kb']:.1f} KB per connection (target <= 20)", flush=True)
    if figures["lost"] or figures["closed"]:
        print(f"  WARNING: lost deliveries or closed connections ({figures['closed']} closed)")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--messages", type=int, default=200, help="throughput-phase messages (M)")
    parser.add_argument("--latency-messages", type=int, default=50, help="latency-phase messages (L)")
    parser.add_argument("--rate", type=float, default=2.0, help="latency-phase messages per second "
                        "(keep N x rate well below capacity: this phase measures latency, not load)")
    parser.add_argument("--payload", type=int, default=64, help="bytes of filler in each message")
    parser.add_argument("--protocol", default="json",
                        help="the clients' protocol: json, protobuf, cable, cable-ext, or several comma-separated "
                        "(both = json,protobuf): one run of each, side by side")
    parser.add_argument("--ref", help="also measure this git commit (JSON clients), as the baseline")
    parser.add_argument("--gateway-arg", action="append", default=[], help="extra flag for pushgate serve")
    args = parser.parse_args()
    protocols = args.protocol.replace("both", "json,protobuf").split(",")
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        parser.error(f"--protocol: unknown {', '.join(unknown)} (known: {', '.join(PROTOCOLS)}, both)")

    work = Path(tempfile.mkdtemp(prefix="pushgate-bench-"))
    nsqd = Nsqd(work / "nsqd").start()
    # Admission limits are not what this measures (bench/flood.py does): let all
    # clients in at once.
    flags = ("--public-channels=bench", "--log-level=warning", "--connect-rate=1000000", "--connect-burst=1000000")
    runs = []
    try:
        if args.ref:
            with worktree(args.ref) as tree:
                old = RefGateway(tree, work / "gw-ref", nsqd, None, *flags, *args.gateway_arg).start()
                try:
                    runs.append(measure(f"pushgate {args.ref}, JSON (baseline)", old, nsqd, "json", args))
                finally:
                    old.stop()
        for protocol in protocols:
            gateway = Gateway(work / f"gw-{protocol}", nsqd, None, *flags, "--shed-loop-lag=1000",
                              *args.gateway_arg).start()
            try:
                runs.append(measure(f"pushgate, {PROTOCOLS[protocol]}", gateway, nsqd, protocol, args))
            finally:
                gateway.stop()
    finally:
        nsqd.stop()
    if len(runs) > 1:
        print("\nside by side:")
        print(f"  {'':36s} {'tp CPU-s/M':>11s} {'lat CPU-s/M':>12s} {'KB/conn':>8s} {'p50 ms':>7s} {'p99 ms':>7s}")
        for r in runs:
            print(f"  {r['label']:36s} {r['tp_cpu']:11.2f} {r['lat_cpu']:12.2f} {r['kb']:8.1f} {r['p50']:7.1f} "
                  f"{r['p99']:7.1f}")
    if any(r["lost"] or r["closed"] for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
