"""Publication fields in process: the tags filter evaluator against
centrifuge's rules, tags / binary data / publisher info in both codecs and
through the hub (with filtered and unfiltered subscribers of one channel),
the envelope's fields, stale versions, skip_history, the ping RPC and the
channel limit per connection. The same fields with the stock clients
against the real stack: tests/test_publication_fields_stack.py."""
from __future__ import annotations

import base64

import pytest
import ujson

from auth import connection_token
from gateway.core.history import Published
from gateway.core.hub import Hub
from gateway.core.metrics import Metrics
from gateway.core.session import CLOSED, CONNECTED
from gateway.core.tags import BadFilter, BadTags, check_tags, compile_filter
from gateway.nsq.envelope import BadMessage, parse_envelope
from gateway.nsq.ingest import Ingest, published
from gateway.protocols.centrifugo.json_codec import JSON
from gateway.protocols.centrifugo.protobuf_codec import PROTOBUF
from gateway.protocols.centrifugo.schema import CLASSES
from tests.inprocess import WIRE_JSON, WIRE_PROTOBUF, FakeClock, frame, make_host, open_session
from tests.stack import SECRET
from tests.test_core import pb_messages

Reply = CLASSES["Reply"]


def pb_command(cmd_id: int, kind: str, **fields) -> bytes:
    from gateway.protocols.centrifugo.protobuf_codec import uvarint
    command = CLASSES["Command"](id=cmd_id)
    target = getattr(command, kind)
    target.SetInParent()
    for key, value in fields.items():
        if hasattr(value, "SerializeToString"):  # a message field
            getattr(target, key).CopyFrom(value)
        else:
            setattr(target, key, value)
    raw = command.SerializeToString()
    return uvarint(len(raw)) + raw


def leaf(key, cmp, val="", vals=()):
    node = {"key": key, "cmp": cmp}
    if val:
        node["val"] = val
    if vals:
        node["vals"] = list(vals)
    return node


# --- the filter, as centrifuge's internal/filter evaluates it ---------------------------

@pytest.mark.parametrize("node, tags, expected", [
    (leaf("k", "eq", "a"), {"k": "a"}, True),
    (leaf("k", "eq", "a"), {"k": "b"}, False),
    (leaf("k", "eq", "a"), {}, False),
    (leaf("k", "neq", "a"), {}, True),              # a missing key is "not equal"
    (leaf("k", "neq", "a"), {"k": "a"}, False),
    (leaf("k", "in", vals=("a", "b")), {"k": "b"}, True),
    (leaf("k", "in", vals=("a", "")), {}, True),     # a missing key reads as "" for in / nin
    (leaf("k", "nin", vals=("a",)), {}, True),
    (leaf("k", "nin", vals=("a",)), {"k": "a"}, False),
    (leaf("k", "ex"), {"k": ""}, True),
    (leaf("k", "nex"), {"k": ""}, False),
    (leaf("k", "sw", "ab"), {"k": "abc"}, True),
    (leaf("k", "ew", "bc"), {"k": "abc"}, True),
    (leaf("k", "ct", "b"), {"k": "abc"}, True),
    (leaf("k", "ct", "b"), {}, False),
    (leaf("n", "gt", "10"), {"n": "10.5"}, True),
    (leaf("n", "gt", "10"), {"n": "9"}, False),      # numerically, not as strings
    (leaf("n", "gte", "10"), {"n": "10.0"}, True),
    (leaf("n", "lt", "-1"), {"n": "-2"}, True),
    (leaf("n", "lte", "2"), {"n": "x"}, False),      # not a number: never matches
    (leaf("n", "lt", "x"), {"n": "1"}, False),
    (leaf("n", "lt", "5"), {"n": "NaN"}, False),
    ({"op": "and", "nodes": [leaf("a", "eq", "1"), leaf("b", "eq", "2")]}, {"a": "1", "b": "2"}, True),
    ({"op": "and", "nodes": [leaf("a", "eq", "1"), leaf("b", "eq", "2")]}, {"a": "1"}, False),
    ({"op": "or", "nodes": [leaf("a", "eq", "1"), leaf("b", "eq", "2")]}, {"b": "2"}, True),
    ({"op": "not", "nodes": [leaf("a", "eq", "1")]}, {"a": "1"}, False),
    ({"op": "not", "nodes": [leaf("a", "eq", "1")]}, {}, True),
])
def test_the_filter_matches_as_centrifuge_does(node, tags, expected):
    assert compile_filter(node)(tags) is expected


@pytest.mark.parametrize("node", [
    {}, {"cmp": "eq", "val": "x"}, leaf("k", "eq"), leaf("k", "in"), leaf("k", "eq", "a", ("b",)),
    leaf("k", "in", "a", ("b",)), leaf("k", "ex", "a"), leaf("k", "starts", "a"), leaf("k", "contains", "a"),
    {"op": "and"}, {"op": "or", "nodes": []}, {"op": "not", "nodes": [leaf("a", "ex"), leaf("b", "ex")]},
    {"op": "xor", "nodes": [leaf("a", "ex")]}, {"op": "and", "nodes": [{"cmp": "bogus"}]}, [], "eq",
    {"key": 1, "cmp": "ex"}, leaf("k", "in", vals=(1,)),
])
def test_a_filter_centrifuge_refuses_is_refused(node):
    with pytest.raises(BadFilter):
        compile_filter(node)


def test_a_hostile_filter_is_bounded():
    deep: dict = leaf("a", "ex")
    for _ in range(40):
        deep = {"op": "not", "nodes": [deep]}
    with pytest.raises(BadFilter, match="deeper"):
        compile_filter(deep)
    with pytest.raises(BadFilter, match="nodes"):
        compile_filter({"op": "or", "nodes": [leaf("a", "ex")] * 500})


def test_tags_are_strings_within_bounds():
    assert check_tags({"a": "1"}) == {"a": "1"} and check_tags({}) is None and check_tags(None) is None
    for bad in ({"a": 1}, [1], {"x" * 5000: "y"}, {str(n): "" for n in range(100)}):
        with pytest.raises(BadTags):
            check_tags(bad)


# --- the codecs -------------------------------------------------------------------------

def rich(data: bytes, tags=None, info=None, b64=False):
    obj = {"channel": "c", **({"b64data": base64.b64encode(data).decode()} if b64 else {"data": ujson.loads(data)})}
    if tags:
        obj["tags"] = tags
    if info:
        obj["info"] = info
    return published(parse_envelope(ujson.dumps(obj).encode()))


def test_tags_and_info_in_both_encodings():
    data = rich(b'{"t":1}', tags={"k": "v"}, info={"user": "a", "client": "c1", "conn_info": {"n": 1}})
    assert ujson.loads(JSON.pub_push_full("room", data, 7)) == {"push": {"channel": "room", "pub": {
        "data": {"t": 1}, "info": {"user": "a", "client": "c1", "conn_info": {"n": 1}}, "offset": 7,
        "tags": {"k": "v"}}}}
    pub = Reply.FromString(PROTOBUF.pub_push_full("room", data, 7)[1:]).push.pub
    assert pub.data == b'{"t":1}' and dict(pub.tags) == {"k": "v"} and pub.offset == 7 and pub.info.user == "a"


def test_binary_data_goes_to_protobuf_as_bytes_and_to_json_as_json_or_not_at_all():
    raw = bytes(range(256))
    data = rich(raw, b64=True)
    assert Reply.FromString(PROTOBUF.pub_push_full("room", data, None)[2:]).push.pub.data == raw
    assert JSON.pub_push_full("room", data, None) is None
    as_json = rich(b'{"a": [1,\n 2]}', b64=True)   # valid JSON: JSON clients get it, compact
    assert ujson.loads(JSON.pub_push_full("room", as_json, None)) == {"push": {"channel": "room", "pub": {
        "data": {"a": [1, 2]}}}}
    assert Reply.FromString(PROTOBUF.pub_push_full("room", as_json, None)[1:]).push.pub.data == b'{"a": [1,\n 2]}'


def test_the_envelope_fields_are_checked():
    d = parse_envelope(b'{"channel":"c","data":1,"tags":{"a":"b"},"version":3,"version_epoch":"e"}')
    assert (d.tags, d.version, d.version_epoch, d.plain) == ({"a": "b"}, 3, "e", False)
    assert parse_envelope(b'{"channel":"c","data":1,"id":"x"}').plain
    d = parse_envelope(b'{"channel":"c","b64data":"AAE="}')
    assert (d.data, d.binary, d.json) == (b"\x00\x01", True, None)
    for bad in (b'{"channel":"c","data":1,"tags":{"a":1}}', b'{"channel":"c","b64data":"%%%"}',
                b'{"channel":"c","data":1,"b64data":"AA=="}', b'{"channel":"c","data":1,"version":-1}',
                b'{"channel":"c","data":1,"version":1,"version_epoch":2}', b'{"channel":"c","tags":{}}'):
        with pytest.raises(BadMessage):
            parse_envelope(bad)


# --- through the hub and sessions ----------------------------------------------------------

def connected(host, user, wire=WIRE_JSON):
    session, transport = open_session(host, wire)
    token = connection_token(SECRET, user, now=host.wall())
    session.handle_frame(frame({"id": 1, "connect": {"token": token}}) if wire is WIRE_JSON
                         else pb_command(1, "connect", token=token))
    assert session.state is CONNECTED
    transport.sent.clear()
    return session, transport


def ingest_for(host):
    return Ingest(host.hub, host.metrics, host.history, envelope_topic="pushgate", mapped={},
                  max_message_bytes=65536, max_message_age=30, dedupe_window=100, clock=host.now_ns)


def deliver(host, ingest, envelope: dict, n=[0]) -> int:
    n[0] += 1
    return ingest.handle("pushgate", ujson.dumps(envelope).encode(), host.now_ns() + n[0], "nsqd",
                         b"%016d" % n[0])


def test_a_filtered_subscriber_gets_only_what_its_filter_takes_and_the_others_everything():
    clock = FakeClock()
    host = make_host(clock)
    host.history.continuity_from(clock.ns() - 60 * 10**9)
    ingest = ingest_for(host)
    plain, plain_t = connected(host, "p")
    filtered, filtered_t = connected(host, "f")
    plain.handle_frame(frame({"id": 2, "subscribe": {"channel": "news"}}))
    filtered.handle_frame(frame({"id": 2, "subscribe": {"channel": "news", "tf": leaf("kind", "eq", "goal")}}))
    assert plain_t.messages()[0]["subscribe"] and filtered_t.messages()[0]["subscribe"]
    for n, kind in enumerate(["goal", "foul", None, "goal"]):
        deliver(host, ingest, {"channel": "news", "data": {"n": n}, **({"tags": {"kind": kind}} if kind else {})})
    assert [m["push"]["pub"]["data"]["n"] for m in plain_t.messages()] == [0, 1, 2, 3]
    got = [m["push"]["pub"] for m in filtered_t.messages()]
    assert [p["data"]["n"] for p in got] == [0, 3] and all(p["tags"] == {"kind": "goal"} for p in got)
    # A recovery passes the same filter.
    clock.advance(3)
    again, again_t = connected(host, "f")
    epoch = host.history.top("news", clock.ns())[0]
    first = host.history.publications("news")[0].offset
    again.handle_frame(frame({"id": 2, "subscribe": {"channel": "news", "recover": True, "epoch": epoch,
                                                      "offset": first - 1, "tf": leaf("kind", "neq", "goal")}}))
    result = again_t.messages()[0]["subscribe"]
    assert result["recovered"] and [p["data"]["n"] for p in result["publications"]] == [1, 2]
    # Unsubscribing drops the filter with the subscription.
    filtered.handle_frame(frame({"id": 3, "unsubscribe": {"channel": "news"}}))
    again.handle_frame(frame({"id": 3, "unsubscribe": {"channel": "news"}}))
    assert not host.hub._filters


def test_an_invalid_filter_is_refused_with_107_in_both_encodings_and_the_connection_stays():
    host = make_host()
    js, js_t = connected(host, "j")
    js.handle_frame(frame({"id": 2, "subscribe": {"channel": "news", "tf": {"key": "k", "cmp": "starts",
                                                                             "val": "x"}}}))
    assert js_t.messages() == [{"id": 2, "error": {"code": 107, "message": "bad request"}}]
    pb, pb_t = connected(host, "p", WIRE_PROTOBUF)
    pb.handle_frame(pb_command(2, "subscribe", channel="news", tf=CLASSES["FilterNode"](op="and")))
    assert pb_messages(pb_t)[0].error.code == 107
    pb.handle_frame(pb_command(3, "subscribe", channel="news",
                               tf=CLASSES["FilterNode"](key="k", cmp="in", vals=["a", "b"])))
    assert pb_messages(pb_t)[0].subscribe.recoverable and js.state is CONNECTED and pb.state is CONNECTED


def test_binary_publications_reach_protobuf_exactly_and_close_json_clients_with_3506():
    host = make_host()
    ingest = ingest_for(host)
    js, js_t = connected(host, "j")
    pb, pb_t = connected(host, "p", WIRE_PROTOBUF)
    for session in (js, pb):
        session.handle_frame(frame({"id": 2, "subscribe": {"channel": "news"}}) if session is js
                             else pb_command(2, "subscribe", channel="news"))
    js_t.sent.clear(), pb_messages(pb_t)
    deliver(host, ingest, {"channel": "news", "b64data": base64.b64encode(b"[1, 2]").decode()})
    assert js_t.messages()[0]["push"]["pub"]["data"] == [1, 2]
    assert pb_messages(pb_t)[0].push.pub.data == b"[1, 2]"
    raw = b"\xff\x00binary"
    assert deliver(host, ingest, {"channel": "news", "b64data": base64.b64encode(raw).decode()}) == 1
    assert pb_messages(pb_t)[0].push.pub.data == raw
    assert js.state is CLOSED and tuple(js_t.closed) == (3506, "inappropriate protocol")
    # History keeps the bytes: a JSON client asking for them is closed too, a Protobuf one gets them.
    js2, js2_t = connected(host, "j")
    js2.handle_frame(frame({"id": 2, "subscribe": {"channel": "news"}}, {"id": 3, "history": {"channel": "news",
                                                                                              "limit": 5}}))
    assert js2.state is CLOSED and js2_t.closed.code == 3506
    pb.handle_frame(pb_command(3, "history", channel="news", limit=5))
    assert [p.data for p in pb_messages(pb_t)[0].history.publications] == [b"[1, 2]", raw]


def test_skip_history_and_stale_versions():
    host = make_host()
    ingest = ingest_for(host)
    js, js_t = connected(host, "j")
    js.handle_frame(frame({"id": 2, "subscribe": {"channel": "news"}}))
    js_t.sent.clear()
    deliver(host, ingest, {"channel": "news", "data": "kept"})
    deliver(host, ingest, {"channel": "news", "data": "skipped", "skip_history": True})
    assert [p.data for p in host.history.publications("news")] == [b'"kept"']
    pubs = [m["push"]["pub"] for m in js_t.messages()]
    assert pubs[1] == {"data": "skipped"}   # no offset: it has no place in the stream
    for version, epoch, text in [(2, "", "v2"), (1, "", "v1 late"), (2, "", "v2 again"), (3, "x", "v3"),
                                 (1, "y", "v1 new epoch"), (1, "y", "v1 twice")]:
        deliver(host, ingest, {"channel": "news", "data": text, "version": version, "version_epoch": epoch})
    assert [m["push"]["pub"]["data"] for m in js_t.messages()] == ["v2", "v3", "v1 new epoch"]
    assert host.metrics.nsq_dropped.labels("outdated_version")._value.get() == 3


def test_the_ping_rpc_is_answered_empty_and_other_methods_still_108():
    host = make_host()
    js, js_t = connected(host, "j")
    js.handle_frame(frame({"id": 2, "rpc": {"method": "ping"}}, {"id": 3, "rpc": {"method": "other"}}))
    assert js_t.messages() == [{"id": 2, "rpc": {}}, {"id": 3, "error": {"code": 108, "message": "not available"}}]
    pb, pb_t = connected(host, "p", WIRE_PROTOBUF)
    pb.handle_frame(pb_command(2, "rpc", method="ping"))
    reply = pb_messages(pb_t)[0]
    assert reply.id == 2 and reply.HasField("rpc")


def test_the_channel_limit_counts_the_personal_channel_and_can_be_changed():
    host = make_host(max_channels_per_connection=3)
    js, js_t = connected(host, "j")    # #j is one of the three
    js.handle_frame(frame(*({"id": n, "subscribe": {"channel": f"chat:{n}"}} for n in (2, 3, 4))))
    replies = js_t.messages()
    assert [("error" in r) and r["error"]["code"] for r in replies] == [False, False, 106]
    assert js.channels == {"#j", "chat:2", "chat:3"}
    session, transport = open_session(host, WIRE_JSON)
    session.handle_frame(frame({"id": 1, "connect": {"token": connection_token(
        SECRET, "k", now=host.wall(), channels=["chat:1", "chat:2", "chat:3"])}}))
    assert transport.closed.code == 3505


def test_a_hub_without_filters_or_extras_encodes_once_as_before():
    hub = Hub()
    calls = []

    class Counting:
        binary = False
        ping = b""

        def pub_push(self, channel, data, offset):
            calls.append(data)
            return b"m"

    from gateway.core.wire import WireFormat
    wire = WireFormat("w", Counting(), lambda m: m)

    class Sub:
        def __init__(self):
            self.frames = []
            self.push = self.frames.append
    subs = [Sub() for _ in range(50)]
    for sub in subs:
        hub.subscribe("c", sub, wire)
    hub.set_filter("other", subs[0], compile_filter(leaf("a", "ex")))
    assert hub.publish("c", b"1", 1) == 50 and calls == [b"1"]
    hub.set_filter("c", subs[0], compile_filter(leaf("a", "ex")))
    assert hub.publish("c", b"2", 2) == 49 and calls == [b"1", b"2"]
    tagged = Published(b"3")
    tagged.tags = {"a": "x"}
    Counting.pub_push_full = lambda self, channel, data, offset: calls.append(data) or b"m"
    assert hub.publish("c", tagged, 3) == 50 and len(calls) == 3
    assert Metrics is not None


def test_an_action_cable_client_gets_tagged_and_json_binary_publications_and_is_closed_by_other_bytes():
    from tests.test_cable_core import cable, cable_host, cmd, pubsub
    host = cable_host()
    ingest = ingest_for(host)
    session, transport = cable(host)
    session.handle_frame(cmd("subscribe", pubsub("news")))
    transport.messages()
    deliver(host, ingest, {"channel": "news", "data": {"n": 1}, "tags": {"a": "b"}})
    deliver(host, ingest, {"channel": "news", "b64data": base64.b64encode(b'{"n": 2}').decode()})
    assert [m["message"] for m in transport.messages()] == [{"n": 1}, {"n": 2}]
    deliver(host, ingest, {"channel": "news", "b64data": base64.b64encode(b"\xff").decode()})
    assert session.state is CLOSED
    assert transport.messages()[-1] == {"type": "disconnect", "reason": "invalid_request", "reconnect": False}


def test_the_server_api_turns_each_publication_field_into_the_envelope_or_a_clear_107():
    from gateway.ops.server_api import BadRequest, Failed
    from tests.test_server_api_core import make_api
    api = make_api()
    assert api._data({"data": 1, "tags": {"a": "b"}, "skip_history": True, "version": 3, "version_epoch": "e",
                      "idempotency_key": "k", "delta": True}) == {
        "data": 1, "tags": {"a": "b"}, "skip_history": True, "version": 3, "version_epoch": "e", "id": "k"}
    assert api._data({"b64data": "AAE=", "data": None}) == {"b64data": "AAE="}
    assert api._data({"data": 1, "tags": {}, "skip_history": False, "version": 0}) == {"data": 1}
    for params, words in [({"data": 1, "b64data": "AA=="}, "not both"), ({"b64data": "%%"}, "not base64"),
                          ({"data": 1, "tags": {"a": 1}}, "tags"), ({"data": 1, "version": -1}, "negative"),
                          ({"data": 1, "tags": {str(n): "x" for n in range(65)}}, "64 tags"), ({}, "bad request")]:
        with pytest.raises(Failed) as caught:
            api._data(params)
        assert caught.value.error.code == 107 and words in caught.value.error.message, params
    for params in ({"data": 1, "tags": ["a"]}, {"data": 1, "skip_history": "yes"}, {"data": 1, "version": "2"},
                   {"data": 1, "delta": 1}, {"b64data": 5}):
        with pytest.raises(BadRequest):
            api._data(params)
