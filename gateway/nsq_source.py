"""Reading NSQ: pynsq behind one small module that fixes its pitfalls.

* Readers are created inside the running loop (never ``nsq.run()``), which
  keeps pynsq free of "no current event loop" warnings on Python 3.12+.
* Every message is finished (FIN) as soon as it is handed to the gateway: the
  handler never raises into pynsq and never requeues, so one bad message can
  never put the node into backoff.
* ``output_buffer_timeout=25`` ms instead of nsqd's 250 ms flush;
  ``max_in_flight`` large enough for every nsqd; a short lookupd poll.
* A lost nsqd connection is retried after 1 s, doubling to 15 s, instead of
  pynsq's fixed 15 s (direct addresses) or next-poll-after-10 s (lookupd).
* :meth:`NsqSource.close` really closes: no reconnect after it.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable

import nsq
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError

log = logging.getLogger("pushgate.nsq")

RECONNECT_MIN = 1.0
RECONNECT_MAX = 15.0

Handler = Callable[[str, bytes, int, str, bytes], object]


class _ConnectionNoise(logging.Filter):
    """pynsq logs every failed connect as an ERROR traceback (through
    tornado.application) and every closed connection as an ERROR
    "failed to unpack size"; the reader below logs one warning line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (StreamClosedError, ConnectionError)) and "_connect_callback" in str(record.args):
            return False
        return not any(isinstance(arg, nsq.protocol.IntegrityError) for arg in record.args or ())


logging.getLogger("tornado.application").addFilter(_ConnectionNoise())
logging.getLogger("nsq.client").addFilter(_ConnectionNoise())


class _Reader(nsq.Reader):
    def __init__(self, *, handler: Handler, on_change: Callable[[], None], **kwargs):
        self._handler = handler
        self._on_change = on_change
        self._closing = False
        self._retry_delay: dict[str, float] = {}
        super().__init__(message_handler=handler, **kwargs)

    def _handle_message(self, conn, message) -> None:
        self._maybe_update_rdy(conn)
        try:
            self._handler(self.topic, message.body, message.timestamp, conn.id, message.id)
        except Exception:
            log.exception("[%s] failed to deliver message %s", self.topic, message.id)
        finally:
            if not message.has_responded():
                message.finish()

    def connect_to_nsqd(self, host, port):
        if self._closing:
            return None
        return super().connect_to_nsqd(host, port)

    def _on_connection_ready(self, conn, **kwargs):
        self._retry_delay.pop(conn.id, None)
        log.info("[%s] reading from nsqd %s as %s", self.topic, conn.id, self.channel)
        super()._on_connection_ready(conn, **kwargs)
        self._on_change()

    def _on_connection_close(self, conn, **kwargs):
        # pynsq's bookkeeping, without its fixed 15 s direct reconnect.
        if self.conns.get(conn.id) is conn:
            del self.conns[conn.id]
            if not self._closing:
                log.warning("[%s] lost nsqd %s", self.topic, conn.id)
                self._on_change()
        self.total_rdy = max(self.total_rdy - conn.rdy, 0)
        if conn.rdy_timeout or conn.rdy:
            self.need_rdy_redistributed = True
        if conn.rdy_timeout:
            self.io_loop.remove_timeout(conn.rdy_timeout)
            conn.rdy_timeout = None
        if self._closing or conn.id in self.conns:
            return
        # Addresses found through lookupd come back with the next poll; lift the
        # 10 s per-address throttle so that poll reconnects at once.
        self.connection_attempts.pop(conn.id, None)
        if conn.id in self.nsqd_tcp_addresses:
            delay = self._retry_delay.get(conn.id, RECONNECT_MIN)
            self._retry_delay[conn.id] = min(delay * 2, RECONNECT_MAX)
            self.io_loop.call_later(delay, functools.partial(self._reconnect, conn.host, conn.port))

    def _reconnect(self, host: str, port: int) -> None:
        self.connection_attempts.pop(f"{host}:{port}", None)
        self.connect_to_nsqd(host, port)

    def close(self) -> None:
        self._closing = True
        for conn in list(self.conns.values()):
            conn.close()
        for periodic in (self.redist_periodic, self.query_periodic):
            if periodic is not None:
                periodic.stop()


class NsqSource:
    """One reader per topic, each on this node's own ``<node>#ephemeral`` channel."""

    def __init__(self, *, topics: list[str], channel: str, handler: Handler,
                 on_change: Callable[[], None] = lambda: None,
                 nsqd_tcp_addresses: list[str], lookupd_http_addresses: list[str],
                 lookupd_poll_interval: int = 5, max_in_flight: int = 200):
        if not nsq.valid_channel_name(channel):
            raise ValueError(f"{channel!r} is not a valid NSQ channel name")
        for topic in topics:
            if not nsq.valid_topic_name(topic):
                raise ValueError(f"{topic!r} is not a valid NSQ topic name")
        self.topics = list(topics)
        self.channel = channel
        self._handler = handler
        self._on_change = on_change  # told whenever an nsqd connection is made or lost
        self._kwargs = dict(
            nsqd_tcp_addresses=list(nsqd_tcp_addresses),
            lookupd_http_addresses=list(lookupd_http_addresses),
            lookupd_poll_interval=int(lookupd_poll_interval),
            max_in_flight=max(int(max_in_flight), len(nsqd_tcp_addresses) or 1),
            output_buffer_timeout=25,
        )
        self.readers: list[_Reader] = []

    def start(self) -> None:
        """Create the readers. Must run inside the running event loop."""
        IOLoop.current()  # fails loudly outside a running loop rather than deep in pynsq
        for topic in self.topics:
            self.readers.append(_Reader(topic=topic, channel=self.channel, handler=self._handler,
                                        on_change=self._on_change, **self._kwargs))

    def connected_addresses(self) -> list[str]:
        """``host:port`` of every nsqd some reader is connected to."""
        return [conn_id for r in self.readers for conn_id in r.conns]

    def connection_count(self) -> int:
        return sum(len(r.conns) for r in self.readers)

    def reading_every_topic(self) -> bool:
        """Every topic has at least one live nsqd connection."""
        return bool(self.readers) and all(r.conns for r in self.readers)

    def close(self) -> None:
        for reader in self.readers:
            reader.close()
        self.readers = []
