"""Reading nsqd's channel counts: a loss is what the counts cannot account for,
confirmed by two readings, never a message caught in flight."""
import time

from gateway.nsq.watch import ChannelWatch, deficit


def reading(message_count, sent, depth=0, deferred=0, clients=(("127.0.0.1:1", 100),)):
    per_client = [sent // len(clients)] * len(clients)
    per_client[0] += sent - sum(per_client)
    return {"channel_name": "n#ephemeral", "message_count": message_count, "depth": depth,
            "deferred_count": deferred,
            "clients": [{"remote_address": a, "connect_ts": t, "message_count": m}
                        for (a, t), m in zip(clients, per_client)]}


def watch():
    losses = []
    w = ChannelWatch(channel="n#ephemeral", topics=["t"], connected=lambda: [],
                     on_loss=lambda topic, nsqd, n: losses.append((topic, nsqd, n)), lookupd_http_addresses=[])
    return w, losses


def test_the_counts_add_up_to_what_was_lost():
    assert deficit(reading(100, 90, depth=10)) == 0
    assert deficit(reading(100, 60, depth=10, deferred=5)) == 25


def test_a_loss_needs_two_readings_and_a_lone_high_one_is_noise():
    w, losses = watch()
    w.observe("a:1", "t", reading(100, 100))
    w.observe("a:1", "t", reading(200, 199))           # one message between two counters
    w.observe("a:1", "t", reading(300, 300))
    assert losses == []
    w.observe("a:1", "t", reading(10_300, 300, depth=50))   # nsqd dropped 9950
    w.observe("a:1", "t", reading(10_300, 350, depth=0))   # the node took the 50 that were queued
    assert losses == [("t", "a:1", 9950)]
    w.observe("a:1", "t", reading(10_400, 450))
    w.observe("a:1", "t", reading(10_500, 550))
    assert len(losses) == 1                            # counted once


def test_a_loss_already_there_at_the_first_reading_counts():
    w, losses = watch()  # the node was too busy to read before the burst overflowed
    w.observe("a:1", "t", reading(2000, 51))
    w.observe("a:1", "t", reading(2000, 51))
    assert losses == [("t", "a:1", 1949)]


def test_a_recreated_channel_starts_from_zero():
    w, losses = watch()
    w.observe("a:1", "t", reading(500, 500))
    w.observe("a:1", "t", reading(800, 800, clients=(("127.0.0.1:2", 200),)))  # our connection came back
    w.observe("a:1", "t", reading(30, 30, clients=(("127.0.0.1:2", 200),)))
    w.observe("a:1", "t", reading(40, 40, clients=(("127.0.0.1:2", 200),)))
    assert losses == []


NEW_CONNECTION = (("127.0.0.1:2", 200),)


def test_a_channel_made_anew_by_the_same_nsqd_after_a_drop_is_a_loss_of_unknown_size():
    # Issue 23, finding 1: after a stall past nsqd's heartbeat timeout, nsqd
    # dropped the node's connection and deleted its channel with what it held;
    # the new channel's counts began at zero and the loss went unreported.
    w, losses = watch()
    w.observe("a:1", "t", reading(500, 450, depth=50), started=1000)
    w.dropped("t", "a:1")
    w.observe("a:1", "t", reading(30, 30, clients=NEW_CONNECTION), started=1000)
    w.observe("a:1", "t", reading(40, 40, clients=NEW_CONNECTION), started=1000)
    assert losses == [("t", "a:1", 0)]


def test_a_drop_is_no_loss_when_the_channel_survived():
    w, losses = watch()
    w.observe("a:1", "t", reading(500, 500, clients=(("127.0.0.1:1", 100),)), started=1000)
    w.dropped("t", "a:1")   # nsqd had not noticed yet: the old connection is still listed with the new one
    w.observe("a:1", "t", reading(600, 600, clients=(("127.0.0.1:1", 100), ("127.0.0.1:2", 200))), started=1000)
    assert losses == []
    # An nsqd never read before the drop: a loss all the same.
    w.dropped("t", "c:1")
    w.observe("c:1", "t", reading(5, 5, clients=NEW_CONNECTION), started=3000)
    assert losses == [("t", "c:1", 0)]


def test_a_restarted_nsqd_is_a_loss_of_unknown_size():
    # Issue 23: what was published to the new instance before this node
    # subscribed there went to the channels that existed then (another
    # node's, or the first one back), and what the old instance held for this
    # node died with it. Its counts start afresh and say nothing of either.
    w, losses = watch()
    w.observe("b:1", "t", reading(500, 500), started=1000)
    w.dropped("t", "b:1")
    w.observe("b:1", "t", reading(5, 5, clients=NEW_CONNECTION), started=2000)
    assert losses == [("t", "b:1", 0)]
    w.observe("b:1", "t", reading(9, 9, clients=NEW_CONNECTION), started=2000)
    assert len(losses) == 1            # once per new channel
    # A new connection that was not preceded by a drop is not one (the node's start).
    w.observe("d:1", "t", reading(5, 5, clients=NEW_CONNECTION), started=2000)
    assert len(losses) == 1


def test_unsure_from_a_drop_until_the_channel_it_reconnected_to_is_read():
    # Issue 23: a node that reconnected delivered what came after a loss with
    # stream positions before it knew of the loss; told a moment later, its
    # clients recovered from those positions on a node that vouched for them,
    # and never learnt what they had missed.
    settled = []
    losses = []
    w = ChannelWatch(channel="n#ephemeral", topics=["t"], connected=lambda: ["b:1"],
                     on_loss=lambda topic, nsqd, n: losses.append(n), lookupd_http_addresses=[],
                     on_settled=lambda: settled.append(len(losses)))
    w.observe("b:1", "t", reading(500, 500), started=1000)
    assert not w.unsure
    w.dropped("t", "b:1")
    assert w.unsure
    w.settle_overdue(time.monotonic())                 # back, not read yet
    assert w.unsure and settled == []
    w.observe("b:1", "t", reading(5, 5, clients=NEW_CONNECTION), started=2000)
    assert not w.unsure and losses == [0] and settled == [1]   # the loss is told before positions resume


def test_a_drop_never_read_after_the_reconnect_counts_as_a_loss():
    losses, settled = [], []
    connected = ["b:1"]
    w = ChannelWatch(channel="n#ephemeral", topics=["t"], connected=lambda: connected,
                     on_loss=lambda topic, nsqd, n: losses.append(nsqd), lookupd_http_addresses=[],
                     on_settled=lambda: settled.append(1))
    now = time.monotonic()
    w.dropped("t", "b:1")
    w.settle_overdue(now)
    w.settle_overdue(now + 5)
    assert w.unsure and losses == []
    w.settle_overdue(now + 10)                         # its stats could not be read: a loss
    assert not w.unsure and losses == ["b:1"] and settled == [1]
    # An nsqd that stays away: after the limit what it held is a loss, told once,
    # and positions go on; when it is back, its channel is read as after any drop.
    connected.clear()
    w.dropped("t", "b:1")
    w.settle_overdue(time.monotonic() + 1)
    assert w.unsure
    w.settle_overdue(time.monotonic() + 10)
    w.settle_overdue(time.monotonic() + 20)
    assert not w.unsure and losses == ["b:1", "b:1"]
    connected.append("b:1")
    w.settle_overdue(time.monotonic() + 21)
    assert w.unsure
    w.observe("b:1", "t", reading(3, 3, clients=NEW_CONNECTION), started=3000)
    assert not w.unsure and losses == ["b:1", "b:1", "b:1"]
