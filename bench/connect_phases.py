"""Where the Python part of a connect + subscribe goes, phase by phase, in
one process with no sockets (the session core behind an in-process host,
tests/inprocess.py): the request head parsed and the upgrade answered, the
token checked, the session's connect, the subscribe, the replies encoded,
the metrics. The kernel's part (accept, recv, send, epoll) is what
bench/connect_storm.py measures beyond this.

    .venv/bin/python bench/connect_phases.py --connections 20000
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auth import connection_token  # noqa: E402
from gateway.transports import wsproto  # noqa: E402
from gateway.transports.door import parse_head  # noqa: E402
from tests.inprocess import make_host, open_session  # noqa: E402
from tests.stack import SECRET  # noqa: E402

HEAD = (b"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13")


def timed(label: str, count: int, run, results: dict) -> None:
    gc.collect()
    t0 = time.perf_counter()
    run()
    results[label] = (time.perf_counter() - t0) / count * 1e6


async def main(n: int) -> dict:
    host = make_host(public_channels="bench")
    tokens = [connection_token(SECRET, f"p-{i}", ttl=3600) for i in range(n)]
    frames = [json.dumps({"id": 1, "connect": {"token": t}}) + "\n" + json.dumps({"id": 2, "subscribe": {
        "channel": "bench"}}) for t in tokens]
    connects = [json.dumps({"id": 1, "connect": {"token": t}}) for t in tokens]
    subscribe = json.dumps({"id": 2, "subscribe": {"channel": "bench"}})
    out: dict = {}
    timed("upgrade: parse the request head", n, lambda: [parse_head(HEAD) for _ in range(n)], out)
    timed("upgrade: Sec-WebSocket-Accept", n, lambda: [wsproto.accept_key("dGhlIHNhbXBsZSBub25jZQ==")
                                                       for _ in range(n)], out)
    timed("token: HS256 check (verify_token)", n, lambda: [host.verify_token(t) for t in tokens], out)
    sessions = []
    timed("session: accept a new session", n, lambda: sessions.extend(open_session(host) for _ in range(n)), out)
    timed("connect frame: decode, token, session connect, reply", n,
          lambda: [s.handle_frame(f) for (s, _), f in zip(sessions, connects)], out)
    timed("subscribe frame: decode, subscribe, reply", n,
          lambda: [s.handle_frame(subscribe) for s, _ in sessions], out)
    for s, _ in sessions:
        s.transport_closed()
    sessions.clear()
    sessions.extend(open_session(host) for _ in range(n))
    timed("connect + subscribe in one frame (as loadgen sends)", n,
          lambda: [s.handle_frame(f) for (s, _), f in zip(sessions, frames)], out)
    ok = sum(1 for _, t in sessions if len(t.messages()) == 2)
    out["replies checked"] = f"{ok} of {n} sessions got both replies"
    counter = host.metrics.connects if hasattr(host.metrics, "connects") else None
    if counter is not None:
        timed("metrics: one counter inc", n, lambda: [counter.inc() for _ in range(n)], out)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=20000)
    args = parser.parse_args()
    for label, value in asyncio.run(main(args.connections)).items():
        print(f"  {label:55s} {value:7.1f} µs" if isinstance(value, float) else f"  {label}: {value}")
