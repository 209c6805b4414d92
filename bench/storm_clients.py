"""Reconnecting bare protocol clients for bench/reconnect_storm.py.

Each connects to node A with a token whose `channels` claim holds `storm`,
keeps its stream position from every publication, and when A drains (close
3001) reconnects to node B after a full-jitter delay, sending its position
in connect.subs to recover. It tracks every publication number it sees, so
missing and duplicated ones can be counted. Prints JSON lines: {"ready"}
when all are on A, {"back"} when all are on B, then the final counts.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from ws_clients import PONG, masked, read_frames  # noqa: E402

OFFSET = re.compile(rb'"offset":(\d+)')
NUMBER = re.compile(rb'"n":(\d+)')


class Stats:
    def __init__(self):
        self.connect_errors = 0
        self.recovered = 0
        self.not_recovered = 0
        self.on_b = 0
        self.first_back = 0.0
        self.last_back = 0.0


class Client(asyncio.Protocol):
    def __init__(self, owner, node_index):
        self.owner = owner
        self.node_index = node_index
        self.buf = bytearray()
        self.handshaken = False
        self.settled = False   # refused, closed or connected: what happens next is decided
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())

    def connection_lost(self, exc):
        if not self.settled:
            self.owner.lost(self)

    def data_received(self, data):
        buf = self.buf
        buf += data
        if not self.handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.settled = True
                self.owner.refused(self)  # 503 while draining or at capacity
                self.transport.abort()
                return
            del buf[:end + 4]
            self.handshaken = True
            self.transport.write(self.owner.connect_frame())
        for opcode, payload in read_frames(buf):
            if opcode == 0x8:
                self.settled = True
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.owner.closed_by_server(self, code)
                continue
            for line in payload.split(b"\n"):
                if line == b"{}":
                    self.transport.write(PONG)
                elif line.startswith(b'{"id":1,'):
                    self.settled = True
                    self.owner.connect_reply(self, json.loads(line))
                elif b'"pub"' in line:
                    self.owner.publication(line)


class StormClient:
    def __init__(self, pool, token):
        self.pool = pool
        self.token = token
        self.epoch = None
        self.offset = None
        self.seen = set()
        self.duplicates = 0
        self.node_index = 0
        self.conn = None
        self.reconnecting = False

    def connect_frame(self):
        connect = {"token": self.token}
        if self.epoch is not None:
            connect["subs"] = {"storm": {"recover": True, "epoch": self.epoch, "offset": self.offset}}
        return masked(json.dumps({"id": 1, "connect": connect}).encode())

    def connect_reply(self, conn, reply):
        stats = self.pool.stats
        if "error" in reply:  # 111 too many requests: back off and retry, like the SDKs
            if self.node_index == 1:
                stats.connect_errors += 1
            else:
                self.pool.initial_retries += 1
            conn.transport.abort()
            self.pool.schedule(self, retry=True)
            return
        sub = reply["connect"]["subs"]["storm"]
        # Like the SDKs: take the reply's position, then advance through the publications.
        self.epoch, self.offset = sub["epoch"], sub["offset"]
        if sub.get("was_recovering"):
            if sub.get("recovered"):
                stats.recovered += 1
                for pub in sub.get("publications", []):
                    self.publication(json.dumps(pub, separators=(",", ":")).encode())
            else:
                stats.not_recovered += 1
        if self.node_index == 1:
            self.reconnecting = False
            stats.on_b += 1
            now = time.monotonic()
            stats.first_back = stats.first_back or now
            stats.last_back = now
            self.pool.check_back()
        else:
            self.pool.on_a += 1
            self.pool.check_ready()

    def publication(self, line):
        offset = OFFSET.search(line)
        if offset:
            self.offset = int(offset.group(1))
        n = int(NUMBER.search(line).group(1))
        if n in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(n)

    def closed_by_server(self, conn, code):
        if code == 3001 and self.node_index == 0:
            self.node_index = 1
            self.reconnecting = True
            self.pool.schedule(self)

    def lost(self, conn):
        # Ended before a refusal, a connect reply or a close frame (the server's
        # door closed it: pending-connection cap, handshake timeout): try
        # again, as the SDKs do. Later closes are acted on by their close frame.
        self.refused(conn)

    def refused(self, conn):
        if self.node_index == 1:
            self.pool.stats.connect_errors += 1
        else:
            self.pool.initial_retries += 1
        self.pool.schedule(self, retry=True)


class Pool:
    def __init__(self, args):
        self.args = args
        self.stats = Stats()
        self.clients = []
        self.on_a = 0
        self.initial_retries = 0  # refused while everyone first connects to A (rate limit)
        self.ready = asyncio.get_event_loop().create_future()
        self.back = asyncio.get_event_loop().create_future()
        self.attempts = {}

    async def open(self, client):
        port = self.args.port_a if client.node_index == 0 else self.args.port_b
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: Client(client, client.node_index), "127.0.0.1", port)
            client.conn = conn
        except OSError:
            if client.node_index == 1:
                self.stats.connect_errors += 1
            else:
                self.initial_retries += 1
            self.schedule(client, retry=True)

    def schedule(self, client, retry=False):
        # Full jitter like the SDKs: 0.5 s doubling to 20 s, capped.
        attempt = self.attempts.get(id(client), 0) + (1 if retry else 0)
        self.attempts[id(client)] = attempt
        delay = random.uniform(0, min(20.0, 0.5 * 2 ** attempt))
        asyncio.get_running_loop().call_later(delay, lambda: asyncio.ensure_future(self.open(client)))

    def check_ready(self):
        if self.on_a == len(self.clients) and not self.ready.done():
            self.ready.set_result(None)

    def check_back(self):
        if self.stats.on_b == len(self.clients) and not self.back.done():
            self.back.set_result(None)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-a", type=int, required=True)
    parser.add_argument("--port-b", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    pool = Pool(args)
    pool.clients = [StormClient(pool, args.token) for _ in range(args.count)]
    for start in range(0, args.count, 500):
        await asyncio.gather(*(pool.open(c) for c in pool.clients[start:start + 500]))
        await asyncio.sleep(0.05)
    await asyncio.wait_for(pool.ready, args.timeout)
    print(json.dumps({"ready": args.count}), flush=True)
    await asyncio.wait_for(pool.back, args.timeout)
    print(json.dumps({"back": pool.stats.last_back, "first_back": pool.stats.first_back}), flush=True)
    expected = int(sys.stdin.readline())  # the parent says how many were published, once done
    await asyncio.sleep(1.0)
    s = pool.stats
    print(json.dumps({
        "connect_errors": s.connect_errors, "initial_retries": pool.initial_retries, "recovered": s.recovered, "not_recovered": s.not_recovered,
        "missing": sum(expected - len(c.seen & set(range(expected))) for c in pool.clients),
        "duplicates": sum(c.duplicates for c in pool.clients),
    }), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
