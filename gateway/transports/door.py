"""The listening side of a node: accepting TCP connections without letting
idle or half-open sockets use up the node.

* **Every socket is counted.** A TCP connection that is not (yet) a client
  session (a WebSocket handshake in progress, an API or health request, an
  idle keep-alive) is *pending*. At most ``--max-pending-connections`` are
  open; when another arrives, the oldest pending one is closed to make room.
  So a flood of idle sockets can neither exhaust the open-file limit nor lock
  out ``/health``: the newest connection always gets in. Sessions are
  bounded by ``--max-connections`` (checked before the upgrade).
* **Handshakes have a deadline.** ``--handshake-timeout`` bounds the time a
  connection may take to send its request headers (Tornado's header timeout)
  and stay idle between requests.
* **Overload is shed at admission, not at accept.** While the node runs
  late (the loop lag is over ``--shed-loop-lag``), a new *client connection*
  (a WebSocket or HTTP-stream connect) is refused with 503 before its
  upgrade (``admit_handshake``), the costliest part of a connect. Every
  other request is served: a server API call from the backend, an
  ``/emulation`` POST carrying the commands of a client already connected,
  ``/health`` and ``/metrics``. A 503 at accept, before the path is known,
  failed all of them in the busy moments they matter most in (a backend's
  publish, a connected SSE client's command). Connections are taken from
  the kernel in small batches per loop turn, so a burst waits in the listen
  backlog instead of in front of everyone else.
* **Accept errors are one line, not a storm.** When ``accept()`` fails for
  lack of file descriptors or memory, the listener pauses for a moment and
  logs once per interval with a count, instead of a traceback per attempt.
* **Client addresses are believed only from trusted proxies**
  (:func:`client_ip`).
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple

from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPServerRequest
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

if TYPE_CHECKING:
    from gateway.core.metrics import Metrics

log = logging.getLogger("pushgate.server")

MAX_HEAD = 16384    # bytes of request line and headers

# A WebSocket transport's look at a request head: True when it took the
# connection (gateway/transports/websocket.py), False to leave it to Tornado.
Upgrade = Callable[["Head", "RequestHead", bytes], bool]

ACCEPT_BATCH = 32          # accept() calls per readiness event: a burst waits in the backlog
ACCEPT_PAUSE = 0.1         # seconds the listener rests after running out of descriptors
ACCEPT_LOG_INTERVAL = 10.0  # seconds between accept-error log lines
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class PendingConnections:
    """TCP connections that are not client sessions, oldest first (a dict is
    an insertion-ordered set). Closed ones are dropped lazily."""

    def __init__(self, limit: int, metrics: Metrics | None = None):
        self.limit = limit
        self._streams: dict[IOStream | Head, None] = {}
        self._metrics = metrics
        self.evicted = 0

    def add(self, stream: IOStream | Head) -> None:
        streams = self._streams
        while len(streams) >= self.limit:
            oldest = next(iter(streams))
            del streams[oldest]
            if not oldest.closed():
                self.evicted += 1
                oldest.close()
        streams[stream] = None

    def discard(self, stream: IOStream | Head) -> None:
        """``stream`` became a client session (or is gone)."""
        self._streams.pop(stream, None)

    def sweep(self, now: float = 0.0, head_timeout: float | None = None) -> None:
        """Forget closed connections, and close those still sending their
        request head after ``head_timeout`` seconds (run every second)."""
        for stream in list(self._streams):
            if stream.closed():
                self._streams.pop(stream, None)
            elif head_timeout is not None and isinstance(stream, Head) and stream.expired(now, head_timeout):
                stream.close()
                self._streams.pop(stream, None)
        if self._metrics is not None:
            self._metrics.pending_sockets.set(len(self._streams))

    def __len__(self) -> int:
        return len(self._streams)


class Listener(HTTPServer):
    """Tornado's HTTPServer with the accept loop and bookkeeping above."""

    def initialize(self, *args: Any, pending: PendingConnections, metrics: Metrics,  # type: ignore[override]
                   upgrade: Upgrade | None = None, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.pending = pending
        self.metrics = metrics
        # Request heads are read here, on the lean path, and WebSocket upgrades
        # taken by ``upgrade``; without it every connection goes to Tornado.
        self.upgrade = upgrade
        self.loop = asyncio.get_running_loop()
        self._accept_errors = 0
        self._accept_logged = 0.0

    def handle_stream(self, stream: IOStream, address: tuple) -> None:
        self.pending.add(stream)
        super().handle_stream(stream, address)

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self._accept_on(sock)

    def _accept_on(self, sock: socket.socket) -> Callable[[], None]:
        """Register ``sock`` with the loop; returns the function that removes it
        (Tornado's TCPServer.stop calls it)."""
        loop = IOLoop.current()
        state = {"registered": True, "removed": False}

        def ready(fd: socket.socket, events: int) -> None:
            for _ in range(ACCEPT_BATCH):
                if state["removed"]:
                    return
                try:
                    connection, address = sock.accept()
                except BlockingIOError:
                    return
                except ConnectionAbortedError:
                    continue
                except OSError as exc:
                    self._accept_failed(exc)
                    if exc.errno in _RESOURCE_ERRORS and state["registered"]:
                        # Nothing can be accepted until a descriptor is free: rest
                        # rather than spin on a socket that stays readable.
                        loop.remove_handler(sock)
                        state["registered"] = False
                        loop.call_later(ACCEPT_PAUSE, resume)
                    return
                self._accepted(connection, address)

        def resume() -> None:
            if not state["removed"] and not state["registered"]:
                loop.add_handler(sock, ready, IOLoop.READ)
                state["registered"] = True

        def remove() -> None:
            state["removed"] = True
            if state["registered"]:
                loop.remove_handler(sock)
                state["registered"] = False

        loop.add_handler(sock, ready, IOLoop.READ)
        return remove

    def _accepted(self, connection: socket.socket, address: tuple) -> None:
        if self.upgrade is not None and self.ssl_options is None:
            Head(self, connection, address)
        else:
            self._handle_connection(connection, address)

    def _accept_failed(self, exc: OSError) -> None:
        name = errno.errorcode.get(exc.errno or 0, "OSError")
        self.metrics.accept_errors.labels(name).inc()
        self._accept_errors += 1
        now = time.monotonic()
        if now - self._accept_logged >= ACCEPT_LOG_INTERVAL:
            log.error("accept() failed %d time(s) in the last %.0f s (%s: %s); %d pending connections. "
                      "Raise the open-file limit (ulimit -n) or lower --max-connections / "
                      "--max-pending-connections", self._accept_errors, ACCEPT_LOG_INTERVAL, name,
                      exc.strerror, len(self.pending))
            self._accept_logged = now
            self._accept_errors = 0


def client_ip(request: HTTPServerRequest, trusted: tuple) -> str:
    headers = request.headers
    return client_address(request.remote_ip or "", headers.get("X-Forwarded-For", ""),
                          headers.get("X-Real-Ip", ""), trusted)


def client_address(peer: str, forwarded_for: str, real_ip: str, trusted: tuple) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy,
    then the right-most address in X-Forwarded-For (or X-Real-Ip) that is not
    itself a trusted proxy. Headers from anyone else are ignored: a client
    cannot choose the address it is logged or limited by."""
    if not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()] or [real_ip]
    for hop in reversed(hops):
        if hop and not _in(hop, trusted):
            return hop if _valid_ip(hop) else peer
    return peer


def _in(address: str, networks: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _valid_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


class RequestHead(NamedTuple):
    """An HTTP/1.1 request line and headers, as read from the socket."""

    method: str
    path: str
    query: str
    headers: dict[str, str]   # lower-cased names; a repeated header's values joined with ", "


def parse_head(head: bytes) -> RequestHead | None:
    """The request line and headers of an HTTP/1.1 request head (without the
    blank line), or None when it is not one."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return None
        name = name.lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    path, _, query = parts[1].partition("?")
    return RequestHead(parts[0], path, query, headers)


class PrefilledIOStream(IOStream):
    """An IOStream whose first reads return bytes already taken from the socket."""

    def __init__(self, sock: socket.socket, prefill: bytes, **kwargs: Any) -> None:
        self._prefill = prefill
        super().__init__(sock, **kwargs)

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        prefill = self._prefill
        if prefill:
            n = min(len(buf), len(prefill))
            buf[:n] = prefill[:n]
            self._prefill = prefill[n:]
            return n
        return super().read_from_fd(buf)


class Head:
    """A new connection while its request head arrives (at most MAX_HEAD bytes,
    within --handshake-timeout)."""

    __slots__ = ("listener", "sock", "address", "buffer", "started", "_closed")

    def __init__(self, listener: Listener, sock: socket.socket, address: tuple) -> None:
        self.listener = listener
        self.sock = sock
        self.address = address
        self.buffer = b""
        self.started = time.monotonic()
        self._closed = False
        sock.setblocking(False)
        listener.pending.add(self)
        listener.loop.add_reader(sock.fileno(), self._readable)

    # PendingConnections' interface
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._detach()
            self.sock.close()

    def expired(self, now: float, timeout: float) -> bool:
        return now - self.started > timeout

    def _readable(self) -> None:
        try:
            chunk = self.sock.recv(MAX_HEAD)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        buffer = self.buffer + chunk if self.buffer else chunk
        end = buffer.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD:
            if len(buffer) > MAX_HEAD:   # a whole head that came in more than one read counts too
                self.answer(431, "request head too large")
            else:
                self.buffer = buffer
            return
        # The socket goes to a WebSocket, or to Tornado, or is answered and
        # closed. It stays registered with the loop for now: a WebSocket
        # takes the registration over (its watch() replaces this callback,
        # no epoll_ctl), which is two syscalls less per connect.
        self._closed = True
        self.listener.pending.discard(self)
        request = parse_head(buffer[:end])
        upgrade = self.listener.upgrade
        if request is not None and upgrade is not None and upgrade(self, request, buffer[end + 4:]):
            return   # a WebSocket endpoint's (gateway/transports/websocket.py)
        self.listener.loop.remove_reader(self.sock.fileno())
        # Everything else is Tornado's, with the bytes already read given back.
        stream = PrefilledIOStream(self.sock, buffer, max_buffer_size=self.listener.max_buffer_size,
                                   read_chunk_size=self.listener.read_chunk_size)
        self.listener.handle_stream(stream, self.address)

    def _detach(self) -> None:
        if not self._closed:
            self._closed = True
            self.listener.loop.remove_reader(self.sock.fileno())
            self.listener.pending.discard(self)

    def answer(self, status: int, reason: str, extra: dict | None = None) -> None:
        """An HTTP error response, then the end of the connection."""
        self._detach()
        self.listener.loop.remove_reader(self.sock.fileno())   # if _readable left it registered
        body = ('{"error": "%s"}' % reason.replace('"', "'")).encode()
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "Content-Type: application/json",
                 f"Content-Length: {len(body)}", "Connection: close"]
        lines.extend(f"{k}: {v}" for k, v in (extra or {}).items())
        try:
            self.sock.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        except OSError:
            pass
        self.sock.close()


_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 426: "Upgrade Required", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}
