"""Per-channel publication history with stream positions that every node
agrees on, and the recovery answer (pure: no I/O, time is passed in).

History stores encoding-neutral publications: a position and the data as
JSON bytes. The protocol layer turns them into whatever its clients speak.

**Positions.** A publication's position is derived from the message itself,
not from a node-local counter: its nsqd timestamp in nanoseconds. The
protocol's ``epoch`` is the index of the 2^53 ns period (about 104 days) the
timestamp falls in, and its ``offset`` is the nanosecond within that period
plus one, which keeps offsets below 2^53 where JavaScript numbers are exact.
Every node receives every message through its own ephemeral NSQ channel, so
every node computes the same position for the same publication and a client
can recover on any node.

**Continuity.** A node can only vouch for what it has seen. Recovery from a
client's position ``p`` is answered ``recovered: true`` only if this node
has every publication of the channel after ``p``:

* ``p`` is in the current epoch and within the channel's history TTL;
* ``p`` is not older than the node's *continuity start* (when it last began
  reading every nsqd without a gap: start-up, a reconnect to an nsqd, or a
  loss nsqd reported for this node's channel);
* ``p`` is not older than what trimming removed (size, age, memory budget)
  or than a *gap*: a message for the channel that this node dropped (stale,
  too big, invalid) and so never stored;
* no publication arrived *late* (after a later position had already been
  handed out) into the gap the client may have missed;
* ``p`` is not ahead of what this node has seen (the client came from a
  node that had received more). The session asks :meth:`History.behind`
  first and holds the answer a moment while this node catches up.

Otherwise the answer is ``recovered: false`` and the application reloads
its state. A late publication is still stored in order and delivered live,
but without an offset, so clients' positions never move backwards.

**Memory.** Everything a channel costs is counted against the budget:
each entry (measured, see ``ENTRY_OVERHEAD``) and each channel's own state
(``STREAM_OVERHEAD``). A quiet channel that was only asked for its position
costs nothing: no state is kept for it. Under pressure the oldest go first,
whatever they are: one queue, in the order things became forgettable, holds
every stored entry (from its arrival) and every channel whose entries are
all gone (from the moment the last went), so relieving the budget takes the
queue's head, never a walk over the channels, and costs O(1) amortised per
publication however many channels there are. Relief goes a little below the
budget (``RELIEF``), so it runs once per that much new data, not on every
publication. A channel whose state is forgotten raises a floor below which
no position is recovered for a channel without state; since the oldest go
first, that floor stays below the oldest entry history still holds.
"""
from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

PERIOD_NS = 1 << 53
# What history really costs, measured with tracemalloc on CPython 3.11
# (tests/test_history.py checks the count against a measurement):
# per entry beyond its data: the position int, the data bytes object's
# header, two list slots;
ENTRY_OVERHEAD = 90
# per arrival-order record (a tuple in a deque, kept until compaction);
ARRIVAL_OVERHEAD = 64
# per record of a channel left without entries (the same, and its key);
IDLE_OVERHEAD = 96
# per channel with state: the _Stream object, its lists, the dict entry, its
# own position ints and the channel name's str header (the name's characters
# are added).
STREAM_OVERHEAD = 450
MAX_HOLES = 64  # per channel; past that the oldest gaps count as trimmed
RELIEF = 64     # over budget, history goes down to budget - budget / RELIEF
SHRINK_BELOW = 4     # the channel table is rebuilt when it holds a quarter of its peak or less,
SHRINK_FLOOR = 1024  # and that peak was above this many channels


def epoch_of(timestamp_ns: int) -> str:
    return str(timestamp_ns // PERIOD_NS)


def to_position(timestamp_ns: int) -> tuple[str, int]:
    period, within = divmod(timestamp_ns, PERIOD_NS)
    return str(period), within + 1


def offset_of(timestamp_ns: int) -> int:
    return timestamp_ns % PERIOD_NS + 1


def from_position(epoch: str, offset: int) -> int | None:
    """The absolute nanosecond of (epoch, offset), or None if they are not ours."""
    try:
        period = int(epoch)
    except (TypeError, ValueError):
        return None
    if period < 0 or not 0 < offset <= PERIOD_NS:
        return None
    return period * PERIOD_NS + offset - 1


@dataclass(frozen=True)
class Retention:
    size: int        # publications kept; 0 = history off
    ttl: float       # seconds

    @property
    def enabled(self) -> bool:
        return self.size > 0


class Publication(NamedTuple):
    """One stored publication: its offset (within the epoch) and its data (JSON
    bytes; :class:`Published` when a client published it)."""

    offset: int
    data: bytes


class Published(bytes):
    """A publication's data with what else it carries, kept with it in history
    (so recovered and ``history`` publications carry it too); plain ``bytes``
    when it carries nothing else, which is what costs nothing.

    * ``info``: its publisher's ClientInfo when a client published it (the
      publish proxy): ``user``, ``client``, ``conn_info`` / ``chan_info`` as
      JSON bytes;
    * ``tags``: its ``map<string, string>`` of tags;
    * ``binary``: the bytes are a backend's ``b64data``, exactly as Protobuf
      clients get them, and ``json`` what JSON clients get instead: the same
      value as compact JSON, or None when the bytes are not JSON (such a
      publication closes a JSON client with "inappropriate protocol", as
      Centrifugo does);
    * ``extra``: what the above costs beyond the data, for history's budget.
    """

    info: dict | None = None
    tags: dict[str, str] | None = None
    binary = False
    json: bytes | None = None
    extra = 0

    def json_form(self) -> bytes | None:
        """The data as a JSON client gets it (None: it cannot)."""
        return self.json if self.binary else self


def cost(data: bytes) -> int:
    """What one stored publication's data costs (its extras included)."""
    return len(data) + data.extra if type(data) is Published else len(data)


class Recovery(NamedTuple):
    recovered: bool
    publications: list[Publication]   # ascending, when recovered
    epoch: str
    offset: int                        # the client's offset when recovered, else the top


class _Stream:
    """One channel's retained publications, ascending by position."""

    __slots__ = ("name", "retention", "positions", "data", "top", "trimmed", "holes", "cost", "idle", "version",
                 "version_epoch")

    def __init__(self, name: str, retention: Retention, top: int, trimmed: int, cost: int):
        self.name = name                 # the one copy of the name every record shares
        self.retention = retention
        self.positions: list[int] = []   # absolute ns, ascending
        self.data: list[bytes] = []      # JSON data, same order
        self.top = top                   # highest position handed out or stored
        self.trimmed = trimmed           # positions below this cannot be recovered
        self.holes: list[tuple[int, int]] = []  # (late position, top when it arrived)
        self.cost = cost                 # STREAM_OVERHEAD plus the name
        self.idle = 0                    # its record in the queue while it has no entries (< 0), else 0
        self.version = 0                 # the highest publication version stored (the server API's version)
        self.version_epoch = ""          # and its version_epoch


class History:
    """History for every channel this node receives, within a memory budget.

    ``rules`` maps channel patterns (exact, or a trailing ``*`` for a prefix)
    to a :class:`Retention`; the first match wins, else ``default``.
    ``margin_ns`` is how far behind "now" a position must be before this node
    vouches for it (clock skew between nsqd hosts and the gateway, and
    messages in flight). ``memory_budget`` bounds what history costs in all.
    """

    def __init__(self, default: Retention, rules: Sequence[tuple[str, Retention]] = (), *,
                 memory_budget: int = 64 << 20, margin_ns: int = 1_000_000_000):
        self.default = default
        self.rules = list(rules)
        self.memory_budget = memory_budget
        self.margin_ns = margin_ns
        self.memory = 0
        self.entries = 0
        self._streams: dict[str, _Stream] = {}
        self._streams_peak = 0   # the most channels with state since the table was last rebuilt
        # What can go under memory pressure, oldest first: (channel, position) for
        # a stored entry, (channel, key < 0) for a channel left with no entries.
        # Entries trimmed by size or age, and channels that got entries again,
        # leave stale records behind; the deque is rebuilt when those outnumber
        # the live ones.
        self._arrivals: deque[tuple[str, int]] = deque()
        self._idle = 0          # channels with state and no entries (each has a live record)
        self._idle_key = 0      # the last idle record's key (they count down from -1)
        self._sweep_keys: list[str] = []   # the channels of a sweep in slices, and how far it got
        self._sweep_at = 0
        self.continuity_start: int | None = None  # absolute ns; None = no continuity
        # False while a loss may have happened that this node has not seen yet
        # (gateway/nsq/watch.py, "unsure until read"): publications go live
        # without an offset, so no client's position moves past such a loss.
        self.live_positions = True
        # The highest position handed out for a channel that has no state here:
        # a channel's state starts from it, so a publication older than what a
        # client was told arrives as late.
        self._handed_out = 0
        # Positions below this are not recovered for channels whose state was
        # dropped under memory pressure (their trims and holes are gone).
        self._forgotten = 0

    # --- configuration ------------------------------------------------------------

    def retention(self, channel: str) -> Retention:
        for pattern, retention in self.rules:
            if pattern == channel or (pattern.endswith("*") and channel.startswith(pattern[:-1])):
                return retention
        return self.default

    def enabled(self, channel: str) -> bool:
        stream = self._streams.get(channel)
        return stream.retention.enabled if stream else self.retention(channel).enabled

    # --- continuity -----------------------------------------------------------------

    def continuity_from(self, now_ns: int) -> None:
        """From now on (plus the margin) this node sees every message: called when
        it has (re)connected to every nsqd, or learnt that messages were lost.
        Recovery from before is refused, for every channel."""
        start = now_ns + self.margin_ns
        if self.continuity_start is None or start > self.continuity_start:
            self.continuity_start = start

    def continuity_lost(self) -> None:
        """A connection to an nsqd dropped: messages may be missed from now on."""
        self.continuity_start = None

    def gap(self, channel: str, now_ns: int) -> bool:
        """A message for ``channel`` was lost (dropped here, never stored): no
        position handed out so far can be recovered across it. Returns whether
        the channel keeps history (so its subscribers hold positions)."""
        stream = self._stream(channel, now_ns)
        if stream is None:
            return False
        stream.top = max(stream.top, now_ns - self.margin_ns)
        stream.trimmed = max(stream.trimmed, stream.top + 1)
        if not stream.positions:
            self._went_idle(stream)
        return True

    # --- writing --------------------------------------------------------------------

    def outdated(self, channel: str, version: int, version_epoch: str) -> bool:
        """Whether a publication with ``version`` (> 0) is stale, as Centrifugo's
        history decides it: the channel has stored a version at least as high
        in the same ``version_epoch`` (an empty one matches any). Only a
        channel with history keeps versions, as in Centrifugo."""
        stream = self._streams.get(channel)
        return stream is not None and version <= stream.version \
            and (not version_epoch or version_epoch == stream.version_epoch)

    def versioned(self, channel: str, version: int, version_epoch: str) -> None:
        """Remember the version of a publication just stored in ``channel``."""
        stream = self._streams.get(channel)
        if stream is not None:
            stream.version = version
            stream.version_epoch = version_epoch

    def add(self, channel: str, timestamp_ns: int, data: bytes, now_ns: int) -> int | None:
        """Store a publication; returns the offset for its live push, or None when
        the channel keeps no history or the publication is late (see the module
        doc)."""
        stream = self._stream(channel, now_ns)
        if stream is None:
            return None
        if stream.idle:
            stream.idle = 0   # its record in the queue is stale from now on
            self._idle -= 1
        if timestamp_ns > stream.top:
            stream.positions.append(timestamp_ns)
            stream.data.append(data)
            stream.top = timestamp_ns
            live: int | None = offset_of(timestamp_ns)
        else:
            # Late: a later position was already handed out. Keep it in order for
            # clients behind it; mark the gap for those who may have skipped it;
            # push it live without an offset so no client's position moves back.
            i = bisect.bisect_right(stream.positions, timestamp_ns)
            stream.positions.insert(i, timestamp_ns)
            stream.data.insert(i, data)
            stream.holes.append((timestamp_ns, stream.top))
            if len(stream.holes) > MAX_HOLES:
                stream.trimmed = max(stream.trimmed, stream.holes.pop(0)[1] + 1)
            live = None
        if not self.live_positions:
            live = None
        self.memory += cost(data) + ENTRY_OVERHEAD + ARRIVAL_OVERHEAD
        self.entries += 1
        self._arrivals.append((stream.name, timestamp_ns))
        self._expire(stream, now_ns)
        if self.memory > self.memory_budget:
            self._relieve()
        if len(self._arrivals) > 2 * (self.entries + self._idle) + 1024:
            self._compact_arrivals()
        return live

    def _compact_arrivals(self) -> None:
        kept: deque[tuple[str, int]] = deque()
        for record in self._arrivals:
            if self._holds(*record):
                kept.append(record)
            else:
                self.memory -= IDLE_OVERHEAD if record[1] < 0 else ARRIVAL_OVERHEAD
        self._arrivals = kept

    def _went_idle(self, stream: _Stream) -> None:
        """``stream`` has no entries left: it joins the queue of what can go."""
        if stream.idle:
            return
        self._idle_key -= 1
        stream.idle = self._idle_key
        self._idle += 1
        self._arrivals.append((stream.name, self._idle_key))
        self.memory += IDLE_OVERHEAD

    def _stream(self, channel: str, now_ns: int) -> _Stream | None:
        stream = self._streams.get(channel)
        if stream is None:
            retention = self.retention(channel)
            if not retention.enabled:
                return None
            cost = STREAM_OVERHEAD + len(channel)
            stream = self._streams[channel] = _Stream(channel, retention, self._handed_out, self._forgotten, cost)
            self.memory += cost
            if len(self._streams) > self._streams_peak:
                self._streams_peak = len(self._streams)
        return stream

    def _drop_head(self, stream: _Stream, count: int) -> None:
        """Forget a stream's ``count`` oldest entries: positions before the last of
        them can no longer be recovered."""
        if count <= 0:
            return
        stream.trimmed = max(stream.trimmed, stream.positions[count - 1])
        self.memory -= sum(map(cost, stream.data[:count])) + ENTRY_OVERHEAD * count
        self.entries -= count
        del stream.positions[:count], stream.data[:count]
        if stream.holes:
            stream.holes = [h for h in stream.holes if h[1] >= stream.trimmed]
        if not stream.positions:
            self._went_idle(stream)

    def _expire(self, stream: _Stream, now_ns: int) -> None:
        """Apply the stream's size and age limits."""
        positions = stream.positions
        cutoff = now_ns - int(stream.retention.ttl * 1e9)
        expired = bisect.bisect_left(positions, cutoff) if positions and positions[0] < cutoff else 0
        self._drop_head(stream, max(expired, len(positions) - stream.retention.size))

    def _holds(self, channel: str, key: int) -> bool:
        """Whether a record of the queue is live: the entry at position ``key``
        is still stored, or (``key`` < 0) the channel is still idle since then."""
        stream = self._streams.get(channel)
        if stream is None:
            return False
        if key < 0:
            return stream.idle == key
        i = bisect.bisect_left(stream.positions, key)
        return i < len(stream.positions) and stream.positions[i] == key

    def _relieve(self) -> None:
        """Under the budget again, by what went forgettable first: an entry (its
        channel's positions before it are refused from then on), or a channel's
        whole state (its positions, and those of any channel without state, up to
        its top are refused). A queue head, never a walk over the channels."""
        target = self.memory_budget - self.memory_budget // RELIEF
        arrivals = self._arrivals
        while self.memory > target and arrivals:
            channel, key = arrivals.popleft()
            stream = self._streams.get(channel)
            if key < 0:
                self.memory -= IDLE_OVERHEAD
                if stream is not None and stream.idle == key:
                    self._forget(channel, stream)
                continue
            self.memory -= ARRIVAL_OVERHEAD
            if stream is None:
                continue
            positions = stream.positions
            if positions and positions[0] <= key:
                i = bisect.bisect_right(positions, key)
                if positions[i - 1] == key:
                    self._drop_head(stream, i)

    def _forget(self, channel: str, stream: _Stream) -> None:
        """Drop a channel's state. Positions up to its top are refused for every
        channel without state (a channel that comes back starts above them, so
        no position it hands out is below one handed out before)."""
        self._forgotten = max(self._forgotten, stream.top + 1, stream.trimmed)
        if stream.top > self._handed_out:
            self._handed_out = stream.top
        self._drop_state(channel, stream)

    def _drop_state(self, channel: str, stream: _Stream) -> None:
        if stream.idle:
            stream.idle = 0
            self._idle -= 1
        self.memory -= stream.cost
        del self._streams[channel]

    def remove(self, channel: str, now_ns: int) -> bool:
        """Forget a channel's publications (the server API's ``history_remove``).
        Its position stays where it is, so clients keep their place; none of
        them can recover across what was removed. Returns whether it had any."""
        stream = self._streams.get(channel)
        if stream is None or not stream.positions:
            return False
        self._drop_head(stream, len(stream.positions))
        stream.trimmed = max(stream.trimmed, stream.top + 1, now_ns - self.margin_ns)
        return True

    def sweep(self, now_ns: int, slices: int = 1) -> None:
        """Apply age limits and forget idle channels (run periodically): a
        channel can go once its top is older than its TTL, since positions that
        old are refused anyway. With ``slices`` > 1 each call does the next
        1/slices of the channels (the node calls it every second with 10: every
        channel every 10 s, and never a pause as long as a walk over them all)."""
        if slices <= 1 or self._sweep_at >= len(self._sweep_keys):
            self._sweep_keys = list(self._streams)
            self._sweep_at = 0
        keys = self._sweep_keys
        end = len(keys) if slices <= 1 else min(len(keys), self._sweep_at + -(-len(keys) // slices))
        streams = self._streams
        for i in range(self._sweep_at, end):
            channel = keys[i]
            stream = streams.get(channel)
            if stream is None:
                continue
            self._expire(stream, now_ns)
            if not stream.positions and stream.top < now_ns - int(stream.retention.ttl * 1e9):
                self._drop_state(channel, stream)
        self._sweep_at = end
        if end >= len(keys):
            self._sweep_keys = []
            self._sweep_at = 0
            if self._streams_peak > SHRINK_BELOW * max(len(streams), SHRINK_FLOOR):
                # CPython never shrinks a dict as keys go: after a channel-count
                # explosion the table would keep its peak size (about 1 MB per
                # 30,000 channels) for good. A full pass is the moment to copy it.
                self._streams = dict(streams)
                self._streams_peak = len(self._streams)
        arrivals = self._arrivals
        while arrivals and not self._holds(*arrivals[0]):  # stale records at the head go now
            self.memory -= IDLE_OVERHEAD if arrivals.popleft()[1] < 0 else ARRIVAL_OVERHEAD
        if len(arrivals) > 2 * (self.entries + self._idle) + 1024:
            self._compact_arrivals()

    # --- reading --------------------------------------------------------------------

    def top(self, channel: str, now_ns: int) -> tuple[str, int]:
        """The position to hand a subscriber: everything up to it is known here.

        For a quiet channel that is "now" minus the margin, not 0, so a client
        that saw nothing yet can still recover later, on any node.
        """
        floor = now_ns - self.margin_ns
        stream = self._streams.get(channel)
        if stream is None:
            if floor > self._handed_out:
                self._handed_out = floor
            return to_position(floor)
        if floor > stream.top:
            stream.top = floor
        return to_position(stream.top)

    def behind(self, channel: str, epoch: str, offset: object, now_ns: int) -> bool:
        """The client's position is plausible (this epoch, not in the future) but
        this node has not received that far yet: worth waiting a moment for."""
        if not isinstance(offset, int) or isinstance(offset, bool):
            return False
        position = from_position(epoch, offset)
        if position is None or epoch != epoch_of(now_ns) or position > now_ns + self.margin_ns:
            return False
        stream = self._streams.get(channel)
        return position > (stream.top if stream else 0) and position > now_ns - self.margin_ns

    def recover(self, channel: str, epoch: str, offset: int, now_ns: int) -> Recovery:
        """The answer to a client back at (epoch, offset): see the module doc."""
        top_epoch, top_offset = self.top(channel, now_ns)
        stream = self._streams.get(channel)
        top = stream.top if stream is not None else now_ns - self.margin_ns
        trimmed = stream.trimmed if stream is not None else self._forgotten
        ttl = (stream.retention if stream is not None else self.retention(channel)).ttl
        position = from_position(epoch, offset) if isinstance(offset, int) else None
        start = self.continuity_start
        recovered = (
            position is not None
            and epoch == top_epoch
            and position >= now_ns - int(ttl * 1e9)
            and start is not None and position >= start
            and position >= trimmed
            and position <= top
            and (stream is None or not any(late < position <= at for late, at in stream.holes))
        )
        if not recovered or stream is None or position is None:  # (recovered implies a position)
            return Recovery(recovered, [], top_epoch, offset if recovered else top_offset)
        i = bisect.bisect_right(stream.positions, position)
        pubs = [Publication(offset_of(p), d) for p, d in zip(stream.positions[i:], stream.data[i:])]
        return Recovery(True, pubs, top_epoch, offset)

    def latest(self, channel: str, epoch: str, offset: int, now_ns: int,
               accepts: Callable[[bytes], bool] | None = None) -> Recovery:
        """Centrifugo's cache recovery mode (``--cache``): the client wants the
        latest publication, not the stream. ``offset`` 0 means it has no position.

        * From a position this node can recover: nothing newer, ``recovered``
          with no publication (the client is up to date); else the newest of
          what it missed, alone.
        * Otherwise the latest publication held here, ``recovered``, when this
          node vouches that nothing after it was lost (as a recovery from its
          position would); else ``recovered: false`` and none: the client
          reloads its state. An empty channel is ``recovered: false``, as in
          Centrifugo.

        As in Centrifugo, a recovered answer carries the client's own offset
        (0 without one): the publication moves it on.

        ``accepts`` (a subscriber's tags filter, given the publication's
        data): "latest" is then the newest publication it accepts, so one
        that does not match never hides an older one that does. None held
        that matches is ``recovered: false``, as an empty channel.
        """
        if offset > 0:
            answer = self.recover(channel, epoch, offset, now_ns)
            if answer.recovered:
                missed = answer.publications
                if accepts is not None:
                    missed = [pub for pub in missed if accepts(pub.data)]
                return Recovery(True, missed[-1:], answer.epoch, offset)
        top_epoch, top_offset = self.top(channel, now_ns)
        stream = self._streams.get(channel)
        if stream is not None and stream.positions:
            i = len(stream.positions) - 1
            if accepts is not None:   # a scan from the newest: only a filtered cache subscribe pays it
                while i >= 0 and not accepts(stream.data[i]):
                    i -= 1
            if i >= 0:
                newest = stream.positions[i]
                if self.recover(channel, epoch_of(newest), offset_of(newest), now_ns).recovered:
                    return Recovery(True, [Publication(offset_of(newest), stream.data[i])], top_epoch, max(offset, 0))
        return Recovery(False, [], top_epoch, top_offset)

    def publications(self, channel: str, *, after: int | None = None, limit: int = -1,
                     reverse: bool = False) -> list[Publication]:
        """Retained publications after an absolute position, for the history command."""
        stream = self._streams.get(channel)
        if stream is None:
            return []
        i = bisect.bisect_right(stream.positions, after) if after is not None else 0
        pairs = list(zip(stream.positions[i:], stream.data[i:]))
        if reverse:
            pairs.reverse()
        if limit >= 0:
            pairs = pairs[:limit]
        return [Publication(offset_of(p), d) for p, d in pairs]

    def __len__(self) -> int:
        return len(self._streams)
