"""The last hour of a node's figures (gateway/core/trends.py), sampled from a
real Metrics on a clock the test moves: one sample per STEP on wall-clock
boundaries, rates and counts per interval, a fixed memory however long it
runs, and the cluster's series from several nodes."""
from __future__ import annotations

from gateway.core.metrics import Metrics
from gateway.core.trends import SLOTS, STEP, Trends, combine

T0 = 1_763_700_000.0  # a multiple of STEP


class Clock:
    """Wall and monotonic seconds; the node's tick runs every second."""

    def __init__(self) -> None:
        self.wall = T0 - 0.7  # the first tick comes at T0 + 0.3
        self.mono = 500.0

    def run(self, trends: Trends, seconds: int) -> None:
        for _ in range(seconds):
            self.wall += 1
            self.mono += 1
            trends.tick(self.wall, self.mono)


def node(connections: list[int] | None = None) -> tuple[Metrics, Trends, Clock]:
    """A node's trends, started a moment before T0; its first tick, a second
    later, takes the first sample (at T0)."""
    metrics = Metrics()
    open_now = connections if connections is not None else [0]
    clock = Clock()
    trends = Trends(metrics, connections=lambda: open_now[0], started=clock.mono)
    clock.run(trends, 1)
    assert trends.count == 1
    return metrics, trends, clock


def test_a_sample_per_step_with_rates_per_second_and_counts_per_interval():
    connections = [3]
    metrics, trends, clock = node(connections)
    metrics.deliveries.inc(200)
    metrics.publications.inc(20)
    metrics.refused_connects.labels("rate").inc(4)
    metrics.disconnects.labels("slow").inc()
    connections[0] = 5
    clock.run(trends, STEP - 1)
    assert trends.count == 1  # no boundary passed yet
    clock.run(trends, 1)
    assert trends.count == 2
    out = trends.export()
    assert (out["start"], out["step"]) == (T0, STEP)
    assert out["connections"] == [3, 5]
    assert out["deliveries"] == [0.0, 20.0] and out["publications"] == [0.0, 2.0]
    assert out["refused"] == {"rate": [0, 4]} and out["disconnects"] == {"slow": [0, 1]}

    metrics.refused_connects.labels("capacity").inc(2)
    clock.run(trends, STEP)
    out = trends.export()
    assert out["deliveries"] == [0.0, 20.0, 0.0]
    assert out["refused"] == {"capacity": [0, 0, 2], "rate": [0, 4, 0]}
    assert out["disconnects"] == {"slow": [0, 1, 0]}


def test_what_happened_before_the_first_sample_is_in_it():
    metrics = Metrics()
    clock = Clock()
    trends = Trends(metrics, connections=lambda: 2, started=clock.mono)
    metrics.deliveries.inc(50)  # clients that came at once, before the node's first tick
    metrics.disconnects.labels("stale").inc()
    clock.run(trends, 1)
    out = trends.export()
    assert (out["connections"], out["deliveries"], out["disconnects"]) == ([2], [50.0], {"stale": [1]})


def test_a_label_that_never_counted_has_no_series():
    metrics, trends, clock = node()
    metrics.refused_connects.labels("draining")  # the child exists, at 0
    clock.run(trends, 3 * STEP)
    assert trends.export()["refused"] == {}
    assert trends.labelled["refused"] == {}


def test_an_hour_is_kept_in_fixed_rings_however_long_it_runs():
    metrics, trends, clock = node()
    for _ in range(SLOTS + 50):
        metrics.deliveries.inc(STEP)
        metrics.disconnects.labels("no_pong").inc()
        clock.run(trends, STEP)
    out = trends.export()
    assert len(out["connections"]) == len(out["deliveries"]) == SLOTS
    assert out["start"] == T0 + 51 * STEP
    assert set(out["deliveries"]) == {1.0} and set(out["disconnects"]["no_pong"]) == {1}
    rings = [trends.times, *trends.series.values(), *trends.labelled["disconnects"].values()]
    assert {len(ring) for ring in rings} == {SLOTS}


def test_a_missed_boundary_is_a_gap_and_since_keeps_the_later_samples():
    metrics, trends, clock = node([1])
    clock.run(trends, STEP)
    clock.wall += 2 * STEP  # the loop was blocked for 20 s: the boundary at T0 + 20 passes without a tick
    clock.mono += 2 * STEP
    metrics.deliveries.inc(300)
    clock.run(trends, 1)
    out = trends.export()
    assert out["connections"] == [1, 1, None, 1]
    assert out["deliveries"] == [0.0, 0.0, None, round(300 / 21, 2)]  # over the 21 s since the sample before
    later = trends.export(since=T0 + STEP)
    assert later["start"] == T0 + 3 * STEP and later["connections"] == [1]
    assert trends.export(since=T0 + 10 * STEP) == {"start": None, "step": STEP, "connections": [], "deliveries": [],
                                                   "publications": [], "refused": {}, "disconnects": {}}


def test_the_cluster_adds_nodes_up_but_publications_are_the_most_any_saw():
    a = {"start": T0, "step": STEP, "connections": [1, 2, 3], "deliveries": [None, 10.0, 20.0],
         "publications": [None, 1.0, 2.0], "refused": {"rate": [None, 1, 0]}, "disconnects": {}}
    # b started a step later; its latest sample is a step behind a's.
    b = {"start": T0 + STEP, "step": STEP, "connections": [5], "deliveries": [None],
         "publications": [None], "refused": {"capacity": [2]}, "disconnects": {"slow": [1]}}
    assert combine([a, b]) == {
        "start": T0, "step": STEP, "connections": [1, 7], "deliveries": [None, 10.0], "publications": [None, 1.0],
        "refused": {"capacity": [None, 2], "rate": [None, 1]}, "disconnects": {"slow": [None, 1]}}
    b["connections"].append(6)
    b["deliveries"].append(5.0)
    b["publications"].append(2.0)
    cluster = combine([a, b])
    assert cluster["connections"] == [1, 7, 9] and cluster["deliveries"] == [None, 10.0, 25.0]
    assert cluster["publications"] == [None, 1.0, 2.0]
    # A node with no sample yet leaves the others as they are.
    empty = {"start": None, "step": STEP, "connections": [], "deliveries": [], "publications": [], "refused": {},
             "disconnects": {}}
    assert combine([a, empty]) == combine([a])
    assert combine([empty])["connections"] == []
