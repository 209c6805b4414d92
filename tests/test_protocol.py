"""The sans-I/O protocol layer: the Centrifugo model and its two codecs,
which must agree on every command and every message."""
import pytest
import ujson

from gateway.protocols.centrifugo import model
from gateway.protocols.centrifugo.json_codec import JSON, JSON_UNI, dumps
from gateway.core import vocabulary
from gateway.core.vocabulary import ProtocolError
from gateway.protocols.centrifugo.model import PONG, Command
from gateway.protocols.centrifugo.protobuf_codec import PROTOBUF, read_uvarint, split_delimited, uvarint
from gateway.protocols.centrifugo.schema import CLASSES
from gateway.core.history import Publication
from gateway.transports.wsproto import binary_frame, text_frame

Reply = CLASSES["Reply"]


def pb_commands(*commands) -> bytes:
    """A Protobuf frame of delimited Commands built from (id, method, fields)."""
    out = b""
    for cmd_id, method, fields in commands:
        cmd = CLASSES["Command"](id=cmd_id)
        if method:
            target = getattr(cmd, method)
            target.SetInParent()
            for key, value in fields.items():
                if isinstance(value, dict):
                    for k, v in value.items():
                        entry = getattr(target, key)[k]
                        for kk, vv in v.items():
                            setattr(entry, kk, vv)
                else:
                    setattr(target, key, value)
        raw = cmd.SerializeToString()
        out += uvarint(len(raw)) + raw
    return out


def pb_replies(frame: bytes) -> list:
    return [Reply.FromString(m) for m in split_delimited(frame)]


# --- decoding commands -----------------------------------------------------------

def test_a_frame_carries_several_commands_in_order_in_both_encodings():
    json_frame = '{"connect":{"name":"js"},"id":1}\n\n{"subscribe":{"channel":"news","flag":1},"id":2}\n'
    expected = [Command(1, "connect", {"name": "js"}), Command(2, "subscribe", {"channel": "news", "flag": 1})]
    assert JSON.decode(json_frame) == expected
    assert PROTOBUF.decode(pb_commands((1, "connect", {"name": "js"}),
                                       (2, "subscribe", {"channel": "news", "flag": 1}))) == expected
    assert JSON.count(json_frame) == 4 and PROTOBUF.count(pb_commands((1, "ping", {}), (2, "ping", {}))) == 2


def test_recovery_positions_decode_the_same_in_both_encodings():
    subs = {"#42": {"recover": True, "epoch": "7", "offset": 2**52}}
    assert PROTOBUF.decode(pb_commands((1, "connect", {"token": "t", "subs": subs})))[0] == \
        JSON.decode(ujson.dumps({"id": 1, "connect": {"token": "t", "subs": subs}}))[0]


def test_pong_and_send_need_no_id():
    assert JSON.decode("{}") == [PONG] and PROTOBUF.decode(b"\x00") == [PONG]
    assert JSON.decode('{"send":{"data":1}}') == [Command(0, "send", {"data": 1})]
    assert PROTOBUF.decode(pb_commands((0, "send", {"data": b"1"}))) == [Command(0, "send", {"data": b"1"})]


def test_first_present_method_wins():
    assert JSON.decode('{"id":3,"connect":null,"subscribe":{"channel":"a"}}')[0].method == "subscribe"


@pytest.mark.parametrize("frame", [
    "nope", "[1]", '"str"', '{"id":1,"bogus":{}}', '{"id":-1,"connect":{}}', '{"id":"1","connect":{}}',
    '{"id":1,"connect":[]}', '{"subscribe":{"channel":"a"}}', '{"id":4294967296,"connect":{}}',
    '{"id":1,"connect":{}}\n{broken', '{"id":5}',
])
def test_malformed_json_frames_raise_bad_request(frame):
    with pytest.raises(ProtocolError) as exc:
        JSON.decode(frame)
    assert exc.value.ending == vocabulary.BAD_REQUEST


@pytest.mark.parametrize("frame", [
    b"\x05\x08", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x02\xff\xff",
    pb_commands((0, "subscribe", {"channel": "a"})), pb_commands((5, None, {})), "text frame",
])
def test_malformed_protobuf_frames_raise_bad_request(frame):
    with pytest.raises(ProtocolError) as exc:
        PROTOBUF.decode(frame)
    assert exc.value.ending == vocabulary.BAD_REQUEST


# --- building messages -------------------------------------------------------------

def test_replies_always_carry_their_result_and_errors_their_message():
    assert ujson.loads(JSON.reply(7, "publish")) == {"id": 7, "publish": {}}
    assert PROTOBUF.reply(7, "publish") == b"\x04\x08\x07\x42\x00"  # the empty result is present
    assert ujson.loads(JSON.error(2, model.ERROR_PERMISSION_DENIED)) == {
        "id": 2, "error": {"code": 103, "message": "permission denied"}}
    error = pb_replies(PROTOBUF.error(2, model.ERROR_INTERNAL))[0].error
    assert (error.code, error.message, error.temporary) == (100, "internal server error", True)
    assert ujson.loads(JSON.error(2, model.ERROR_INTERNAL))["error"]["temporary"] is True


def test_the_ping_is_an_empty_reply():
    assert JSON.ping == b"{}" and PROTOBUF.ping == b"\x00"


def test_publication_push_embeds_the_payload_in_both_encodings():
    data = dumps({"text": "line1\nline2", "url": "a/b", "é": 1}).encode()
    push = JSON.pub_push("news", data, 9)
    assert b"\n" not in push
    assert ujson.loads(push) == {"push": {"channel": "news", "pub": {
        "data": {"text": "line1\nline2", "url": "a/b", "é": 1}, "offset": 9}}}
    reply = pb_replies(PROTOBUF.pub_push("news", data, 2**52))[0]
    assert (reply.push.channel, reply.push.pub.data, reply.push.pub.offset) == ("news", data, 2**52)
    no_offset = pb_replies(PROTOBUF.pub_push("n", b"1", None))[0]
    assert no_offset.push.pub.offset == 0 and ujson.loads(JSON.pub_push("n", b"1", None)) == {
        "push": {"channel": "n", "pub": {"data": 1}}}


def test_unidirectional_pushes_are_not_wrapped():
    assert ujson.loads(JSON_UNI.pub_push("news", b"1", 3)) == {"channel": "news", "pub": {"data": 1, "offset": 3}}
    assert ujson.loads(JSON_UNI.disconnect(model.DISCONNECT_SHUTDOWN)) == {
        "disconnect": {"code": 3001, "reason": "shutdown"}}


def test_other_pushes_in_both_encodings():
    assert ujson.loads(JSON.push("c", "unsubscribe", {"code": 2500, "reason": "insufficient state"})) == {
        "push": {"channel": "c", "unsubscribe": {"code": 2500, "reason": "insufficient state"}}}
    reply = pb_replies(PROTOBUF.push("c", "unsubscribe", {"code": 2500, "reason": "insufficient state"}))[0]
    assert (reply.push.channel, reply.push.unsubscribe.code, reply.push.unsubscribe.reason) == (
        "c", 2500, "insufficient state")
    reply = pb_replies(PROTOBUF.disconnect(model.DISCONNECT_SHUTDOWN))[0]
    assert (reply.push.disconnect.code, reply.push.disconnect.reason) == (3001, "shutdown")


def test_results_with_publications_and_subs_agree_in_both_encodings():
    result = {"recoverable": True, "positioned": True, "recovered": True, "was_recovering": True,
              "publications": [Publication(5, b'{"a":1}'), Publication(6, b'"two"')], "epoch": "e", "offset": 4}
    connect = {"client": "c", "version": "v", "ping": 25, "pong": True, "expires": True, "ttl": 60,
               "subs": {"#1": result, "news": {}}}
    as_json = ujson.loads(JSON.reply(1, "connect", connect))["connect"]
    assert as_json["subs"]["#1"]["publications"] == [{"data": {"a": 1}, "offset": 5}, {"data": "two", "offset": 6}]
    as_pb = pb_replies(PROTOBUF.reply(1, "connect", connect))[0].connect
    assert (as_pb.client, as_pb.ping, as_pb.pong, as_pb.expires, as_pb.ttl) == ("c", 25, True, True, 60)
    sub = as_pb.subs["#1"]
    assert [(p.offset, p.data) for p in sub.publications] == [(5, b'{"a":1}'), (6, b'"two"')]
    assert (sub.recovered, sub.was_recovering, sub.epoch, sub.offset) == (True, True, "e", 4)
    assert "news" in as_pb.subs
    history = pb_replies(PROTOBUF.reply(3, "history", {"publications": [], "epoch": "e", "offset": 9}))[0]
    assert history.HasField("history") and history.history.offset == 9


def test_disconnect_codes_decide_reconnection():
    assert model.DISCONNECT_SLOW.reconnect and model.DISCONNECT_SHUTDOWN.reconnect
    assert not model.DISCONNECT_BAD_REQUEST.reconnect and not model.DISCONNECT_INVALID_TOKEN.reconnect


def test_varints_round_trip():
    for n in (0, 1, 127, 128, 300, 2**32, 2**53 + 1, 2**63):
        assert read_uvarint(uvarint(n), 0) == (n, len(uvarint(n)))


@pytest.mark.parametrize("size,header", [(0, b"\x00"), (125, b"\x7d"), (126, b"\x7e\x00\x7e"),
                                         (65535, b"\x7e\xff\xff"),
                                         (65536, b"\x7f\x00\x00\x00\x00\x00\x01\x00\x00")])
def test_websocket_frame_headers(size, header):
    for frame, opcode in ((text_frame, b"\x81"), (binary_frame, b"\x82")):
        out = frame(b"x" * size)
        assert out[:len(header) + 1] == opcode + header and len(out) == len(header) + 1 + size
