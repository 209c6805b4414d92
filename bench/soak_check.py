"""The soak's invariants (bench/soak.py), as pure functions over what was
recorded: what every honest client saw, what was published, RSS samples,
what every node answered, and the logs. No I/O but reading log files, so
tests/test_soak.py checks the checker in process.

**Delivery: every publication of a client's channels, in order, or told.**
Per client and channel, the numbers it received must increase by one. A
jump (numbers missing, including across a reconnect) must be covered by a
*told* event for that channel at or after the last number received before
it, and at most ``grace`` seconds after the jump was seen (a live subscriber
is told of a loss once the node detects it: docs/recovery.md):

* ``recovered: false`` on a (re)subscribe (the SDKs' ``subscribed`` event);
* the unsubscribe push 2500 (the SDKs resubscribe: ``subscribing`` with 2500);
* the disconnect 3010, for the server-side channels (personal ``#user``);
* on ``/cable`` (@anycable/web, ext-json): ``reject_history`` for the channel
  (the ``history_not_found`` info), or the disconnect ``insufficient_state``
  for every channel of that connection (the cable form of 3010).

Never allowed: a number received twice (duplicates: neither Centrifugo's
recovery, "exactly the publications missed, once each", nor AnyCable's
history, "nothing is skipped, nothing doubled", allows any, and the
gateway drops NSQ's redeliveries by the envelope ``id``), a number smaller
than one already received (order), a publication of channel X delivered
on channel Y, and silence at the end: after the faults stop, every client
must have received the last publication of each of its channels, unless it
was told after the last one it got and is subscribed again at the end (a
client whose own backoff brings it back after history has expired).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

TOLD_GRACE = 10.0   # seconds after a jump is seen within which a told event still covers it


@dataclass
class Client:
    """One honest client as recorded: its events as (arrival time, event), in order."""
    name: str
    kind: str                        # e.g. "js-ws-json", "py-protobuf", "cable-ext"
    channels: dict[str, bool]        # channel -> server-side?
    events: list[tuple[float, dict]] = field(default_factory=list)


@dataclass
class Violation:
    client: str
    channel: str
    what: str        # "gap", "order", "duplicate", "misrouted", "tail"
    at: float        # when it was seen (Unix seconds)
    detail: str
    since: float = 0.0   # for a gap or a tail: when the last publication before it arrived


@dataclass
class ChannelFigures:
    received: int = 0
    gaps: int = 0
    missed: int = 0          # numbers inside gaps
    told: int = 0
    covered: int = 0


def told_channels(client: Client, event: dict) -> list[tuple[str, str]]:
    """The channels (with why) that ``event`` tells ``client`` it may have missed publications of."""
    ev = event.get("ev")
    ch = event.get("ch")
    if ev == "subscribed" and ch in client.channels and not event.get("recovered") and event.get("again"):
        return [(ch, "recovered: false")]
    if ev == "subscribing" and ch in client.channels and event.get("code") == 2500:
        return [(ch, "2500")]
    if ev in ("connecting", "disconnected") and event.get("code") == 3010:
        return [(c, "3010") for c, server in client.channels.items() if server]
    if ev == "reject_history" and ch in client.channels:
        return [(ch, "reject_history")]
    if ev == "cable_disconnect" and event.get("reason") == "insufficient_state":
        return [(c, "insufficient_state") for c in client.channels]
    return []


def mark_resubscribes(client: Client) -> None:
    """Mark every ``subscribed`` after a channel's first as ``again``: only those can
    tell of a gap (the first subscription starts before any publication)."""
    seen: set[str] = set()
    for _, event in client.events:
        if event.get("ev") == "subscribed":
            ch = event.get("ch")
            event["again"] = ch in seen
            seen.add(ch)


def check_client(client: Client, last_published: dict[str, int], grace: float = TOLD_GRACE
                 ) -> tuple[dict[str, ChannelFigures], list[Violation]]:
    mark_resubscribes(client)
    figures = {ch: ChannelFigures() for ch in client.channels}
    violations: list[Violation] = []
    told: dict[str, list[float]] = {ch: [] for ch in client.channels}
    for t, event in client.events:
        for ch, _why in told_channels(client, event):
            told[ch].append(t)
            figures[ch].told += 1
    last = {ch: 0 for ch in client.channels}
    last_at = {ch: 0.0 for ch in client.channels}
    received: dict[str, set[int]] = {ch: set() for ch in client.channels}
    for t, event in client.events:
        if event.get("ev") != "pub":
            continue
        ch = event.get("ch")
        data = event.get("data")
        n = data.get("n") if isinstance(data, dict) else None
        if ch not in client.channels or not isinstance(n, int) or data.get("ch") != ch:
            violations.append(Violation(client.name, str(ch), "misrouted", t,
                                        f"publication {json.dumps(data)[:200]} arrived on {ch!r}"))
            continue
        fig = figures[ch]
        fig.received += 1
        if n in received[ch]:
            violations.append(Violation(client.name, ch, "duplicate", t, f"{n} received again (last was {last[ch]})"))
            continue
        received[ch].add(n)
        if n < last[ch]:
            violations.append(Violation(client.name, ch, "order", t, f"{n} received after {last[ch]}"))
            continue
        if n > last[ch] + 1:
            fig.gaps += 1
            fig.missed += n - last[ch] - 1
            since = last_at[ch]
            cover = [x for x in told[ch] if since <= x <= t + grace]
            if cover:
                fig.covered += 1
            else:
                violations.append(Violation(
                    client.name, ch, "gap", t,
                    f"{last[ch] + 1}..{n - 1} missing ({n - last[ch] - 1}), {n} arrived at {t:.3f}, "
                    f"{last[ch]} at {since:.3f}; told at {[round(x, 3) for x in told[ch]][-5:] or 'never'}",
                    since or t))
        last[ch], last_at[ch] = n, t
    for ch in client.channels:
        want = last_published.get(ch, 0)
        if last[ch] < want and not told_and_back(client, ch, last_at[ch], told[ch]):
            violations.append(Violation(client.name, ch, "tail", last_at[ch],
                                        f"silent at the end: last received {last[ch]} of {want} at "
                                        f"{last_at[ch]:.3f}, and not told since (told at "
                                        f"{[round(x, 3) for x in told[ch]][-3:] or 'never'}; subscribed at the end: "
                                        f"{subscribed_at_end(client, ch)})", last_at[ch]))
    return figures, violations


def subscribed_at_end(client: Client, channel: str) -> bool:
    """Whether the client's last word on ``channel`` is that it is subscribed."""
    state = False
    for _, event in client.events:
        ev = event.get("ev")
        if ev in ("connecting", "disconnected", "cable_disconnect", "cable_close"):
            state = False
        elif event.get("ch") == channel:
            if ev in ("subscribed", "channel_connect"):
                state = True
            elif ev in ("subscribing", "unsubscribed", "channel_disconnect"):
                state = False
    return state


def told_and_back(client: Client, channel: str, since: float, told: list[float]) -> bool:
    """A missing tail is no silence when the client was told after the last
    publication it got and is subscribed again at the end."""
    return any(t >= since for t in told) and subscribed_at_end(client, channel)


def tail_complete(client: Client, last_published: dict[str, int]) -> bool:
    """Whether every channel of the client has its last publication, or was told and is back."""
    want = {ch: last_published.get(ch, 0) for ch in client.channels}
    last: dict[str, int] = {}
    for _, event in reversed(client.events):   # the newest publication of each channel, cheaply
        if event.get("ev") == "pub" and event.get("ch") in want and event["ch"] not in last:
            data = event.get("data")
            last[event["ch"]] = data.get("n", 0) if isinstance(data, dict) else 0
            if len(last) == len(want):
                break
    if all(last.get(ch, 0) >= n for ch, n in want.items()):
        return True
    _, violations = check_client(client, last_published, grace=float("inf"))
    return not any(v.what == "tail" for v in violations)


def check_delivery(clients: list[Client], last_published: dict[str, int], grace: float = TOLD_GRACE
                   ) -> tuple[dict[str, dict[str, ChannelFigures]], list[Violation]]:
    figures, violations = {}, []
    for client in clients:
        figures[client.name], v = check_client(client, last_published, grace)
        violations.extend(v)
    return figures, violations


# --- RSS ---------------------------------------------------------------------------------------

def check_rss(before: dict[str, float], after: dict[str, float], extra: dict[str, float],
              tolerance: float = 0.10) -> tuple[bool, list[str]]:
    """Each role's RSS after the settle period against its level before the first
    fault: at most ``tolerance`` above it. ``extra``: processes of the stack that
    have no role (an orphaned worker), each a breach. Returns (ok, lines)."""
    ok, lines = True, []
    for role in sorted(before):
        b, a = before[role], after.get(role)
        if a is None:
            ok = False
            lines.append(f"{role}: {b / 2**20:.1f} MiB before, not running after")
            continue
        growth = a / b - 1
        good = a <= b * (1 + tolerance)
        ok &= good
        lines.append(f"{role}: {b / 2**20:.1f} -> {a / 2**20:.1f} MiB ({growth:+.1%}){'' if good else '  BREACH'}")
    for what, rss in sorted(extra.items()):
        ok = False
        lines.append(f"{what}: {rss / 2**20:.1f} MiB, not part of the stack  BREACH")
    return ok, lines


def check_high_water(unprimed: dict[str, float], primed: dict[str, float], budget: int,
                     tolerance: float = 0.10) -> tuple[bool, list[str]]:
    """The priming's high-water: each role's RSS after a history burst and a
    channel explosion had expired (``primed``) at most ``tolerance`` above its
    level before them plus ``budget`` (--history-memory-bytes), which bounds
    what history may hold at once, and so what the allocators can keep at
    high-water for it (docs/recovery.md, "Memory after a burst")."""
    ok, lines = True, []
    for role in sorted(unprimed):
        b, a = unprimed[role], primed.get(role)
        if a is None:
            continue   # restarted meanwhile: nothing to compare
        ceiling = b * (1 + tolerance) + budget
        good = a <= ceiling
        ok &= good
        lines.append(f"{role}: {b / 2**20:.1f} -> {a / 2**20:.1f} MiB (ceiling {ceiling / 2**20:.1f})"
                     + ("" if good else "  BREACH"))
    return ok, lines


def agreement(views: dict[str, dict], expected_nodes: set[str], truth: dict[str, set[str]]
              ) -> tuple[bool, list[str]]:
    """``views``: node name -> {"nodes": {(name, uid), ...}, "presence": {channel: {client id, ...}}}
    as each node answered. They agree when every expected node answered, all list
    the same nodes (names and incarnations), those are exactly ``expected_nodes``,
    and every node's presence of each channel is the same set and equals
    ``truth`` (the honest clients subscribed there, by client id)."""
    problems = []
    missing = expected_nodes - set(views)
    if missing:
        problems.append(f"no answer from {sorted(missing)}")
    node_sets = {name: frozenset(v["nodes"]) for name, v in views.items()}
    distinct = set(node_sets.values())
    if len(distinct) > 1:
        problems.append("info differs: " + "; ".join(f"{n} lists {sorted(s)}" for n, s in sorted(node_sets.items())))
    for name, listed in sorted(node_sets.items()):
        names = sorted(x[0] for x in listed)
        if sorted(expected_nodes) != names:
            problems.append(f"{name}'s info lists {names}, the running nodes are {sorted(expected_nodes)}")
    for channel, want in sorted(truth.items()):
        for name, v in sorted(views.items()):
            got = v["presence"].get(channel)
            if got is None:
                problems.append(f"{name}: no presence answer for {channel}")
            elif got != want:
                problems.append(f"{name}: presence of {channel} has {len(got)} (extra {sorted(got - want)[:4]}, "
                                f"missing {sorted(want - got)[:4]}), the honest subscribers are {len(want)}")
    return not problems, problems


# --- logs --------------------------------------------------------------------------------------

TRACEBACK = re.compile("Traceback")


def tracebacks(paths: list[Path], context: int = 12) -> list[tuple[Path, str]]:
    """Every traceback in these logs: (file, the traceback's first lines)."""
    found = []
    for path in paths:
        text = path.read_text(errors="replace") if path.exists() else ""
        for match in TRACEBACK.finditer(text):
            start = text.rfind("\n", 0, max(match.start() - 1, 0)) + 1   # the log line before it, too
            lines = text[start:].splitlines()[:context]
            found.append((path, "\n".join(lines)))
    return found
