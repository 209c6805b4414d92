"""``make bench``: every benchmark, each figure beside the physical limit
measured in the same run, written to a dated report.

The limit is bench/baseline.c: a minimal C WebSocket server that answers the
same clients (bench/loadgen.c) with canned replies and writes the same
pre-built frames to the same sockets, one send() each. What it costs is the
kernel's share, which no server avoids; the report says how close pushgate
is to it.

Measures, on --clients connections (default 10,000) of distinct users on one
channel, with --workers (default: one per core):

* idle memory per connection (connect + subscribe), and idle CPU (pings);
* connect storm: connect + subscribe rate, errors, CPU per connect;
* fan-out burst: --burst publications at once, CPU per million deliveries;
* fan-out steady: latency p50/p90/p99 at each --rates value, and CPU;
* 100,000 connections held on one box (--hold, 0 to skip): RSS per
  connection, connect rate, idle CPU, fan-out CPU and latency;
* the reconnect storm (bench/reconnect_storm.py) and churn (bench/churn.py).

Writes bench/results/<date>.md and a PNG of latency percentiles against the
message rate (pushgate and the limit).

    make bench                       # everything
    .venv/bin/python bench/suite.py --clients 5000 --hold 0 --quick
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ROOT, Baseline, LoadClients, cpu_seconds, percentile, publish, reasons,  # noqa: E402
                    rss_bytes, start_stack, tokens_file)
from tests.stack import http  # noqa: E402

RESULTS = ROOT / "bench" / "results"


class Pushgate:
    """The gateway (a supervisor and its workers) as a bench target."""

    name = "pushgate"

    def __init__(self, workers: int, *args: str, env: dict | None = None):
        self.work, self.nsqd, self.gateway = start_stack(workers, *args, env=env)
        self.port = self.gateway.port
        self.pid = self.gateway.proc.pid

    def publish(self, datas: list[dict]) -> None:
        publish(self.nsqd, [json.dumps({"channel": "bench", "data": d}).encode() for d in datas])

    def stop(self) -> None:
        self.gateway.stop()
        self.nsqd.stop()


class Limit:
    """bench/baseline.c as a bench target."""

    name = "limit"

    def __init__(self):
        self.baseline = Baseline()
        self.port = self.baseline.port
        self.pid = self.baseline.proc.pid

    def publish(self, datas: list[dict]) -> None:
        for data in datas:
            self.baseline.publish(data)

    def stop(self) -> None:
        self.baseline.stop()


def data(filler: str, **extra) -> dict:
    return {"f": filler, **extra, "ts": time.time()}


def connect(target, clients: int, tokens: Path, concurrency: int = 200) -> tuple[LoadClients, dict]:
    time.sleep(0.5)
    rss_before = rss_bytes(target.pid)
    cpu_before = cpu_seconds(target.pid)
    load = LoadClients(target.port, clients, tokens, concurrency=concurrency)
    ready = load.ready()
    cpu = cpu_seconds(target.pid) - cpu_before
    time.sleep(1.0)
    rss = rss_bytes(target.pid) - rss_before
    return load, {"ready": ready["ready"], "errors": ready["errors"], "why": ready["why"],
                  "retried": ready["retried"],
                  "rate": ready["ready"] / ready["seconds"],
                  "cpu_ms": cpu / max(ready["ready"], 1) * 1000, "kb": rss / max(ready["ready"], 1) / 1024}


def idle_cpu(target, seconds: float) -> float:
    before = cpu_seconds(target.pid)
    time.sleep(seconds)
    return (cpu_seconds(target.pid) - before) / seconds


def loop_lag(target) -> float | None:
    """The box's loop lag (its latest worker's recent maximum), from /metrics."""
    gateway = getattr(target, "gateway", None)
    if gateway is None:
        return None
    try:
        _, body = http("GET", f"{gateway.url}/metrics", timeout=5)
    except OSError:
        return None
    for line in body.decode().splitlines():
        if line.startswith("pushgate_loop_lag_seconds "):
            return float(line.split()[1])
    return None


def burst(target, load: LoadClients, clients: int, messages: int, filler: str) -> dict:
    load.report()
    lags: list[float] = []
    before = cpu_seconds(target.pid)
    t0 = time.time()
    for start in range(0, messages, 100):
        target.publish([data(filler, tp=1) for _ in range(min(100, messages - start))])
    expected = messages * clients
    received = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)
        received += load.report()["received"]
        lag = loop_lag(target)
        if lag is not None:
            lags.append(lag)
        if received >= expected:
            break
    elapsed = time.time() - t0
    cpu = cpu_seconds(target.pid) - before
    return {"received": received, "expected": expected, "cpu_per_m": cpu / max(received, 1) * 1e6,
            "rate": received / elapsed, "max_loop_lag": max(lags, default=None)}


def steady(target, load: LoadClients, clients: int, rate: float, seconds: float, filler: str,
           wait: float = 1.0) -> dict:
    """Publish at ``rate`` for ``seconds``; then wait up to ``wait`` seconds
    for every delivery (a box past its capacity delivers late, not never)."""
    load.report()
    before = cpu_seconds(target.pid)
    count = int(rate * seconds)
    t0 = time.monotonic()
    for i in range(count):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        target.publish([data(filler)])
    expected = count * clients
    received, lat = 0, []
    deadline = time.monotonic() + wait
    while True:
        time.sleep(min(1.0, wait))
        report = load.report()
        received += report["received"]
        lat += report["latencies_ms"]
        if received >= expected or time.monotonic() >= deadline:
            break
    cpu = cpu_seconds(target.pid) - before
    return {"rate": rate, "received": received, "expected": expected,
            "p50": percentile(lat, 0.5), "p90": percentile(lat, 0.9), "p99": percentile(lat, 0.99),
            "max": max(lat, default=float("nan")), "cpu_per_m": cpu / max(received, 1) * 1e6}


def run_target(target, args, tokens: Path) -> dict:
    out: dict = {}
    load, out["connect"] = connect(target, args.clients, tokens)
    try:
        out["idle_cpu"] = idle_cpu(target, args.idle_seconds)
        out["burst"] = burst(target, load, out["connect"]["ready"], args.burst, "x" * args.payload)
        out["steady"] = [steady(target, load, out["connect"]["ready"], rate, args.seconds, "x" * args.payload)
                         for rate in args.rates]
    finally:
        load.stop()
    return out


def hold(args) -> dict:
    """--hold connections on one box: workers enough for the open-file limit."""
    workers = max(args.workers, -(-args.hold // 18000))
    target = Pushgate(workers, "--ping-interval=25")
    try:
        tokens = tokens_file(target.work, args.hold, "hold")
        load, result = connect(target, args.hold, tokens, concurrency=400)
        try:
            result["workers"] = workers
            result["idle_cpu"] = idle_cpu(target, args.idle_seconds)
            result["burst"] = burst(target, load, result["ready"], 20, "x" * args.payload)
            # One publication every 5 s: at 100,000 subscribers each is 100,000
            # deliveries, about what a 2-core box does in a second with its
            # clients on the same box.
            result["steady"] = steady(target, load, result["ready"], 0.2, 25, "x" * args.payload, wait=60)
            ended = load.report()
            result["closed"], result["resubscribed"] = ended["closed"], ended["resubscribed"]
            result["rss_mb"] = rss_bytes(target.pid) / 2**20
        finally:
            load.stop()
        return result
    finally:
        target.stop()


def script(name: str, *argv: str) -> str:
    """Run another bench script; its printed figures go into the report."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / name), *argv], capture_output=True, text=True,
                          timeout=900)
    return (done.stdout + (f"\n(exit {done.returncode}) {done.stderr[-2000:]}" if done.returncode else "")).strip()


def plot(path: Path, results: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, style in (("pushgate", "-"), ("limit", "--")):
        rows = results[name]["steady"]
        rates = [r["rate"] for r in rows]
        for key, marker in (("p50", "o"), ("p90", "s"), ("p99", "^")):
            ax.plot(rates, [r[key] for r in rows], style, marker=marker, label=f"{name} {key}")
    ax.set_xscale("log")
    ax.set_xlabel("publications per second (to every subscriber)")
    ax.set_ylabel("publish → receive (ms)")
    ax.set_title(f"{results['clients']:,} subscribers, {results['workers']} worker(s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(results: dict, png: Path) -> str:
    p, lim = results["pushgate"], results["limit"]
    ratio = lambda a, b: f"{a / b:.2f}×" if b else "-"  # noqa: E731
    lines = [
        f"# pushgate benchmarks, {results['date']}",
        "",
        f"{results['machine']}. {results['clients']:,} clients of distinct users on one channel (bench/loadgen.c), "
        f"pushgate with {results['workers']} worker(s). The limit is bench/baseline.c: the same clients, the same "
        "frames written to the same sockets, no protocol logic (the kernel's share). Repeat with `make bench`.",
        "",
        "| | pushgate | limit | pushgate / limit |",
        "|---|---|---|---|",
        f"| connect + subscribe rate | {p['connect']['rate']:,.0f}/s ({p['connect']['errors']} errors"
        f"{reasons(p['connect'].get('why'), p['connect'].get('retried', 0))}) | "
        f"{lim['connect']['rate']:,.0f}/s | {ratio(p['connect']['rate'], lim['connect']['rate'])} |",
        f"| CPU per connect + subscribe | {p['connect']['cpu_ms']:.3f} ms | {lim['connect']['cpu_ms']:.3f} ms | "
        f"{ratio(p['connect']['cpu_ms'], lim['connect']['cpu_ms'])} |",
        f"| idle memory per connection | {p['connect']['kb']:.1f} KB | {lim['connect']['kb']:.1f} KB | "
        f"{ratio(p['connect']['kb'], lim['connect']['kb'])} |",
        f"| idle CPU (pings every 25 s) | {p['idle_cpu'] * 100:.2f}% of a core | {lim['idle_cpu'] * 100:.2f}% | |",
        f"| fan-out burst ({results['burst']} msgs): CPU per million deliveries | {p['burst']['cpu_per_m']:.2f} s | "
        f"{lim['burst']['cpu_per_m']:.2f} s | {ratio(p['burst']['cpu_per_m'], lim['burst']['cpu_per_m'])} |",
        f"| fan-out burst: deliveries/s | {p['burst']['rate']:,.0f} | {lim['burst']['rate']:,.0f} | |",
    ]
    for ps, ls in zip(p["steady"], lim["steady"]):
        lines.append(f"| {ps['rate']:g} msg/s: p50 / p90 / p99 (ms) | {ps['p50']:.1f} / {ps['p90']:.1f} / "
                     f"{ps['p99']:.1f} | {ls['p50']:.1f} / {ls['p90']:.1f} / {ls['p99']:.1f} | |")
        lines.append(f"| {ps['rate']:g} msg/s: CPU per million deliveries | {ps['cpu_per_m']:.2f} s | "
                     f"{ls['cpu_per_m']:.2f} s | {ratio(ps['cpu_per_m'], ls['cpu_per_m'])} |")
    lines += ["", f"![latency percentiles against message rate]({png.name})", ""]
    if results.get("hold"):
        h = results["hold"]
        lines += [f"## {h['ready']:,} connections on one box ({h['workers']} workers)", "",
                  f"- connected: {h['ready']:,}, errors {h['errors']}{reasons(h.get('why'), h.get('retried', 0))}, at {h['rate']:,.0f}/s, "
                  f"{h['cpu_ms']:.3f} ms CPU each",
                  f"- RSS per connection: {h['kb']:.1f} KB ({h['rss_mb']:.0f} MiB for the box)",
                  f"- idle CPU (pings): {h['idle_cpu'] * 100:.1f}% of a core",
                  f"- fan-out burst (20 msgs): {h['burst']['received']:,}/{h['burst']['expected']:,} delivered, "
                  f"{h['burst']['cpu_per_m']:.2f} CPU-s per million",
                  f"- a publication every 5 s to all: {h['steady']['received']:,}/{h['steady']['expected']:,} delivered, p50 "
                  f"{h['steady']['p50']:.0f} ms, p99 {h['steady']['p99']:.0f} ms",
                  f"- connections the gateway closed: {h.get('closed', 0):,}; subscriptions it ended (2500, a "
                  f"publication lost: docs/recovery.md) and the clients renewed: {h.get('resubscribed', 0):,}", ""]
    for title, key in (("Reconnect storm (bench/reconnect_storm.py)", "storm"), ("Churn (bench/churn.py)", "churn")):
        if results.get(key):
            lines += [f"## {title}", "", "```", results[key], "```", ""]
    return "\n".join(lines)


def hold_report(h: dict, date: str) -> str:
    return "\n".join([
        f"# {h['ready']:,} connections held on one box, {date}", "",
        f"`bench/suite.py --hold-only --hold {h['ready']}`: {h['workers']} workers, bench/loadgen.c processes on the "
        f"same cores; load average {h['load'][0]} before, {h['load'][1]} after (other work shares the box).", "",
        f"- connected: {h['ready']:,}, errors {h['errors']}{reasons(h.get('why'), h.get('retried', 0))}, at {h['rate']:,.0f}/s, "
        f"{h['cpu_ms']:.3f} ms CPU each",
        f"- RSS per connection: {h['kb']:.1f} KB ({h['rss_mb']:.0f} MiB for the box)",
        f"- idle CPU (pings): {h['idle_cpu'] * 100:.1f}% of a core",
        f"- fan-out burst (20 msgs): {h['burst']['received']:,}/{h['burst']['expected']:,} delivered, "
        f"{h['burst']['rate']:,.0f} deliveries/s, {h['burst']['cpu_per_m']:.2f} CPU-s per million; the box's "
        f"loop lag during it, at most {h['burst'].get('max_loop_lag') or 0:.2f} s (sampled every 0.5 s)",
        f"- a publication every 5 s to all: {h['steady']['received']:,}/{h['steady']['expected']:,} delivered, "
        f"p50 {h['steady']['p50']:.0f} ms, p99 {h['steady']['p99']:.0f} ms, max {h['steady']['max']:.0f} ms",
        f"- connections the gateway closed: {h.get('closed', 0):,}; subscriptions it ended (2500) and the clients "
        f"renewed: {h.get('resubscribed', 0):,}",
        f"- everything delivered: **{'yes' if h['burst']['received'] >= h['burst']['expected'] and h['steady']['received'] >= h['steady']['expected'] else 'NO'}**",
        ""])


def hold_only(args) -> None:
    load_before = round(os.getloadavg()[0], 2)
    h = hold(args)
    h["load"] = (load_before, round(os.getloadavg()[0], 2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    text = hold_report(h, datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))
    (RESULTS / f"{stamp}-hold.md").write_text(text)
    (RESULTS / f"{stamp}-hold.json").write_text(json.dumps(h, indent=1, default=str))
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rates", type=float, nargs="+", default=[1, 2, 5, 10, 20])
    parser.add_argument("--seconds", type=float, default=15, help="per steady rate")
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--hold", type=int, default=100000, help="connections for the hold test (0: skip)")
    parser.add_argument("--quick", action="store_true", help="skip the reconnect storm and churn scripts")
    parser.add_argument("--hold-only", action="store_true",
                        help="only the --hold run: its report to bench/results/<date>-hold.md (and .json)")
    args = parser.parse_args()
    if args.hold_only:
        hold_only(args)
        return

    results = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "clients": args.clients,
               "workers": args.workers, "burst": args.burst,
               "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
                          f"{platform.system()} {platform.release()}"}
    pushgate = Pushgate(args.workers)
    try:
        results["pushgate"] = run_target(pushgate, args, tokens_file(pushgate.work, args.clients))
        tokens = tokens_file(pushgate.work, args.clients)
    finally:
        pushgate.stop()
    print(json.dumps({"pushgate": results["pushgate"]}, default=str)[:2000], flush=True)
    limit = Limit()
    try:
        results["limit"] = run_target(limit, args, tokens)
    finally:
        limit.stop()
    print(json.dumps({"limit": results["limit"]}, default=str)[:2000], flush=True)
    if args.hold:
        results["hold"] = hold(args)
        print(json.dumps({"hold": results["hold"]}, default=str)[:2000], flush=True)
    if not args.quick:
        results["storm"] = script("reconnect_storm.py", "--clients", "5000")
        results["churn"] = script("churn.py", "--rounds", "10", "--connections", "2000")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    png = RESULTS / f"{stamp}-latency.png"
    plot(png, results)
    md = RESULTS / f"{stamp}.md"
    md.write_text(report(results, png))
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\nreport: {md}\nplot:   {png}")
    print(md.read_text())


if __name__ == "__main__":
    main()
