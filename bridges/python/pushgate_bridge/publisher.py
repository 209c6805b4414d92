"""Publishing to nsqd's HTTP API: keep-alive, retries, clear errors.

One HTTP/1.1 connection per thread is kept open and reused. A connection
error (refused, reset, a stale keep-alive socket, a timeout) is retried with
exponential backoff; when the retries are spent the call raises
:class:`NsqdUnavailable`. nsqd refusing a message (4xx) raises
:class:`PublishError` carrying nsqd's own message at once. Nothing is ever
dropped without an exception.

Every message carries an ``id`` (a random one unless the caller gives one),
so a retry that reaches nsqd twice is still delivered once by the gateway.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import http.client
import json
import os
import threading
import time
import urllib.parse
import uuid
from typing import Any, Iterator

from pushgate_bridge import envelope as envelopes

MAX_BODY_BYTES = 5 * 1024 * 1024  # nsqd --max-body-size for /mpub


class PublishError(Exception):
    """A message was not published. ``status`` is nsqd's HTTP status (None when
    nsqd could not be reached) and ``message`` nsqd's reason."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(f"nsqd answered {status}: {message}" if status else message)
        self.status = status
        self.message = message


class NsqdUnavailable(PublishError):
    """nsqd could not be reached, even after the retries."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


class Publisher:
    """Publishes envelopes to one nsqd. Thread-safe: one connection per thread.

    Defaults come from the gateway's own environment variables:
    ``PUSHGATE_NSQD_HTTP_ADDRESS`` (``127.0.0.1:4151``), ``PUSHGATE_TOPIC``
    (``pushgate``) and ``PUSHGATE_MAX_MESSAGE_BYTES`` (65536, the gateway's
    limit: a bigger message would be dropped by the gateway, so it is refused
    here with an exception instead).
    """

    def __init__(self, nsqd_http_address: str | None = None, topic: str | None = None, *,
                 max_message_bytes: int | None = None, retries: int = 3, backoff: float = 0.1,
                 timeout: float = 5.0):
        address = nsqd_http_address or os.environ.get("PUSHGATE_NSQD_HTTP_ADDRESS") or "127.0.0.1:4151"
        if "://" not in address:
            address = "http://" + address
        url = urllib.parse.urlsplit(address)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"{address!r} is not an nsqd HTTP address")
        self.address = f"{url.scheme}://{url.netloc}"
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._https else 80)
        self.topic = topic or os.environ.get("PUSHGATE_TOPIC") or "pushgate"
        self.max_message_bytes = max_message_bytes or _env_int("PUSHGATE_MAX_MESSAGE_BYTES", 65536)
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._local = threading.local()

    # --- the API -------------------------------------------------------------

    def publish(self, envelope: dict[str, Any]) -> None:
        """Publish an envelope (``channel``/``channels``/``user``/``users``, ``data``, ``id``)."""
        body = self.encode(envelope)
        pending = getattr(self._local, "batch", None)
        if pending is not None:
            pending.append(body)
        else:
            self._post("/pub", body)

    def publish_to_user(self, user_id: object, data: Any, *, id: str | None = None, receipt: bool = False) -> None:
        self.publish({"user": user_id, "data": data, "id": id, "receipt": receipt})

    def broadcast(self, channel: str, data: Any, *, id: str | None = None) -> None:
        self.publish({"channel": channel, "data": data, "id": id})

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Collect the publishes of this thread and send them with one ``/mpub``
        (split at nsqd's 5 MiB body limit) when the block ends. Nested batches
        join the outer one; if the block raises, nothing is sent."""
        if getattr(self._local, "batch", None) is not None:
            yield
            return
        self._local.batch = []
        try:
            yield
            bodies = self._local.batch
        finally:
            self._local.batch = None
        self.publish_many(bodies)

    def publish_many(self, bodies: list[bytes]) -> None:
        """Send encoded envelopes with as few ``/mpub`` requests as the limits allow."""
        chunk: list[bytes] = []
        size = 0
        for body in bodies:
            if chunk and size + len(body) + 1 > MAX_BODY_BYTES:
                self._post("/mpub", b"\n".join(chunk))
                chunk, size = [], 0
            chunk.append(body)
            size += len(body) + 1
        if chunk:
            self._post("/mpub", b"\n".join(chunk))

    def encode(self, envelope: dict[str, Any]) -> bytes:
        if envelope.get("id") is None:
            if envelope.get("receipt"):
                # A made-up id would name the receipts with an id the caller does not know.
                raise ValueError('"receipt" needs an "id" of yours: receipts name the message by it')
            envelope = {**envelope, "id": uuid.uuid4().hex}
        body = envelopes.encode(envelope)
        if len(body) > self.max_message_bytes:
            raise PublishError(f"message of {len(body)} bytes is over the gateway's limit of "
                               f"{self.max_message_bytes} (PUSHGATE_MAX_MESSAGE_BYTES)")
        return body

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- HTTP ------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = self._local.conn = cls(self._host, self._port, timeout=self.timeout)
        return conn

    def _post(self, path: str, body: bytes) -> None:
        url = f"{path}?{urllib.parse.urlencode({'topic': self.topic})}"
        for attempt in range(self.retries + 1):
            conn = self._connection()
            try:
                conn.request("POST", url, body, {"Content-Type": "application/octet-stream"})
                response = conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt < self.retries:
                    time.sleep(self.backoff * 2 ** attempt)
                    continue
                raise NsqdUnavailable(f"nsqd at {self.address} unreachable after {attempt + 1} "
                                      f"attempts: {exc!r}") from exc
            if response.status == 200:
                return
            message = _nsqd_message(answer)
            if response.status >= 500 and attempt < self.retries:  # 503 EXITING: nsqd is stopping
                time.sleep(self.backoff * 2 ** attempt)
                continue
            raise PublishError(message, response.status)


def _nsqd_message(answer: bytes) -> str:
    text = answer.decode(errors="replace").strip()
    try:
        return str(json.loads(text)["message"])
    except (ValueError, KeyError, TypeError):
        return text


class AsyncPublisher:
    """The asyncio face of :class:`Publisher`: each HTTP call runs in a worker
    thread (``asyncio.to_thread``), which keeps its own keep-alive connection."""

    def __init__(self, publisher: Publisher | None = None, **options: Any):
        self.sync = publisher or Publisher(**options)
        self._batch: contextvars.ContextVar[list[bytes] | None] = contextvars.ContextVar("batch", default=None)

    async def publish(self, envelope: dict[str, Any]) -> None:
        body = self.sync.encode(envelope)
        pending = self._batch.get()
        if pending is not None:
            pending.append(body)
        else:
            await asyncio.to_thread(self.sync._post, "/pub", body)

    async def publish_to_user(self, user_id: object, data: Any, *, id: str | None = None,
                              receipt: bool = False) -> None:
        await self.publish({"user": user_id, "data": data, "id": id, "receipt": receipt})

    async def broadcast(self, channel: str, data: Any, *, id: str | None = None) -> None:
        await self.publish({"channel": channel, "data": data, "id": id})

    @contextlib.asynccontextmanager
    async def batch(self):
        if self._batch.get() is not None:
            yield
            return
        pending: list[bytes] = []
        token = self._batch.set(pending)
        try:
            yield
        finally:
            self._batch.reset(token)
        await asyncio.to_thread(self.sync.publish_many, pending)
