"""A switchable TCP proxy standing in for a load balancer in front of gateway
nodes: the test points it at a node, or at nothing (clients are cut off and
new connections refused), and clients see one address throughout."""
from __future__ import annotations

import asyncio


class SwitchingProxy:
    def __init__(self) -> None:
        self.target: int | None = None  # the node's port, or None: refuse
        self._server: asyncio.AbstractServer | None = None
        self._pipes: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> "SwitchingProxy":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    def route(self, port: int | None) -> None:
        """New connections go to ``port`` (None: refused)."""
        self.target = port

    def cut(self) -> None:
        """Drop every proxied connection, like a network failure."""
        for writer in list(self._writers):
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.target is None:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, (writer, up_writer)))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src, dst, pair) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for w in pair:
                self._writers.discard(w)
                w.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self._server:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
