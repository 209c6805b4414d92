"""The control bus: nodes talking to each other through NSQ, with no other
server.

Every node reads the control topic (``--control-topic``, by default
``<--topic>-control``: ``pushgate-control``) on its own ephemeral channel,
the same way it reads publications, so a message published there reaches
every node that is up. A control message is a small JSON object::

    {"to": "<node>" or "", "cluster": "<cluster>", "kind": "...", "from": "<node>", ...fields}

``to`` empty is a broadcast; otherwise only the named node acts on it, and
the others drop it unread: ``to`` comes first, and a message that starts
with another node's name is not parsed at all, so a message for one node
(an ``/emulation`` forward, up to twice its 64 KiB request) costs the others
a comparison of its first bytes. A node ignores its own messages
unless it asks for them (``echo``). Features register a handler per kind
(``on()``) and send with ``send()``; the bus knows nothing of what they mean.

**One cluster per topic.** A cluster is the nodes that read the same
envelope topic (``--topic``), and its name is that topic. Every message
carries it, and a node drops messages of another cluster unread by any
feature (counted as ``foreign``), saying so in a warning once a minute per
cluster: two deployments that share nsqd and were given the same
``--control-topic`` stay apart (their ``info`` lists only their own nodes,
their server API reaches only their own connections) and the operator
learns of it. A message without a cluster comes from a node of an earlier
version, which had none: it is taken as this cluster's.

Delivery is NSQ's: at least once, unordered, and lost when a node's
ephemeral channel overflows or its reader is disconnected. A feature that
needs more (presence) sends periodic snapshots with a time to live rather
than trusting every delta to arrive. Latency is an HTTP ``/pub`` to the
local nsqd plus nsqd's output buffer flush (``output_buffer_timeout``, 25 ms
at most; docs/benchmarks.md measures it).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

import ujson

from gateway.core.metrics import Metrics
from gateway.nsq.source import NsqSource
from gateway.nsq.publisher import NsqdUnavailable, PublishError, publish

log = logging.getLogger("pushgate.cluster")

MAX_CONTROL_BYTES = 1 << 20   # nsqd's own --max-msg-size default
FOREIGN_WARN_EVERY = 60.0     # seconds between two warnings about one other cluster
FOREIGN_REMEMBERED = 64       # other clusters' names kept for those warnings

Handler = Callable[[dict], "Awaitable[None] | None"]


class ControlBus:
    def __init__(self, *, node: str, topic: str, channel: str, nsqd_http_address: str,
                 nsqd_tcp_addresses: list[str], lookupd_http_addresses: list[str], lookupd_poll_interval: int,
                 metrics: Metrics, cluster: str = "", clock: Callable[[], float] = time.monotonic):
        self.node = node
        self.topic = topic
        self.cluster = cluster   # the envelope topic: messages of another cluster are dropped
        # How a message for this node starts (see send()); one that starts with
        # another node's name is not for this node.
        self._mine = b'{"to":' + ujson.dumps(node, ensure_ascii=False, escape_forward_slashes=False).encode() + b","
        self._clock = clock
        self._foreign: dict[str, float] = {}   # other cluster -> when it was last warned about
        self._nsqd_http = nsqd_http_address
        self._metrics = metrics
        self._handlers: dict[str, tuple[Handler, bool]] = {}
        self.source = NsqSource(topics=[topic], channel=channel, handler=self._receive,
                                nsqd_tcp_addresses=nsqd_tcp_addresses,
                                lookupd_http_addresses=lookupd_http_addresses,
                                lookupd_poll_interval=lookupd_poll_interval, max_in_flight=200)

    def on(self, kind: str, handler: Handler, *, echo: bool = False) -> None:
        """Call ``handler(message)`` for every control message of ``kind``
        addressed to this node (or broadcast); with ``echo``, this node's own too."""
        self._handlers[kind] = (handler, echo)

    def start(self) -> None:
        self.source.start()

    async def close(self) -> None:
        await self.source.close()

    def ready(self) -> bool:
        return self.source.reading_every_topic()

    async def send(self, kind: str, to: str = "", **fields: Any) -> None:
        """Publish one control message. Raises NsqdUnavailable or PublishError
        (the caller decides what a lost control message means)."""
        body = ujson.dumps({"to": to, "cluster": self.cluster, "kind": kind, "from": self.node, **fields},
                           ensure_ascii=False, escape_forward_slashes=False).encode()
        if len(body) > MAX_CONTROL_BYTES:
            raise ValueError(f"control message of {len(body)} bytes over {MAX_CONTROL_BYTES}")
        try:
            await publish(self._nsqd_http, self.topic, body)
        except (NsqdUnavailable, PublishError):
            self._metrics.control_messages.labels("sent_failed", kind).inc()
            raise
        self._metrics.control_messages.labels("sent", kind).inc()

    def _receive(self, topic: str, body: bytes, timestamp_ns: int, nsqd: str, nsq_id: bytes) -> None:
        if body.startswith(b'{"to":"') and not body.startswith(b'{"to":"",') and not body.startswith(self._mine):
            return  # another node's: not even parsed
        try:
            message = ujson.loads(body)
        except (ValueError, OverflowError):
            message = None
        if type(message) is not dict or not isinstance(message.get("kind"), str):
            self._metrics.control_messages.labels("bad", "").inc()
            log.warning("control topic %s: not a control message: %r", topic, body[:120])
            return
        to, sender, kind = message.get("to") or "", message.get("from"), message["kind"]
        if to and to != self.node:
            return
        cluster = message.get("cluster")
        if cluster is not None and cluster != self.cluster:
            self._from_another_cluster(cluster, sender, kind)
            return
        entry = self._handlers.get(kind)
        if entry is None:
            self._metrics.control_messages.labels("unknown", kind).inc()
            return
        handler, echo = entry
        if sender == self.node and not echo:
            return
        self._metrics.control_lag.set(max(0.0, time.time() - timestamp_ns / 1e9))
        self._metrics.control_messages.labels("received", kind).inc()
        try:
            result = handler(message)
        except Exception:
            log.exception("control message %s from %s: handler failed", kind, sender)
            return
        if result is not None:  # a coroutine: run it, and log what it raises
            task = asyncio.ensure_future(result)
            task.add_done_callback(_log_failure(kind, sender))


    def _from_another_cluster(self, cluster: object, sender: object, kind: str) -> None:
        self._metrics.control_messages.labels("foreign", kind).inc()
        name = str(cluster)[:100]
        now = self._clock()
        last = self._foreign.get(name)
        if last is not None and now - last < FOREIGN_WARN_EVERY:
            return
        if last is None and len(self._foreign) >= FOREIGN_REMEMBERED:
            self._foreign.clear()
        self._foreign[name] = now
        log.warning("control topic %s: messages of another cluster (--topic %s, node %s) are ignored: two "
                    "deployments share this topic; give each its own --control-topic (or leave it unset: "
                    "each --topic then has its own)", self.topic, name, str(sender)[:100])


def _log_failure(kind: str, sender: object) -> Callable[[asyncio.Future[None]], None]:
    def done(task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("control message %s from %s: handler failed", kind, sender, exc_info=task.exception())
    return done
