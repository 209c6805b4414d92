"""From an NSQ message to the hub: checks, parsing, dedupe, fan-out.

Everything that can be wrong with a message (too big, stale, not JSON, no
target, wrong types, already delivered) ends here with one warning line and
a counter; the message is dropped and nothing else is affected.

A dropped message that names channels this node could have delivered it to
is a *gap* in those channels: history refuses to recover across it, and the
node tells their live subscribers (they missed it too). A message that names
no channel was deliverable by nobody, so it leaves no gap.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable

from gateway.core.channels import PERSONAL_PREFIX
from gateway.nsq.dedupe import RecentIds
from gateway.nsq.envelope import BadMessage, Delivery, envelope_targets, parse_envelope, parse_mapped
from gateway.core.history import History, Published
from gateway.core.hub import Hub
from gateway.core.metrics import Metrics

if TYPE_CHECKING:
    from gateway.core.session import Session

log = logging.getLogger("pushgate.ingest")


class Ingest:
    def __init__(self, hub: Hub, metrics: Metrics, history: History, *, envelope_topic: str,
                 mapped: dict[str, str],
                 max_message_bytes: int, max_message_age: float, dedupe_window: int,
                 on_gap: Callable[[tuple[str, ...]], None] = lambda channels: None,
                 on_receipt: Callable[[str, str, int], None] | None = None,
                 clock: Callable[[], int] = time.time_ns, sockets: dict[str, Session] | None = None):
        self.hub = hub
        self.metrics = metrics
        self.history = history
        self.envelope_topic = envelope_topic
        self.mapped = dict(mapped)  # topic -> channel
        self.max_message_bytes = max_message_bytes
        self.max_message_age = max_message_age
        self.recent = RecentIds(dedupe_window)
        self.on_gap = on_gap  # told which channels (with history) lost a message
        # Receipts (--events-topic): (message id, user, connections written to here).
        self.on_receipt = on_receipt
        self._clock = clock
        # Connections by socket id, for an envelope's "exclude" (SessionHost.sockets).
        self.sockets: dict[str, Session] = sockets if sockets is not None else {}
        self._counters = {t: metrics.nsq_messages.labels(t) for t in [envelope_topic, *mapped]}

    def handle(self, topic: str, body: bytes, timestamp_ns: int, nsqd: str, nsq_id: bytes) -> int:
        """Deliver one NSQ message; returns the number of connections reached.

        A message with a publisher ``id`` is delivered once per id. One without
        is delivered once per NSQ message: nsqd numbers messages per topic, so
        its id is unique only together with the topic and the nsqd.
        """
        self._counters[topic].inc()
        size = len(body)
        now_ns = self._clock()
        if size > self.max_message_bytes:
            return self._drop("too_big", topic, body, now_ns,
                              f"{size} bytes > --max-message-bytes {self.max_message_bytes}")
        age = (now_ns - timestamp_ns) / 1e9
        if age > self.max_message_age:
            return self._drop("stale", topic, body, now_ns,
                              f"{age:.1f}s old > --max-message-age {self.max_message_age:g}s")
        try:
            if topic == self.envelope_topic:
                delivery: Delivery = parse_envelope(body)
            else:
                delivery = parse_mapped(body, self.mapped[topic])
        except BadMessage as exc:
            return self._drop(exc.reason, topic, body, now_ns, f"{exc.detail}: {body[:120]!r}")
        if self.recent.seen(delivery.id if delivery.id is not None else (topic, nsqd, nsq_id)):
            self.metrics.nsq_dropped.labels("duplicate").inc()
            return 0
        reached = 0
        data = delivery.data
        if not delivery.plain:
            return self._deliver_full(delivery, timestamp_ns, now_ns)
        for channel in delivery.channels:
            # The offset is None when the channel keeps no history here, or the
            # publication is late: it goes out with no position.
            offset = self.history.add(channel, timestamp_ns, data, now_ns)
            reached += self.hub.publish(channel, data, offset)
        self.metrics.publications.inc(len(delivery.channels))
        if reached:
            self.metrics.deliveries.inc(reached)
        return reached

    def _deliver_full(self, delivery: Delivery, timestamp_ns: int, now_ns: int) -> int:
        """A publication with more than data: its publisher's info (the publish
        proxy), tags, binary data (b64data), out of history when asked
        (skip_history: then without an offset, as Centrifugo sends it), a
        version (dropped where history holds a version as high, as Centrifugo
        drops it), receipts (every personal channel's count of connections
        is reported), or one that a connection of this node does not get
        (``exclude``: its own echo, a whisper)."""
        reached = 0
        data: bytes = delivery.data
        if delivery.info is not None or delivery.tags is not None or delivery.binary:
            data = published(delivery)
        history = self.history
        version, version_epoch = delivery.version, delivery.version_epoch
        excluded = self.sockets.get(delivery.exclude) if delivery.exclude is not None else None
        delivered = 0
        for channel in delivery.channels:
            count = 0
            if delivery.skip_history or not (version and history.outdated(channel, version, version_epoch)):
                offset = None if delivery.skip_history else history.add(channel, timestamp_ns, data, now_ns)
                if version and not delivery.skip_history:
                    history.versioned(channel, version, version_epoch)
                delivered += 1
                count = self.hub.publish(channel, data, offset, excluded)
                reached += count
            else:
                self.metrics.nsq_dropped.labels("outdated_version").inc()
            if delivery.receipt and self.on_receipt is not None and channel.startswith(PERSONAL_PREFIX):
                assert delivery.id is not None   # parse_envelope sees to it
                self.on_receipt(delivery.id, channel[len(PERSONAL_PREFIX):], count)
        self.metrics.publications.inc(delivered)
        if reached:
            self.metrics.deliveries.inc(reached)
        return reached

    def _drop(self, reason: str, topic: str, body: bytes, now_ns: int, detail: str) -> int:
        self.metrics.nsq_dropped.labels(reason).inc()
        named = envelope_targets(body) if topic == self.envelope_topic else (self.mapped[topic],)
        gaps = tuple(channel for channel in named if self.history.gap(channel, now_ns))
        log.warning("dropped message from topic %s (%s): %s%s", topic, reason, detail,
                    f"; gap marked in {len(gaps)} channel(s) with history" if gaps else "")
        if gaps:
            self.on_gap(gaps)
        return 0


def published(delivery: Delivery) -> Published:
    """The data of a publication with extras, as history keeps it and the hub
    delivers it (see :class:`Published`)."""
    data = Published(delivery.data)
    extra = 0
    if delivery.info is not None:
        data.info = delivery.info
        extra += 64 + sum(len(v) for v in delivery.info.values())
    if delivery.tags is not None:
        data.tags = delivery.tags
        extra += 64 + sum(len(k) + len(v) + 100 for k, v in delivery.tags.items())
    if delivery.binary:
        data.binary = True
        data.json = delivery.json
        extra += len(delivery.json) + 33 if delivery.json is not None else 0
    data.extra = extra + 56   # the instance's dict
    return data
