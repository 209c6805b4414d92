"""AnyCable's RPC wire, whispers and explicit presence, in process: the
answer parser against AnyCable's shapes (and the wrong ones), the state
merge, and presence kept across two hosts' tables with its events."""
from __future__ import annotations

import asyncio
import json

import pytest

from auth import connection_token
from gateway.cluster.presence import KIND_DELTA
from gateway.core import vocabulary
from gateway.protocols.cable import rpc
from gateway.protocols.cable.rpc import Garbage, parse_answer
from tests.inprocess import make_host, open_cable
from tests.stack import SECRET

pytestmark = pytest.mark.inprocess

RPC = dict(cable_rpc_url="http://127.0.0.1:1/_anycable", public_channels="room")
ROOM = json.dumps({"channel": "$pubsub", "stream_name": "room"})
EXT = "actioncable-v1-ext-json"


def test_answers_are_read_as_go_writes_them():
    answer = parse_answer({
        "status": 1, "identifiers": '{"current_user":"gid://app/User/1"}',
        "transmissions": ['{"type":"welcome"}'], "env": {"cstate": {"a": "1"}, "istate": {"$w": "s"}},
        "streams": ["s"], "stopped_streams": ["t"], "stop_streams": False, "disconnect": False,
        "presence": {"type": "join", "id": "1", "info": '{"name":"A"}'}})
    assert answer.status == rpc.SUCCESS and answer.identifiers == '{"current_user":"gid://app/User/1"}'
    assert answer.transmissions == (b'{"type":"welcome"}',) and answer.streams == ("s",)
    assert answer.presence == rpc.Presence("join", "1", b'{"name":"A"}')
    # ERROR is 0, and Go leaves a zero value out: an empty answer is an error.
    assert parse_answer({}).status == rpc.ERROR
    assert parse_answer({"status": 2, "error_msg": "nope"}).error == "nope"


@pytest.mark.parametrize("body", [
    {"status": "SUCCESS"},                    # the proto3 JSON mapping, not Go's
    {"status": 1, "transmissions": [{"type": "welcome"}]},   # a transmission is a JSON string
    {"status": 1, "transmissions": ["not json"]},
    {"status": 1, "streams": "chat"},
    {"status": 1, "env": {"istate": {"n": 1}}},
    {"status": 1, "disconnect": "yes"},
    {"status": 1, "presence": {"type": "join"}},
])
def test_answers_of_the_wrong_shape_are_refused(body):
    with pytest.raises(Garbage):
        parse_answer(body)


def test_state_changes_merge_and_an_empty_value_deletes():
    state = {"a": "1", "b": "2"}
    rpc.merge(state, {"a": "", "c": "3"})
    assert state == {"b": "2", "c": "3"}


def test_the_disconnect_body_encodes_each_istate_as_a_json_string():
    body = json.loads(rpc.disconnect_body('{"u":1}', ["i1"], "http://h/cable", {"cookie": "c"}, None,
                                          {"i1": {"$w": "s"}, "i2": {}}))
    assert body == {"identifiers": '{"u":1}', "subscriptions": ["i1"],
                    "env": {"url": "http://h/cable", "headers": {"cookie": "c"}, "istate": {"i1": '{"$w":"s"}'}}}


def subscribed(host, user: str, subprotocol: str = EXT):
    session, transport = open_cable(host, connection_token(SECRET, user), subprotocol)
    session.handle_frame(json.dumps({"command": "subscribe", "identifier": ROOM}))
    transport.messages()
    return session, transport


def deliver(src, dst) -> None:
    for fields in src.presence.take_deltas():
        dst.presence.receive({"kind": KIND_DELTA, "from": "src", **fields})


def presence_info(session, transport) -> dict:
    session.handle_frame(json.dumps({"command": "presence", "identifier": ROOM}))
    answer, = [m for m in transport.messages() if m.get("type") == "presence"]
    return answer["message"]


def test_explicit_presence_counts_ids_on_every_node_and_sends_join_and_leave_once():
    a, b = make_host(**RPC), make_host(**RPC)
    alice, alice_t = subscribed(a, "alice")
    tab, _ = subscribed(a, "alice")
    bob, bob_t = subscribed(b, "bob")
    for session in (alice, tab):
        session.handle_frame(json.dumps({"command": "join", "identifier": ROOM,
                                         "presence": {"id": "alice", "info": {"name": "Alice"}}}))
    bob.handle_frame(json.dumps({"command": "join", "identifier": ROOM, "presence": {"id": 7}}))
    deliver(a, b)
    deliver(b, a)
    # One join per id, on every node (two tabs of alice are one record).
    joins = [m["message"] for m in bob_t.messages() if m.get("type") == "presence"]
    assert joins == [{"type": "join", "id": "7"}, {"type": "join", "id": "alice", "info": {"name": "Alice"}}]
    alice_t.messages()
    records = [{"id": "7"}, {"id": "alice", "info": {"name": "Alice"}}]
    for session, transport in ((alice, alice_t), (bob, bob_t)):
        info = presence_info(session, transport)
        assert info["type"] == "info" and info["total"] == 2
        assert sorted(info["records"], key=lambda r: r["id"]) == records
    alice.handle_frame(json.dumps({"command": "leave", "identifier": ROOM}))
    deliver(a, b)
    assert [m for m in bob_t.messages() if m.get("type") == "presence"] == []   # the other tab is still there
    tab.close(vocabulary.SHUTDOWN)
    deliver(a, b)
    assert [m["message"] for m in bob_t.messages() if m.get("type") == "presence"] == [
        {"type": "leave", "id": "alice"}]
    assert presence_info(bob, bob_t)["total"] == 1


def test_presence_without_a_presence_stream_or_table_is_answered_with_an_error():
    host = make_host()   # no --cable-rpc-url: no explicit presence kept
    session, transport = subscribed(host, "alice")
    assert presence_info(session, transport) == {"type": "error", "total": 0}
    session.handle_frame(json.dumps({"command": "presence", "identifier": "{\"channel\":\"Other\"}"}))
    assert transport.messages() == [{"type": "presence", "identifier": "{\"channel\":\"Other\"}",
                                     "message": {"type": "error", "total": 0}}]


def test_a_whisper_is_published_to_every_node_excluding_its_sender():
    host = make_host(cable_whisper=True, **RPC)
    sent: list[bytes] = []

    async def publish(envelope: bytes) -> bool:
        sent.append(envelope)
        return True

    async def scenario():
        host.publish = publish
        session, _ = subscribed(host, "alice")
        session.handle_frame(json.dumps({"command": "whisper", "identifier": ROOM, "data": {"typing": True}}))
        await asyncio.sleep(0)
        return session

    session = asyncio.run(scenario())
    assert [json.loads(e) for e in sent] == [{"channel": "room", "data": {"typing": True}, "exclude": session.sid,
                                              "skip_history": True}]
    assert host.sockets[session.sid] is session


def test_hostile_presence_and_whisper_input_is_refused_with_a_reason_and_nothing_kept():
    host = make_host(cable_whisper=True, max_message_bytes=4096, max_queue_bytes=65536, **RPC)
    sent: list[bytes] = []

    async def publish(envelope: bytes) -> bool:
        sent.append(envelope)
        return True

    async def scenario():
        host.publish = publish
        session, transport = subscribed(host, "mallory")
        for command in (
            {"command": "join", "identifier": ROOM, "presence": {"id": "x" * 300}},
            {"command": "join", "identifier": ROOM, "presence": {"id": ["not", "an", "id"]}},
            {"command": "join", "identifier": ROOM, "presence": "nope"},
            {"command": "join", "identifier": ROOM + " ", "presence": {"id": "1"}},     # no such subscription
            {"command": "whisper", "identifier": ROOM, "data": "x" * 5000},
            {"command": "whisper", "identifier": ROOM},
            {"command": "leave", "identifier": ROOM},
            {"command": "message", "identifier": ROOM, "data": {"action": "speak"}},
        ):
            session.handle_frame(json.dumps(command))
        await asyncio.sleep(0)
        return session, transport

    session, transport = asyncio.run(scenario())
    assert sent == [] and transport.messages() == []
    assert host.presence.explicit_info("room") == (0, [])
    ignored = {s.labels["method"]: s.value for metric in host.metrics.registry.collect()
               if metric.name == "pushgate_unavailable_commands" for s in metric.samples
               if s.name.endswith("_total")}
    assert ignored == {"cable_join": 4, "cable_whisper": 2, "cable_leave": 1, "cable_message": 1}
    assert session.state == "connected"
