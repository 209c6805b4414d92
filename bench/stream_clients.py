"""Many bare HTTP-stream clients in one process, for bench/transports.py: the
counterpart of bench/ws_clients.py for http_stream, sse, uni_http_stream
and uni_sse.

Each client sends its request (the connect in the body, or in cf_connect
for sse), waits for the connect reply, then counts publications by
scanning the bytes for a marker, without a JSON parser, to stay cheap next
to the gateway it measures. The token's ``channels`` claim subscribes it to
the bench channel server-side. It never answers pings (the bench runs the
gateway with pings far apart). Prints JSON lines on stdout like
ws_clients.py: ``{"ready": n, ...}``, then ``{"done": ..., ...}``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.parse

MARK = b'"tp"'      # in every burst-phase publication (bench/transports.py)
PACED = b'"ts"'     # in every paced-phase publication
PATHS = {"http_stream": "/connection/http_stream", "sse": "/connection/sse",
         "uni_http_stream": "/connection/uni_http_stream", "uni_sse": "/connection/uni_sse"}


def request_bytes(kind: str, host: str, token: str) -> bytes:
    path = PATHS[kind]
    if kind == "http_stream":
        body = json.dumps({"id": 1, "connect": {"token": token}}).encode()
    elif kind == "uni_http_stream":
        body = json.dumps({"token": token}).encode()
    else:
        connect = {"id": 1, "connect": {"token": token}} if kind == "sse" else {"token": token}
        query = urllib.parse.urlencode({"cf_connect": json.dumps(connect)})
        return f"GET {path}?{query} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class Stats:
    def __init__(self, conns: int, lat_expected: int, tp_expected: int):
        self.lat_expected = lat_expected * conns
        self.lat_received = 0
        self.tp_expected = tp_expected * conns
        self.tp_received = 0
        self.tp_first = 0.0
        self.tp_last = 0.0
        self.closed = 0
        self.done = asyncio.get_event_loop().create_future()


class Client(asyncio.Protocol):
    def __init__(self, stats: Stats, request: bytes):
        self.stats = stats
        self.request = request
        self.head = True
        self.tail = b""
        self.connected = asyncio.get_event_loop().create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes):
        if self.head:
            if not data.startswith(b"HTTP/1.1 200"):
                if not self.connected.done():
                    self.connected.set_result(False)
                return
            self.head = False
        if not self.connected.done() and b'"connect"' in data:
            self.connected.set_result(b'"disconnect"' not in data)
        # A marker cut in two by a read boundary is found with the bytes before it.
        joined = self.tail + data
        self.tail = data[1 - len(MARK):]
        stats = self.stats
        paced = joined.count(PACED)
        if paced:
            stats.lat_received += paced
        count = joined.count(MARK)
        if count:
            now = time.time()
            if not stats.tp_first:
                stats.tp_first = now
            stats.tp_last = now
            stats.tp_received += count
        if ((paced or count) and stats.tp_received >= stats.tp_expected
                and stats.lat_received >= stats.lat_expected and not stats.done.done()):
            stats.done.set_result(None)

    def connection_lost(self, exc):
        self.stats.closed += 1
        if not self.connected.done():
            self.connected.set_result(False)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=sorted(PATHS), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--lat", type=int, default=0, help="paced-phase messages expected")
    parser.add_argument("--tp", type=int, required=True, help="burst-phase messages expected")
    parser.add_argument("--sources", default="127.0.0.1", help="comma-separated local addresses to spread over")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--batch", type=int, default=500, help="connections opened at once")
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    stats = Stats(args.count, args.lat, args.tp)
    request = request_bytes(args.kind, f"{args.host}:{args.port}", args.token)
    sources = args.sources.split(",")
    clients = []
    for start in range(0, args.count, args.batch):
        batch = [Client(stats, request) for _ in range(start, min(start + args.batch, args.count))]
        await asyncio.gather(*(loop.create_connection(lambda c=c: c, args.host, args.port,
                                                      local_addr=(sources[(start + i) % len(sources)], 0))
                               for i, c in enumerate(batch)))
        await asyncio.gather(*(c.connected for c in batch))
        clients.extend(batch)
    refused = sum(1 for c in clients if not c.connected.result())
    print(json.dumps({"ready": args.count, "refused": refused}), flush=True)
    try:
        await asyncio.wait_for(stats.done, args.timeout)
        timed_out = False
    except asyncio.TimeoutError:
        timed_out = True
    print(json.dumps({"done": not timed_out, "tp_received": stats.tp_received, "tp_expected": stats.tp_expected,
                      "lat_received": stats.lat_received, "lat_expected": stats.lat_expected,
                      "tp_first": stats.tp_first, "tp_last": stats.tp_last, "closed": stats.closed}), flush=True)
    await asyncio.sleep(3600)  # stay connected until the parent has measured and stops us


if __name__ == "__main__":
    asyncio.run(main())
