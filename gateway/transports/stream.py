"""Batched writes to a Tornado IOStream, shared by the streaming transports.

Frames queued during one turn of the event loop are joined and written with
one ``send()`` per connection at the end of the turn, from one callback for
all connections (:class:`WriteBatcher`). When the stream has nothing pending
the bytes go straight to the socket, which skips the Future IOStream.write
creates per call; only what the kernel does not take goes through IOStream.

The send queue is bounded: the IOStream's ``max_write_buffer_size`` is the
connection's ``--max-queue-bytes``, and a connection that outgrows it is
disconnected as slow (3008) while everyone else carries on.
"""
from __future__ import annotations

import asyncio
import logging

from tornado.iostream import IOStream, SSLIOStream, StreamBufferFullError, StreamClosedError

from gateway import protocol

log = logging.getLogger("pushgate.transport")


class WriteBatcher:
    """Flushes every connection that has queued frames, once per loop turn."""

    __slots__ = ("_dirty", "_scheduled", "_loop")

    def __init__(self) -> None:
        self._dirty: list[StreamWriter] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def mark(self, writer: StreamWriter) -> None:
        self._dirty.append(writer)
        if not self._scheduled:
            self._scheduled = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for writer in dirty:
            writer.flush_pending()


class StreamWriter:
    """The write side of one connection: a pending list and its stream."""

    __slots__ = ("_stream", "_direct", "_pending", "_batcher", "_on_overflow")

    def __init__(self, stream: IOStream, batcher: WriteBatcher, max_queue_bytes: int, on_overflow) -> None:
        self._stream = stream
        # Writing to the socket ourselves is only right for plain TCP.
        self._direct = not isinstance(stream, SSLIOStream)
        self._pending: list[bytes] | None = None
        self._batcher = batcher
        self._on_overflow = on_overflow
        stream.max_write_buffer_size = max_queue_bytes

    def send(self, frame: bytes) -> None:
        pending = self._pending
        if pending is None:
            self._pending = [frame]
            self._batcher.mark(self)
        else:
            pending.append(frame)

    def flush_pending(self) -> None:
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        stream = self._stream
        if stream.closed():
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        try:
            if self._direct and not stream.writing():
                try:
                    sent = stream.socket.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                if sent == len(data):
                    return
                data = memoryview(data)[sent:]
            stream.write(data)
        except StreamBufferFullError:
            self._on_overflow(protocol.DISCONNECT_SLOW)
        except StreamClosedError:
            pass
        except OSError as exc:  # the peer reset the connection under us
            stream.close(exc)

    def unbound(self) -> None:
        """Lift the queue bound so a close frame can still be queued."""
        self._pending = None
        self._stream.max_write_buffer_size = None
