"""Presence in process: two nodes' tables on a fake clock, the messages
between them handed over by the test (so it can lose, repeat and reorder
them as NSQ may), and the client protocol's presence commands."""
from __future__ import annotations

import pytest

from auth import connection_token
from gateway.core import vocabulary
from gateway.core.session import ServerSubscription
from gateway.protocols.centrifugo.protobuf_codec import split_delimited, uvarint
from gateway.protocols.centrifugo.schema import CLASSES
from gateway.cluster.presence import KIND_DELTA, KIND_SNAPSHOT
from tests.inprocess import WIRE_PROTOBUF, FakeClock, frame, make_host, open_session
from tests.stack import SECRET

PRESENCE = dict(presence=["room:*", "lobby"], join_leave=["room:*"], public_channels="room:*,lobby,news")


def connect(host, user: str, *channels: str, info=None, wire=None):
    session, transport = open_session(host, wire) if wire else open_session(host)
    token = connection_token(SECRET, user, info=info) if info is not None else connection_token(SECRET, user)
    commands = [{"id": 1, "connect": {"token": token}}]
    commands += [{"id": 2 + i, "subscribe": {"channel": c}} for i, c in enumerate(channels)]
    if wire is None:
        session.handle_frame(frame(*commands))
        transport.messages()
    else:
        session.handle_frame(b"".join(_protobuf_command(c) for c in commands))
        transport.sent.clear()
    return session, transport


def _protobuf_command(command: dict) -> bytes:
    cmd = CLASSES["Command"](id=command["id"])
    method = next(k for k in command if k != "id")
    target = getattr(cmd, method)
    target.SetInParent()
    for key, value in command[method].items():
        setattr(target, key, value)
    data = cmd.SerializeToString()
    return uvarint(len(data)) + data


def hand_over(src, dst, name: str, *, snapshot: bool = False) -> list[dict]:
    """What ``src`` would send (its deltas, or a snapshot), delivered to ``dst``."""
    presence = src.presence
    kind = KIND_SNAPSHOT if snapshot else KIND_DELTA
    messages = [{"kind": kind, "from": name, **fields}
                for fields in (presence.snapshot() if snapshot else presence.take_deltas())]
    for message in messages:
        dst.presence.receive(message)
    return messages


def pushes(transport, kind: str) -> list[dict]:
    return [m["push"] for m in transport.messages() if kind in m.get("push", {})]


def test_local_presence_counts_and_join_leave_pushes():
    host = make_host(**PRESENCE)
    alice, alice_t = connect(host, "alice", "room:1", info={"name": "Alice"})
    bob, _ = connect(host, "bob", "room:1")
    bob2, _ = connect(host, "bob", "room:1")
    assert host.presence.stats("room:1") == (3, 2)
    # Alice saw both of Bob's connections join, with their ClientInfo.
    joins = pushes(alice_t, "join")
    assert [j["join"]["info"]["user"] for j in joins] == ["bob", "bob"]
    assert joins[0]["channel"] == "room:1" and joins[0]["join"]["info"]["client"] == bob.client_id
    clients = host.presence.clients("room:1")
    assert clients[alice.client_id] == {"user": "alice", "client": alice.client_id, "conn_info": b'{"name":"Alice"}'}
    bob2.handle_frame(frame({"id": 9, "unsubscribe": {"channel": "room:1"}}))
    bob.close(vocabulary.SHUTDOWN)
    assert host.presence.stats("room:1") == (1, 1)
    assert [p["leave"]["info"]["client"] for p in pushes(alice_t, "leave")] == [bob2.client_id, bob.client_id]


def test_untracked_channels_cost_nothing():
    host = make_host(**PRESENCE)
    connect(host, "carol", "news")
    assert host.presence.channels == {} and host.presence.entries == 0
    assert host.presence.take_deltas() == []


def test_two_nodes_see_each_others_clients_and_push_their_joins():
    a, b = make_host(**PRESENCE), make_host(**PRESENCE)
    alice, _ = connect(a, "alice", "room:1", info={"n": 1})
    bob, bob_t = connect(b, "bob", "room:1")
    hand_over(a, b, "A")
    hand_over(b, a, "B")
    for host in (a, b):
        assert host.presence.stats("room:1") == (2, 2)
        assert set(host.presence.clients("room:1")) == {alice.client_id, bob.client_id}
    # Bob's node pushed Alice's join (from node A) to Bob.
    assert [p["join"]["info"] for p in pushes(bob_t, "join")] == [
        {"user": "alice", "client": alice.client_id, "conn_info": {"n": 1}}]
    # A repeated message changes nothing (NSQ delivers at least once).
    alice.handle_frame(frame({"id": 5, "unsubscribe": {"channel": "room:1"}}))
    sent = hand_over(a, b, "A")
    for message in sent:
        b.presence.receive(message)
    assert b.presence.stats("room:1") == (1, 1)
    assert [p["leave"]["info"]["user"] for p in pushes(bob_t, "leave")] == ["alice"]


def test_snapshots_repair_a_lost_join_and_a_lost_leave_within_two_rounds():
    a, b = make_host(**PRESENCE), make_host(**PRESENCE)
    alice, _ = connect(a, "alice", "room:1")
    a.presence.take_deltas()                       # the join is lost
    assert b.presence.stats("room:1") == (0, 0)
    hand_over(a, b, "A", snapshot=True)            # round 1
    assert b.presence.stats("room:1") == (1, 1)
    alice.handle_frame(frame({"id": 5, "unsubscribe": {"channel": "room:1"}}))
    a.presence.take_deltas()                       # the leave is lost
    hand_over(a, b, "A", snapshot=True)            # round 2: without Alice
    b.presence.sweep()
    assert b.presence.stats("room:1") == (1, 1)    # one missed round is not enough
    hand_over(a, b, "A", snapshot=True)            # round 3
    b.presence.sweep()
    assert b.presence.stats("room:1") == (0, 0)


def test_a_silent_node_leaves_presence_after_the_ttl():
    clock = FakeClock()
    a = make_host(clock, **PRESENCE, presence_interval=1.0, presence_ttl=3.0)
    b = make_host(clock, **PRESENCE, presence_interval=1.0, presence_ttl=3.0)
    connect(a, "alice", "room:1")
    _, bob_t = connect(b, "bob", "room:1")
    hand_over(a, b, "A")
    assert b.presence.stats("room:1") == (2, 2)
    pushes(bob_t, "join")
    clock.advance(2.9)
    b.presence.expire_peers()
    assert b.presence.stats("room:1") == (2, 2)
    clock.advance(0.2)                             # 3.1 s since node A last spoke
    b.presence.expire_peers()
    assert b.presence.stats("room:1") == (1, 1)
    assert [p["leave"]["info"]["user"] for p in pushes(bob_t, "leave")] == ["alice"]
    assert len(b.presence.peers) == 0


def test_a_restarted_node_replaces_its_old_incarnation_at_once():
    a, b = make_host(**PRESENCE), make_host(**PRESENCE)
    connect(a, "alice", "room:1")
    hand_over(a, b, "A")
    a2 = make_host(**PRESENCE)                     # node A again, with a new uid
    connect(a2, "alice", "room:1")
    hand_over(a2, b, "A")
    assert b.presence.stats("room:1") == (1, 1)
    hand_over(a, b, "A", snapshot=True)            # a late message of the old one changes nothing
    assert b.presence.stats("room:1") == (1, 1)


def silence(clock, host, seconds: float) -> None:
    """``seconds`` pass while ``host`` runs (its checks every 0.25 s) and hears nothing."""
    for _ in range(round(seconds / 0.25)):
        clock.advance(0.25)
        host.presence.expire_peers()


def test_a_node_silent_past_the_ttl_is_taken_back_when_it_speaks_again():
    # Issue 23, finding 2: a node paused longer than --presence-ttl (SIGSTOP, a
    # GC pause, a VM freeze) was retired for good, though alive and talking.
    clock = FakeClock()
    a = make_host(clock, **PRESENCE, presence_interval=1.0, presence_ttl=3.0)
    b = make_host(clock, **PRESENCE, presence_interval=1.0, presence_ttl=3.0)
    alice, _ = connect(a, "alice", "room:1")
    _, bob_t = connect(b, "bob", "room:1")
    hand_over(a, b, "A")
    silence(clock, b, 3.25)                        # node A is paused: B takes it for gone
    assert b.presence.stats("room:1") == (1, 1) and len(b.presence.peers) == 0
    assert [p["leave"]["info"]["user"] for p in pushes(bob_t, "leave")] == ["alice"]
    hand_over(a, b, "A", snapshot=True)            # A resumes: its snapshot goes out
    assert b.presence.stats("room:1") == (2, 2) and len(b.presence.peers) == 1
    assert [p["join"]["info"]["client"] for p in pushes(bob_t, "join")] == [alice.client_id]
    # And it is judged by its silence again from then on.
    silence(clock, b, 3.25)
    assert b.presence.stats("room:1") == (1, 1)


def test_a_new_incarnation_still_retires_a_silent_one_for_good():
    clock = FakeClock()
    a = make_host(clock, **PRESENCE, presence_interval=1.0, presence_ttl=3.0)
    b = make_host(clock, **PRESENCE, presence_interval=1.0, presence_ttl=3.0)
    connect(a, "alice", "room:1")
    hand_over(a, b, "A", snapshot=True)
    silence(clock, b, 3.25)                        # A went silent...
    a2 = make_host(clock, **PRESENCE, presence_interval=1.0, presence_ttl=3.0)
    connect(a2, "carol", "room:1")
    hand_over(a2, b, "A", snapshot=True)           # ...and node A restarted
    hand_over(a, b, "A", snapshot=True)            # a late message of the old one changes nothing
    assert b.presence.stats("room:1") == (1, 1)
    assert [peer.uid for peer in b.presence.peers] == [a2.presence.uid]


def test_a_node_that_resumes_reads_its_peers_before_it_judges_their_silence():
    # Issue 23, finding 2: a node resumed from a pause longer than the TTL
    # dropped every peer at once, before reading what they said meanwhile.
    clock = FakeClock()
    a = make_host(clock, **PRESENCE, presence_interval=1.0, presence_ttl=3.0)
    b = make_host(clock, **PRESENCE, presence_interval=1.0, presence_ttl=3.0)
    connect(a, "alice", "room:1")
    _, bob_t = connect(b, "bob", "room:1")
    hand_over(a, b, "A", snapshot=True)
    b.presence.expire_peers()
    clock.advance(17.0)                            # B is stopped for 17 s; A talks on
    b.presence.expire_peers()                      # B resumes: its timer runs first...
    assert b.presence.stats("room:1") == (2, 2)
    hand_over(a, b, "A", snapshot=True)            # ...then it reads A's messages
    assert b.presence.stats("room:1") == (2, 2) and not pushes(bob_t, "leave")
    # A node that really went silent meanwhile still goes, a TTL after its
    # last word as this node counts it.
    silence(clock, b, 2.75)
    assert b.presence.stats("room:1") == (2, 2)
    silence(clock, b, 0.5)
    assert b.presence.stats("room:1") == (1, 1)


def test_past_the_cap_subscribers_are_left_out_and_counted():
    host = make_host(**PRESENCE, presence_max_clients=2)
    for user in ("u1", "u2", "u3"):
        connect(host, user, "room:1")
    assert host.presence.stats("room:1") == (2, 2)
    assert host.metrics.presence_refused._value.get() == 1
    assert len(host.hub.subscribers("room:1")) == 3   # the subscription itself works


@pytest.mark.parametrize("wire", [None, WIRE_PROTOBUF], ids=["json", "protobuf"])
def test_presence_commands_answer_subscribers_where_presence_is_kept(wire):
    host = make_host(**PRESENCE)
    alice, transport = connect(host, "alice", "room:1", "news", info={"a": True}, wire=wire)
    requests = [{"id": 10, "presence": {"channel": "room:1"}}, {"id": 11, "presence_stats": {"channel": "room:1"}},
                {"id": 12, "presence": {"channel": "news"}}, {"id": 13, "presence_stats": {"channel": "room:2"}}]
    if wire is None:
        alice.handle_frame(frame(*requests))
        replies = {m["id"]: m for m in transport.messages()}
        assert replies[10]["presence"] == {"presence": {alice.client_id: {
            "user": "alice", "client": alice.client_id, "conn_info": {"a": True}}}}
        assert replies[11]["presence_stats"] == {"num_clients": 1, "num_users": 1}
        assert replies[12]["error"]["code"] == 108
        assert replies[13]["error"]["code"] == 103
    else:
        alice.handle_frame(b"".join(_protobuf_command(r) for r in requests))
        replies = {}
        for message in split_delimited(b"".join(transport.sent)):
            reply = CLASSES["Reply"].FromString(message)
            replies[reply.id] = reply
        info = replies[10].presence.presence[alice.client_id]
        assert (info.user, info.client, info.conn_info) == ("alice", alice.client_id, b'{"a":true}')
        assert (replies[11].presence_stats.num_clients, replies[11].presence_stats.num_users) == (1, 1)
        assert replies[12].error.code == 108 and replies[13].error.code == 103


def test_a_channel_info_over_the_limit_is_left_out_on_every_node_alike():
    """A server API subscribe may carry any ``info``; past INFO_LIMIT the other
    nodes leave it out of presence, so this node does too (one view)."""
    from gateway.cluster.presence import INFO_LIMIT
    a, b = make_host(**PRESENCE), make_host(**PRESENCE)
    big, small = connect(a, "big")[0], connect(a, "small")[0]
    assert big.server_subscribe("room:1", ServerSubscription(chan_info=b'"' + b"x" * INFO_LIMIT + b'"')) is None
    assert small.server_subscribe("room:1", ServerSubscription(chan_info=b'{"seat":1}')) is None
    hand_over(a, b, "A")
    for host in (a, b):
        clients = host.presence.clients("room:1")
        assert "chan_info" not in clients[big.client_id]
        assert clients[small.client_id]["chan_info"] == b'{"seat":1}'


def test_a_remote_subscriber_past_the_cap_is_counted_by_its_own_node_only():
    a = make_host(**PRESENCE, presence_max_clients=1)
    b = make_host(**PRESENCE, presence_max_clients=1)
    connect(a, "alice", "room:1")
    connect(b, "bob", "room:1")
    for _ in range(3):   # snapshots come again and again
        hand_over(b, a, "B", snapshot=True)
    assert a.presence.stats("room:1") == (1, 1)
    assert a.metrics.presence_refused._value.get() == 0


def test_incarnation_ids_sort_by_start_and_are_uuid7():
    import uuid
    from gateway.cluster.peers import incarnation_id, started_before
    early, late = incarnation_id(now_ms=1_796_000_000_000), incarnation_id(now_ms=1_796_000_000_001)
    assert uuid.UUID(early).version == 7 and uuid.UUID(late).variant == uuid.RFC_4122
    assert started_before(early, late) and not started_before(late, early)
    assert not started_before(str(uuid.uuid4()), late)   # an id of another form is never known older


def test_a_node_that_hears_the_new_incarnation_first_keeps_it_when_the_old_one_drains(caplog):
    # A box whose supervisor was killed: its orphaned workers drain beside the
    # new ones under the same names, and a node started meanwhile heard the
    # new incarnation first. It once took the old one's late words for a
    # restart and retired the new one for good (the lean soak, after node-kill).
    from gateway.cluster.peers import incarnation_id
    clock = FakeClock()
    old = make_host(clock, uid=incarnation_id(now_ms=1_796_000_000_000), **PRESENCE)
    connect(old, "alice", "room:1")
    new = make_host(clock, uid=incarnation_id(now_ms=1_796_000_007_000), **PRESENCE)
    connect(new, "carol", "room:1")
    b = make_host(clock, **PRESENCE)
    hand_over(new, b, "A", snapshot=True)
    hand_over(old, b, "A", snapshot=True)           # the orphan, still draining, speaks
    assert [peer.uid for peer in b.presence.peers] == [new.presence.uid]
    assert b.presence.stats("room:1") == (1, 1)
    # And the orphan's messages under this node's own name are not a peer.
    hand_over(old, new, "unit", snapshot=True)
    assert len(new.presence.peers) == 0 and "speaks under this node's name" not in caplog.text
    # A node started later under the same name is no orphan: a misconfiguration, said in the log.
    namesake = make_host(clock, uid=incarnation_id(now_ms=1_796_000_009_000), **PRESENCE)
    hand_over(namesake, new, "unit", snapshot=True)
    assert len(new.presence.peers) == 0 and caplog.text.count("speaks under this node's name") == 1
    hand_over(namesake, new, "unit", snapshot=True)      # once per incarnation, not per message
    assert caplog.text.count("speaks under this node's name") == 1
