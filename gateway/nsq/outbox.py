"""A bounded queue of messages for one NSQ topic, published in batches
through nsqd's HTTP ``/mpub`` by one task.

Whoever queues never waits: when the queue holds ``limit`` messages, a new
one is dropped and counted (``on_drop("full")``). nsqd being slow or down
only fills the queue: the batch it refused is tried again after a pause
that doubles up to ``MAX_BACKOFF``, and a batch nsqd answers with a 4xx
(it will never take it) is dropped and counted (``on_drop("nsqd")``).
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from itertools import islice
from typing import Callable

from gateway.nsq.publisher import NsqdUnavailable, PublishError, mpublish

log = logging.getLogger("pushgate.outbox")

BATCH = 256            # messages per /mpub (nsqd takes 5 MiB a body; events are small)
MAX_BATCH_BYTES = 4 << 20
FIRST_BACKOFF = 0.25   # seconds after a failed /mpub
MAX_BACKOFF = 5.0


class Outbox:
    def __init__(self, *, http_address: str, topic: str, limit: int,
                 on_drop: Callable[[str, int], None], on_size: Callable[[int], None] = lambda n: None):
        self.http_address = http_address
        self.topic = topic
        self.limit = limit
        self.on_drop = on_drop
        self.on_size = on_size
        self.queue: deque[bytes] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Future | None = None
        self._closing = False
        self.published = 0
        self.failures = 0    # /mpub calls that failed

    def put(self, message: bytes) -> bool:
        if len(self.queue) >= self.limit:
            self.on_drop("full", 1)
            return False
        self.queue.append(message)
        if self._wake is not None and len(self.queue) == 1:
            self._wake.set()
        return True

    def start(self) -> None:
        self._wake = asyncio.Event()
        if self.queue:
            self._wake.set()
        self._task = asyncio.ensure_future(self._run())

    async def close(self, timeout: float = 1.0) -> None:
        """Publish what is queued (for at most ``timeout`` seconds), then stop."""
        self._closing = True
        if self._task is None:
            return
        if self._wake is not None:
            self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            self._task.cancel()
            if self.queue:
                self.on_drop("nsqd", len(self.queue))
                log.warning("events: %d not published to nsqd before the node stopped", len(self.queue))

    async def _run(self) -> None:
        assert self._wake is not None
        backoff = FIRST_BACKOFF
        while True:
            if not self.queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch: list[bytes] = []
            size = 0
            for message in islice(self.queue, BATCH):
                if batch and size + len(message) > MAX_BATCH_BYTES:
                    break
                batch.append(message)
                size += len(message) + 1
            try:
                await mpublish(self.http_address, self.topic, batch)
            except PublishError as exc:
                if 400 <= exc.status < 500:
                    self._take(len(batch))
                    self.on_drop("nsqd", len(batch))
                    log.warning("events: nsqd refused %d events (%s); dropped", len(batch), exc)
                    continue
                await self._pause(exc, backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
            except NsqdUnavailable as exc:
                if self._closing:
                    self.on_drop("nsqd", len(self.queue))
                    self.queue.clear()
                    return
                await self._pause(exc, backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
            else:
                self._take(len(batch))
                self.published += len(batch)
                backoff = FIRST_BACKOFF

    def _take(self, count: int) -> None:
        for _ in range(count):
            self.queue.popleft()
        self.on_size(len(self.queue))

    async def _pause(self, exc: Exception, backoff: float) -> None:
        self.failures += 1
        if backoff == FIRST_BACKOFF:
            log.warning("events: publishing to nsqd at %s failed (%s); %d waiting, trying again", self.http_address,
                        exc, len(self.queue))
        await asyncio.sleep(backoff)
