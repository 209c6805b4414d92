"""Connect storm: N clients connect and subscribe as fast as they can.

The C load client (bench/loadgen.c) opens N WebSocket connections, at most
--concurrency handshakes in flight, each sending connect (a distinct user's
token) and subscribe in one frame. Prints the rate at which they became
ready, the errors (target 0), and the gateway's CPU per connect + subscribe
(all its workers); with --baseline, the same clients against the limit
(bench/baseline.c) in the same run, and the load average beside each.

    .venv/bin/python bench/connect_storm.py --clients 10000 --workers 2 --baseline
    .venv/bin/python bench/connect_storm.py --clients 10000 --workers 1 --profile /tmp/connect.prof

--profile runs the one node under cProfile (bench/profiled.py) and prints
the functions that cost most per connect: its rate and CPU are then the
profiler's, not the gateway's.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Baseline, LoadClients, cpu_seconds, reasons, start_stack, tokens_file  # noqa: E402


def storm(clients: int, workers: int, concurrency: int, profile: str | None = None) -> dict:
    program = [sys.executable, str(Path(__file__).resolve().parent / "profiled.py"), profile] if profile else None
    work, nsqd, gateway = start_stack(workers, program=program)
    load = None
    try:
        tokens = tokens_file(work, clients)
        return measure(gateway.proc.pid, gateway.port, clients, tokens, concurrency)
    finally:
        if load is not None:
            load.stop()
        gateway.stop(timeout=60)
        nsqd.stop()


def measure(pid: int, port: int, clients: int, tokens: Path, concurrency: int) -> dict:
    load = None
    try:
        load_before = os.getloadavg()[0]
        before = cpu_seconds(pid)
        load = LoadClients(port, clients, tokens, concurrency=concurrency)
        result = load.ready()
        cpu = cpu_seconds(pid) - before
        return {**result, "rate": result["ready"] / result["seconds"], "cpu_ms": cpu / max(result["ready"], 1) * 1000,
                "load": (load_before, os.getloadavg()[0]), "tokens": tokens}
    finally:
        if load is not None:
            load.stop()


def limit(clients: int, concurrency: int, tokens: Path) -> dict:
    baseline = Baseline()
    try:
        return measure(baseline.proc.pid, baseline.port, clients, tokens, concurrency)
    finally:
        baseline.stop()


def show(name: str, r: dict) -> None:
    print(f"  {name:9s} {r['ready']} ready in {r['seconds']:.2f} s = {r['rate']:,.0f} connect+subscribe/s, "
          f"{r['errors']} errors{reasons(r.get('why'), r.get('retried', 0))}, {r['cpu_ms']:.3f} ms CPU each (load average {r['load'][0]:.2f} before, "
          f"{r['load'][1]:.2f} after)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--baseline", action="store_true", help="the limit (bench/baseline.c) in the same run")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the node (--workers 1) into FILE")
    args = parser.parse_args()
    if args.profile and args.workers != 1:
        parser.error("--profile needs --workers 1")
    print(f"connect storm: {args.clients} clients, {args.concurrency} in flight, {args.workers} worker(s)")
    r = storm(args.clients, args.workers, args.concurrency, args.profile)
    show("pushgate", r)
    if args.baseline:
        show("limit", limit(args.clients, args.concurrency, r["tokens"]))
    if args.profile:
        import pstats
        print(f"\nprofile ({args.profile}), per connect + subscribe:")
        stats = pstats.Stats(args.profile)
        rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][3])   # cumulative time
        for (file, line, name), (cc, nc, tt, ct, _) in rows[:60]:
            print(f"  {ct / max(r['ready'], 1) * 1e6:8.1f} µs cum {tt / max(r['ready'], 1) * 1e6:8.1f} µs own "
                  f"{nc / max(r['ready'], 1):6.2f} calls  {Path(file).name}:{line} {name}")
    sys.exit(1 if r["errors"] else 0)


if __name__ == "__main__":
    main()
