"""The soak's load balancer: a TCP relay on 127.0.0.1 in front of the gateway
boxes, a process of its own so that what the soak's harness does never slows
it. New connections go to the boxes in turn (to the next one when a box
refuses); a network cut aborts every relayed connection at once, both ways
(the client and the node each see their socket die), and refuses new ones
for as long as the cut lasts.

    python bench/soak_relay.py PORT [PORT ...]

Prints ``{"port": N}`` once listening. Commands on stdin, one a line:
``cut SECONDS`` (answered ``{"cut": n}``, the connections aborted) and
``stats``. It exits when its stdin closes.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time


class Relay:
    def __init__(self, targets: list[int]) -> None:
        self.targets = targets
        self.turn = itertools.cycle(range(len(targets)))
        self.down_until = 0.0
        self.writers: set[asyncio.StreamWriter] = set()
        self.accepted = self.refused = 0

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self.down_until:
            self.refused += 1
            writer.transport.abort()
            return
        first = next(self.turn)
        for i in range(len(self.targets)):
            port = self.targets[(first + i) % len(self.targets)]
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                break
            except (OSError, asyncio.TimeoutError):
                continue
        else:
            self.refused += 1
            writer.transport.abort()
            return
        if time.monotonic() < self.down_until:   # cut while connecting
            up_writer.transport.abort()
            writer.transport.abort()
            return
        self.accepted += 1
        pair = (writer, up_writer)
        self.writers.update(pair)
        await asyncio.gather(self.pipe(reader, up_writer, pair), self.pipe(up_reader, writer, pair))

    async def pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, pair) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()   # a half close is passed on as one
                return
        except (ConnectionError, OSError):
            pass
        for w in pair:
            self.writers.discard(w)
            w.transport.abort()

    def cut(self, seconds: float) -> int:
        self.down_until = time.monotonic() + seconds
        writers, self.writers = list(self.writers), set()
        for w in writers:
            w.transport.abort()
        return len(writers) // 2


async def main(targets: list[int]) -> None:
    relay = Relay(targets)
    server = await asyncio.start_server(relay.accept, "127.0.0.1", 0, backlog=4096)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        words = line.decode().split()
        if words[:1] == ["cut"]:
            print(json.dumps({"cut": relay.cut(float(words[1]))}), flush=True)
        elif words[:1] == ["stats"]:
            print(json.dumps({"accepted": relay.accepted, "refused": relay.refused,
                              "open": len(relay.writers) // 2}), flush=True)
    relay.cut(0)
    server.close()
    sys.stdout.flush()
    os._exit(0)   # the relayed connections are aborted: nothing left to wind down


if __name__ == "__main__":
    asyncio.run(main([int(p) for p in sys.argv[1:]]))
