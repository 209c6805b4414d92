"""Many bare WebSocket clients in one process, for bench/fanout.py.

Speaks just enough of the protocol: the handshake, a masked connect and
subscribe (the Centrifugo protocol in JSON or Protobuf), or a subscribe to
the ``$pubsub`` stream (the Action Cable protocol at /cable, v1 or ext),
pongs for pings where the protocol wants them, and counting publications. It reads the
publisher's timestamp out of each publication without a JSON parser, to stay
cheap next to the gateway it measures. Prints JSON lines on stdout:
``{"ready": n}``, then ``{"done": ..., "latencies": [...], ...}``.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the gateway's schema, for --protocol protobuf

from gateway.protocols.centrifugo.protobuf_codec import split_delimited  # noqa: E402


def masked(payload: bytes, opcode: int = 0x1) -> bytes:
    # A zero mask key is valid (RFC 6455 only asks for one) and leaves the payload as is.
    n = len(payload)
    first = 0x80 | opcode
    header = bytes((first, 0x80 | n)) if n < 126 else struct.pack("!BBH", first, 0x80 | 126, n)
    return header + b"\x00\x00\x00\x00" + payload


PONG = masked(b"{}")
PONG_PROTOBUF = masked(b"\x00", 0x2)  # the empty Command, delimited


def protobuf_connect_frame(token: str, channel: str) -> bytes:
    """connect + subscribe as two delimited Protobuf Commands in one binary frame."""
    from gateway.protocols.centrifugo.protobuf_codec import uvarint
    from gateway.protocols.centrifugo.schema import CLASSES
    connect = CLASSES["Command"](id=1)
    connect.connect.token = token
    subscribe = CLASSES["Command"](id=2)
    subscribe.subscribe.channel = channel
    raw = [c.SerializeToString() for c in (connect, subscribe)]
    return masked(b"".join(uvarint(len(r)) + r for r in raw), 0x2)


def read_frames(buf: bytearray):
    """Take every complete server frame out of ``buf``: yields (opcode, payload)."""
    pos, size = 0, len(buf)
    try:
        while size - pos >= 2:
            n = buf[pos + 1] & 0x7F
            if n < 126:
                start = pos + 2
            elif n == 126:
                if size - pos < 4:
                    break
                start, n = pos + 4, struct.unpack_from("!H", buf, pos + 2)[0]
            else:
                if size - pos < 10:
                    break
                start, n = pos + 10, struct.unpack_from("!Q", buf, pos + 2)[0]
            if size - start < n:
                break
            opcode = buf[pos] & 0x0F
            payload = bytes(buf[start:start + n])
            pos = start + n
            yield opcode, payload
    finally:
        del buf[:pos]


class Stats:
    def __init__(self, conns: int, lat_expected: int, tp_expected: int):
        self.conns = conns
        self.lat_expected = lat_expected * conns
        self.tp_expected = tp_expected * conns
        self.lat_received = 0
        self.tp_received = 0
        self.latencies: list[float] = []
        self.samples: list[tuple[float, float]] = []  # (publish time, latency)
        self.tp_first = 0.0
        self.tp_last = 0.0
        self.closed = 0
        self.retries = 0
        self.done = asyncio.get_event_loop().create_future()

    def check(self):
        if (self.lat_received >= self.lat_expected and self.tp_received >= self.tp_expected
                and not self.done.done()):
            self.done.set_result(None)


SUBPROTOCOLS = {"protobuf": "centrifuge-protobuf", "cable": "actioncable-v1-json",
                "cable-ext": "actioncable-v1-ext-json"}


class Client(asyncio.Protocol):
    def __init__(self, stats: Stats, host: str, path: str, connect_frame: bytes, sample: bool,
                 protocol: str = "json"):
        self.protocol = protocol
        self.cable = protocol.startswith("cable")
        self.stats = stats
        self.host = host
        self.path = path
        self.connect_frame = connect_frame
        self.sample = sample
        self.buf = bytearray()
        self.handshaken = False
        self.subscribed = asyncio.get_event_loop().create_future()
        self.transport = None
        self.address: tuple = ()

    def retry(self):
        self.stats.retries += 1
        asyncio.ensure_future(asyncio.get_event_loop().create_connection(lambda: self, *self.address))

    def connection_made(self, transport):
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        name = SUBPROTOCOLS.get(self.protocol)
        protocol = f"Sec-WebSocket-Protocol: {name}\r\n" if name else ""
        transport.write((f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                         f"{protocol}\r\n").encode())

    def data_received(self, data: bytes):
        buf = self.buf
        buf += data
        if not self.handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if buf.startswith(b"HTTP/1.1 503"):
                # Shed by admission control: retry later, as the SDKs do.
                self.transport.close()
                self.buf = bytearray()
                loop = asyncio.get_event_loop()
                loop.call_later(0.2 + random.random(), self.retry)
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                raise SystemExit(f"handshake refused: {bytes(buf[:80])!r}")
            del buf[:end + 4]
            self.handshaken = True
            self.transport.write(self.connect_frame)
        for opcode, payload in read_frames(buf):
            if opcode == 0x8:
                self.stats.closed += 1
                continue
            if opcode == 0x2:
                self.protobuf_frame(payload)
                continue
            if self.cable:
                self.cable_frame(payload)
                continue
            for line in payload.split(b"\n"):
                if line == b"{}":
                    self.transport.write(PONG)
                elif b'"pub"' in line:
                    self.publication(line)
                elif line.startswith(b'{"id":2') or line.startswith(b'{"id":1,"error"'):
                    if not self.subscribed.done():  # a refused connect fails loudly, never hangs
                        self.subscribed.set_result(b'"error"' not in line)

    def protobuf_frame(self, payload: bytes):
        for message in split_delimited(payload):
            if not message:                    # the empty Reply: a ping
                self.transport.write(PONG_PROTOBUF)
            elif message.startswith(b"\x22"):  # Reply.push (4): the data is JSON bytes inside
                self.publication(message)
            elif message.startswith(b"\x08\x02") or (message.startswith(b"\x08\x01") and message[2:3] == b"\x12"):
                if not self.subscribed.done():  # id 2's reply, or an error (2) for id 1
                    self.subscribed.set_result(message[2:3] != b"\x12")

    def cable_frame(self, payload: bytes):
        if payload.startswith(b'{"identifier"'):
            if b'"message":' in payload:
                self.publication(payload)
            elif not self.subscribed.done():  # confirm_subscription or reject_subscription
                self.subscribed.set_result(b"confirm_subscription" in payload)
        elif payload.startswith(b'{"type":"disconnect"') and not self.subscribed.done():
            self.subscribed.set_result(False)
        # welcome and pings: nothing to answer

    def publication(self, line: bytes):
        stats = self.stats
        if b'"tp"' in line:
            now = time.time()
            if not stats.tp_first:
                stats.tp_first = now
            stats.tp_last = now
            stats.tp_received += 1
        else:
            stats.lat_received += 1
            if self.sample:
                i = line.index(b'"ts":') + 5
                sent = float(line[i:line.index(b"}", i)])
                stats.latencies.append(time.time() - sent)
                stats.samples.append((sent, stats.latencies[-1]))
        stats.check()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--channel", default="bench")
    parser.add_argument("--lat", type=int, required=True, help="latency-phase messages expected")
    parser.add_argument("--tp", type=int, required=True, help="throughput-phase messages expected")
    parser.add_argument("--sources", default="127.0.0.1", help="comma-separated local addresses to spread over")
    parser.add_argument("--sample-every", type=int, default=10, help="record latency on every Nth connection")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--batch", type=int, default=500, help="connections opened at once")
    parser.add_argument("--protocol", choices=("json", "protobuf", "cable", "cable-ext"), default="json",
                        help="the Centrifugo protocol in JSON or Protobuf, or Action Cable at /cable (v1 or ext)")
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    stats = Stats(args.count, args.lat, args.tp)
    path = "/connection/websocket"
    if args.protocol == "protobuf":
        frame = protobuf_connect_frame(args.token, args.channel)
    elif args.protocol.startswith("cable"):
        # Every client subscribes with the same identifier, as every viewer of a
        # Turbo stream does: the gateway renders each publication once for all.
        path = f"/cable?jid={args.token}"
        identifier = json.dumps({"channel": "$pubsub", "stream_name": args.channel})
        frame = masked(json.dumps({"command": "subscribe", "identifier": identifier}).encode())
    else:
        frame = masked(json.dumps({"id": 1, "connect": {"token": args.token}}).encode() + b"\n" +
                       json.dumps({"id": 2, "subscribe": {"channel": args.channel}}).encode())
    sources = args.sources.split(",")
    clients = []
    batch = args.batch
    for start in range(0, args.count, batch):
        pending = []
        for i in range(start, min(start + batch, args.count)):
            client = Client(stats, f"{args.host}:{args.port}", path, frame,
                            sample=(i % args.sample_every == 0), protocol=args.protocol)
            source = sources[i % len(sources)]
            client.address = (args.host, args.port)
            pending.append(loop.create_connection(lambda c=client: c, args.host, args.port,
                                                  local_addr=(source, 0)))
            clients.append(client)
        await asyncio.gather(*pending)
        await asyncio.gather(*(c.subscribed for c in clients[start:start + batch]))
    refused = sum(1 for c in clients if not c.subscribed.result())
    print(json.dumps({"ready": args.count, "refused": refused, "retries": stats.retries}), flush=True)
    try:
        await asyncio.wait_for(stats.done, args.timeout)
        timed_out = False
    except asyncio.TimeoutError:
        timed_out = True
    print(json.dumps({
        "done": not timed_out, "lat_received": stats.lat_received, "tp_received": stats.tp_received,
        "lat_expected": stats.lat_expected, "tp_expected": stats.tp_expected,
        "tp_first": stats.tp_first, "tp_last": stats.tp_last, "closed": stats.closed,
        "latencies": stats.latencies, "samples": stats.samples,
    }), flush=True)
    # Stay connected until the parent has measured and stops us.
    sys.stdin.read()


if __name__ == "__main__":
    asyncio.run(main())
