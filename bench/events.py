"""What the backend's events cost (--events-topic; docs/events.md): connect
rate and fan-out, side by side in one run, for

1. a baseline commit (``--ref``, default ``main``) with events off (as it has none),
2. this tree with events off: the feature off must cost nothing,
3. this tree with events on: a ``connect`` and a ``subscribe`` event per
   client (``--events-channels=bench``), published to nsqd as they happen.

Each is bench/fanout.py's measurement (same clients, same nsqd, one
gateway after the other). Then, on the events-on gateway, what a receipt
costs: ``--receipt-users`` users connected (bench/loadgen.c), and
``--receipt-messages`` personal messages to twice as many users (half of
them offline), without and then with ``"receipt": true``: gateway CPU per
message, until every outcome is out. The machine may be shared: run it
twice and read the spread before reading a difference.

    .venv/bin/python bench/events.py --clients 5000 --messages 100
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import LoadClients, RefGateway, cpu_seconds, publish, tokens_file, worktree  # noqa: E402
from bench.fanout import measure  # noqa: E402
from tests.stack import Gateway, Nsqd  # noqa: E402

EVENTS = ("--events-topic=bench-events", "--events-channels=bench", "--receipt-timeout=1")


def wait(check, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.2)


def receipts(gateway: Gateway, nsqd: Nsqd, work: Path, users: int, messages: int) -> dict:
    """Gateway CPU per personal message, without and with a receipt."""
    load = LoadClients(gateway.port, users, tokens_file(work, users, "r"))
    try:
        connected = load.ready()["ready"]
        out = {"users": connected}
        for receipt in (False, True):
            before_cpu = cpu_seconds(gateway.proc.pid)
            read = gateway.messages_read()
            outcomes = gateway.metric("pushgate_events_total", type="delivered") + \
                gateway.metric("pushgate_events_total", type="undelivered")
            for start in range(0, messages, 500):
                publish(nsqd, [json.dumps({"user": f"r-{n % (2 * users)}", "id": f"{receipt}-{n}", "data": n,
                                           **({"receipt": True} if receipt else {})}).encode()
                               for n in range(start, min(messages, start + 500))])
                wait(lambda: gateway.messages_read() >= read + start - 2000)   # at most a few batches behind
            wait(lambda: gateway.messages_read() >= read + messages)
            if receipt:
                wait(lambda: gateway.metric("pushgate_events_total", type="delivered")
                     + gateway.metric("pushgate_events_total", type="undelivered") >= outcomes + messages)
                wait(lambda: gateway.metric("pushgate_events_queued") == 0)
            load.report()
            out["with" if receipt else "without"] = (cpu_seconds(gateway.proc.pid) - before_cpu) / messages * 1e6
        return out
    finally:
        load.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=100, help="throughput-phase messages")
    parser.add_argument("--latency-messages", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--ref", default="main", help="the baseline commit (events off); '' to skip it")
    parser.add_argument("--receipt-users", type=int, default=1000, help="connected users for the receipts phase "
                        "(0: skip it)")
    parser.add_argument("--receipt-messages", type=int, default=20000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pushgate-bench-"))
    nsqd = Nsqd(work / "nsqd").start()
    flags = ("--public-channels=bench", "--log-level=warning", "--connect-rate=1000000", "--connect-burst=1000000",
             "--shed-loop-lag=1000")
    runs = []
    cost: dict | None = None
    try:
        if args.ref:
            with worktree(args.ref) as tree:
                old = RefGateway(tree, work / "gw-ref", nsqd, None, *flags).start()
                try:
                    runs.append(measure(f"{args.ref}, no events", old, nsqd, "json", args))
                finally:
                    old.stop()
        for label, extra in (("this tree, events off", ()), ("this tree, events on", EVENTS)):
            gateway = Gateway(work / f"gw-{len(runs)}", nsqd, None, *flags, *extra).start()
            try:
                figures = measure(label, gateway, nsqd, "json", args)
                figures["events"] = gateway.metric("pushgate_events_total", type="connect") + \
                    gateway.metric("pushgate_events_total", type="subscribe")
                figures["dropped"] = gateway.metric("pushgate_events_dropped_total", reason="full")
                runs.append(figures)
                if extra and args.receipt_users:
                    cost = receipts(gateway, nsqd, work, args.receipt_users, args.receipt_messages)
            finally:
                gateway.stop()
    finally:
        nsqd.stop()
    if cost is not None:
        print(f"\nreceipts: {args.receipt_messages} personal messages to {2 * args.receipt_users} users, "
              f"{cost['users']} connected: gateway CPU {cost['without']:.1f} s per million without a receipt, "
              f"{cost['with']:.1f} s per million with one (every outcome published)")
    print(f"\nside by side ({args.clients} clients, one channel):")
    print(f"  {'':28s} {'connect s':>9s} {'conn/s':>7s} {'tp CPU-s/M':>11s} {'lat CPU-s/M':>12s} {'KB/conn':>8s} "
          f"{'p50 ms':>7s} {'p99 ms':>7s} {'events':>7s}")
    for r in runs:
        events = f"{r['events']:.0f}" + (f" ({r['dropped']:.0f} dropped)" if r.get("dropped") else "") \
            if "events" in r else "-"
        print(f"  {r['label']:28s} {r['connect']:9.2f} {args.clients / r['connect']:7.0f} {r['tp_cpu']:11.2f} "
              f"{r['lat_cpu']:12.2f} {r['kb']:8.1f} {r['p50']:7.1f} {r['p99']:7.1f} {events:>7s}")
    if any(r["lost"] or r["closed"] for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
