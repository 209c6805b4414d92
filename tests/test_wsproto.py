"""RFC 6455 framing without I/O (gateway/transports/wsproto.py): what the
parser makes of a client's bytes, however they are split, and the limit
that lets the connection stop reading a flood part-way."""
from __future__ import annotations

import os
import struct

from gateway.transports import wsproto
from gateway.transports.wsproto import Close, FrameParser, Message, Ping, Pong, Violation


def client_frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    first = (0x80 if fin else 0) | rsv | opcode
    if len(payload) < 126:
        head = bytes((first, (0x80 if masked else 0) | len(payload)))
    elif len(payload) < 65536:
        head = bytes((first, (0x80 if masked else 0) | 126)) + struct.pack("!H", len(payload))
    else:
        head = bytes((first, (0x80 if masked else 0) | 127)) + struct.pack("!Q", len(payload))
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_messages_control_frames_and_a_close_in_one_chunk():
    data = (client_frame(wsproto.TEXT, "héllo".encode()) + client_frame(wsproto.BINARY, b"\x00\x01")
            + client_frame(wsproto.PING, b"p") + client_frame(wsproto.PONG, b"")
            + client_frame(wsproto.CLOSE, struct.pack("!H", 1000) + b"bye")
            + client_frame(wsproto.TEXT, b"after the close"))
    assert FrameParser(1024).feed(data) == [Message("héllo"), Message(b"\x00\x01"), Ping(b"p"), Pong(b""),
                                            Close(1000, "bye")]


def test_frames_split_anywhere_come_out_whole():
    data = client_frame(wsproto.TEXT, b"x" * 300) + client_frame(wsproto.TEXT, b"y" * 70000)
    parser = FrameParser(100000)
    events = []
    for i in range(0, len(data), 7):
        events += parser.feed(data[i:i + 7])
    assert events == [Message("x" * 300), Message("y" * 70000)]


def test_a_fragmented_message_is_joined_with_control_frames_between():
    data = (client_frame(wsproto.TEXT, b"ab", fin=False) + client_frame(wsproto.PING, b"")
            + client_frame(wsproto.CONTINUATION, b"cd", fin=False) + client_frame(wsproto.CONTINUATION, b"e"))
    assert FrameParser(1024).feed(data) == [Ping(b""), Message("abcde")]


def test_what_breaks_the_protocol_ends_parsing_with_its_close_code():
    cases = [
        (client_frame(wsproto.TEXT, b"x", masked=False), wsproto.PROTOCOL_ERROR),
        (client_frame(wsproto.TEXT, b"x", rsv=0x40), wsproto.PROTOCOL_ERROR),
        (client_frame(wsproto.PING, b"x" * 126), wsproto.PROTOCOL_ERROR),
        (client_frame(wsproto.PING, b"", fin=False), wsproto.PROTOCOL_ERROR),
        (client_frame(wsproto.CONTINUATION, b"x"), wsproto.PROTOCOL_ERROR),
        (client_frame(0x3, b""), wsproto.PROTOCOL_ERROR),
        (client_frame(wsproto.TEXT, b"\xff\xfe"), wsproto.INVALID_DATA),
        (client_frame(wsproto.CLOSE, b"\x03"), wsproto.PROTOCOL_ERROR),
        (client_frame(wsproto.TEXT, b"x" * 2000), wsproto.TOO_BIG),
        (client_frame(wsproto.TEXT, b"x" * 600, fin=False) + client_frame(wsproto.CONTINUATION, b"x" * 600),
         wsproto.TOO_BIG),
    ]
    for data, code in cases:
        parser = FrameParser(1024)
        events = parser.feed(data + client_frame(wsproto.TEXT, b"never read"))
        assert type(events[-1]) is Violation and events[-1].code == code, (data[:8], events)
        assert parser.feed(client_frame(wsproto.TEXT, b"more")) == []


def test_a_too_big_frame_is_refused_from_its_header_before_its_payload_arrives():
    header = client_frame(wsproto.TEXT, b"x" * 5000)[:8]   # 2 + 2 length bytes + 4 mask bytes
    events = FrameParser(1024).feed(header)
    assert len(events) == 1 and events[0].code == wsproto.TOO_BIG


def test_with_a_limit_the_rest_waits_for_the_next_call():
    frames = [client_frame(wsproto.TEXT, b"%d" % n) for n in range(150)]
    parser = FrameParser(1024)
    first = parser.feed(b"".join(frames), 64)
    assert first == [Message("%d" % n) for n in range(64)]
    assert parser.feed(b"", 64) == [Message("%d" % n) for n in range(64, 128)]
    assert parser.feed(b"", 64) == [Message("%d" % n) for n in range(128, 150)]
    assert parser.feed(b"", 64) == []
    # Without a limit, everything at once.
    assert len(FrameParser(1024).feed(b"".join(frames))) == 150
