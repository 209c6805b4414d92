"""Presence cost for a channel of N subscribers (default 10,000).

Two parts:

1. **In process** (no network): a real SessionHost with N real sessions
   (recording transports instead of sockets) subscribed to one channel with
   presence on, and a second table that receives them as another node would
   (the snapshot messages). tracemalloc measures what an entry costs, local
   (this node's subscriber) and remote (another node's); time.perf_counter
   the table's ``stats`` and ``clients``, and the presence reply encoded as
   the JSON protocol sends it.
2. **Against a real gateway and nsqd**: N entries reach the gateway as
   another node's presence snapshot through the control topic; then
   ``presence_stats`` and ``presence`` calls over the server HTTP API
   (``/api/<method>``, what the `cent` client sends), one at a time. Prints
   the latency per call, the gateway's CPU per call (from /proc) and its RSS
   before and after the entries arrived. The client is this process, on the
   same 2 cores: latency includes its own HTTP and JSON work.

    .venv/bin/python bench/presence.py                 # 10,000 entries
    .venv/bin/python bench/presence.py --entries 50000 --calls 100
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auth import connection_token  # noqa: E402
from bench.common import cpu_seconds, percentile, rss_bytes  # noqa: E402
from gateway.protocols.centrifugo.json_codec import JSON, Raw  # noqa: E402
from gateway.cluster.presence import KIND_SNAPSHOT  # noqa: E402
from tests.inprocess import frame, make_host, open_session  # noqa: E402
from tests.stack import API_KEY, SECRET, Gateway, Nsqd, http  # noqa: E402

CHANNEL = "room:bench"


def timed(fn, repeat: int) -> tuple[float, float]:
    """(p50, p99) seconds per call."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return percentile(samples, 0.5), percentile(samples, 0.99)


def in_process(entries: int, repeat: int) -> dict:
    host = make_host(presence=["room:*"], public_channels="room:*")
    sessions = []
    for i in range(entries):
        session, transport = open_session(host)
        token = connection_token(SECRET, f"user{i % (entries // 2 or 1)}", info={"name": f"User {i}"})
        session.handle_frame(frame({"id": 1, "connect": {"token": token}}))
        transport.sent.clear()
        sessions.append((session, transport))
    # Local entries: what subscribing adds (the hub's entry is measured apart).
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for session, transport in sessions:
        session.handle_frame(frame({"id": 2, "subscribe": {"channel": CHANNEL}}))
        transport.sent.clear()
    host.presence.take_deltas()   # sent within 20 ms in a node: not part of what an entry keeps
    subscribed = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    hub_only = make_host(public_channels="room:*")
    hub_sessions = []
    for i in range(entries):
        session, transport = open_session(hub_only)
        session.handle_frame(frame({"id": 1, "connect": {"token": connection_token(SECRET, f"u{i}")}}))
        hub_sessions.append((session, transport))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for session, transport in hub_sessions:
        session.handle_frame(frame({"id": 2, "subscribe": {"channel": CHANNEL}}))
        transport.sent.clear()
    hub_cost = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    # Remote entries: another node's table, fed this node's snapshot.
    build_started = time.perf_counter()
    snapshot = host.presence.snapshot()
    build = time.perf_counter() - build_started
    wire_bytes = sum(len(json.dumps(part)) for part in snapshot)
    other = make_host(presence=["room:*"], public_channels="room:*")
    messages = [{"kind": KIND_SNAPSHOT, "from": "bench-a", **part} for part in json.loads(json.dumps(snapshot))]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    receive_started = time.perf_counter()
    for message in messages:
        other.presence.receive(message)
    receive = time.perf_counter() - receive_started
    remote = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert other.presence.stats(CHANNEL)[0] == entries
    del messages

    stats = timed(lambda: host.presence.stats(CHANNEL), repeat * 100)
    clients = timed(lambda: host.presence.clients(CHANNEL), repeat)
    generic = timed(lambda: JSON.reply(1, "presence", {"presence": host.presence.clients(CHANNEL)}), repeat)
    reply = timed(lambda: JSON.reply(1, "presence", {"presence": Raw(host.presence.clients_json(CHANNEL))}), repeat)
    sweep = timed(other.presence.sweep, repeat)
    return {"local_entry": (subscribed - hub_cost) / entries, "hub_entry": hub_cost / entries,
            "remote_entry": remote / entries, "snapshot_build": build, "snapshot_bytes": wire_bytes,
            "snapshot_parts": len(snapshot), "snapshot_receive": receive, "stats": stats, "clients": clients,
            "reply": reply, "generic": generic, "sweep": sweep,
            "reply_bytes": len(JSON.reply(1, "presence", {"presence": host.presence.clients(CHANNEL)}))}


def against_gateway(entries: int, calls: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="pushgate-bench-presence-"))
    nsqd = Nsqd(work / "nsqd").start()
    gateway = Gateway(work / "gw", nsqd, None, "--presence=room:*", "--presence-interval=300", "--presence-ttl=900",
                      "--log-level=warning", "--shed-loop-lag=1000").start()
    try:
        pid = gateway.proc.pid
        time.sleep(1.0)
        rss_before = rss_bytes(pid)
        uid, part, parts = str(uuid.uuid4()), [], []
        for i in range(entries):
            part.append([CHANNEL, str(uuid.uuid4()), f"user{i % (entries // 2 or 1)}", json.dumps({"name": f"User {i}"}),
                         None])
            if len(part) == 2000:
                parts.append(part)
                part = []
        if part:
            parts.append(part)
        for i, items in enumerate(parts):
            body = json.dumps({"kind": KIND_SNAPSHOT, "from": "bench-peer", "to": "", "uid": uid, "round": 1,
                               "part": i, "parts": len(parts), "up": items}).encode()
            nsqd.publish(body, topic="pushgate-control")
        url = f"{gateway.url}/api"
        headers = {"X-API-Key": API_KEY}

        def call(method: str) -> dict:
            status, body = http("POST", f"{url}/{method}", json.dumps({"channel": CHANNEL}).encode(), headers)
            assert status == 200, (status, body)
            return json.loads(body)["result"]

        deadline = time.monotonic() + 60
        while call("presence_stats")["num_clients"] < entries:
            assert time.monotonic() < deadline, "the entries did not arrive"
            time.sleep(0.1)
        time.sleep(0.5)
        rss_after = rss_bytes(pid)
        out = {"rss_per_entry": (rss_after - rss_before) / entries}
        for method, count in (("presence_stats", calls * 10), ("presence", calls)):
            samples = []
            cpu0 = cpu_seconds(pid)
            for _ in range(count):
                started = time.perf_counter()
                result = call(method)
                samples.append(time.perf_counter() - started)
            cpu = cpu_seconds(pid) - cpu0
            if method == "presence":
                assert len(result["presence"]) == entries
            out[method] = (percentile(samples, 0.5), percentile(samples, 0.99), cpu / count)
        return out
    finally:
        gateway.stop()
        nsqd.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=10000)
    parser.add_argument("--calls", type=int, default=50, help="presence calls (presence_stats: ten times as many)")
    args = parser.parse_args()
    n = args.entries
    print(f"presence of one channel with {n:,} subscribers (CPython {sys.version.split()[0]})\n")
    r = in_process(n, max(5, args.calls // 5))
    print("in process:")
    print(f"  memory per entry, this node's subscriber: {r['local_entry']:.0f} B "
          f"(beside the hub's {r['hub_entry']:.0f} B per subscription)")
    print(f"  memory per entry, another node's:         {r['remote_entry']:.0f} B")
    print(f"  stats (presence_stats):   p50 {r['stats'][0] * 1e6:.2f} µs, p99 {r['stats'][1] * 1e6:.2f} µs")
    print(f"  clients (presence):       p50 {r['clients'][0] * 1e3:.1f} ms, p99 {r['clients'][1] * 1e3:.1f} ms")
    print(f"  presence reply, JSON:     p50 {r['reply'][0] * 1e3:.1f} ms ({r['reply_bytes'] / 1024:.0f} KiB); "
          f"with the generic encoder {r['generic'][0] * 1e3:.1f} ms")
    print(f"  snapshot: {r['snapshot_parts']} parts, {r['snapshot_bytes'] / 1024:.0f} KiB, built in "
          f"{r['snapshot_build'] * 1e3:.1f} ms, applied by a peer in {r['snapshot_receive'] * 1e3:.1f} ms")
    print(f"  sweep of a peer's entries: p50 {r['sweep'][0] * 1e3:.1f} ms")
    g = against_gateway(n, args.calls)
    print("\nreal gateway, server HTTP API, one call at a time:")
    for method in ("presence_stats", "presence"):
        p50, p99, cpu = g[method]
        print(f"  {method:15s} p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, gateway CPU {cpu * 1e3:.2f} ms per call")
    print(f"  gateway RSS per entry (another node's): {g['rss_per_entry']:.0f} B")


if __name__ == "__main__":
    main()
