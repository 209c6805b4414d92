"""The sans-I/O protocol layer."""
import pytest
import ujson

from gateway import protocol
from gateway.protocol import PONG, Command, ProtocolError, parse_frame
from gateway.transports.websocket import text_frame


def test_a_frame_carries_several_commands_in_order_and_blank_lines_are_skipped():
    frame = '{"connect":{"name":"js"},"id":1}\n\n{"subscribe":{"channel":"news","flag":1},"id":2}\n'
    assert parse_frame(frame) == [Command(1, "connect", {"name": "js"}),
                                  Command(2, "subscribe", {"channel": "news", "flag": 1})]


def test_pong_and_send_need_no_id():
    assert parse_frame("{}") == [PONG]
    assert parse_frame('{"send":{"data":1}}') == [Command(0, "send", {"data": 1})]


def test_first_non_null_method_wins():
    assert parse_frame('{"id":3,"connect":null,"subscribe":{"channel":"a"}}')[0].method == "subscribe"


@pytest.mark.parametrize("frame", [
    "nope", "[1]", '"str"', '{"id":1,"bogus":{}}', '{"id":-1,"connect":{}}', '{"id":"1","connect":{}}',
    '{"id":1,"connect":[]}', '{"subscribe":{"channel":"a"}}', '{"id":4294967296,"connect":{}}',
    '{"id":1,"connect":{}}\n{broken',
])
def test_malformed_frames_raise_bad_request(frame):
    with pytest.raises(ProtocolError) as exc:
        parse_frame(frame)
    assert exc.value.disconnect == protocol.DISCONNECT_BAD_REQUEST


def test_replies_always_carry_their_result_key_and_errors_their_message():
    assert ujson.loads(protocol.reply(7, "publish")) == {"id": 7, "publish": {}}
    assert ujson.loads(protocol.error_reply(2, protocol.ERROR_PERMISSION_DENIED)) == {
        "id": 2, "error": {"code": 103, "message": "permission denied"}}
    assert ujson.loads(protocol.error_reply(2, protocol.ERROR_INTERNAL))["error"]["temporary"] is True


def test_publication_push_embeds_the_payload_and_has_no_raw_newline():
    data = protocol.dumps({"text": "line1\nline2", "url": "a/b", "é": 1})
    push = protocol.pub_push("news", b'{"data":' + data.encode() + b"}")
    assert b"\n" not in push
    assert ujson.loads(push) == {"push": {"channel": "news", "pub": {"data": {"text": "line1\nline2", "url": "a/b", "é": 1}}}}


def test_disconnect_codes_decide_reconnection():
    assert protocol.DISCONNECT_SLOW.reconnect and protocol.DISCONNECT_SHUTDOWN.reconnect
    assert not protocol.DISCONNECT_BAD_REQUEST.reconnect and not protocol.DISCONNECT_INVALID_TOKEN.reconnect


@pytest.mark.parametrize("size,header", [(0, b"\x81\x00"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"),
                                         (65535, b"\x81\x7e\xff\xff"),
                                         (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00")])
def test_websocket_text_frame_header(size, header):
    frame = text_frame(b"x" * size)
    assert frame[:len(header)] == header and len(frame) == len(header) + size


def test_raw_publications_are_embedded_in_replies_untouched():
    pub = protocol.Raw(b'{"data":{"a":1},"offset":5}')
    result = {"recovered": True, "publications": [pub], "epoch": "e", "offset": 4}
    assert ujson.loads(protocol.reply(2, "subscribe", result)) == {
        "id": 2, "subscribe": {"recovered": True, "publications": [{"data": {"a": 1}, "offset": 5}],
                               "epoch": "e", "offset": 4}}
    nested = protocol.reply(1, "connect", {"client": "c", "subs": {"#1": result, "news": {}}})
    assert ujson.loads(nested)["connect"]["subs"]["#1"]["publications"][0]["offset"] == 5
