"""The publication path in process: what one NSQ message costs from
``Ingest.handle`` to every subscriber's queue, with no socket and no other
process, so the figures are those of the code alone (the fan-out benchmark,
bench/fanout.py, measures the whole node and moves with the machine's load).

Cases, each on one channel with N JSON subscribers:

* ``plain``: data only, the common case; with ``--ref`` the same case on
  another commit, in the same run, as the baseline: tags, info and filters
  must cost nothing when absent;
* ``tagged``: the same message with two tags;
* ``filtered``: tagged, and every tenth subscriber has a tags filter.

    .venv/bin/python bench/publication_path.py --ref main
    .venv/bin/python bench/publication_path.py --subscribers 1 --ref main   # the per-message part

Prints nanoseconds per delivery: the minimum and median of the repeats.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(case: str, subscribers: int, messages: int, repeats: int) -> tuple[float, float]:
    from gateway.core.history import History, Retention
    from gateway.core.hub import Hub
    from gateway.core.metrics import Metrics
    from gateway.core.wire import WireFormat
    from gateway.nsq.ingest import Ingest
    from gateway.protocols.centrifugo.json_codec import JSON

    class Subscriber:
        __slots__ = ("push",)

        def __init__(self) -> None:
            self.push = lambda frame: None

    hub = Hub()
    wire = WireFormat("bench", JSON, lambda message: message)
    subs = [Subscriber() for _ in range(subscribers)]
    for sub in subs:
        hub.subscribe("news", sub, wire)   # type: ignore[arg-type]
    if case == "filtered":
        from gateway.core.tags import compile_filter
        for sub in subs[::10]:
            hub.set_filter("news", sub, compile_filter({"key": "kind", "cmp": "eq", "val": "goal"}))  # type: ignore
    now = time.time_ns()
    ingest = Ingest(hub, Metrics(), History(Retention(100, 300)), envelope_topic="t", mapped={},
                    max_message_bytes=65536, max_message_age=1e9, dedupe_window=10000, clock=lambda: now)
    tags = b',"tags":{"kind":"goal","minute":"12"}' if case != "plain" else b""
    body = b'{"channel":"news","data":{"text":"' + b"x" * 64 + b'"}' + tags + b"}"
    results = []
    n = 0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(messages):
            n += 1
            ingest.handle("t", body, now + n, "nsqd", b"%016d" % n)
        results.append((time.perf_counter() - start) / (messages * subscribers) * 1e9)
    return min(results), statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=10000)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ref", help="also measure the plain case on this git commit, as the baseline")
    parser.add_argument("--case", help=argparse.SUPPRESS)   # one case in this process (the --ref run)
    args = parser.parse_args()
    if args.case:
        low, mid = measure(args.case, args.subscribers, args.messages, args.repeats)
        print(f"{low} {mid}")
        return
    sizes = ["--subscribers", str(args.subscribers), "--messages", str(args.messages), "--repeats", str(args.repeats)]
    rows = []

    def run_in(tree: Path, case: str) -> tuple[float, float]:
        # The script of this checkout, the code of ``tree``.
        out = subprocess.run([sys.executable, __file__, "--case", case, *sizes], cwd=tree, check=True,
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)}).stdout
        low, mid = map(float, out.split())
        return low, mid

    if args.ref:
        sys.path.insert(0, str(ROOT))
        from bench.common import worktree
        with worktree(args.ref) as tree:
            rows.append((f"plain, {args.ref} (baseline)", run_in(tree, "plain")))
            rows.append(("plain, this checkout", run_in(ROOT, "plain")))
            rows.append((f"plain, {args.ref} (again)", run_in(tree, "plain")))
    else:
        rows.append(("plain, this checkout", run_in(ROOT, "plain")))
    rows.append(("tagged, this checkout", run_in(ROOT, "tagged")))
    rows.append(("filtered (1 in 10), this checkout", run_in(ROOT, "filtered")))
    print(f"one channel, {args.subscribers} JSON subscribers, {args.messages} messages x {args.repeats} repeats")
    print(f"  {'case':40} {'ns/delivery min':>16} {'median':>8}")
    for name, (low, mid) in rows:
        print(f"  {name:40} {low:16.1f} {mid:8.1f}")


if __name__ == "__main__":
    main()
