"""History at its memory budget: what one publication costs once channels'
own state has spent ``--history-memory-bytes``, and what the periodic sweep
costs (in process, no network).

Fills a History with distinct channels published to once each (a site's
personal channels: every user got one publication within the TTL), by
default 5 % more than the budget holds (about 400 bytes of state each at
the commit the issue measured, 450 counted since), then times publications to further new
channels, one at a time: each one must relieve the budget. Then times one
slice of the sweep (the node sweeps a tenth of the channels every second)
and a whole sweep; and, for the everyday path, what a publication costs
while history is well within its budget. Issue 23 measured 72 ms per
publication at the budget with 160,000 channels.

    .venv/bin/python bench/history.py                       # 64 MiB, as the default
    .venv/bin/python bench/history.py --budget-mib 16 --ref a378d4b   # and another commit, as the baseline
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

T0 = 1_763_700_000 * 10**9


def below_budget(publications: int = 300_000, channels: int = 1000) -> float:
    """Microseconds per publication while history is well within its budget
    (the everyday path: store, trim by size), best of three."""
    from gateway.core.history import History, Retention
    best = float("inf")
    for _ in range(3):
        history = History(Retention(100, 300.0), memory_budget=1 << 40, margin_ns=10**9)
        history.continuity_from(T0 - 10**9)
        names = [f"room:{i}" for i in range(channels)]
        data = b'{"n":1}'
        add = history.add
        began = time.perf_counter()
        for i in range(publications):
            t = T0 + i * 1000
            add(names[i % channels], t, data, t)
        best = min(best, (time.perf_counter() - began) / publications * 1e6)
    return best


def measure(budget: int, channels: int, samples: int) -> dict:
    from gateway.core.history import History, Retention
    history = History(Retention(100, 300.0), memory_budget=budget, margin_ns=10**9)
    history.continuity_from(T0 - 10**9)
    t = T0
    started = time.perf_counter()
    for i in range(channels):
        t += 1000
        history.add(f"#user-{i}", t, b'{"n":1}', t)
    filled = time.perf_counter() - started
    times = []
    for i in range(samples):
        t += 1000
        began = time.perf_counter()
        history.add(f"#user-{channels + i}", t, b'{"n":1}', t)
        times.append(time.perf_counter() - began)
    times.sort()
    result = {"channels": channels, "fill_s": filled, "p50_ms": times[len(times) // 2] * 1e3,
              "p99_ms": times[int(len(times) * 0.99)] * 1e3, "max_ms": times[-1] * 1e3,
              "held_channels": len(history), "held_entries": history.entries}
    try:
        began = time.perf_counter()
        history.sweep(t, slices=10)
        result["sweep_slice_ms"] = (time.perf_counter() - began) * 1e3
    except TypeError:  # a commit without sweeps in slices
        result["sweep_slice_ms"] = None
    began = time.perf_counter()
    history.sweep(t)
    result["sweep_all_ms"] = (time.perf_counter() - began) * 1e3
    result["below_budget_us"] = below_budget()
    return result


def show(label: str, r: dict) -> None:
    slice_ = "n/a" if r["sweep_slice_ms"] is None else f"{r['sweep_slice_ms']:.1f} ms"
    print(f"{label}: {r['channels']:,} channels published to (filled in {r['fill_s']:.1f} s); "
          f"a publication then: p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, max {r['max_ms']:.3f} ms; "
          f"history holds {r['held_channels']:,} channels and {r['held_entries']:,} entries; "
          f"sweep: one slice {slice_}, all at once {r['sweep_all_ms']:.1f} ms; "
          f"a publication well within the budget: {r['below_budget_us']:.2f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-mib", type=int, default=64)
    parser.add_argument("--channels", type=int, help="distinct channels (default: 1.05 x budget / 400 bytes)")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--ref", help="also measure this git commit of pushgate, as the baseline")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one measurement, as JSON
    args = parser.parse_args()
    channels = args.channels or int(1.05 * (args.budget_mib << 20) / 400)
    if args.json:
        print(json.dumps(measure(args.budget_mib << 20, channels, args.samples)))
        return
    sys.path.insert(0, str(ROOT / "bench"))
    from common import measure_trees
    for label, figures in measure_trees("history.py", args.ref, "--budget-mib", str(args.budget_mib),
                                        "--channels", str(channels), "--samples", str(args.samples)):
        show(label, figures)

if __name__ == "__main__":
    main()
