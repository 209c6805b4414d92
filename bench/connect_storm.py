"""Connect storm: N clients connect and subscribe as fast as they can.

The C load client (bench/loadgen.c) opens N WebSocket connections, at most
--concurrency handshakes in flight, each sending connect (a distinct user's
token) and subscribe in one frame. Prints the rate at which they became
ready, the errors (target 0), and the gateway's CPU per connect + subscribe
(all its workers).

    .venv/bin/python bench/connect_storm.py --clients 10000 --workers 2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import LoadClients, cpu_seconds, start_stack, tokens_file  # noqa: E402


def storm(clients: int, workers: int, concurrency: int) -> dict:
    work, nsqd, gateway = start_stack(workers)
    load = None
    try:
        tokens = tokens_file(work, clients)
        before = cpu_seconds(gateway.proc.pid)
        load = LoadClients(gateway.port, clients, tokens, concurrency=concurrency)
        result = load.ready()
        cpu = cpu_seconds(gateway.proc.pid) - before
        return {**result, "rate": result["ready"] / result["seconds"], "cpu_ms": cpu / max(result["ready"], 1) * 1000}
    finally:
        if load is not None:
            load.stop()
        gateway.stop()
        nsqd.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    r = storm(args.clients, args.workers, args.concurrency)
    print(f"connect storm: {args.clients} clients, {args.concurrency} in flight, {args.workers} worker(s)")
    print(f"  ready:   {r['ready']} in {r['seconds']:.2f} s = {r['rate']:,.0f} connect+subscribe/s")
    print(f"  errors:  {r['errors']}")
    print(f"  gateway CPU per connect + subscribe: {r['cpu_ms']:.3f} ms")
    sys.exit(1 if r["errors"] else 0)


if __name__ == "__main__":
    main()
