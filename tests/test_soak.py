"""The soak (bench/soak.py): its checker in process, and the lean soak (a
fault of each kind, about 2 minutes) against a real stack, which must hold
every invariant."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from soak_check import (Client, agreement, check_client, check_high_water, check_rss, tail_complete,  # noqa: E402
                        tracebacks)


def pub(ch: str, n: int) -> dict:
    return {"ev": "pub", "ch": ch, "data": {"n": n, "ch": ch}}


def client(*events: tuple[float, dict], channels: dict | None = None) -> Client:
    c = Client("c", "js", channels or {"#u": True, "news": False})
    c.events = [(t, dict(e)) for t, e in events]
    return c


SUBSCRIBED = [(0.0, {"ev": "connected", "client": "x"}), (0.1, {"ev": "subscribed", "ch": "#u", "recovered": False}),
              (0.1, {"ev": "subscribed", "ch": "news", "recovered": False})]


def kinds(violations) -> list[tuple[str, str]]:
    return [(v.channel, v.what) for v in violations]


def test_every_publication_in_order_passes():
    c = client(*SUBSCRIBED, *[(1 + n, pub("news", n)) for n in (1, 2, 3)], (5, pub("#u", 1)))
    figures, violations = check_client(c, {"news": 3, "#u": 1})
    assert violations == [] and figures["news"].received == 3 and figures["news"].gaps == 0


def test_a_silent_gap_is_a_breach_and_a_told_one_is_not():
    silent = client(*SUBSCRIBED, (1, pub("news", 1)), (2, pub("news", 4)))
    assert kinds(check_client(silent, {"news": 4})[1]) == [("news", "gap")]
    # Told by the resubscribe's recovered: false, between the two.
    told = client(*SUBSCRIBED, (1, pub("news", 1)), (1.5, {"ev": "subscribing", "ch": "news", "code": 3}),
                  (1.6, {"ev": "subscribed", "ch": "news", "recovered": False, "was_recovering": True}),
                  (2, pub("news", 4)))
    figures, violations = check_client(told, {"news": 4})
    assert violations == [] and figures["news"].gaps == 1 and figures["news"].covered == 1
    # A resubscribe that recovered is no telling.
    recovered = client(*SUBSCRIBED, (1, pub("news", 1)),
                       (1.6, {"ev": "subscribed", "ch": "news", "recovered": True, "was_recovering": True}),
                       (2, pub("news", 4)))
    assert kinds(check_client(recovered, {"news": 4})[1]) == [("news", "gap")]


def test_2500_tells_its_channel_and_3010_the_server_side_ones():
    events = [*SUBSCRIBED, (1, pub("news", 1)), (1, pub("#u", 1)),
              (2, {"ev": "subscribing", "ch": "news", "code": 2500}), (3, pub("news", 3)), (3, pub("#u", 3))]
    assert kinds(check_client(client(*events), {"news": 3, "#u": 3})[1]) == [("#u", "gap")]
    events[5] = (2, {"ev": "connecting", "code": 3010, "reason": "insufficient state"})
    assert kinds(check_client(client(*events), {"news": 3, "#u": 3})[1]) == [("news", "gap")]


def test_told_within_the_grace_after_the_jump_covers_it_later_does_not():
    late_but_in_grace = client(*SUBSCRIBED, (1, pub("news", 1)), (2, pub("news", 3)),
                               (8, {"ev": "subscribing", "ch": "news", "code": 2500}))
    assert check_client(late_but_in_grace, {"news": 3}, grace=10)[1] == []
    too_late = client(*SUBSCRIBED, (1, pub("news", 1)), (2, pub("news", 3)),
                      (30, {"ev": "subscribing", "ch": "news", "code": 2500}))
    assert kinds(check_client(too_late, {"news": 3}, grace=10)[1]) == [("news", "gap")]
    # A telling from before the last publication received covers nothing after it.
    before = client(*SUBSCRIBED, (0.5, {"ev": "subscribing", "ch": "news", "code": 2500}), (1, pub("news", 1)),
                    (2, pub("news", 3)))
    assert kinds(check_client(before, {"news": 3})[1]) == [("news", "gap")]


def test_duplicates_order_and_misrouting_are_breaches():
    c = client(*SUBSCRIBED, (1, pub("news", 1)), (2, pub("news", 2)), (3, pub("news", 2)),
               (3.5, {"ev": "subscribing", "ch": "news", "code": 2500}), (4, pub("news", 5)), (5, pub("news", 4)),
               (6, {"ev": "pub", "ch": "news", "data": {"n": 6, "ch": "other"}}))
    assert kinds(check_client(c, {"news": 5})[1]) == [("news", "duplicate"), ("news", "order"), ("news", "misrouted")]


def test_silence_at_the_end_is_a_breach_unless_told_and_subscribed_again():
    silent = client(*SUBSCRIBED, (1, pub("news", 1)))
    assert kinds(check_client(silent, {"news": 5})[1]) == [("news", "tail")]
    told_and_back = client(*SUBSCRIBED, (1, pub("news", 1)), (2, {"ev": "connecting", "code": 3001}),
                           (9, {"ev": "connected", "client": "y"}),
                           (9, {"ev": "subscribed", "ch": "news", "recovered": False, "was_recovering": True}))
    assert check_client(told_and_back, {"news": 5})[1] == []
    told_then_gone = client(*SUBSCRIBED, (1, pub("news", 1)),
                            (9, {"ev": "subscribed", "ch": "news", "recovered": False, "was_recovering": True}),
                            (10, {"ev": "connecting", "code": 3001}))
    assert kinds(check_client(told_then_gone, {"news": 5})[1]) == [("news", "tail")]


def test_tail_complete_waits_for_the_last_publication_or_a_telling():
    got = client(*SUBSCRIBED, (1, pub("news", 1)), (2, pub("#u", 1)), (3, pub("news", 2)))
    assert tail_complete(got, {"news": 2, "#u": 1})
    assert not tail_complete(got, {"news": 3, "#u": 1})
    got.events.append((4, {"ev": "subscribed", "ch": "news", "recovered": False, "was_recovering": True}))
    assert tail_complete(got, {"news": 3, "#u": 1})


def test_cable_reject_history_and_insufficient_state():
    channels = {"#ca": True, "news": False}
    events = [(0, {"ev": "cable_connect"}), (0, {"ev": "channel_connect", "ch": "#ca"}),
              (0, {"ev": "channel_connect", "ch": "news"}), (1, pub("news", 1)), (1, pub("#ca", 1)),
              (2, {"ev": "reject_history", "ch": "news"}), (3, pub("news", 3)), (3, pub("#ca", 3))]
    assert kinds(check_client(client(*events, channels=channels), {"news": 3, "#ca": 3})[1]) == [("#ca", "gap")]
    events[5] = (2, {"ev": "cable_disconnect", "reason": "insufficient_state"})
    assert check_client(client(*events, channels=channels), {"news": 3, "#ca": 3})[1] == []


def test_the_priming_high_water_must_stay_under_the_budget_ceiling():
    mib = 2**20
    ok, lines = check_high_water({"A/worker-0": 57 * mib}, {"A/worker-0": 66 * mib}, 8 * mib)
    assert ok, lines                                   # 57 * 1.1 + 8 = 70.7
    ok, lines = check_high_water({"A/worker-0": 57 * mib}, {"A/worker-0": 71 * mib}, 8 * mib)
    assert not ok and "BREACH" in lines[0]
    assert check_high_water({"A/worker-0": 57 * mib}, {}, 8 * mib)[0]   # restarted meanwhile


def test_rss_within_ten_percent_and_orphans():
    ok, lines = check_rss({"A/worker-0": 100.0, "A/worker-1": 100.0}, {"A/worker-0": 110.0, "A/worker-1": 90.0}, {})
    assert ok, lines
    ok, lines = check_rss({"A/worker-0": 100.0}, {"A/worker-0": 111.0}, {})
    assert not ok and "BREACH" in lines[0]
    assert not check_rss({"A/worker-0": 100.0}, {}, {})[0]
    assert not check_rss({"A/worker-0": 100.0}, {"A/worker-0": 100.0}, {"A/orphan pid 7": 50.0})[0]


def test_agreement_needs_the_same_true_answer_from_every_node():
    nodes = {("a", "1"), ("b", "2")}
    view = {"nodes": nodes, "presence": {"room": {"c1", "c2"}}}
    truth = {"room": {"c1", "c2"}}
    assert agreement({"a": view, "b": view}, {"a", "b"}, truth) == (True, [])
    assert not agreement({"a": view}, {"a", "b"}, truth)[0]                           # b did not answer
    other = {"nodes": {("a", "1"), ("b", "3")}, "presence": view["presence"]}         # b restarted, a missed it
    assert not agreement({"a": view, "b": other}, {"a", "b"}, truth)[0]
    ghost = {"nodes": nodes | {("c", "4")}, "presence": view["presence"]}
    assert not agreement({"a": ghost, "b": ghost}, {"a", "b"}, truth)[0]              # a node that is gone
    stale = {"nodes": nodes, "presence": {"room": {"c1", "c2", "c0"}}}
    assert not agreement({"a": stale, "b": stale}, {"a", "b"}, truth)[0]              # a client that left


def test_tracebacks_are_found(tmp_path):
    log = tmp_path / "gw.log"
    log.write_text("INFO fine\nERROR boom\nTraceback (most recent call last):\n  File \"x\"\nValueError\n")
    assert len(tracebacks([log, tmp_path / "missing.log"])) == 1
    log.write_text("INFO fine\n")
    assert tracebacks([log]) == []


@pytest.mark.process
@pytest.mark.timeout(420)   # the lean soak's 2 minutes, its start and teardown, and up to 90 s for late clients
def test_a_lean_soak_with_a_fault_of_each_kind_holds_every_invariant(tmp_path):
    """bench/soak.py --lean: every fault kind once, short, against the
    gateway's timings scaled down to match (a stopped worker outlives
    --worker-timeout, a stopped node --presence-ttl, a burst expires within
    the settle period), after the priming. A random seed each run (printed
    first; repeat a failure with --seed). About 2 minutes; `make soak` is the
    long one."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--lean", "--minutes", "5",
                             "--report", str(tmp_path / "soak.md"), "--workdir", str(tmp_path / "work")],
                            cwd=ROOT, capture_output=True, text=True, timeout=420)
    report = (tmp_path / "soak.md").read_text() if (tmp_path / "soak.md").exists() else "(no report)"
    assert result.returncode == 0, f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}\n--- report ---\n{report[:12000]}"
    kinds = {line.split("|")[4].strip() for line in report.splitlines() if line.startswith("| ") and
             line.split("|")[1].strip().isdigit()}
    assert kinds >= set(soak_faults()), f"fault kinds injected: {sorted(kinds)}"


def soak_faults() -> list[str]:
    import soak
    return soak.FAULTS


def test_the_report_renders_from_what_a_run_recorded(tmp_path):
    """The verdict and the report from a made-up run: no process, no stack."""
    import soak

    args = soak.parse_args(["--minutes", "3", "--seed", "5", "--workdir", str(tmp_path / "work")])
    run = soak.Soak(args)
    t0 = 1000.0
    run.marks = {"publishing": t0, "first fault": t0 + 20, "last fault end": t0 + 60, "settled": t0 + 100}
    spec = soak.ROSTER[0]
    proc = soak.ClientProcess(spec, run.workdir)
    channels = list(proc.record.channels)
    proc.record.events = [(t0 + 1, {"ev": "connected", "client": "c1"})] + [
        (t0 + 1, {"ev": "subscribed", "ch": ch, "recovered": False}) for ch in channels]
    proc.record.events += [(t0 + 2 + n, pub(ch, n)) for n in range(1, 5) for ch in channels]
    proc.record.events.append((t0 + 30, pub(channels[0], 7)))       # a silent gap, after fault 1
    run.clients = [proc]
    run.publisher = soak.Publisher(None, channels, "run")
    run.publisher.last = {ch: (7 if ch == channels[0] else 4) for ch in channels}
    run.publisher.accepted = {(ch, n): t0 + 1.9 + n for ch in channels for n in range(1, 8)}
    run.faults = [soak.Fault(1, "net-cut", t0 + 20, t0 + 22, "relay"), soak.Fault(2, "worker-kill", t0 + 40, t0 + 41)]
    run.samples = [(t0 + s, "A/worker-0", 1, 100 * 2**20 + (15 * 2**20 if s > 90 else 0)) for s in range(0, 101, 2)]
    run.lags = [(t0 + 5, "A/worker-0", 0.002), (t0 + 10, "B (no answer)", None)]
    run.history = [(t0 + 5, "A/worker-0", 2.0**20)]
    ok, lines, details = run.verdict()
    assert not ok
    assert lines[0].startswith("FAIL delivery") and "1 gap" in lines[0], lines
    assert lines[1].startswith("FAIL rss") and "+15.0%" in lines[1], lines
    assert lines[2].startswith("FAIL agreement") and lines[3].startswith("PASS logs"), lines
    path = tmp_path / "report.md"
    run.report(ok, lines, details, path)
    text = path.read_text()
    assert "fault 1 (net-cut, at 20.0 s)" in text and "| 1 | 20.0 | 2.0 | net-cut | relay |" in text
    assert "## Delivery delay" in text and "## Event-loop lag" in text
    run.save_state(lines)
    proc.out.close()
