"""What the backend's events cost (--events-topic; docs/events.md): connect
rate and fan-out, side by side in one run, for

1. a baseline commit (``--ref``, default ``main``) with events off (as it has none),
2. this tree with events off: the feature off must cost nothing,
3. this tree with events on: a ``connect`` and a ``subscribe`` event per
   client (``--events-channels=bench``), published to nsqd as they happen.

Each is bench/fanout.py's measurement (same clients, same nsqd, one
gateway after the other). The machine may be shared: run it twice and
read the spread before reading a difference.

    .venv/bin/python bench/events.py --clients 5000 --messages 100
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RefGateway, worktree  # noqa: E402
from bench.fanout import measure  # noqa: E402
from tests.stack import Gateway, Nsqd  # noqa: E402

EVENTS = ("--events-topic=bench-events", "--events-channels=bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=100, help="throughput-phase messages")
    parser.add_argument("--latency-messages", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--ref", default="main", help="the baseline commit (events off); '' to skip it")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pushgate-bench-"))
    nsqd = Nsqd(work / "nsqd").start()
    flags = ("--public-channels=bench", "--log-level=warning", "--connect-rate=1000000", "--connect-burst=1000000",
             "--shed-loop-lag=1000")
    runs = []
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
            finally:
                gateway.stop()
    finally:
        nsqd.stop()
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
