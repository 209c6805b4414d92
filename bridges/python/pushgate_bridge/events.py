"""Reading pushgate's events (``--events-topic``) in a backend worker.

    import pushgate_bridge.events as events

    reader = events.EventReader("pushgate-events", "backend", nsqd_tcp_addresses=["127.0.0.1:4150"])

    @reader.on("user_offline")
    def offline(event):
        mark_offline(event["user"])

    @reader.on("undelivered")
    def undelivered(event):
        mail_the_user(event["user"], event["id"])

    reader.run()        # blocks; reader.stop() from another thread or a signal handler

Each event is one NSQ message; a handler that returns finishes it (``FIN``),
one that raises puts it back (``REQ``, with a delay that grows with the
message's attempts) and the reader backs off: it takes no message for a
while (``RDY 0``), then one, then its full ``max_in_flight`` again after a
success. A message tried ``max_attempts`` times is finished and logged
instead of being retried forever. A connection that breaks is made again
after a pause that doubles up to ``max_reconnect_delay``; with
``lookupd_http_addresses`` the reader asks nsqlookupd every
``lookupd_poll_interval`` seconds which nsqds have the topic.

Why a reader of our own on the standard library rather than pynsq: this
package needs nothing but the standard library (a backend installs it
without Tornado), pynsq is unmaintained, and a worker process reading one
topic needs a few NSQ commands (``SUB``, ``RDY``, ``FIN``, ``REQ``,
``NOP``, ``CLS``), which fit in this file. Handlers run on the thread of
the connection the event came on (one per nsqd), one event at a time across
all of them.

Several worker processes reading the same ``channel`` share the events
(each event goes to one of them); give each consumer that wants every
event its own channel. A channel that is not ``#ephemeral`` keeps what
arrives while no worker runs (nsqd holds it on disk).
"""
from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
import urllib.parse
import urllib.request
from typing import Any, Callable

log = logging.getLogger("pushgate_bridge.events")

MAGIC = b"  V2"
FRAME_RESPONSE, FRAME_ERROR, FRAME_MESSAGE = 0, 1, 2
HEARTBEAT = b"_heartbeat_"

Handler = Callable[[dict], Any]


class EventReader:
    def __init__(self, topic: str, channel: str, *, nsqd_tcp_addresses: list[str] | None = None,
                 lookupd_http_addresses: list[str] | None = None, max_in_flight: int = 50,
                 max_attempts: int = 10, requeue_delay: float = 1.0, max_backoff: float = 60.0,
                 max_reconnect_delay: float = 30.0, lookupd_poll_interval: float = 30.0,
                 on_any: Handler | None = None):
        if not nsqd_tcp_addresses and not lookupd_http_addresses:
            raise ValueError("give nsqd_tcp_addresses or lookupd_http_addresses")
        self.topic = topic
        self.channel = channel
        self.nsqd = list(nsqd_tcp_addresses or [])
        self.lookupd = list(lookupd_http_addresses or [])
        self.max_in_flight = max_in_flight
        self.max_attempts = max_attempts
        self.requeue_delay = requeue_delay
        self.max_backoff = max_backoff
        self.max_reconnect_delay = max_reconnect_delay
        self.lookupd_poll_interval = lookupd_poll_interval
        self.handlers: dict[str, Handler] = {}
        self.on_any = on_any
        self._stopping = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._sockets: dict[str, socket.socket] = {}
        self._lock = threading.Lock()
        self._handling = threading.Lock()   # one handler at a time, whichever nsqd the event came from

    def on(self, event_type: str, handler: Handler | None = None) -> Any:
        """Call ``handler(event)`` for every event of ``event_type`` (or use as a decorator)."""
        if handler is None:
            return lambda fn: self.on(event_type, fn) or fn
        self.handlers[event_type] = handler
        return handler

    # --- running ---------------------------------------------------------------------------

    def start(self) -> None:
        """Read in background threads (one per nsqd); returns at once."""
        for address in self.nsqd:
            self._connect_to(address)
        if self.lookupd:
            thread = threading.Thread(target=self._poll_lookupd, name="pushgate-events-lookupd", daemon=True)
            thread.start()

    def run(self) -> None:
        """Read until :meth:`stop`."""
        self.start()
        self._stopping.wait()
        self.join()

    def stop(self) -> None:
        """Stop taking messages: each connection says ``CLS`` and ends once
        nsqd answers (messages in flight go back to nsqd)."""
        self._stopping.set()
        with self._lock:
            sockets = list(self._sockets.values())
        for sock in sockets:
            try:
                sock.sendall(b"CLS\n")
            except OSError:
                pass

    def join(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))

    def _connect_to(self, address: str) -> None:
        with self._lock:
            if address in self._threads or self._stopping.is_set():
                return
            thread = threading.Thread(target=self._connection, args=(address,), name=f"pushgate-events-{address}",
                                      daemon=True)
            self._threads[address] = thread
        thread.start()

    def _poll_lookupd(self) -> None:
        while not self._stopping.is_set():
            for lookupd in self.lookupd:
                base = lookupd if lookupd.startswith("http") else f"http://{lookupd}"
                url = f"{base}/lookup?{urllib.parse.urlencode({'topic': self.topic})}"
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        producers = json.loads(response.read()).get("producers", [])
                except (OSError, ValueError) as exc:
                    if "404" not in str(exc):   # the topic has no nsqd yet
                        log.warning("nsqlookupd %s: %s", lookupd, exc)
                    continue
                for producer in producers:
                    self._connect_to(f"{producer['broadcast_address']}:{producer['tcp_port']}")
            self._stopping.wait(self.lookupd_poll_interval)

    # --- one connection ---------------------------------------------------------------------------

    def _connection(self, address: str) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                self._session(address)
                delay = 0.5
            except (OSError, ProtocolError) as exc:
                if self._stopping.is_set():
                    break
                log.warning("nsqd %s: %s; connecting again in %.1f s", address, exc, delay)
            if self._stopping.wait(delay):
                break
            delay = min(self.max_reconnect_delay, delay * 2)
        with self._lock:
            self._threads.pop(address, None)

    def _session(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=10)
        with self._lock:
            self._sockets[address] = sock
        try:
            sock.settimeout(None)
            stream = sock.makefile("rb")
            sock.sendall(MAGIC + f"SUB {self.topic} {self.channel}\n".encode())
            kind, data = _read_frame(stream)
            if kind == FRAME_ERROR:
                raise ProtocolError(f"SUB refused: {data.decode(errors='replace')}")
            backoff = Backoff(self.max_backoff)
            sock.sendall(f"RDY {self.max_in_flight}\n".encode())
            while True:
                kind, data = _read_frame(stream)
                if kind == FRAME_RESPONSE:
                    if data == HEARTBEAT:
                        sock.sendall(b"NOP\n")
                    elif data == b"CLOSE_WAIT":
                        return   # after our CLS: nsqd sends nothing more
                elif kind == FRAME_ERROR:
                    log.warning("nsqd %s: %s", address, data.decode(errors="replace"))
                elif kind == FRAME_MESSAGE:
                    self._handle(sock, data, backoff)
        finally:
            with self._lock:
                self._sockets.pop(address, None)
            sock.close()

    def _handle(self, sock: socket.socket, data: bytes, backoff: "Backoff") -> None:
        attempts = struct.unpack(">H", data[8:10])[0]
        msg_id = data[10:26]
        try:
            event = json.loads(data[26:])
            handler = self.handlers.get(event.get("type")) if isinstance(event, dict) else None
            with self._handling:
                if self.on_any is not None:
                    self.on_any(event)
                if handler is not None:
                    handler(event)
        except Exception:
            if attempts >= self.max_attempts:
                log.exception("event %s failed %d times; dropped", msg_id.decode(), attempts)
                sock.sendall(b"FIN " + msg_id + b"\n")
                return
            log.exception("event %s failed (attempt %d); requeued", msg_id.decode(), attempts)
            delay_ms = int(self.requeue_delay * attempts * 1000)
            sock.sendall(b"REQ " + msg_id + f" {delay_ms}\n".encode())
            pause = backoff.failed()
            sock.sendall(b"RDY 0\n")           # take nothing while backing off
            if self._stopping.wait(pause):
                return
            sock.sendall(b"RDY 1\n")           # then one, to test the water
            return
        sock.sendall(b"FIN " + msg_id + b"\n")
        if backoff.succeeded():
            sock.sendall(f"RDY {self.max_in_flight}\n".encode())


class Backoff:
    """Seconds to take no message after failures: doubling from 1 s up to
    ``limit``, undone one step per success."""

    def __init__(self, limit: float):
        self.limit = limit
        self.level = 0

    def failed(self) -> float:
        self.level += 1
        return min(self.limit, 2 ** (self.level - 1))

    def succeeded(self) -> bool:
        """Returns whether the reader has just left back-off."""
        if self.level == 0:
            return False
        self.level -= 1
        return self.level == 0


class ProtocolError(Exception):
    pass


def _read_frame(stream: Any) -> tuple[int, bytes]:
    head = stream.read(8)
    if len(head) < 8:
        raise ProtocolError("connection closed by nsqd")
    size, kind = struct.unpack(">lL", head)
    data = stream.read(size - 4)
    if len(data) < size - 4:
        raise ProtocolError("connection closed by nsqd")
    return kind, data
