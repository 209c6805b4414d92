"""``make bench-million``: a million WebSocket connections on one box.

Gateway workers (``--workers``, enough for the open-file limit: 17,000
connections each at most) and C load clients (bench/loadgen.c, 18,000
connections a process, spread over 64 source addresses 127.0.0.1-64) on
this one box hold ``--connections`` connections, each of a distinct user,
each subscribed to its personal channel (``#<user>``, server-side), to
``all`` and to one of 100 shared channels (``shared:<user % 100>``); then:

* a publication to one shared channel, and one to ``all``: delivered to
  whom, p50/p99/max from publish to receipt (every tenth connection samples);
* ``--personal`` messages (10,000) to random users: each must reach exactly
  its user (the data names the user; a client counts what is not its own);
* pings: the gateway's CPU over ``--idle`` seconds of pings at
  ``--ping-interval``, per ping, and per 100,000 connections at the default
  25 s (an hour of pings is 144 a connection);
* memory per connection: the gateway's RSS (supervisor and workers) and the
  kernel's share (``/proc/net/sockstat``, ``Slab`` in ``/proc/meminfo``),
  before and after the clients connect;
* time to connect all, and errors; ``/metrics`` and ``/health`` of the box.

Prints and writes ``bench/results/<date>-million.md`` (and ``.json``), with
the limits of the box (open files, ports, somaxconn, conntrack, TCP memory)
read before the run and the load average beside each step. Develop with
``--connections 100000``; the million takes the whole box (RAM: about 14 GiB
with the clients).

    make bench-million                                     # 1,000,000
    .venv/bin/python bench/million.py --connections 100000
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ROOT, LoadClients, cpu_seconds, percentile, reasons, rss_bytes, start_stack,  # noqa: E402
                    tokens_file)
from tests.stack import http  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PER_WORKER = 17000       # connections a worker holds at most (20,000 open files a process)
PER_CLIENT = 18000       # connections a load process opens
SHARED = 100             # shared channels
# 256 source addresses (127.1.0.0/24: all of 127/8 is loopback). Ports
# enough are not the wall (64 addresses hold 1.8 million); the kernel's
# search for a free one is: connect() scans an address's ports from one
# offset, past every one in use, so at 14,000 in use per address (64
# addresses, 900,000 connections) __inet_check_established took a third of
# the box's CPU (perf). A quarter as many per address, a quarter the scan.
SOURCES = ",".join(f"127.1.0.{i}" for i in range(1, 256)) + ",127.1.1.1"
SYSCTLS = ["net.core.somaxconn", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_mem", "net.ipv4.tcp_rmem",
           "net.ipv4.tcp_wmem", "fs.file-max", "fs.nr_open", "net.netfilter.nf_conntrack_max",
           "net.netfilter.nf_conntrack_count", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_max_orphans"]


def sysctl(name: str) -> str:
    try:
        return Path("/proc/sys/" + name.replace(".", "/")).read_text().split("\n")[0].replace("\t", " ")
    except OSError as exc:
        return f"(unreadable: {exc.strerror})"


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, value = line.split(":", 1)
        out[name] = int(value.split()[0]) * 1024
    return out


def sockstat() -> dict[str, int]:
    """TCP counters of /proc/net/sockstat; ``mem`` in bytes (it counts pages)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            parts = line.split()[1:]
            stats = {parts[i]: int(parts[i + 1]) for i in range(0, len(parts), 2)}
            stats["mem"] *= os.sysconf("SC_PAGE_SIZE")
            return stats
    return {}


def kernel_view() -> dict:
    m = meminfo()
    return {"slab": m.get("Slab", 0), "sunreclaim": m.get("SUnreclaim", 0), "available": m.get("MemAvailable", 0),
            "tcp": sockstat(), "file_nr": Path("/proc/sys/fs/file-nr").read_text().split()[0]}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def limits(connections: int) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    found = {"uid": os.getuid(), "open_files": f"{soft} (hard {hard})", "cores": os.cpu_count(),
             "memory_gib": round(meminfo()["MemTotal"] / 2**30, 1)}
    found.update({name: sysctl(name) for name in SYSCTLS})
    # Two descriptors a connection on this box (the client's and the server's),
    # plus everything else running: raise the system-wide limit if we may.
    need = 2 * connections + 500000
    if int(found["fs.file-max"].split()[0]) < need:
        try:
            Path("/proc/sys/fs/file-max").write_text(str(need))
            found["fs.file-max (raised)"] = sysctl("fs.file-max")
        except OSError as exc:
            found["fs.file-max (could not raise)"] = exc.strerror
    return found


class Box:
    def __init__(self, connections: int, ping_interval: int):
        self.workers = max(2, -(-connections // PER_WORKER))
        # The suite's stack (its nsqd, admission limits lifted) with more room:
        # a publication to every user is one NSQ message per worker channel.
        self.work, self.nsqd, self.gateway = start_stack(
            self.workers, "--public-channels=all,shared:*", f"--ping-interval={ping_interval}",
            # Fifty workers and as many load processes on two cores: a worker
            # may wait its turn for longer than the default 10 s.
            "--worker-timeout=30",
            # Every worker is a node of the cluster: each heartbeats on the
            # control topic, which every other reads (n² messages). At the
            # default 5 s, 59 workers on two cores fell behind their own
            # heartbeats and expired each other (docs/benchmarks.md).
            "--presence-interval=30", "--presence-ttl=90", ready_timeout=600)
        self.pid = self.gateway.proc.pid

    def publish(self, bodies: list[bytes], rate: float = 0) -> None:
        """Through nsqd's /mpub; at ``rate`` a second if given (each worker
        reads every message: see --personal-rate)."""
        batch = max(1, int(rate / 10)) if rate else 500
        t0 = time.monotonic()
        for n, start in enumerate(range(0, len(bodies), batch)):
            if rate:
                delay = t0 + start / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            status, answer = http("POST", f"http://{self.nsqd.http_address}/mpub?topic=pushgate",
                                  b"\n".join(bodies[start:start + batch]), timeout=30)
            if status != 200:
                raise RuntimeError(f"mpub failed: {status} {answer!r}")

    def stop(self) -> None:
        self.gateway.stop(timeout=120)
        self.nsqd.stop()


def timed_get(url: str) -> tuple[int, float, int]:
    t0 = time.monotonic()
    try:
        status, body = http("GET", url, timeout=30)
    except OSError:
        return 0, time.monotonic() - t0, 0
    return status, time.monotonic() - t0, len(body)


def deliver(clients: LoadClients, expected: int, wait: float, key: str = "received") -> dict:
    """Reports until ``expected`` deliveries (of ``key``) or ``wait`` seconds."""
    got, lat = 0, []
    t0 = time.monotonic()
    last = None
    while True:
        time.sleep(0.5)
        report = clients.report()
        if key == "received":
            got += report["received"]
        else:
            got = report[key] - (deliver.base.get(key, 0))
        lat += report["latencies_ms"]
        last = report
        if got >= expected or time.monotonic() - t0 > wait:
            break
    if key != "received":
        deliver.base[key] = last[key]
    return {"received": got, "expected": expected, "seconds": round(time.monotonic() - t0, 1),
            "p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99), "max": max(lat, default=float("nan")),
            "samples": len(lat), "misdelivered": last["misdelivered"], "closed": last["closed"]}


deliver.base = {}   # type: ignore[attr-defined]


class MemoryGuard:
    """Stops the load clients if the box's MemAvailable falls under a floor
    while they connect: the box is shared, and the OOM killer picks whom it
    likes. Notes the most connections seen (TCP sockets in use / 2)."""

    def __init__(self, floor_gib: float, deadline: float):
        self.floor = floor_gib * 2**30
        self.deadline = time.monotonic() + deadline
        self.reason = ""
        self.peak = 0
        self.min_available = meminfo()["MemAvailable"]
        self._stop = False
        self._thread = None

    def watch(self, clients: LoadClients) -> None:
        import threading

        def loop() -> None:
            while not self._stop:
                available = meminfo()["MemAvailable"]
                self.min_available = min(self.min_available, available)
                self.peak = max(self.peak, sockstat().get("inuse", 0) // 2)
                late = time.monotonic() > self.deadline
                if available < self.floor or late:
                    self.reason = (f"not all connected within --connect-deadline; about {self.peak:,} connections"
                                   if late else f"MemAvailable {available / 2**30:.2f} GiB under the floor "
                                   f"{self.floor / 2**30:.2f} GiB at about {self.peak:,} connections")
                    for child in clients.children:
                        child.kill()
                    return
                time.sleep(1)
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop = True


def run(args) -> dict:
    n = args.connections
    out: dict = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "connections": n,
                 "limits": limits(n), "steps": {}, "command": " ".join(["bench/million.py", *sys.argv[1:]])}
    steps = out["steps"]
    tokens = tokens_file(Path(args.tokens_dir), n, "m")
    t0 = time.monotonic()
    box = Box(n, args.ping_interval)
    out["workers"] = box.workers
    out["start_seconds"] = round(time.monotonic() - t0, 1)
    clients = None
    try:
        time.sleep(2)
        rss0, kernel1, cpu0 = rss_bytes(box.pid), kernel_view(), cpu_seconds(box.pid)
        steps["before"] = {"rss_mb": rss0 / 2**20, "load": load()}
        t0 = time.monotonic()
        guard = MemoryGuard(args.memory_floor, args.connect_deadline)
        clients = LoadClients(box.gateway.port, n, tokens, channel="all", concurrency=args.concurrency,
                              per_process=PER_CLIENT, sources=SOURCES, shared=SHARED,
                              buffer=1024)   # the largest frame here is under 600 bytes
        guard.watch(clients)
        try:
            ready = clients.ready()
        except ValueError:   # the guard stopped the clients: no "ready" line
            guard.stop()
            steps["connect"] = {"aborted": guard.reason, "peak_connections": guard.peak, "load": load(),
                                "seconds": time.monotonic() - t0}
            print(json.dumps({"connect": steps["connect"]}), flush=True)
            return out
        guard.stop()
        steps["connect_peak_memory"] = {"min_available_gib": guard.min_available / 2**30, "peak": guard.peak}
        cpu = cpu_seconds(box.pid) - cpu0
        steps["connect"] = {"ready": ready["ready"], "errors": ready["errors"], "why": ready["why"], "retried": ready["retried"],
                            "seconds": ready["seconds"],
                            "rate": ready["ready"] / ready["seconds"], "cpu_ms": cpu / max(ready["ready"], 1) * 1000,
                            "load": load(), "client_processes": len(clients.children)}
        print(json.dumps({"connect": steps["connect"]}), flush=True)
        time.sleep(5)
        rss1, kernel2 = rss_bytes(box.pid), kernel_view()
        held = ready["ready"]
        client_rss = sum(rss_bytes(c.pid) for c in clients.children)
        steps["memory"] = {
            "gateway_rss_mb": rss1 / 2**20, "gateway_per_conn_kb": (rss1 - rss0) / max(held, 1) / 1024,
            "client_rss_mb": client_rss / 2**20,
            "slab_per_conn_kb": (kernel2["slab"] - kernel1["slab"]) / max(held, 1) / 1024,
            "tcp_mem_per_conn_kb": (kernel2["tcp"].get("mem", 0) - kernel1["tcp"].get("mem", 0)) / max(held, 1) / 1024,
            "available_drop_per_conn_kb": (kernel1["available"] - kernel2["available"]) / max(held, 1) / 1024,
            "sockstat": kernel2["tcp"], "file_nr": kernel2["file_nr"], "load": load(),
            "note": "slab and MemAvailable count both ends of each loopback connection (client and server sockets)"}
        print(json.dumps({"memory": steps["memory"]}), flush=True)

        # The box's own view, at this many workers.
        base = box.gateway.url
        status, seconds, size = timed_get(f"{base}/metrics")
        status2, seconds2, _ = timed_get(f"{base}/health")
        steps["box"] = {"metrics_status": status, "metrics_seconds": round(seconds, 2), "metrics_bytes": size,
                        "health_status": status2, "health_seconds": round(seconds2, 2), "load": load()}

        # Pings: the gateway's CPU while nothing but pings happen.
        pongs0 = clients.report()["pongs"]
        cpu0 = cpu_seconds(box.pid)
        time.sleep(args.idle)
        cpu = cpu_seconds(box.pid) - cpu0
        pongs = clients.report()["pongs"] - pongs0
        per_ping = cpu / max(pongs, 1)
        steps["pings"] = {"seconds": args.idle, "interval": args.ping_interval, "pongs": pongs,
                          "cpu_s": cpu, "cpu_us_per_ping": per_ping * 1e6,
                          "core_share": cpu / args.idle,
                          "core_share_per_100k_at_25s": per_ping * 100000 / 25,
                          "cpu_s_per_hour_per_100k_at_25s": per_ping * 100000 * 144, "load": load()}
        print(json.dumps({"pings": steps["pings"]}), flush=True)

        # One shared channel: the users whose number % 100 is 0 (every one of
        # them samples latency: the clients sample users whose number % 10 is 0).
        clients.report()
        members = sum(1 for g in range(n) if g % SHARED == 0)
        box.publish([json.dumps({"channel": "shared:0", "data": {"f": "x" * 64, "ts": time.time()}}).encode()])
        steps["shared"] = {**deliver(clients, members, args.wait), "load": load()}
        print(json.dumps({"shared": steps["shared"]}), flush=True)

        # Everyone.
        cpu0 = cpu_seconds(box.pid)
        box.publish([json.dumps({"channel": "all", "data": {"f": "x" * 64, "ts": time.time()}}).encode()])
        steps["all"] = {**deliver(clients, held, args.wait), "load": load()}
        steps["all"]["cpu_s"] = cpu_seconds(box.pid) - cpu0
        print(json.dumps({"all": steps["all"]}), flush=True)

        # Personal messages to random users, each for its user only.
        users = random.Random(24).sample(range(n), args.personal)
        before = clients.report()
        deliver.base["personal"] = before["personal"]
        bodies = [json.dumps({"user": f"m-{g}", "data": {"to": g, "ts": 0}}).encode() for g in users]
        stamped = [b.replace(b'"ts": 0', b'"ts": %.6f') for b in bodies]

        class Stamped(list):   # each body stamped as it is sent
            def __getitem__(self, index):
                items = list.__getitem__(self, index)
                now = time.time()
                return [b % now for b in items] if isinstance(index, slice) else items % now
        box.publish(Stamped(stamped), rate=args.personal_rate)
        steps["personal"] = {**deliver(clients, len(users), args.wait, key="personal"), "load": load(),
                             "rate": args.personal_rate}
        print(json.dumps({"personal": steps["personal"]}), flush=True)

        _, body = http("GET", f"{base}/metrics", timeout=30)
        wanted = ("pushgate_control_lag_seconds ", "pushgate_loop_lag_seconds ", "pushgate_connections ",
                  "pushgate_worker_up", 'pushgate_nsq_dropped_total{reason="stale"} ')
        lines = [ln for ln in body.decode().splitlines() if ln.startswith(wanted)]
        steps["metrics_after"] = {"up": sum(1 for ln in lines if ln.startswith("pushgate_worker_up") and
                                            ln.endswith(" 1.0")),
                                  **{ln.split()[0]: float(ln.split()[1]) for ln in lines
                                     if not ln.startswith("pushgate_worker_up")}}
        steps["nsqd_cpu_s"] = cpu_seconds(box.nsqd.proc.pid)
        log_text = box.gateway.log()
        steps["end"] = {"closed": clients.report()["closed"], "gateway_log_errors": sum(
            1 for ln in log_text.splitlines() if " ERROR " in ln or "Traceback" in ln),
            "workers_killed_or_restarted": log_text.count("restarting it in"),
            "stale_drops": log_text.count("--max-message-age"),
            "presence_late": log_text.count("speaks again after"),
            "control_not_sent": log_text.count("control message"), "load": load()}
    finally:
        if clients is not None:
            clients.stop()
        box.stop()
    return out


def report(r: dict) -> str:
    s = r["steps"]
    c, m, p = s.get("connect", {}), s.get("memory", {}), s.get("pings", {})
    lines = [f"# {r['connections']:,} WebSocket connections on one box, {r['date']}", "",
             f"{r['workers']} gateway workers, {c.get('client_processes', '?')} C load-client processes "
             f"(bench/loadgen.c) on the same {r['limits']['cores']} cores, {r['limits']['memory_gib']} GiB. "
             "Each connection a distinct user: its personal channel (server-side), `all`, and one of 100 "
             f"`shared:` channels. Run as `{r.get('command', 'bench/million.py')}`; repeat with "
             "`make bench-million` (`MILLION_ARGS` for the flags). "
             "The load average is beside each step: other work on the box shares its two cores.", "",
             "| step | figure |", "|---|---|",
             f"| start {r['workers']} workers | {r['start_seconds']} s |",
             f"| connected | **{c.get('ready', 0):,}** of {r['connections']:,}, {c.get('errors', '?')} errors{reasons(c.get('why'), c.get('retried', 0))}, "
             f"in {c.get('seconds', 0):.0f} s ({c.get('rate', 0):,.0f}/s, {c.get('cpu_ms', 0):.3f} ms CPU each; "
             f"load {c.get('load')}) |"]
    if c.get("aborted"):
        lines.append(f"| **stopped while connecting** | {c['aborted']} (after {c['seconds']:.0f} s) |")
    if s.get("connect_peak_memory"):
        lines.append(f"| lowest MemAvailable while connecting | {s['connect_peak_memory']['min_available_gib']:.2f} GiB |")
    if m:
        lines += [f"| gateway RSS | {m['gateway_rss_mb']:,.0f} MiB, **{m['gateway_per_conn_kb']:.2f} KB per "
                  f"connection** |",
                  f"| kernel: slab | +{m['slab_per_conn_kb']:.2f} KB per connection (both ends: client and server "
                  f"socket) |",
                  f"| kernel: TCP buffers (sockstat mem) | +{m['tcp_mem_per_conn_kb']:.3f} KB per connection |",
                  f"| MemAvailable fell by | {m['available_drop_per_conn_kb']:.2f} KB per connection (gateway, "
                  f"clients' {m['client_rss_mb']:,.0f} MiB, kernel) |",
                  f"| sockstat after | {m['sockstat']} |"]
    if s.get("box"):
        b = s["box"]
        lines.append(f"| the box's /metrics, /health at {r['workers']} workers | {b['metrics_status']} in "
                     f"{b['metrics_seconds']} s ({b['metrics_bytes']:,} bytes), {b['health_status']} in "
                     f"{b['health_seconds']} s |")
    if p:
        lines.append(f"| pings ({p['seconds']} s at --ping-interval={p['interval']}) | {p['pongs']:,} pongs, "
                     f"{p['cpu_us_per_ping']:.1f} µs of gateway CPU each; at 25 s: "
                     f"{p['core_share_per_100k_at_25s'] * 100:.1f} % of a core per 100,000 connections, "
                     f"{p['cpu_s_per_hour_per_100k_at_25s']:.0f} CPU-s per hour per 100,000 (load {p['load']}) |")
    for key, title in (("shared", "one shared channel (`shared:0`)"), ("all", "`all`, every connection")):
        if s.get(key):
            d = s[key]
            lines.append(f"| publication to {title} | {d['received']:,} of {d['expected']:,} in {d['seconds']} s; "
                         f"p50 {d['p50']:.0f} ms, p99 {d['p99']:.0f} ms, max {d['max']:.0f} ms "
                         f"({d['samples']:,} samples; load {d['load']}) |")
    if s.get("personal"):
        d = s["personal"]
        lines.append(f"| {d['expected']:,} personal messages to random users | {d['received']:,} received, "
                     f"{d['misdelivered']} by a user they were not for; published at {d.get('rate', '?')}/s, "
                     + (f"all in {d['seconds']} s after the last" if d['received'] >= d['expected']
                        else f"the rest not in {d['seconds']} s after the last")
                     + f", p50 {d['p50']:.0f} ms, "
                     f"p99 {d['p99']:.0f} ms (load {d['load']}) |")
    if s.get("metrics_after"):
        lines.append(f"| after: workers up, lags | {s['metrics_after']} |")
    if s.get("end"):
        lines.append(f"| connections the gateway closed | {s['end']['closed']:,}; ERROR lines in its log: "
                     f"{s['end']['gateway_log_errors']}; workers restarted: "
                     f"{s['end']['workers_killed_or_restarted']}; stale messages dropped: {s['end']['stale_drops']}; "
                     f"workers heard late by a peer: {s['end']['presence_late']}; control messages not sent: "
                     f"{s['end']['control_not_sent']} |")
    lines += ["", "## The box's limits, read before the run", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in r["limits"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1000000)
    parser.add_argument("--concurrency", type=int, default=1000, help="handshakes in flight, all processes")
    parser.add_argument("--ping-interval", type=int, default=25)
    parser.add_argument("--idle", type=float, default=60, help="seconds of pings measured")
    parser.add_argument("--personal", type=int, default=10000)
    parser.add_argument("--personal-rate", type=float, default=200,
                        help="personal messages a second: every worker reads each one (NSQ fan-out)")
    parser.add_argument("--wait", type=float, default=180, help="seconds a step waits for its deliveries")
    parser.add_argument("--memory-floor", type=float, default=1.5,
                        help="GiB of MemAvailable under which the clients are stopped (the box is shared)")
    parser.add_argument("--connect-deadline", type=float, default=1500,
                        help="seconds the clients have to connect before they are stopped (the peak is reported)")
    parser.add_argument("--tokens-dir", default="/tmp/pushgate-million-tokens")
    parser.add_argument("--no-write", action="store_true", help="print only, write no report")
    args = parser.parse_args()
    Path(args.tokens_dir).mkdir(parents=True, exist_ok=True)
    result = run(args)
    text = report(result)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
        name = f"{stamp}-million" if args.connections >= 1000000 else f"{stamp}-{args.connections // 1000}k"
        (RESULTS / f"{name}.md").write_text(text)
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1, default=str))
        print(f"report: {RESULTS / name}.md")


if __name__ == "__main__":
    main()
