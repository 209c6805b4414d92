"""The decisions behind the backend's events, in process on a fake clock
(gateway/cluster/transitions.py): who owns a key, once-per-transition with a
grace, what a node's silence does, receipts' single outcome. A cluster is
simulated as several replicas of the same tables fed the same changes, as
the control bus feeds the nodes, with the test choosing the order."""
from __future__ import annotations

import pytest

from gateway.cluster.transitions import Holders, Receipts, Transitions, owner
from gateway.config import ConfigError, check, resolve
from gateway.nsq.envelope import BadMessage, parse_envelope
from tests.inprocess import FakeClock


def test_the_owner_is_one_of_the_nodes_and_only_a_leaving_nodes_keys_move():
    nodes = ["n1", "n2", "n3", "n4"]
    keys = [f"user{i}" for i in range(2000)]
    before = {k: owner(k, nodes) for k in keys}
    assert set(before.values()) == set(nodes)                    # every node owns some
    assert all(owner(k, list(reversed(nodes))) == before[k] for k in keys)   # order does not matter
    after = {k: owner(k, ["n1", "n2", "n4"]) for k in keys}
    moved = {k for k in keys if after[k] != before[k]}
    assert moved == {k for k in keys if before[k] == "n3"}
    assert owner("anything", []) is None


class Node:
    """One node's replica of the user tables; it says what it owns."""

    def __init__(self, uid: str, cluster: "Cluster", grace: float):
        self.uid = uid
        self.cluster = cluster
        self.holders = Holders()
        self.states = Transitions(grace=grace, clock=cluster.clock.monotonic, speak=self.speak)

    def speak(self, user: str, online: bool) -> None:
        if owner(user, self.cluster.live) == self.uid:
            self.cluster.said.append((self.uid, user, "online" if online else "offline"))

    def add(self, origin: str, user: str) -> None:
        if self.holders.add(origin, user):
            self.states.occupied(user)

    def remove(self, origin: str, user: str) -> None:
        if self.holders.remove(origin, user):
            self.states.emptied(user)

    def gone(self, origin: str, silent: bool) -> None:
        for user in self.holders.drop_origin(origin):
            self.states.emptied(user, immediate=silent)


class Cluster:
    def __init__(self, *uids: str, grace: float = 3.0):
        self.clock = FakeClock()
        self.live = list(uids)
        self.nodes = {uid: Node(uid, self, grace) for uid in uids}
        self.said: list[tuple[str, str, str]] = []

    def up(self, origin: str, user: str) -> None:
        for node in self.nodes.values():
            node.add(origin, user)

    def down(self, origin: str, user: str) -> None:
        for node in self.nodes.values():
            node.remove(origin, user)

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        for node in self.nodes.values():
            node.states.tick()

    def kill(self, uid: str) -> None:
        self.live.remove(uid)
        del self.nodes[uid]
        for node in self.nodes.values():
            node.gone(uid, silent=True)


def test_first_connection_anywhere_is_one_online_and_last_gone_one_offline_after_the_grace():
    c = Cluster("a", "b", "c")
    c.up("a", "u")
    c.up("b", "u")          # a second node: no transition
    assert [(user, what) for _, user, what in c.said] == [("u", "online")]
    assert c.said[0][0] == owner("u", c.live)
    c.down("a", "u")
    c.down("b", "u")
    c.tick(2.9)
    assert len(c.said) == 1                     # still within the grace
    c.tick(0.2)
    assert [(user, what) for _, user, what in c.said] == [("u", "online"), ("u", "offline")]
    c.tick(10)
    assert len(c.said) == 2


def test_a_reload_within_the_grace_on_another_node_is_no_transition_in_either_order():
    c = Cluster("a", "b")
    c.up("a", "u")
    c.down("a", "u")
    c.tick(1)
    c.up("b", "u")                               # back, on the other node, within the grace
    c.tick(10)
    c.up("b", "v")
    c.up("a", "v")                               # the new tab's up overtakes the old tab's down
    c.down("b", "v")
    c.tick(10)
    assert sorted((user, what) for _, user, what in c.said) == [("u", "online"), ("v", "online")]


def test_a_silent_nodes_users_go_offline_at_once_and_others_stay_and_its_keys_move():
    c = Cluster("a", "b", "c")
    users = [f"u{i}" for i in range(50)]
    for user in users:
        c.up("b", user)
    c.up("a", "u0")                              # u0 has a tab on a too
    c.said.clear()
    c.kill("b")                                  # its peers dropped it after the TTL
    c.tick(0.1)                                  # no grace on top
    offline = sorted(user for _, user, what in c.said if what == "offline")
    assert offline == sorted(users[1:])
    assert all(uid == owner(user, ["a", "c"]) for uid, user, _ in c.said)


def test_an_owner_that_dies_during_the_grace_leaves_its_offline_to_the_new_owner():
    c = Cluster("a", "b", "c")
    user = next(u for u in (f"u{i}" for i in range(100)) if owner(u, ["a", "b", "c"]) == "c")
    c.up("a", user)
    c.down("a", user)
    c.tick(1)
    c.kill("c")                                  # the owner: its replica's timer dies with it
    c.tick(2.5)
    assert [(uid, what) for uid, u, what in c.said if u == user] == [("c", "online"), (owner(user, ["a", "b"]),
                                                                                       "offline")]


def test_holders_drop_what_a_node_confirmed_in_neither_of_its_last_two_rounds():
    h = Holders()
    assert h.snapshot("b", 1, ["x", "y"]) == ["x", "y"]
    assert h.snapshot("b", 2, ["x"]) == []
    assert h.sweep("b") == []                    # y was in round 1, still within two rounds
    assert h.snapshot("b", 3, ["x"]) == []
    assert h.sweep("b") == ["y"]                 # a lost "down" repaired
    assert h.held("x") and not h.held("y")
    h.add("a", "x")
    assert h.drop_origin("b") == []              # a still holds x
    assert h.drop_origin("a") == ["x"]


def test_receipts_yield_one_undelivered_after_the_timeout_and_none_when_some_node_delivered():
    clock = FakeClock()
    said: list[tuple[str, str]] = []
    r = Receipts(timeout=5, clock=clock.monotonic, undelivered=lambda i, u: said.append((i, u)), limit=3)
    r.expect("m1", "u")
    r.expect("m1", "u")                          # read twice (NSQ's at-least-once): one wait
    r.expect("m2", "u")
    r.delivered("m3", "v")                       # another node's report before this node reads m3
    r.expect("m3", "v")
    clock.advance(4)
    r.delivered("m2", "u")
    assert r.tick() == 0
    clock.advance(1.1)
    assert r.tick() == 1
    assert said == [("m1", "u")]
    clock.advance(100)
    r.tick()
    assert said == [("m1", "u")] and not r.waiting and not r.delivered_at
    for i in range(5):                           # past the limit: not followed, counted
        r.expect(f"x{i}", "u")
    assert len(r.waiting) == 3 and r.refused == 2


def test_a_receipted_envelope_needs_an_id_and_a_boolean():
    delivery = parse_envelope(b'{"user": 7, "id": "m", "receipt": true, "data": 1}')
    assert delivery.receipt and delivery.channels == ("#7",) and delivery.id == "m"
    assert not parse_envelope(b'{"user": 7, "data": 1}').receipt
    with pytest.raises(BadMessage, match="needs an"):
        parse_envelope(b'{"user": 7, "receipt": true, "data": 1}')
    with pytest.raises(BadMessage, match="true or false"):
        parse_envelope(b'{"user": 7, "id": "m", "receipt": "yes", "data": 1}')


def test_events_settings_are_checked():
    import argparse

    from gateway.config import add_arguments

    def settings(*argv: str):
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        s = resolve(parser.parse_args(["--jwt-secret=" + "x" * 32, "--nsqd-tcp-address=127.0.0.1:4150", *argv]),
                    environ={})
        check(s)
        return s
    assert settings().events_topic is None
    s = settings("--events-topic=ev", "--events-channels=chat:*", "--offline-grace=0")
    assert s.events_channels == ["chat:*"] and s.offline_grace == 0
    with pytest.raises(ConfigError, match="--events-channels: needs --events-topic"):
        settings("--events-channels=chat:*")
    with pytest.raises(ConfigError, match="--events-topic: must differ"):
        settings("--events-topic=pushgate")


def test_the_events_queue_never_waits_drops_past_its_bound_and_keeps_a_batch_nsqd_did_not_take():
    import asyncio

    from gateway.nsq.outbox import Outbox
    from tests.helpers import wait_for
    from tests.stack import free_port

    dropped: list[tuple[str, int]] = []

    async def scenario():
        # An nsqd that is not there: every /mpub fails to connect.
        outbox = Outbox(http_address=f"http://127.0.0.1:{free_port()}", topic="events", limit=3,
                        on_drop=lambda reason, count: dropped.append((reason, count)))
        outbox.start()
        assert [outbox.put(b"%d" % i) for i in range(5)] == [True, True, True, False, False]
        await wait_for(lambda: outbox.failures >= 2, what="two failed tries")   # the batch stays queued
        assert list(outbox.queue) == [b"0", b"1", b"2"]
        await outbox.close(timeout=1.0)          # nsqd still away: what is left is counted, not kept
        return outbox
    outbox = asyncio.run(scenario())
    assert dropped[:2] == [("full", 1), ("full", 1)]
    assert sum(count for reason, count in dropped if reason == "nsqd") == 3
    assert outbox.published == 0


def test_the_python_bridge_asks_for_a_receipt_only_with_an_id():
    from pushgate_bridge.envelope import encode

    assert encode({"user": 1, "data": 1, "id": "m", "receipt": True}) == \
        b'{"user":"1","data":1,"id":"m","receipt":true}'
    assert encode({"user": 1, "data": 1, "id": "m", "receipt": False}) == b'{"user":"1","data":1,"id":"m"}'
    with pytest.raises(ValueError, match="needs an"):
        encode({"user": 1, "data": 1, "receipt": True})
    with pytest.raises(ValueError, match="true or false"):
        encode({"user": 1, "data": 1, "id": "m", "receipt": 1})
    from pushgate_bridge import Publisher
    with pytest.raises(ValueError, match="of yours"):   # no made-up id: the caller could not match the receipts
        Publisher(nsqd_http_address="127.0.0.1:1").encode({"user": 1, "data": 1, "receipt": True})
