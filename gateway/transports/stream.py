"""Batched writes straight to a connection's socket, shared by every
transport (WebSocket, the HTTP streams).

Frames are queued per connection and written with one ``send()`` per
connection by :class:`WriteBatcher`, one callback for all connections.
:class:`SocketWriter` sends to the socket itself; only what the kernel does
not take waits in a buffer of its own, drained when the socket is writable.

When to flush is what decides the cost of fan-out: the ``send()`` syscall is
most of it, so under load several publications should share one. The
batcher flushes once the hub has been quiet for half a millisecond since its
last fan-out ended (about the only latency it adds when traffic is light)
and otherwise keeps collecting, for at most as long as its previous flush
took (so flushing never takes more than about half the time, whatever the
fan-out size). It waits on a timer, never by spinning the loop. Quiet is
measured from the end of the last fan-out, not in loop turns: pynsq takes
several turns to hand over each message.

A flush writes for at most ``FLUSH_TURN`` seconds in one turn of the loop
(or ``slice_size`` connections, where a test sets it), then lets the loop run
before the next slice. A budget in time, not a count: a slice of a fixed
1,000 connections split every burst to a few thousand connections into
several turns, the publications read between them marked written
connections again, and the frames went out in more, smaller writes (a
quick `make bench` burst at half the deliveries per second). With 20,000 connections a
worker, one flush is 20,000 ``send()``s, a second or more on a box whose
cores are shared; in one turn it held back everything else meanwhile, the
NSQ reader first (pynsq takes several turns per message): in a burst of 20
publications to 100,000 connections a worker read one 30 s late, dropped it
as stale, and its own requests to nsqd timed out meanwhile. Between slices
the reader reads, and a publication that arrives joins the frames of the
connections not yet written (one ``send()`` for both).

The send queue is bounded: a connection whose unsent bytes outgrow
``--max-queue-bytes`` is disconnected as slow (3008) while everyone else
carries on. What the batcher holds back must not count against a client,
so a connection whose pending frames pass ``flush_at`` bytes is written at
once.
"""
from __future__ import annotations

import asyncio
import socket
import time
from typing import Callable, Protocol


QUIET = 0.0005     # seconds without a new publication after which we flush
MAX_COLLECT = 0.1  # seconds: the longest a frame waits for company under load
FLUSH_TURN = 0.05  # seconds of writing per turn of the loop, checked every FLUSH_CHECK connections
FLUSH_CHECK = 64
UNSLICED = 1 << 62   # no limit by count


class WriteBatcher:
    """Flushes every connection that has queued frames (see the module doc).

    ``last_publication`` returns when the hub last finished a publication
    (``time.perf_counter()``); the batcher sleeps on a timer until that is
    ``QUIET`` ago, so waiting costs no CPU.
    """

    __slots__ = ("_dirty", "_scheduled", "_loop", "_last_publication", "_since", "_last_cost", "_on_flush",
                 "_slice", "_flushing", "_flushed", "_cost")

    def __init__(self, last_publication: Callable[[], float],
                 on_flush: Callable[[int], None] = lambda n: None, slice_size: int = UNSLICED) -> None:
        self._dirty: list[SocketWriter] = []
        self._scheduled = False   # a check or a flush is under way: mark() only queues
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_publication = last_publication
        self._since = 0.0
        self._last_cost = 0.0
        self._on_flush = on_flush  # told how many connections each flush wrote to
        self._slice = slice_size
        self._flushing: list[SocketWriter] = []   # the flush under way, written from _flushed on
        self._flushed = 0
        self._cost = 0.0

    def behind(self, now: float) -> float:
        """Seconds (``time.perf_counter()``) since the oldest frame not yet
        written was queued; 0 when nothing waits."""
        return now - self._since if self._scheduled else 0.0

    def mark(self, writer: SocketWriter) -> None:
        self._dirty.append(writer)
        if not self._scheduled:
            self._scheduled = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._since = time.perf_counter()
            self._loop.call_soon(self._check)

    def _check(self) -> None:
        now = time.perf_counter()
        quiet_for = now - self._last_publication()
        if quiet_for < QUIET and now - self._since < min(self._last_cost, MAX_COLLECT):
            self._loop.call_later(QUIET - quiet_for, self._check)  # type: ignore[union-attr]
            return
        self.flush()

    def flush(self) -> None:
        """Write every connection marked so far, a slice per turn of the loop."""
        self._flushing, self._dirty = self._dirty, []
        self._flushed = 0
        self._cost = 0.0
        self._write_slice()

    def _write_slice(self) -> None:
        started = time.perf_counter()
        flushing, start = self._flushing, self._flushed
        last = min(start + self._slice, len(flushing))
        end = start
        while end < last:
            stop = min(end + FLUSH_CHECK, last)
            for i in range(end, stop):
                flushing[i].flush_pending()
            end = stop
            if time.perf_counter() - started > FLUSH_TURN:
                break
        self._flushed = end
        self._cost += time.perf_counter() - started
        if end < len(flushing):
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._write_slice)
            return
        self._flushing = []
        self._last_cost = self._cost
        self._scheduled = False
        self._on_flush(len(flushing))
        if self._dirty:   # marked again while the slices were written
            self._scheduled = True
            self._since = time.perf_counter()
            self._loop.call_soon(self._check)  # type: ignore[union-attr]


CLOSE_WAIT = 5.0   # seconds a closing connection has to finish: its close handshake, its last bytes


class Abortable(Protocol):
    def abort(self) -> None: ...


class Closing:
    """Connections told to end that have not finished yet (a WebSocket waiting
    for the client's close frame, a stream writing its last bytes): each is
    aborted once CLOSE_WAIT has passed, from the node's one-second tick, so a
    client that stopped reading or answering cannot hold its socket."""

    def __init__(self) -> None:
        self._deadlines: dict[Abortable, float] = {}   # connection -> monotonic deadline

    def add(self, connection: Abortable) -> None:
        self._deadlines[connection] = time.monotonic() + CLOSE_WAIT

    def discard(self, connection: Abortable) -> None:
        self._deadlines.pop(connection, None)

    def sweep(self, now: float) -> None:
        for connection in [c for c, deadline in self._deadlines.items() if deadline <= now]:
            connection.abort()

    def __len__(self) -> int:
        return len(self._deadlines)


class SocketWriter:
    """The write side of one connection, on the socket it owns (a WebSocket,
    gateway/transports/websocket.py; an HTTP stream, gateway/transports/http.py):
    its pending frames, written by the batcher, and what the kernel does not
    take at once, in a bounded buffer drained when the socket is writable.

    Past ``max_queue_bytes`` waiting, the connection is cut as slow (3008).
    ``on_error`` is told when the peer is gone (reset, broken pipe).
    """

    __slots__ = ("_sock", "_fd", "_loop", "_pending", "_pending_bytes", "_flush_at", "_out", "_limit",
                 "_batcher", "_on_overflow", "_on_error", "_overflowed", "_on_drained")

    def __init__(self, sock: socket.socket, batcher: WriteBatcher, max_queue_bytes: int,
                 on_overflow: Callable[[], None], on_error: Callable[[], None]) -> None:
        self._sock: socket.socket | None = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._pending: bytes | list[bytes] | None = None
        self._pending_bytes = 0
        self._flush_at = min(65536, max_queue_bytes // 4)
        self._out: bytearray | None = None    # what the kernel did not take yet
        self._limit: int | None = max_queue_bytes
        self._batcher = batcher
        self._on_overflow = on_overflow
        self._on_error = on_error
        self._overflowed = False
        self._on_drained: Callable[[], None] | None = None

    def send(self, frame: bytes) -> None:
        """The hub's call per subscriber: queue the frame for the next flush."""
        pending = self._pending
        if pending is None:
            self._pending = frame
            self._batcher.mark(self)
        elif isinstance(pending, list):
            pending.append(frame)
            self._pending_bytes += len(frame)
            if self._pending_bytes > self._flush_at:
                self.flush_pending()
        else:
            self._pending = [pending, frame]
            self._pending_bytes = len(pending) + len(frame)
            if self._pending_bytes > self._flush_at:
                self.flush_pending()

    def flush_pending(self) -> None:
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        if self._overflowed or self._sock is None:
            return
        self.write(b"".join(pending) if isinstance(pending, list) else pending)

    def write(self, data: bytes) -> None:
        """Write now what the kernel takes, buffer the rest."""
        if self._sock is None:
            return
        out = self._out
        if out is None:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._loop.call_soon(self._on_error)
                return
            if sent == len(data):
                return
            self._out = out = bytearray(memoryview(data)[sent:])
            self._loop.add_writer(self._fd, self._writable)
        else:
            out += data
        if self._limit is not None and len(out) > self._limit and not self._overflowed:
            # Called from send() inside the hub's fan-out loop, so the close
            # (which unsubscribes) must wait for the loop to finish.
            self._overflowed = True
            self._loop.call_soon(self._on_overflow)

    def _writable(self) -> None:
        out = self._out
        if out is None or self._sock is None:
            return
        try:
            sent = self._sock.send(out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._stop_writing()
            self._on_error()
            return
        del out[:sent]
        if not out:
            self._stop_writing()
            if self._on_drained is not None:
                callback, self._on_drained = self._on_drained, None
                callback()

    def _stop_writing(self) -> None:
        self._out = None
        self._loop.remove_writer(self._fd)

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once everything written has gone to the kernel."""
        if self._out is None:
            callback()
        else:
            self._on_drained = callback

    @property
    def overflowed(self) -> bool:
        """The queue passed its bound: the connection is being cut as slow."""
        return self._overflowed

    def unbound(self) -> None:
        """Lift the queue bound so a close frame can still be queued; drop
        frames not yet written (the connection is ending)."""
        self._pending = None
        self._limit = None

    def close(self) -> None:
        """Stop writing; the socket is the owner's to close."""
        if self._out is not None:
            self._stop_writing()
        self._sock = None
