"""Reading NSQ: pynsq behind one small module that fixes its pitfalls.

* Readers are created inside the running loop (never ``nsq.run()``), which
  keeps pynsq free of "no current event loop" warnings on Python 3.12+.
* Every message is finished (FIN) as soon as it is handed to the gateway: the
  handler never raises into pynsq and never requeues, so one bad message can
  never put the node into backoff.
* ``output_buffer_timeout=25`` ms instead of nsqd's 250 ms flush;
  ``max_in_flight`` large enough for every nsqd; a short lookupd poll.
* A reader with no nsqd at all (at start-up, or after losing it) asks
  nsqlookupd every second rather than every ``--lookupd-poll-interval``, so
  it reads within about a second of nsqd appearing, whatever the start order.
* A lost nsqd connection is retried after 1 s, doubling to 15 s, instead of
  pynsq's fixed 15 s (direct addresses) or next-poll-after-10 s (lookupd).
* Why a reader has no nsqd (refused, lookupd unreachable, no producer for
  the topic) is kept, and :meth:`NsqSource.report` logs it as one WARNING
  with the address after a few seconds, then at intervals while it lasts,
  instead of pynsq's silence or its warning on every poll.
* :meth:`NsqSource.close` really closes, and cleanly: CLS, nsqd's
  CLOSE_WAIT, then the connection (cut under nsqd's writes, it makes nsqd
  log an ERROR); no reconnect after it, and no message read before it is
  handled (or finished on the closed connection) after it.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import urllib.parse
from typing import Any, Awaitable, Callable

import nsq
from tornado.httpclient import HTTPClientError
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.iostream import StreamClosedError

log = logging.getLogger("pushgate.nsq")

RECONNECT_MIN = 1.0
RECONNECT_MAX = 15.0
STARVED_POLL = 1.0   # seconds between lookupd polls while a reader has no nsqd
WARN_AFTER = 3.0     # seconds without an nsqd before a reader says so
WARN_EVERY = 30.0    # and again this often while it lasts
CLOSE_WAIT = 0.5     # seconds a closing reader waits for nsqd's CLOSE_WAIT

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
    # pynsq's own attributes that this class assigns (pynsq has no type information).
    lookupd_query_index: int
    total_rdy: int

    def __init__(self, *, handler: Handler, on_change: Callable[[], None],
                 on_drop: Callable[[str, str], None] = lambda topic, address: None, **kwargs: Any) -> None:
        self._handler = handler
        self._on_change = on_change
        self._on_drop = on_drop
        self._closing = False
        self._retry_delay: dict[str, float] = {}
        self._starved_poll: PeriodicCallback | None = None
        self.problem = "not connected yet"  # why there is no nsqd, for NsqSource.report
        self.missing_since: float | None = time.monotonic()
        self.warned_at: float | None = None
        super().__init__(message_handler=handler, **kwargs)

    def _run(self) -> None:
        if self._closing:
            return
        super()._run()
        if self.lookupd_http_addresses:
            self._starved_poll = PeriodicCallback(self._poll_while_starved, STARVED_POLL * 1000)
            self._starved_poll.start()

    def _poll_while_starved(self) -> Awaitable[None] | None:
        if not self.conns and not self._closing:
            return self.query_lookupd()
        return None

    async def query_lookupd(self) -> None:
        """Ask the next nsqlookupd which nsqds have the topic, and connect to
        them (pynsq's own version only logs what went wrong, on every poll)."""
        if self._closing:
            return
        address = self.lookupd_http_addresses[self.lookupd_query_index]
        self.lookupd_query_index = (self.lookupd_query_index + 1) % len(self.lookupd_http_addresses)
        base = (address if "://" in address else "http://" + address).rstrip("/")
        url = f"{base}/lookup?{urllib.parse.urlencode({'topic': self.topic})}"
        try:
            response = await self.http_client.fetch(url, headers={"Accept": "application/vnd.nsq; version=1.0"},
                                                    connect_timeout=self.lookupd_connect_timeout,
                                                    request_timeout=self.lookupd_request_timeout)
            producers = json.loads(response.body)["producers"]
        except HTTPClientError as exc:
            if exc.code == 404:  # TOPIC_NOT_FOUND: no nsqd has registered the topic
                producers = []
            else:
                self.problem = f"nsqlookupd {base} answered {exc} (--lookupd-http-address)"
                return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.problem = (f"cannot reach nsqlookupd {base} ({_reason(exc)}): is it running there? "
                            "(--lookupd-http-address)")
            return
        if not producers:
            self.problem = (f"nsqlookupd {base} knows no nsqd with topic {self.topic!r} yet: is nsqd running, "
                            "with --lookupd-tcp-address pointing at this nsqlookupd?")
        for producer in producers:
            host = producer.get("broadcast_address") or producer.get("address")
            port = producer.get("tcp_port")
            if isinstance(host, str) and isinstance(port, int):
                self.connect_to_nsqd(host, port)

    def _handle_message(self, conn: nsq.AsyncConn, message: nsq.Message) -> None:
        if self._closing:
            # Read before the close, handled after it: the connection is gone, so
            # no FIN or RDY (pynsq would log each failed send as an ERROR). nsqd
            # drops it with this node's ephemeral channel.
            return
        self._maybe_update_rdy(conn)
        try:
            self._handler(self.topic, message.body, message.timestamp, conn.id, message.id)
        except Exception:
            log.exception("[%s] failed to deliver message %s", self.topic, message.id)
        finally:
            if not message.has_responded():
                message.finish()

    def connect_to_nsqd(self, host: str, port: int) -> nsq.AsyncConn | None:
        if self._closing:
            return None
        return super().connect_to_nsqd(host, port)

    def _on_connection_ready(self, conn: nsq.AsyncConn, **kwargs: Any) -> None:
        self._retry_delay.pop(conn.id, None)
        log.info("[%s] reading from nsqd %s as %s", self.topic, conn.id, self.channel)
        super()._on_connection_ready(conn, **kwargs)
        self._on_change()

    def _on_connection_close(self, conn: nsq.AsyncConn, **kwargs: Any) -> None:
        # pynsq's bookkeeping, without its fixed 15 s direct reconnect.
        if self.conns.get(conn.id) is conn:
            del self.conns[conn.id]
            if not self._closing:
                log.warning("[%s] lost nsqd %s", self.topic, conn.id)
                self._on_drop(self.topic, conn.id)
                self._on_change()
        elif not self._closing:  # a connection that never became ready
            how = "(--nsqd-tcp-address)" if conn.id in self.nsqd_tcp_addresses else "(found through nsqlookupd)"
            error = getattr(conn.stream, "error", None)
            self.problem = (f"cannot connect to nsqd {conn.id}" + (f" ({_reason(error)})" if error else "")
                            + f": is it running there? {how}")
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

    async def close(self) -> None:
        """Close as NSQ means a consumer to: CLS first, so that nsqd stops
        sending and answers CLOSE_WAIT, then the connections. Cut while nsqd
        writes messages to it, a connection makes nsqd log an ERROR
        ("messagePump error ... use of closed network connection")."""
        self._closing = True
        for periodic in (self.redist_periodic, self.query_periodic, self._starved_poll):
            if periodic is not None:
                periodic.stop()
        conns = list(self.conns.values())
        answered = [self._close_wait(conn) for conn in conns]
        if answered:
            await asyncio.wait(answered, timeout=CLOSE_WAIT)
        for conn in conns:
            conn.close()

    def _close_wait(self, conn: nsq.AsyncConn) -> asyncio.Future:
        """Send CLS on ``conn``; the future is done when nsqd answers CLOSE_WAIT."""
        done: asyncio.Future = asyncio.get_running_loop().create_future()

        def response(data: bytes = b"", **kwargs: Any) -> None:
            if data == b"CLOSE_WAIT" and not done.done():
                done.set_result(None)
        conn.on(nsq.event.RESPONSE, response)
        try:
            conn.send(b"CLS\n")
        except (StreamClosedError, OSError):
            done.set_result(None)  # already gone
        return done


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class NsqSource:
    """One reader per topic, each on this node's own ``<node>#ephemeral`` channel."""

    def __init__(self, *, topics: list[str], channel: str, handler: Handler,
                 on_change: Callable[[], None] = lambda: None,
                 on_drop: Callable[[str, str], None] = lambda topic, address: None,
                 nsqd_tcp_addresses: list[str], lookupd_http_addresses: list[str],
                 lookupd_poll_interval: int = 5, max_in_flight: int = 200,
                 warn_after: float = WARN_AFTER, warn_every: float = WARN_EVERY):
        if not nsq.valid_channel_name(channel):
            raise ValueError(f"{channel!r} is not a valid NSQ channel name")
        for topic in topics:
            if not nsq.valid_topic_name(topic):
                raise ValueError(f"{topic!r} is not a valid NSQ topic name")
        self.topics = list(topics)
        self.channel = channel
        self._handler = handler
        self._on_change = on_change  # told whenever an nsqd connection is made or lost
        self._on_drop = on_drop      # told (topic, nsqd) when a connection drops, before on_change
        self._kwargs = dict(
            nsqd_tcp_addresses=list(nsqd_tcp_addresses),
            lookupd_http_addresses=list(lookupd_http_addresses),
            lookupd_poll_interval=int(lookupd_poll_interval),
            max_in_flight=max(int(max_in_flight), len(nsqd_tcp_addresses) or 1),
            output_buffer_timeout=25,
        )
        self.readers: list[_Reader] = []
        self._warn_after = warn_after
        self._warn_every = warn_every

    def start(self) -> None:
        """Create the readers. Must run inside the running event loop."""
        IOLoop.current()  # fails loudly outside a running loop rather than deep in pynsq
        for topic in self.topics:
            self.readers.append(_Reader(topic=topic, channel=self.channel, handler=self._handler,
                                        on_change=self._on_change, on_drop=self._on_drop, **self._kwargs))

    def connected_addresses(self) -> list[str]:
        """``host:port`` of every nsqd some reader is connected to."""
        return [conn_id for r in self.readers for conn_id in r.conns]

    def connection_count(self) -> int:
        return sum(len(r.conns) for r in self.readers)

    def reading_every_topic(self) -> bool:
        """Every topic has at least one live nsqd connection."""
        return bool(self.readers) and all(r.conns for r in self.readers)

    def report(self, now: float) -> None:
        """Log each topic that has had no nsqd for ``warn_after`` seconds, with
        why, and again every ``warn_every`` seconds while it lasts. ``now``
        is ``time.monotonic()``; the node calls this every second."""
        for reader in self.readers:
            if reader.conns:
                reader.missing_since = reader.warned_at = None
                continue
            if reader.missing_since is None:
                reader.missing_since = now
            missing = now - reader.missing_since
            if missing >= self._warn_after and (reader.warned_at is None
                                                or now - reader.warned_at >= self._warn_every):
                reader.warned_at = now
                log.warning("[%s] no nsqd for %.0f s, so nothing is delivered from this topic and /health "
                            "answers 503: %s", reader.topic, missing, reader.problem)

    async def close(self) -> None:
        readers, self.readers = self.readers, []
        await asyncio.gather(*(reader.close() for reader in readers))
