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
* **Overload is shed at the door.** While the node runs late (the loop lag
  is over ``--shed-loop-lag``), a new connection gets a canned
  ``503 Service Unavailable`` written straight to the socket and is closed:
  no HTTP parsing, no handler, a few microseconds, so a connection flood
  costs the node little and the clients already connected stay on time.
  Connections are taken from the kernel in small batches per loop turn, so
  a burst waits in the listen backlog instead of in front of everyone else.
* **Accept errors are one line, not a storm.** When ``accept()`` fails for
  lack of file descriptors or memory, the listener pauses for a moment and
  logs once per interval with a count, instead of a traceback per attempt.
* **Client addresses are believed only from trusted proxies**
  (:func:`client_ip`).
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import time
from typing import TYPE_CHECKING, Callable

from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPServerRequest
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

if TYPE_CHECKING:
    from gateway.core.metrics import Metrics

log = logging.getLogger("pushgate.server")

ACCEPT_BATCH = 32          # accept() calls per readiness event: a burst waits in the backlog
OVERLOADED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
              b"Connection: close\r\nContent-Length: 24\r\n\r\n{\"error\": \"overloaded\"}\n")
ACCEPT_PAUSE = 0.1         # seconds the listener rests after running out of descriptors
ACCEPT_LOG_INTERVAL = 10.0  # seconds between accept-error log lines
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class PendingConnections:
    """TCP connections that are not client sessions, oldest first (a dict is
    an insertion-ordered set). Closed ones are dropped lazily."""

    def __init__(self, limit: int, metrics: Metrics | None = None):
        self.limit = limit
        self._streams: dict[IOStream, None] = {}
        self._metrics = metrics
        self.evicted = 0

    def add(self, stream: IOStream) -> None:
        streams = self._streams
        while len(streams) >= self.limit:
            oldest = next(iter(streams))
            del streams[oldest]
            if not oldest.closed():
                self.evicted += 1
                oldest.close()
        streams[stream] = None

    def discard(self, stream: IOStream) -> None:
        """``stream`` became a client session (or is gone)."""
        self._streams.pop(stream, None)

    def sweep(self, now: float = 0.0, head_timeout: float | None = None) -> None:
        """Forget closed connections, and close those still sending their
        request head after ``head_timeout`` seconds (run every second)."""
        for stream in list(self._streams):
            if stream.closed():
                self._streams.pop(stream, None)
            elif head_timeout is not None and getattr(stream, "expired", None) and stream.expired(now, head_timeout):
                stream.close()
                self._streams.pop(stream, None)
        if self._metrics is not None:
            self._metrics.pending_sockets.set(len(self._streams))

    def __len__(self) -> int:
        return len(self._streams)


class Listener(HTTPServer):
    """Tornado's HTTPServer with the accept loop and bookkeeping above."""

    def initialize(self, *args, pending: PendingConnections, metrics: Metrics,  # type: ignore[override]
                   overloaded: Callable[[], bool] = lambda: False, upgrades=None, **kwargs) -> None:
        super().initialize(*args, **kwargs)
        self.pending = pending
        self.metrics = metrics
        self._overloaded = overloaded
        # WebSocket endpoints read their own request heads (gateway/transports/websocket.py);
        # without them every connection goes to Tornado's HTTP server.
        self.upgrades = upgrades
        self._accept_errors = 0
        self._accept_logged = 0.0

    def handle_stream(self, stream: IOStream, address: tuple):  # type: ignore[override]
        self.pending.add(stream)
        return super().handle_stream(stream, address)

    def add_sockets(self, sockets) -> None:  # type: ignore[override]
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self._accept_on(sock)

    def _accept_on(self, sock: socket.socket) -> Callable[[], None]:
        """Register ``sock`` with the loop; returns the function that removes it
        (Tornado's TCPServer.stop calls it)."""
        loop = IOLoop.current()
        state = {"registered": True, "removed": False}

        def ready(fd, events) -> None:
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
                if self._overloaded() and self.ssl_options is None:
                    self._shed(connection)
                    continue
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

    def _accepted(self, connection: socket.socket, address) -> None:
        if self.upgrades is not None and self.ssl_options is None:
            from gateway.transports.websocket import Head
            Head(self, self.upgrades, connection, address)
        else:
            self._handle_connection(connection, address)

    def _shed(self, connection: socket.socket) -> None:
        self.metrics.refused_connects.labels("overloaded").inc()
        try:
            connection.setblocking(False)
            connection.send(OVERLOADED)
        except OSError:
            pass
        connection.close()

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
