"""Knowing when nsqd lost messages meant for this node.

A node reads every topic on its own ephemeral channel. nsqd keeps at most
``--mem-queue-size`` messages queued for such a channel and silently drops
the rest (an ephemeral channel has no disk queue), so a burst the node
cannot take fast enough loses messages before they ever reach it. The node
must know, or it would vouch for recoveries across the loss.

nsqd counts what it does per channel, and the counts add up:
``message_count`` counts every message put into the channel, dropped ones
included (nsqd ``channel.go`` ``PutMessage``), each client's
``message_count`` counts what was sent on that connection, and ``depth`` and
``deferred_count`` what still waits. So for this node's channel on one nsqd

    lost = message_count - sum(clients' message_count) - depth - deferred_count

nsqd reads the clients' counts first and the channel's last, so a message
moving through at that instant can only make one reading too high, never
too low. A loss is therefore declared when two readings in a row are above
the last confirmed level, by the smaller of the two: a lone high reading
is a message caught in flight. The count starts at zero with the channel:
nsqd creates an ephemeral channel for this node's first connection and
deletes it with the last, so a channel whose counts went down, or whose
clients are all new, is a new one and its level starts again from zero.

**A channel made anew is a loss.** When this node's connection to an nsqd
drops (:meth:`ChannelWatch.dropped`) and it connects again, the channel it
then reads is a new one, and messages published until it existed never
reach it: nsqd copies a topic's messages into the channels the topic has at
that moment, and a topic with none keeps them for the first channel made,
so they go to the other nodes' channels, or to the first node back, only.
Nothing counts what went that way, so whenever a new channel shows after a
dropped connection, a loss of unknown size is reported (``count`` 0):

* the same nsqd (the same ``start_time``) deleted the old channel, with what
  it held: a stall past nsqd's heartbeat timeout (twice 30 s), a network
  cut, a deleted channel;
* the nsqd restarted (another ``start_time``): what the old instance held
  for this node (queued, in flight, in its buffers; an ephemeral channel has
  no disk) died with it, what was published to it in its last moment may
  be flushed to its disk and handed to the new instance's first channel
  only, and what was published to the new instance before this node
  subscribed there went to the channels that existed then. A SIGKILLed
  nsqd loses what it held for every node alike.

It is reported even when nothing was lost (a quiet topic, or this node was
the first back): told for nothing rather than silent. The node polls at once
when a connection is made or lost (:meth:`ChannelWatch.poll_soon`).

**Unsure until read.** From a dropped connection until the watch has read
the channel the node reconnected to (:attr:`ChannelWatch.unsure`), the node
delivers what it reads without stream positions: a publication that came
after a loss the watch has not seen yet must not move a client's position
past the loss, or the client, told a moment later, would recover from
there, on a node that vouches for it, and never learn what it missed. A drop
not settled by a reading ``SETTLE_LIMIT`` seconds after the nsqd is
connected again (its stats cannot be read) counts as a loss.

:class:`ChannelWatch` polls ``/stats`` of every nsqd the readers are
connected to, once a second, one request per nsqd, and reports
``(topic, nsqd, count)`` (count 0: a loss whose size is unknown). It also
reads ``mem_queue_size`` from each nsqd once and warns when the channel's
depth passes half of it. What it cannot see: an nsqd whose HTTP port it
cannot find (logged once).
"""
from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from typing import Callable, Iterable

import ujson
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.ioloop import PeriodicCallback

log = logging.getLogger("pushgate.nsq")

_NOT_DROPPED = object()
POLL_INTERVAL = 1.0  # seconds
NODES_REFRESH = 30   # polls between nsqlookupd /nodes queries
DEPTH_WARNING = 0.5  # of mem_queue_size
SETTLE_LIMIT = 10.0  # seconds a dropped connection may stay unsettled once connected again


class _Level:
    """The loss bookkeeping of this node's channel for one topic on one nsqd."""

    __slots__ = ("message_count", "clients", "confirmed", "pending", "warned_depth")

    def __init__(self) -> None:
        self.message_count = 0
        self.clients: frozenset = frozenset()  # (address, connect time) of its connections
        self.confirmed = 0         # the deficit already accounted for
        self.pending: int | None = None  # one reading above it, waiting for a second
        self.warned_depth = False


def deficit(channel: dict) -> int:
    """Messages nsqd put into the channel that it neither sent on a current
    connection nor still holds: dropped (or sent to a connection now gone)."""
    sent = sum(int(c.get("message_count", 0)) for c in channel.get("clients") or ())
    return (int(channel.get("message_count", 0)) - sent - int(channel.get("depth", 0))
            - int(channel.get("deferred_count", 0)))


class ChannelWatch:
    def __init__(self, *, channel: str, topics: Iterable[str],
                 connected: Callable[[], Iterable[str]],
                 on_loss: Callable[[str, str, int], None],
                 lookupd_http_addresses: list[str], nsqd_http_address: str | None = None,
                 interval: float = POLL_INTERVAL, on_settled: Callable[[], None] = lambda: None):
        self.channel = channel
        self.topics = set(topics)
        self._connected = connected          # "host:tcp_port" of every nsqd a reader is connected to
        self._on_loss = on_loss
        self._on_settled = on_settled        # told when the last unsettled drop is settled
        self._lookupd = list(lookupd_http_addresses)
        self._nsqd_http = nsqd_http_address
        self._interval = interval
        self._http: dict[str, str | None] = {}   # tcp address -> http base URL (None: not found)
        self._mem_queue: dict[str, int] = {}     # tcp address -> its mem_queue_size
        self._levels: dict[tuple[str, str], _Level] = {}
        self._started: dict[str, object] = {}     # tcp address -> its start_time, as last read
        # (address, topic) whose connection dropped -> [that nsqd's start_time then (None: never read),
        # when it dropped, when it was seen connected again (None: not since), its loss reported while away]
        self._dropped: dict[tuple[str, str], list] = {}
        self._unsure = False
        self._tasks: set[asyncio.Future] = set()
        self._polls = 0
        self._busy = False
        self._timer: PeriodicCallback | None = None
        self.losses = 0

    def start(self) -> None:
        self._timer = PeriodicCallback(self._poll, self._interval * 1000)
        self._timer.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()

    def poll_soon(self) -> None:
        """Read the counts now (a connection was made or lost), besides every second."""
        if self._timer is not None:
            task = asyncio.ensure_future(self._poll())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def dropped(self, topic: str, address: str) -> None:
        """This node's connection to ``address`` for ``topic`` dropped: if the
        same nsqd gives it a new channel, what the old one held is lost."""
        key = (address, topic)
        entry = self._dropped.get(key)
        if entry is None:
            self._dropped[key] = [self._started.get(address), time.monotonic(), None, False]
        else:
            entry[2] = None   # dropped again before it was read: not back yet
        self._unsure = True

    @property
    def unsure(self) -> bool:
        """A loss may have happened that is not known yet: a dropped connection
        is back but its channel not read yet, or it dropped less than
        ``SETTLE_LIMIT`` seconds ago."""
        return self._unsure

    def settle_overdue(self, now: float, limit: float = SETTLE_LIMIT) -> None:
        """Called every second (``time.monotonic()``). A drop whose nsqd has been
        connected again for ``limit`` seconds without a reading that settles it
        counts as a loss of unknown size; so does one whose nsqd stays away that
        long (what it held is gone; when it comes back, its channel is read as
        after any drop)."""
        if not self._dropped:
            return
        connected = set(self._connected())
        unsure = False
        for key, entry in list(self._dropped.items()):
            address, topic = key
            if address in connected:
                if entry[2] is None:
                    entry[2] = now
                if now - entry[2] < limit:
                    unsure = True
                    continue
                del self._dropped[key]
                why = f"its channel for topic {topic} could not be read within {limit:.0f} s of the reconnect"
            else:
                entry[2] = None
                if now - entry[1] < limit:
                    unsure = True
                    continue
                if entry[3]:
                    continue
                entry[3] = True
                why = f"it has been away for {limit:.0f} s: what it held for this node (topic {topic}) is gone"
            self.losses += 1
            log.warning("nsqd %s: %s; counted as a loss (positioned subscribers are told)", address, why)
            self._on_loss(topic, address, 0)
        self._settle(unsure)

    def _settle(self, unsure: bool) -> None:
        was, self._unsure = self._unsure, unsure
        if was and not unsure:
            self._on_settled()

    async def _poll(self) -> None:
        if self._busy:  # a slow nsqd must not pile requests up
            return
        self._busy = True
        try:
            addresses = sorted(set(self._connected()))
            if self._lookupd and (self._polls % NODES_REFRESH == 0
                                  or any(a not in self._http for a in addresses)):
                await self._query_lookupd()
            self._polls += 1
            for address in addresses:
                base = self._http.get(address) or await self._guess(address)
                if base:
                    await self._read(address, base)
        finally:
            self._busy = False

    async def _query_lookupd(self) -> None:
        for lookupd in self._lookupd:
            try:
                response = await AsyncHTTPClient().fetch(f"{lookupd}/nodes", request_timeout=2, connect_timeout=1)
                producers = ujson.loads(response.body).get("producers") or []
            except (HTTPClientError, OSError, ValueError) as exc:
                log.debug("nsqlookupd %s /nodes: %s", lookupd, exc)
                continue
            for p in producers:
                host = p.get("broadcast_address") or p.get("hostname")
                if host and p.get("tcp_port") and p.get("http_port"):
                    self._http[f"{host}:{p['tcp_port']}"] = f"http://{host}:{p['http_port']}"
            return

    async def _guess(self, address: str) -> str | None:
        """The HTTP address of an nsqd given by TCP address: the configured
        --nsqd-http-address if it is that nsqd, else the conventional port + 1;
        checked against nsqd's own /info."""
        if address in self._http:
            return self._http[address]
        host, _, port = address.rpartition(":")
        candidates = [self._nsqd_http] if self._nsqd_http else []
        candidates.append(f"http://{host}:{int(port) + 1}")
        for base in candidates:
            try:
                response = await AsyncHTTPClient().fetch(f"{base}/info", request_timeout=2, connect_timeout=1)
                info = ujson.loads(response.body)
            except (HTTPClientError, OSError, ValueError):
                continue
            if str(info.get("tcp_port")) == port:
                self._http[address] = base
                return base
        self._http[address] = None
        log.warning("nsqd %s: no HTTP address found for its stats (give nsqlookupd, or --nsqd-http-address); "
                    "messages it drops for this node cannot be detected", address)
        return None

    async def _read(self, address: str, base: str) -> None:
        query = urllib.parse.urlencode({"format": "json", "channel": self.channel, "include_clients": "true"})
        try:
            if address not in self._mem_queue:
                response = await AsyncHTTPClient().fetch(f"{base}/config/mem_queue_size", request_timeout=2)
                self._mem_queue[address] = int(ujson.loads(response.body))
            response = await AsyncHTTPClient().fetch(f"{base}/stats?{query}", request_timeout=2, connect_timeout=1)
            stats = ujson.loads(response.body)
        except (HTTPClientError, OSError, ValueError) as exc:
            log.debug("nsqd %s stats: %s", address, exc)
            return
        started = stats.get("start_time")
        for topic in stats.get("topics") or ():
            name = topic.get("topic_name")
            if name not in self.topics:
                continue
            for channel in topic.get("channels") or ():
                if channel.get("channel_name") == self.channel:
                    self.observe(address, name, channel, started)
        if started is not None:
            self._started[address] = started

    def observe(self, address: str, topic: str, channel: dict, started: object = None) -> None:
        """One reading of this node's channel for ``topic`` on ``address``
        (an nsqd started at ``started``, its stats' ``start_time``)."""
        key = (address, topic)
        if started is not None:
            self._started[address] = started
        count = int(channel.get("message_count", 0))
        clients = frozenset((c.get("remote_address"), c.get("connect_ts")) for c in channel.get("clients") or ())
        level = self._levels.get(key)
        entry = self._dropped.pop(key, None)
        dropped = entry[0] if entry is not None else _NOT_DROPPED
        if level is None or count < level.message_count or not clients & level.clients:
            # A channel not seen before: its counts began at zero.
            if dropped is not _NOT_DROPPED:
                self.losses += 1
                if dropped is not None and started is not None and dropped != started:
                    why = ("nsqd restarted: what its last instance held for this node died with it, and what "
                           "was published to the new one until this node read there went to other channels")
                else:
                    why = ("its connection dropped: a stall past nsqd's heartbeat timeout, a network cut, or the "
                           "channel was deleted; what the old channel held, and what was published until this "
                           "node read again, went to other channels")
                log.warning("nsqd %s made this node's channel %s for topic %s anew: messages are lost (%s); "
                            "positioned subscribers are told", address, self.channel, topic, why)
                self._on_loss(topic, address, 0)
            level = self._levels[key] = _Level()
        if entry is not None and not self._dropped:
            self._settle(False)   # after the loss, if there was one: its subscribers are told first
        level.message_count = count
        level.clients = clients
        now_deficit = deficit(channel)
        mem_queue = self._mem_queue.get(address)
        depth = int(channel.get("depth", 0))
        if mem_queue and depth > DEPTH_WARNING * mem_queue and not level.warned_depth:
            log.warning("nsqd %s holds %d messages of topic %s for this node (mem-queue-size %d): it drops "
                        "what does not fit; this node is not keeping up", address, depth, topic, mem_queue)
        level.warned_depth = bool(mem_queue and depth > DEPTH_WARNING * mem_queue)
        if now_deficit <= level.confirmed:
            level.pending = None
            return
        if level.pending is None:
            level.pending = now_deficit
            return
        lost = min(level.pending, now_deficit) - level.confirmed
        level.confirmed += lost
        level.pending = None if now_deficit <= level.confirmed else now_deficit
        self.losses += lost
        log.warning("nsqd %s dropped %d message(s) of topic %s meant for this node (channel %s): its "
                    "in-memory queue overflowed; raise nsqd --mem-queue-size (see docs/recovery.md)",
                    address, lost, topic, self.channel)
        self._on_loss(topic, address, lost)
