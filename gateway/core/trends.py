"""The last hour of a node's figures, for the status page's charts.

One sample every :data:`STEP` seconds, on wall-clock boundaries (so the
samples of every node line up), taken by the node's one-second tick from the
counters it keeps anyway: nothing is done per message. :data:`SLOTS` samples
are kept, in one fixed ring per series (an ``array`` of floats, NaN where
there is no sample), so the memory is bounded: about 3 KB a series.

Series, each sample covering the STEP seconds before it:

* ``connections``: open connections at the sample;
* ``deliveries``, ``publications``: per second;
* ``refused`` by limit and ``disconnects`` by reason: how many in the
  interval; a label gets its ring when it first counts (at most
  :data:`MAX_LABELS` per family).

:meth:`Trends.export` gives them on a grid (``start``, ``step``, one value
per step, None where there is none); :func:`combine` adds nodes into the
cluster's.
"""
from __future__ import annotations

import math
from array import array
from typing import Callable

from prometheus_client import Counter

from gateway.core.metrics import Metrics

STEP = 10                  # seconds between samples
SPAN = 3600                # seconds kept
SLOTS = SPAN // STEP
MAX_LABELS = 32            # label rings per family (the vocabulary has fewer reasons)
NAN = float("nan")
RATES = ("deliveries", "publications")
COUNTS = ("refused", "disconnects")


def _ring() -> array:
    return array("d", [NAN]) * SLOTS


def _totals(counter: Counter) -> dict[str, float]:
    """A counter's totals: by its one label's value, or under "" without labels."""
    found = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                found[next(iter(sample.labels.values()), "")] = sample.value
    return found


class Trends:
    """``metrics`` counted from zero at ``started`` (monotonic seconds): the
    first sample covers the time since then, so that what happened before it
    (clients connecting to a node that just started) is not lost."""

    def __init__(self, metrics: Metrics, connections: Callable[[], int], started: float):
        self._metrics = metrics
        self._connections = connections
        self.times = _ring()                       # the sample's time (a multiple of STEP)
        self.series = {"connections": _ring(), **{name: _ring() for name in RATES}}
        self.labelled: dict[str, dict[str, array]] = {name: {} for name in COUNTS}
        self.count = 0                             # samples taken so far
        self._boundary = -1
        self._last: tuple[float, dict[str, dict[str, float]]] = (started, {n: {} for n in (*RATES, *COUNTS)})

    def tick(self, wall: float, monotonic: float) -> None:
        """Called every second or so: takes a sample when a STEP boundary has
        passed since the last one."""
        boundary = int(wall // STEP)
        if boundary != self._boundary:
            self._boundary = boundary
            self.sample(boundary * STEP, monotonic)

    def _read(self) -> dict[str, dict[str, float]]:
        m = self._metrics
        return {"deliveries": _totals(m.deliveries), "publications": _totals(m.publications),
                "refused": _totals(m.refused_connects), "disconnects": _totals(m.disconnects)}

    def sample(self, at: float, monotonic: float) -> None:
        totals = self._read()
        slot = self.count % SLOTS
        self.count += 1
        self.times[slot] = at
        self.series["connections"][slot] = self._connections()
        last, self._last = self._last, (monotonic, totals)
        seconds = max(monotonic - last[0], 1e-3)
        before = last[1]
        for name in RATES:
            self.series[name][slot] = (totals[name].get("", 0.0) - before[name].get("", 0.0)) / seconds
        for name in COUNTS:
            family = self.labelled[name]
            for label, total in totals[name].items():
                counted = total - before[name].get(label, 0.0)
                ring = family.get(label)
                if ring is None:
                    if not counted or len(family) >= MAX_LABELS:
                        continue
                    ring = family[label] = array("d", [0.0]) * SLOTS  # nothing counted before
                ring[slot] = counted
            for label, ring in family.items():
                if label not in totals[name]:
                    ring[slot] = 0.0

    def export(self, since: float = 0.0) -> dict:
        """The samples after ``since`` (Unix time) on a grid: ``start`` (the
        first sample's time), ``step``, and per series one value per step from
        start (None where there is no sample). ``refused`` and ``disconnects``
        hold the labels that counted something in the window."""
        slots = [n % SLOTS for n in range(max(0, self.count - SLOTS), self.count)
                 if self.times[n % SLOTS] > since]
        if not slots:
            return {"start": None, "step": STEP, "connections": [], **{n: [] for n in RATES},
                    **{n: {} for n in COUNTS}}
        start = self.times[slots[0]]
        length = int((self.times[slots[-1]] - start) // STEP) + 1
        places = [(int((self.times[slot] - start) // STEP), slot) for slot in slots]

        def grid(ring: array, digits: int) -> list:
            values: list = [None] * length
            for place, slot in places:
                value = ring[slot]
                if not math.isnan(value):
                    values[place] = round(value, digits) if digits else int(value)
            return values
        out: dict = {"start": start, "step": STEP, "connections": grid(self.series["connections"], 0)}
        for name in RATES:
            out[name] = grid(self.series[name], 2)
        for name in COUNTS:
            out[name] = {}
            for label, ring in sorted(self.labelled[name].items()):
                values = grid(ring, 0)
                if any(values):
                    out[name][label] = values
        return out


def combine(nodes: list[dict]) -> dict:
    """The cluster's series from every node's export: connections,
    deliveries, refused and disconnects add up; publications are the most any
    node saw (every node reads every publication). A time is in the cluster's
    series up to the earliest of the nodes' latest samples, so that a node
    that has not sampled yet does not make the last point dip."""
    present = [n for n in nodes if n.get("start") is not None and n.get("connections")]
    if not present:
        return {"start": None, "step": STEP, "connections": [], **{n: [] for n in RATES}, **{n: {} for n in COUNTS}}
    start = min(n["start"] for n in present)
    end = min(n["start"] + (len(n["connections"]) - 1) * STEP for n in present)
    length = max(0, int((end - start) // STEP) + 1)

    def merged(pick: Callable[[dict], list | None], join: Callable[[float, float], float]) -> list:
        values: list = [None] * length
        for node in present:
            offset = int((node["start"] - start) // STEP)
            for i, value in enumerate(pick(node) or ()):
                if value is not None and 0 <= offset + i < length:
                    here = values[offset + i]
                    values[offset + i] = value if here is None else join(here, value)
        return values

    def add(a: float, b: float) -> float:
        return round(a + b, 2)
    out: dict = {"start": start, "step": STEP,
                 "connections": merged(lambda n: n["connections"], add),
                 "deliveries": merged(lambda n: n["deliveries"], add),
                 "publications": merged(lambda n: n["publications"], max)}
    def labelled(family: str, label: str) -> Callable[[dict], list | None]:
        return lambda node: node.get(family, {}).get(label)
    for name in COUNTS:
        labels = sorted({label for n in present for label in n.get(name, {})})
        out[name] = {label: merged(labelled(name, label), add) for label in labels}
    return out
