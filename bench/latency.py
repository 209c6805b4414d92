"""Publish -> receive latency under steady load: N subscribers of one channel,
R publications a second for D seconds, through nsqd.

The C load client (bench/loadgen.c) samples the latency on every tenth
connection from the publisher's time in each publication. Prints p50, p99
and max, and the gateway's CPU per million deliveries.

    .venv/bin/python bench/latency.py --clients 10000 --rate 10 --workers 2
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import LoadClients, cpu_seconds, percentile, publication, publish, start_stack, tokens_file  # noqa: E402


def publish_steadily(nsqd, rate: float, seconds: float) -> int:
    """Publish at ``rate`` a second, on a fixed schedule; returns how many."""
    count = int(rate * seconds)
    t0 = time.monotonic()
    for i in range(count):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        publish(nsqd, [publication()])
    return count


def measure(gateway, nsqd, load: LoadClients, clients: int, rate: float, seconds: float) -> dict:
    load.report()  # forget what came before
    before = cpu_seconds(gateway.proc.pid)
    sent = publish_steadily(nsqd, rate, seconds)
    time.sleep(1.0)
    cpu = cpu_seconds(gateway.proc.pid) - before
    report = load.report()
    lat = report["latencies_ms"]
    return {"rate": rate, "sent": sent, "received": report["received"], "expected": sent * clients,
            "p50": percentile(lat, 0.5), "p90": percentile(lat, 0.9), "p99": percentile(lat, 0.99),
            "max": max(lat, default=float("nan")), "cpu_per_m": cpu / max(report["received"], 1) * 1e6,
            "closed": report["closed"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--rate", type=float, action="append", help="publications a second (repeatable)")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--gateway-arg", action="append", default=[])
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the gateway's environment")
    args = parser.parse_args()
    rates = args.rate or [10.0]
    extra_env = dict(item.split("=", 1) for item in args.env)
    work, nsqd, gateway = start_stack(args.workers, *args.gateway_arg, env=extra_env)
    load = None
    try:
        load = LoadClients(gateway.port, args.clients, tokens_file(work, args.clients))
        ready = load.ready()
        print(f"latency: {ready['ready']} subscribers ({ready['errors']} errors), {args.workers} worker(s)")
        for rate in rates:
            r = measure(gateway, nsqd, load, ready["ready"], rate, args.seconds)
            print(f"  {rate:6g} msg/s: p50 {r['p50']:7.1f} ms  p90 {r['p90']:7.1f} ms  p99 {r['p99']:7.1f} ms  "
                  f"max {r['max']:7.1f} ms  {r['received']}/{r['expected']} delivered  "
                  f"{r['cpu_per_m']:.2f} CPU-s per million", flush=True)
    finally:
        if load is not None:
            load.stop()
        gateway.stop()
        nsqd.stop()


if __name__ == "__main__":
    main()
