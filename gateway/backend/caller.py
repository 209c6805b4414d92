"""One backend endpoint, called with a bound on everything.

A :class:`Caller` POSTs JSON bodies to one URL and hands back an
:class:`Outcome`: the backend's answer (a JSON object) or why there is none
(``timeout``, ``unavailable``, ``status``, ``garbage``, ``overloaded``). It
never raises and never leaves a caller waiting longer than its timeout:

* at most ``concurrency`` calls in flight; past it calls wait in a FIFO of
  at most ``queue`` entries, and past that they fail at once
  (``overloaded``). A call that waited in the queue as long as the timeout
  fails (``timeout``) without being sent: the client has given up on it;
* a call whose future was cancelled while it waited (its connection closed)
  is dropped from the queue without being sent; one already sent runs to
  its end (its slot is freed then, so the bound holds), and its answer is
  dropped;
* the whole call, connecting included, is bounded by ``timeout`` seconds;
  connections to the backend are kept alive in a pool of at most
  ``concurrency`` (aiohttp: Tornado's client opens one per call, which cost
  twice the CPU per proxied connect, docs/benchmarks.md);
* the answer must be HTTP 200 with a JSON object, at most
  ``MAX_ANSWER_BYTES``; anything else is ``status`` or ``garbage``, logged
  with its reason.

Metrics per caller (label ``proxy``): calls by outcome, latency, calls in
flight, queue depth. Protocols read the answer's fields; a field of the
wrong shape is theirs to refuse (:meth:`Caller.refused` counts and logs it).

Centrifugo puts no bound on calls in flight; this does, so that a node's
mass reconnect cannot hammer the backend (docs/proxy.md).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import TYPE_CHECKING, Callable, NamedTuple

import aiohttp
import ujson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from gateway.core.host import SessionHost

log = logging.getLogger("pushgate.backend")
USER_AGENT = "pushgate"
LOG_EVERY = 1.0   # seconds: at most one log line per kind of failure and caller

MAX_ANSWER_BYTES = 1 << 20
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Outcomes. ANSWER carries the backend's JSON object; the others say why there is none.
ANSWER = "answer"
TIMEOUT = "timeout"          # no answer within the timeout (or waited that long in the queue)
UNAVAILABLE = "unavailable"  # the connection failed (refused, reset, DNS)
STATUS = "status"            # an HTTP status other than 200
GARBAGE = "garbage"          # 200, but not a JSON object (or too large)
OVERLOADED = "overloaded"    # the queue was full: not sent
CANCELLED = "cancelled"      # the caller went away while it waited: not sent


class Outcome(NamedTuple):
    kind: str
    body: dict | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == ANSWER


class CallerMetrics:
    """One node's figures for all its callers (label ``proxy``)."""

    def __init__(self, registry: CollectorRegistry):
        self.calls = Counter("pushgate_proxy_calls", "Backend proxy calls, by proxy and outcome (answer, "
                             "timeout, unavailable, status, garbage, overloaded, refused: an answer of the "
                             "wrong shape).", ["proxy", "outcome"], registry=registry)
        self.latency = Histogram("pushgate_proxy_latency_seconds", "Backend proxy call time, sent to answered "
                                 "(or failed).", ["proxy"], buckets=LATENCY_BUCKETS, registry=registry)
        self.in_flight = Gauge("pushgate_proxy_in_flight", "Backend proxy calls in flight.", ["proxy"],
                               registry=registry)
        self.queued = Gauge("pushgate_proxy_queue_depth", "Backend proxy calls waiting for a free slot.",
                            ["proxy"], registry=registry)


def shared_metrics(host: SessionHost) -> CallerMetrics:
    """The node's one set of caller metrics (Centrifugo's proxies and the
    Action Cable RPC share them, told apart by their ``proxy`` label)."""
    metrics: CallerMetrics = host.shared("backend.metrics", lambda h: CallerMetrics(h.metrics.registry))
    return metrics


_Waiting = tuple  # (future, body, headers, enqueued_at, url)


class Caller:
    def __init__(self, name: str, url: str, metrics: CallerMetrics, *, timeout: float, concurrency: int,
                 queue: int, clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.url = url
        self.timeout = timeout
        self.concurrency = concurrency
        self.queue_limit = queue
        self.clock = clock
        self.in_flight = 0
        self.max_in_flight = 0     # the most ever in flight at once (tests, bench)
        self._queue: collections.deque[_Waiting] = collections.deque()
        self._waiting: set[asyncio.Future[Outcome]] = set()   # the futures in the queue (withdraw)
        self._session: aiohttp.ClientSession | None = None
        self._logged: dict[str, tuple[float, int]] = {}   # kind -> (last logged, skipped since)
        self._calls = {kind: metrics.calls.labels(name, kind) for kind in
                       (ANSWER, TIMEOUT, UNAVAILABLE, STATUS, GARBAGE, OVERLOADED, "refused")}
        self._latency = metrics.latency.labels(name)
        self._in_flight = metrics.in_flight.labels(name)
        self._queued = metrics.queued.labels(name)

    def __repr__(self) -> str:
        return f"<Caller {self.name} {self.url}>"

    def call(self, body: bytes, headers: dict[str, str] | None = None, url: str | None = None
             ) -> asyncio.Future[Outcome]:
        """Send ``body`` (JSON) now, or when a slot frees up; the future's result
        is the :class:`Outcome`. Cancel the future to withdraw a waiting call.
        ``url``: another URL of the same backend (AnyCable's RPC has one per
        call), bounded together with this caller's."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if self.in_flight < self.concurrency:
            self._start(future, body, headers, url=url)
        elif len(self._queue) < self.queue_limit:
            self._queue.append((future, body, headers, self.clock(), url))
            self._waiting.add(future)
            self._queued.set(len(self._queue))
        else:
            self._fail(future, OVERLOADED, f"{self.concurrency} calls in flight and {self.queue_limit} waiting", url)
        return future

    def withdraw(self, future: asyncio.Future[Outcome]) -> bool:
        """Cancel a call that still waits in the queue (it is never sent) and
        say so; a call already sent is left to finish (False): its caller may
        still want to know what the backend made of it."""
        if future in self._waiting:
            self._waiting.discard(future)
            future.cancel()
            return True
        return False

    @property
    def full(self) -> bool:
        """Every slot busy and the queue full: a call now would fail at once."""
        return self.in_flight >= self.concurrency and len(self._queue) >= self.queue_limit

    def shed(self, what: str) -> None:
        """A call not even tried because the caller is :attr:`full`: counted
        and logged as ``overloaded``."""
        self._calls[OVERLOADED].inc()
        self._log(OVERLOADED, "%s proxy %s: overloaded (%d calls in flight and %d waiting): %s", self.name,
                  self.url, self.in_flight, len(self._queue), what)

    def refused(self, reason: str) -> None:
        """The protocol refused an answer of the wrong shape: counted and logged."""
        self._calls["refused"].inc()
        self._log("refused", "%s proxy: refused the backend's answer (%s)", self.name, reason)

    def _log(self, kind: str, message: str, *args: object) -> None:
        """Log a failure, at most once a second per kind: a backend that is down
        while thousands reconnect must not flood the log (the metrics count all)."""
        now = self.clock()
        last, skipped = self._logged.get(kind, (-LOG_EVERY, 0))
        if now - last < LOG_EVERY:
            self._logged[kind] = (last, skipped + 1)
            return
        self._logged[kind] = (now, 0)
        if skipped:
            message += f" ({skipped} more like it in the last {LOG_EVERY:g} s)"
        log.error(message, *args)

    def _fail(self, future: asyncio.Future[Outcome], kind: str, detail: str, url: str | None = None) -> None:
        self._calls[kind].inc()
        self._log(kind, "%s proxy %s: %s (%s)", self.name, url or self.url, kind, detail)
        if not future.done():
            future.set_result(Outcome(kind, None, detail))

    def _start(self, future: asyncio.Future[Outcome], body: bytes, headers: dict[str, str] | None,
               waited: float = 0.0, url: str | None = None) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._in_flight.set(self.in_flight)
        asyncio.ensure_future(self._fetch(future, body, headers, max(0.001, self.timeout - waited), url or self.url))

    def _next(self) -> None:
        queue = self._queue
        now = self.clock()
        while queue and self.in_flight < self.concurrency:
            future, body, headers, enqueued, url = queue.popleft()
            self._waiting.discard(future)
            if future.done():       # withdrawn: its connection closed
                continue
            waited = now - enqueued
            if waited >= self.timeout:
                self._fail(future, TIMEOUT, f"waited {waited:.2f} s for a free slot", url)
                continue
            self._start(future, body, headers, waited, url)
        self._queued.set(len(queue))

    async def _fetch(self, future: asyncio.Future[Outcome], body: bytes, headers: dict[str, str] | None,
                     timeout: float, url: str) -> None:
        started = self.clock()
        try:
            outcome = await self._post(body, headers, timeout, url)
        except Exception as exc:  # a bug here must not leave a command hanging
            log.exception("%s proxy: unexpected error", self.name)
            outcome = Outcome(UNAVAILABLE, None, repr(exc))
        finally:
            self.in_flight -= 1
            self._in_flight.set(self.in_flight)
            self._latency.observe(self.clock() - started)
        if outcome.ok:
            self._calls[ANSWER].inc()
            if not future.done():
                future.set_result(outcome)
        else:
            self._fail(future, outcome.kind, outcome.detail, url)
        self._next()

    async def _post(self, body: bytes, headers: dict[str, str] | None, timeout: float, url: str) -> Outcome:
        session = self._session
        if session is None:
            # One pool per caller: at most `concurrency` connections, kept alive between calls.
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency, ttl_dns_cache=60),
                headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
                skip_auto_headers=("Accept-Encoding",))
        try:
            async with session.post(url, data=body, headers=headers, allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                if response.status != 200:
                    return Outcome(STATUS, None, f"HTTP {response.status}")
                if response.content_length is not None and response.content_length > MAX_ANSWER_BYTES:
                    return Outcome(GARBAGE, None, f"{response.content_length} bytes")
                # read(n) returns what has arrived, up to n: the answer is read to
                # its end (or one byte past the limit), not cut at the first chunk.
                chunks, size = [], 0
                async for chunk in response.content.iter_any():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        break
                raw = b"".join(chunks)
        except asyncio.TimeoutError:
            return Outcome(TIMEOUT, None, f"no answer within {timeout:.2f} s")
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome(UNAVAILABLE, None, str(exc) or type(exc).__name__)
        if len(raw) > MAX_ANSWER_BYTES:
            return Outcome(GARBAGE, None, f"more than {MAX_ANSWER_BYTES} bytes")
        try:
            answer = ujson.loads(raw)
        except (ValueError, OverflowError):
            return Outcome(GARBAGE, None, f"not JSON: {raw[:80]!r}")
        if type(answer) is not dict:
            return Outcome(GARBAGE, None, f"not a JSON object: {raw[:80]!r}")
        return Outcome(ANSWER, answer)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
