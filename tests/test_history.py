"""History and the recovery answer (pure; time is passed in)."""
import gc
import tracemalloc

import ujson

from gateway.core.history import PERIOD_NS, History, Publication, Retention, from_position, to_position

T0 = 1_763_700_000 * 10**9  # an nsqd timestamp, ns
SECOND = 10**9


def node(size=100, ttl=300.0, budget=64 << 20, started=T0 - 60 * SECOND, rules=()):
    history = History(Retention(size, ttl), list(rules), memory_budget=budget, margin_ns=SECOND)
    history.continuity_from(started - SECOND)  # continuity begins a margin after this
    return history


def publish(history, channel, count, start=T0, step=SECOND // 10, now=None):
    """Publishes ``count`` messages; returns their live offsets."""
    return [history.add(channel, start + i * step, ujson.dumps({"n": i}).encode(),
                        start + i * step if now is None else now) for i in range(count)]


def data(pubs):
    return [ujson.loads(p.data)["n"] for p in pubs]


def offset(live_offset):
    return live_offset


def test_positions_are_below_2_53_and_round_trip():
    epoch, off = to_position(T0)
    assert 0 < off <= 2**53 and epoch == str(T0 // PERIOD_NS)
    assert from_position(epoch, off) == T0
    assert from_position("not-ours", 5) is None and from_position(epoch, 0) is None


def test_the_same_message_gets_the_same_position_on_every_node():
    a, b = node(), node()
    assert publish(a, "news", 3) == publish(b, "news", 3)


def test_missed_publications_are_recovered_in_order_once():
    history = node()
    live = publish(history, "news", 30)
    epoch, _ = to_position(T0)
    seen = offset(live[9])
    answer = history.recover("news", epoch, seen, T0 + 10 * SECOND)
    assert answer.recovered and answer.offset == seen
    assert data(answer.publications) == list(range(10, 30))


def test_a_quiet_channel_hands_out_a_recent_position_that_recovers_later_on_any_node():
    first, second_started_earlier = node(), node(started=T0 - 3600 * SECOND)
    epoch, quiet = first.top("#42", T0)
    publish(first, "#42", 20, start=T0 + SECOND)
    publish(second_started_earlier, "#42", 20, start=T0 + SECOND)
    for history in (first, second_started_earlier):
        answer = history.recover("#42", epoch, quiet, T0 + 10 * SECOND)
        assert answer.recovered and data(answer.publications) == list(range(20))


def test_a_node_started_after_the_client_position_cannot_vouch():
    client_epoch, client_offset = to_position(T0)
    late_node = node(started=T0 + 5 * SECOND)
    publish(late_node, "news", 5, start=T0 + 10 * SECOND)
    answer = late_node.recover("news", client_epoch, client_offset, T0 + 20 * SECOND)
    assert not answer.recovered and answer.publications == []
    assert answer.offset == to_position(T0 + 19 * SECOND)[1]  # the top: now minus the margin


def test_trimmed_history_answers_false():
    history = node(size=100)
    live = publish(history, "news", 200)
    epoch, _ = to_position(T0)
    assert not history.recover("news", epoch, offset(live[50]), T0 + 60 * SECOND).recovered
    answer = history.recover("news", epoch, offset(live[100]), T0 + 60 * SECOND)
    assert answer.recovered and data(answer.publications) == list(range(101, 200))


def test_age_limit_and_positions_older_than_the_ttl():
    history = node(ttl=10.0)
    live = publish(history, "news", 5)
    history.add("news", T0 + 20 * SECOND, b'"later"', T0 + 20 * SECOND)  # the first five are now too old
    epoch, _ = to_position(T0)
    assert not history.recover("news", epoch, offset(live[0]), T0 + 21 * SECOND).recovered
    assert history.publications("news") == [Publication(to_position(T0 + 20 * SECOND)[1], b'"later"')]


def test_lost_continuity_answers_false_until_the_node_reads_everything_again():
    history = node()
    live = publish(history, "news", 5)
    epoch, _ = to_position(T0)
    history.continuity_lost()
    assert not history.recover("news", epoch, offset(live[0]), T0 + SECOND).recovered
    history.continuity_from(T0 + 2 * SECOND)
    assert not history.recover("news", epoch, offset(live[0]), T0 + 5 * SECOND).recovered
    later = publish(history, "news", 3, start=T0 + 10 * SECOND)
    assert history.recover("news", epoch, offset(later[0]), T0 + 20 * SECOND).recovered


def test_a_late_publication_goes_live_without_offset_and_marks_the_gap():
    history = node()
    live = publish(history, "news", 10)                       # positions T0 .. T0+0.9s
    late = history.add("news", T0 + SECOND // 20, b'"late"', T0 + SECOND)  # between the first two
    assert late is None                                       # no offset: nobody moves back
    epoch, _ = to_position(T0)
    before = history.recover("news", epoch, offset(live[0]), T0 + 5 * SECOND)
    assert before.recovered and before.publications[0].data == b'"late"'
    # A client at position 5 may have skipped the late one: the node says so.
    assert not history.recover("news", epoch, offset(live[5]), T0 + 5 * SECOND).recovered


def test_a_client_ahead_of_this_node_is_not_vouched_for():
    history = node()
    live = publish(history, "news", 3)
    epoch, _ = to_position(T0)
    ahead = offset(live[-1]) + 5 * SECOND
    assert not history.recover("news", epoch, ahead, T0 + 2 * SECOND).recovered


def test_another_epoch_is_not_recovered():
    # A position in the period before the current one, yet recent, after the
    # node's continuity start and within the TTL: only its epoch is not the
    # channel's current one (a position in epoch "0" would be refused for its
    # age alone).
    boundary = (T0 // PERIOD_NS + 1) * PERIOD_NS
    history = node(started=boundary - 60 * SECOND)
    before = publish(history, "news", 5, start=boundary - SECOND)
    old_epoch, _ = to_position(boundary - SECOND)
    assert history.recover("news", old_epoch, before[1], boundary - SECOND // 2).recovered  # same epoch: yes
    publish(history, "news", 3, start=boundary + SECOND // 2)
    answer = history.recover("news", old_epoch, before[1], boundary + 2 * SECOND)
    assert not answer.recovered and answer.publications == []
    assert answer.epoch == to_position(boundary)[0] != old_epoch


def test_memory_budget_evicts_the_oldest_first_and_those_channels_answer_false():
    history = node(budget=10_000)
    old = publish(history, "old", 50, start=T0)
    new = publish(history, "new", 50, start=T0 + 10 * SECOND)
    assert history.memory <= 10_000
    epoch, _ = to_position(T0)
    assert not history.recover("old", epoch, offset(old[0]), T0 + 30 * SECOND).recovered
    assert history.recover("new", epoch, offset(new[-5]), T0 + 30 * SECOND).recovered


def test_rules_by_prefix_and_history_off():
    history = node(rules=[("prices", Retention(0, 0)), ("chat:*", Retention(3, 60))])
    assert history.add("prices", T0, b"1", T0) is None and not history.enabled("prices")
    publish(history, "chat:room", 10)
    assert len(history.publications("chat:room")) == 3
    assert history.enabled("anything-else")


def test_bookkeeping_stays_bounded():
    history = node(size=5)
    for i in range(5000):
        history.add(f"c{i % 50}", T0 + i * 1000, b"1", T0)
    assert history.entries == 50 * 5
    assert len(history._arrivals) <= 2 * history.entries + 1024
    history.sweep(now_ns=T0 + 10**6 * SECOND)
    assert len(history) == 0 and history.memory == 0


def test_a_message_dropped_for_a_channel_is_a_gap_recovery_never_crosses():
    history = node(rules=[("off", Retention(0, 0))])
    live = publish(history, "news", 5)
    epoch, _ = to_position(T0)
    now = T0 + 5 * SECOND
    assert history.recover("news", epoch, offset(live[2]), now).recovered
    assert history.gap("news", now)  # e.g. a stale message for "news" was dropped
    assert not history.recover("news", epoch, offset(live[2]), now).recovered
    assert not history.recover("news", epoch, offset(live[-1]), now).recovered
    # A position handed out after the gap recovers again.
    _, after = history.top("news", now + 2 * SECOND)
    publish(history, "news", 3, start=now + 3 * SECOND)
    answer = history.recover("news", epoch, after, now + 10 * SECOND)
    assert answer.recovered and data(answer.publications) == [0, 1, 2]
    # A quiet channel's gap: whatever was handed out before it is refused.
    _, quiet = history.top("quiet", now)
    history.gap("quiet", now + SECOND)
    assert not history.recover("quiet", epoch, quiet, now + 2 * SECOND).recovered
    # A channel without history: no position to break, nobody to tell.
    assert not history.enabled("off") and not history.gap("off", now)


def test_quiet_channels_cost_nothing_and_the_count_is_what_history_really_holds():
    history = node(budget=1 << 40)
    for i in range(10_000):
        history.top(f"quiet-{i}", T0)  # subscribers asking for a position keep no state
    assert len(history) == 0 and history.memory == 0

    def measured(channels, per):
        h = node(budget=1 << 40)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for c in range(channels):
            for i in range(per):
                h.add(f"channel-{c:06d}", T0 + c * 1000 + i * 10**6, b'{"n":%d}' % i, T0 + SECOND)
            if per == 0:  # a channel with state and no entries (a dropped message's gap)
                h.gap(f"channel-{c:06d}", T0 + 2 * SECOND)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return used, h.memory

    for channels, per in ((5000, 1), (500, 40), (50, 400), (5000, 0)):
        used, counted = measured(channels, per)
        assert 0.9 * used <= counted <= 1.2 * used, (channels, per, used, counted)


def test_memory_pressure_forgets_whole_channels_and_refuses_their_old_positions():
    history = node(budget=60_000)
    firsts = [publish(history, f"c{i}", 1, start=T0 + i * 1000)[0] for i in range(400)]
    assert history.memory <= 60_000 and len(history) < 400
    epoch, _ = to_position(T0)
    assert not history.recover("c0", epoch, firsts[0], T0 + 5 * SECOND).recovered
    assert history.recover("c399", epoch, firsts[399], T0 + 5 * SECOND).recovered


class _CountingTable(dict):
    """A channel table that counts every walk over it (a copy, a loop)."""

    walks = 0

    def __iter__(self):
        type(self).walks += 1
        return super().__iter__()

    def items(self):
        type(self).walks += 1
        return super().items()

    def values(self):
        type(self).walks += 1
        return super().values()

    def keys(self):
        type(self).walks += 1
        return super().keys()


def test_at_the_budget_a_publication_never_walks_the_channel_table():
    # Issue 23, finding 1: once channels' own state had spent the budget, every
    # publication copied and scanned the whole table (72 ms at 160,000 channels).
    history = node(budget=1 << 20)
    for i in range(5000):  # distinct channels published to once: their state outgrows the budget
        history.add(f"#user-{i}", T0 + i * 1000, b'{"n":1}', T0 + SECOND)
    assert history.memory <= 1 << 20
    table = history._streams = _CountingTable(history._streams)
    _CountingTable.walks = 0
    for i in range(5000, 10_000):
        history.add(f"#user-{i}", T0 + i * 1000, b'{"n":1}', T0 + SECOND)
        assert history.memory <= 1 << 20
    assert _CountingTable.walks == 0
    assert history._streams is table


def test_channel_state_at_the_budget_does_not_crowd_out_the_newest_publications():
    # The oldest go first, whatever they are: a crowd of channels published to
    # once, long ago, goes before the entries published since.
    history = node(budget=1 << 20)
    for i in range(5000):
        history.add(f"#user-{i}", T0 + i * 1000, b'{"n":1}', T0 + SECOND)
    assert history.entries < 5000
    epoch, _ = to_position(T0)
    live = publish(history, "room", 20, start=T0 + 10 * SECOND)
    answer = history.recover("room", epoch, live[0], T0 + 20 * SECOND)
    assert answer.recovered and data(answer.publications) == list(range(1, 20))
    # What was forgotten answers false: an evicted entry, and a channel whose
    # state went; nothing older than what history still holds is vouched for.
    assert not history.recover("#user-0", epoch, offset_of_ns(T0), T0 + 20 * SECOND).recovered
    assert history.entries + len(history) > 20 and history.memory <= 1 << 20


def offset_of_ns(timestamp_ns):
    return to_position(timestamp_ns)[1]


def test_a_channel_that_comes_back_after_its_state_went_never_hands_out_a_lower_position():
    history = node(budget=1 << 20)
    history.add("a", T0 + 5 * SECOND, b"1", T0 + 5 * SECOND)
    for i in range(6000):  # "a" goes under pressure, long before these
        history.add(f"#user-{i}", T0 + 6 * SECOND + i * 1000, b'{"n":1}', T0 + 6 * SECOND)
    assert "a" not in history._streams
    # A publication of "a" from before its last position arrives late: no offset.
    assert history.add("a", T0 + 4 * SECOND, b"2", T0 + 7 * SECOND) is None


def test_a_sweep_in_slices_visits_every_channel_once_per_round():
    history = node(size=5, ttl=10.0)
    for i in range(100):
        history.add(f"c{i}", T0 + i * 1000, b"1", T0)
    later = T0 + 60 * SECOND
    for _ in range(9):
        history.sweep(later, slices=10)
        assert 0 < len(history) < 100
    history.sweep(later, slices=10)
    assert len(history) == 0 and history.entries == 0 and history.memory == 0


def test_the_channel_table_shrinks_after_a_channel_count_explosion():
    # Issue 23: a CPython dict keeps its peak table as keys go; after 30,000
    # channels published to once and forgotten, the worker kept ~1 MB for none.
    import sys
    h = History(Retention(size=10, ttl=1))
    for i in range(30_000):
        h.add(f"junk:x-{i}", 10**9 + i, b"1", 10**9 + i)
    assert sys.getsizeof(h._streams) > 500_000
    h.add("soak:a", 5 * 10**9, b"2", 5 * 10**9)       # one channel that lives on
    h.sweep(5 * 10**9)                                 # past the others' TTL: they all go
    assert len(h) == 1
    assert sys.getsizeof(h._streams) < 10_000
    assert [p.data for p in h.publications("soak:a")] == [b"2"]


def test_while_a_loss_may_be_unknown_publications_go_live_without_positions():
    # Issue 23: after a reconnect, until the node knows whether its channel was
    # made anew, a publication must not move a client's position past a loss.
    history = node()
    assert history.add("news", T0, b"1", T0) is not None
    history.live_positions = False
    assert history.add("news", T0 + SECOND, b"2", T0 + SECOND) is None
    assert [p.data for p in history.publications("news")] == [b"1", b"2"]   # stored all the same
    history.live_positions = True
    assert history.add("news", T0 + 2 * SECOND, b"3", T0 + 2 * SECOND) is not None
