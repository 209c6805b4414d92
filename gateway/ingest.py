"""From an NSQ message to the hub: checks, parsing, dedupe, fan-out.

Everything that can be wrong with a message (too big, stale, not JSON, no
target, wrong types, already delivered) ends here with one warning line and
a counter; the message is dropped and nothing else is affected.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from gateway.dedupe import RecentIds
from gateway.envelope import BadMessage, Delivery, parse_envelope, parse_mapped
from gateway.history import History
from gateway.hub import Hub
from gateway.metrics import Metrics

log = logging.getLogger("pushgate.ingest")


class Ingest:
    def __init__(self, hub: Hub, metrics: Metrics, history: History, *, envelope_topic: str,
                 mapped: dict[str, str],
                 max_message_bytes: int, max_message_age: float, dedupe_window: int,
                 clock: Callable[[], float] = time.time):
        self.hub = hub
        self.metrics = metrics
        self.history = history
        self.envelope_topic = envelope_topic
        self.mapped = dict(mapped)  # topic -> channel
        self.max_message_bytes = max_message_bytes
        self.max_message_age = max_message_age
        self.recent = RecentIds(dedupe_window)
        self._clock = clock
        self._counters = {t: metrics.nsq_messages.labels(t) for t in [envelope_topic, *mapped]}

    def handle(self, topic: str, body: bytes, timestamp_ns: int, nsqd: str, nsq_id: bytes) -> int:
        """Deliver one NSQ message; returns the number of connections reached.

        A message with a publisher ``id`` is delivered once per id. One without
        is delivered once per NSQ message: nsqd numbers messages per topic, so
        its id is unique only together with the topic and the nsqd.
        """
        self._counters[topic].inc()
        size = len(body)
        if size > self.max_message_bytes:
            return self._drop("too_big", topic, f"{size} bytes > --max-message-bytes {self.max_message_bytes}")
        age = self._clock() - timestamp_ns / 1e9
        if age > self.max_message_age:
            return self._drop("stale", topic, f"{age:.1f}s old > --max-message-age {self.max_message_age:g}s")
        try:
            if topic == self.envelope_topic:
                delivery: Delivery = parse_envelope(body)
            else:
                delivery = parse_mapped(body, self.mapped[topic])
        except BadMessage as exc:
            return self._drop(exc.reason, topic, f"{exc.detail}: {body[:120]!r}")
        if self.recent.seen(delivery.id if delivery.id is not None else (topic, nsqd, nsq_id)):
            self.metrics.nsq_dropped.labels("duplicate").inc()
            return 0
        reached = 0
        arrived = time.monotonic()
        for channel in delivery.channels:
            publication = self.history.add(channel, timestamp_ns, delivery.data_json, arrived)
            if publication is None:  # no history for this channel: no position either
                publication = b'{"data":%s}' % delivery.data_json.encode()
            reached += self.hub.publish(channel, publication)
        self.metrics.publications.inc(len(delivery.channels))
        if reached:
            self.metrics.deliveries.inc(reached)
        return reached

    def _drop(self, reason: str, topic: str, detail: str) -> int:
        self.metrics.nsq_dropped.labels(reason).inc()
        log.warning("dropped message from topic %s (%s): %s", topic, reason, detail)
        return 0
