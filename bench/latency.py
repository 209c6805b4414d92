"""Publish -> receive latency under steady load: N subscribers of one channel,
R publications a second for D seconds, through nsqd (the steady-load part of
bench/suite.py, on its own).

The C load client (bench/loadgen.c) samples the latency on every tenth
connection from the publisher's time in each publication. Prints p50, p90,
p99 and max, and the gateway's CPU per million deliveries.

    .venv/bin/python bench/latency.py --clients 10000 --rate 10 --workers 2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import tokens_file  # noqa: E402
from suite import Pushgate, connect, steady  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--rate", type=float, action="append", help="publications a second (repeatable)")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--gateway-arg", action="append", default=[])
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the gateway's environment")
    args = parser.parse_args()
    target = Pushgate(args.workers, *args.gateway_arg, env=dict(item.split("=", 1) for item in args.env) or None)
    load = None
    try:
        load, ready = connect(target, args.clients, tokens_file(target.work, args.clients))
        print(f"latency: {ready['ready']} subscribers ({ready['errors']} errors), {args.workers} worker(s)")
        for rate in args.rate or [10.0]:
            r = steady(target, load, ready["ready"], rate, args.seconds, "x" * args.payload)
            print(f"  {rate:6g} msg/s: p50 {r['p50']:7.1f} ms  p90 {r['p90']:7.1f} ms  p99 {r['p99']:7.1f} ms  "
                  f"max {r['max']:7.1f} ms  {r['received']}/{r['expected']} delivered  "
                  f"{r['cpu_per_m']:.2f} CPU-s per million", flush=True)
    finally:
        if load is not None:
            load.stop()
        target.stop()


if __name__ == "__main__":
    main()
