"""Per-channel publication history with stream positions that every node
agrees on, and the recovery answer (pure: no I/O, time is passed in).

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
  reading every nsqd without a gap: start-up, or a reconnect to an nsqd);
* ``p`` is not older than what trimming removed (size, age, memory budget);
* no publication arrived *late* (after a later position had already been
  handed out) into the gap the client may have missed;
* ``p`` is not ahead of what this node has seen (the client came from a
  node that had received more). The session asks :meth:`History.behind`
  first and holds the answer a moment while this node catches up.

Otherwise the answer is ``recovered: false`` and the application reloads
its state. A late publication is still stored in order and delivered live,
but without an offset, so clients' positions never move backwards.
"""
from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple


PERIOD_NS = 1 << 53
ENTRY_OVERHEAD = 120  # bytes per entry beyond its encoded publication (tuple, list slot, deque slot)


def epoch_of(timestamp_ns: int) -> str:
    return str(timestamp_ns // PERIOD_NS)


def to_position(timestamp_ns: int) -> tuple[str, int]:
    period, within = divmod(timestamp_ns, PERIOD_NS)
    return str(period), within + 1


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


class Recovery(NamedTuple):
    recovered: bool
    publications: list[bytes]   # encoded Publication objects, ascending, when recovered
    epoch: str
    offset: int                 # the client's offset when recovered, else the top


class _Stream:
    """One channel's retained publications, ascending by position."""

    __slots__ = ("retention", "positions", "pubs", "arrivals", "top", "trimmed", "holes")

    def __init__(self, retention: Retention):
        self.retention = retention
        self.positions: list[int] = []   # absolute ns, ascending
        self.pubs: list[bytes] = []      # encoded Publication, same order
        self.arrivals: list[float] = []  # when each arrived (monotonic seconds), same order
        self.top = 0                     # highest position handed out or stored
        self.trimmed = 0                 # highest position removed by trimming
        self.holes: list[tuple[int, int]] = []  # (late position, top when it arrived)


MAX_HOLES = 64  # per channel; past that the oldest gaps count as trimmed


class History:
    """History for every channel this node receives, within a memory budget.

    ``rules`` maps channel patterns (exact, or a trailing ``*`` for a prefix)
    to a :class:`Retention`; the first match wins, else ``default``.
    ``margin_ns`` is how far behind "now" a position must be before this node
    vouches for it (clock skew between nsqd hosts and the gateway, and
    messages in flight). ``memory_budget`` bounds the encoded publications
    of all channels together; the oldest go first.
    """

    def __init__(self, default: Retention, rules: list[tuple[str, Retention]] = (), *,
                 memory_budget: int = 64 << 20, margin_ns: int = 1_000_000_000):
        self.default = default
        self.rules = list(rules)
        self.memory_budget = memory_budget
        self.margin_ns = margin_ns
        self.memory = 0
        self.entries = 0
        self._streams: dict[str, _Stream] = {}
        # Stored entries in arrival order, for the memory budget: (channel, position).
        # Entries trimmed by size or age leave stale records behind; the deque is
        # rebuilt when those outnumber the live ones.
        self._arrivals: deque[tuple[str, int]] = deque()
        self.continuity_start: int | None = None  # absolute ns; None = no continuity

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
        it has (re)connected to every nsqd. Recovery from before is refused."""
        self.continuity_start = now_ns + self.margin_ns

    def continuity_lost(self) -> None:
        """A connection to an nsqd dropped: messages may be missed from now on."""
        self.continuity_start = None

    # --- writing --------------------------------------------------------------------

    def add(self, channel: str, timestamp_ns: int, data_json: str, now: float) -> bytes | None:
        """Store a publication; returns its encoded Publication for the live push
        (with ``offset``), or None when the channel keeps no history. ``now`` is
        monotonic seconds, for the age limit."""
        stream = self._streams.get(channel)
        if stream is None:
            retention = self.retention(channel)
            if not retention.enabled:
                return None
            stream = self._streams[channel] = _Stream(retention)
        _, offset = to_position(timestamp_ns)
        pub = b'{"data":%s,"offset":%d}' % (data_json.encode(), offset)
        if timestamp_ns > stream.top:
            stream.positions.append(timestamp_ns)
            stream.pubs.append(pub)
            stream.arrivals.append(now)
            stream.top = timestamp_ns
            live = pub
        else:
            # Late: a later position was already handed out. Keep it in order for
            # clients behind it; mark the gap for those who may have skipped it;
            # push it live without an offset so no client's position moves back.
            i = bisect.bisect_right(stream.positions, timestamp_ns)
            stream.positions.insert(i, timestamp_ns)
            stream.pubs.insert(i, pub)
            stream.arrivals.insert(i, now)
            stream.holes.append((timestamp_ns, stream.top))
            if len(stream.holes) > MAX_HOLES:
                stream.trimmed = max(stream.trimmed, stream.holes.pop(0)[1])
            live = b'{"data":%s}' % data_json.encode()
        self.memory += len(pub) + ENTRY_OVERHEAD
        self.entries += 1
        self._arrivals.append((channel, timestamp_ns))
        self._expire(stream, now)
        while self.memory > self.memory_budget and self._arrivals:
            self._evict_oldest()
        if len(self._arrivals) > 2 * self.entries + 1024:
            self._arrivals = deque(a for a in self._arrivals if self._holds(*a))
        return live

    def _drop_head(self, stream: _Stream, count: int) -> None:
        """Forget a stream's ``count`` oldest entries: positions up to the last of
        them can no longer be recovered."""
        if count <= 0:
            return
        stream.trimmed = max(stream.trimmed, stream.positions[count - 1])
        self.memory -= sum(len(p) for p in stream.pubs[:count]) + ENTRY_OVERHEAD * count
        self.entries -= count
        del stream.positions[:count], stream.pubs[:count], stream.arrivals[:count]
        if stream.holes:
            stream.holes = [h for h in stream.holes if h[1] > stream.trimmed]

    def _expire(self, stream: _Stream, now: float) -> None:
        """Apply the stream's size and age limits."""
        cutoff = now - stream.retention.ttl
        arrivals = stream.arrivals
        expired = 0
        while expired < len(arrivals) and arrivals[expired] < cutoff:
            expired += 1
        self._drop_head(stream, max(expired, len(arrivals) - stream.retention.size))

    def _holds(self, channel: str, position: int) -> bool:
        stream = self._streams.get(channel)
        if stream is None:
            return False
        i = bisect.bisect_left(stream.positions, position)
        return i < len(stream.positions) and stream.positions[i] == position

    def _evict_oldest(self) -> None:
        channel, position = self._arrivals.popleft()
        if self._holds(channel, position):
            stream = self._streams[channel]
            self._drop_head(stream, bisect.bisect_right(stream.positions, position))

    def sweep(self, now: float, now_ns: int) -> None:
        """Apply age limits everywhere and forget idle channels (run periodically).
        A stream can go once its top is older than its TTL: positions that old
        are refused anyway."""
        for channel, stream in list(self._streams.items()):
            self._expire(stream, now)
            if not stream.positions and stream.top < now_ns - int(stream.retention.ttl * 1e9):
                del self._streams[channel]

    # --- reading --------------------------------------------------------------------

    def top(self, channel: str, now_ns: int) -> tuple[str, int]:
        """The position to hand a subscriber: everything up to it is known here.

        For a quiet channel that is "now" minus the margin, not 0, so a client
        that saw nothing yet can still recover later, on any node.
        """
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = _Stream(self.retention(channel))
        stream.top = max(stream.top, now_ns - self.margin_ns)
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
        stream = self._streams[channel]
        position = from_position(epoch, offset) if isinstance(offset, int) else None
        start = self.continuity_start
        recovered = (
            position is not None
            and epoch == top_epoch
            and position >= now_ns - int(stream.retention.ttl * 1e9)
            and start is not None and position >= start
            and position >= stream.trimmed
            and position <= stream.top
            and not any(late < position <= top for late, top in stream.holes)
        )
        if not recovered:
            return Recovery(False, [], top_epoch, top_offset)
        i = bisect.bisect_right(stream.positions, position)
        return Recovery(True, stream.pubs[i:], top_epoch, offset)

    def publications(self, channel: str, *, after: int | None = None, limit: int = -1,
                     reverse: bool = False) -> list[bytes]:
        """Retained publications after an absolute position, for the history command."""
        stream = self._streams.get(channel)
        if stream is None:
            return []
        i = bisect.bisect_right(stream.positions, after) if after is not None else 0
        pubs = stream.pubs[i:]
        if reverse:
            pubs = pubs[::-1]
        return pubs if limit < 0 else pubs[:limit]

    def __len__(self) -> int:
        return len(self._streams)
