"""RFC 6455, the server's side, sans I/O: the opening handshake's answer and
a frame parser that turns bytes from a client into events.

The parser enforces what a server must (RFC 6455 §5): client frames are
masked, control frames are short and whole, reserved bits and opcodes are
not used, fragments follow the rules, a message stays under the size limit,
and a text message is UTF-8. A violation is an event too, with the close
code to answer (1002 protocol error, 1007 invalid data, 1009 too big).
Nothing here touches a socket: the WebSocket transport feeds it what it
reads and writes what the frame builders return.
"""
from __future__ import annotations

import base64
import hashlib
import struct
from typing import NamedTuple

try:  # Tornado's C helper, when built: unmasking is most of the parser's work
    from tornado.speedups import websocket_mask as _mask
except ImportError:  # pragma: no cover - the pure-Python fallback Tornado uses too
    from tornado.util import _websocket_mask_python as _mask

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
PROTOCOL_ERROR, INVALID_DATA, TOO_BIG, NO_STATUS = 1002, 1007, 1009, 1005


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode("ascii")


def valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (ValueError, TypeError):
        return False


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final frame (server to client)."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        header = bytes((first, n))
    elif n < 65536:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


def text_frame(payload: bytes) -> bytes:
    return frame(TEXT, payload)


def binary_frame(payload: bytes) -> bytes:
    return frame(BINARY, payload)


def close_frame(code: int, reason: str = "") -> bytes:
    body = struct.pack("!H", code) + reason.encode("utf-8")[:123]
    return frame(CLOSE, body)


class Message(NamedTuple):
    """A whole data message: ``str`` for text, ``bytes`` for binary."""

    data: str | bytes


class Ping(NamedTuple):
    payload: bytes


class Pong(NamedTuple):
    payload: bytes


class Close(NamedTuple):
    """The client's close frame (code 1005 when it gave none)."""

    code: int
    reason: str


class Violation(NamedTuple):
    """The client broke the protocol: answer with this close code and stop reading."""

    code: int
    reason: str


Event = Message | Ping | Pong | Close | Violation


class FrameParser:
    """Feed it bytes; it returns the events they complete."""

    __slots__ = ("max_message", "_buffer", "_fragments", "_fragment_opcode", "_fragment_size", "_done")

    def __init__(self, max_message: int):
        self.max_message = max_message
        self._buffer = b""
        self._fragments: list[bytes] | None = None
        self._fragment_opcode = 0
        self._fragment_size = 0
        self._done = False

    def feed(self, data: bytes, limit: int = 0) -> list[Event]:
        """The events ``data`` completes, after what was buffered; with a
        ``limit``, at most that many, the rest kept for the next call (feed
        ``b""`` to go on), so a caller can stop reading a flood part-way."""
        if self._done:
            return []
        buffer = self._buffer + data if self._buffer else data
        events: list[Event] = []
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            if limit and len(events) >= limit:
                break
            first, second = buffer[pos], buffer[pos + 1]
            fin, opcode, length = first & 0x80, first & 0x0F, second & 0x7F
            start = pos + 2
            if length == 126:
                if size - start < 2:
                    break
                length = (buffer[start] << 8) | buffer[start + 1]
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                length = struct.unpack_from("!Q", buffer, start)[0]
                start += 8
            if first & 0x70:
                return self._stop(events, PROTOCOL_ERROR, "reserved bits set")
            if not second & 0x80:
                return self._stop(events, PROTOCOL_ERROR, "client frames must be masked")
            if opcode >= 0x8:
                if not fin or length > 125:
                    return self._stop(events, PROTOCOL_ERROR, "bad control frame")
            elif length > self.max_message or self._fragment_size + length > self.max_message:
                return self._stop(events, TOO_BIG, "message too big")
            if size - start < 4 + length:
                break
            mask = buffer[start:start + 4]
            payload = _mask(mask, buffer[start + 4:start + 4 + length]) if length else b""
            pos = start + 4 + length
            event = self._frame(bool(fin), opcode, payload)
            if event is not None:
                events.append(event)
                if isinstance(event, (Violation, Close)):
                    self._done = True
                    self._buffer = b""
                    return events
        self._buffer = buffer[pos:] if pos < size else b""
        return events

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> Event | None:
        if opcode == PING:
            return Ping(payload)
        if opcode == PONG:
            return Pong(payload)
        if opcode == CLOSE:
            return self._close(payload)
        if opcode == CONTINUATION:
            if self._fragments is None:
                return Violation(PROTOCOL_ERROR, "continuation without a message")
            self._fragments.append(payload)
            self._fragment_size += len(payload)
            if not fin:
                return None
            opcode, payload = self._fragment_opcode, b"".join(self._fragments)
            self._fragments, self._fragment_size = None, 0
        elif opcode in (TEXT, BINARY):
            if self._fragments is not None:
                return Violation(PROTOCOL_ERROR, "a new message inside a fragmented one")
            if not fin:
                self._fragments, self._fragment_opcode, self._fragment_size = [payload], opcode, len(payload)
                return None
        else:
            return Violation(PROTOCOL_ERROR, f"unknown opcode {opcode}")
        if opcode == TEXT:
            try:
                return Message(payload.decode("utf-8"))
            except UnicodeDecodeError:
                return Violation(INVALID_DATA, "invalid UTF-8 in a text frame")
        return Message(payload)

    @staticmethod
    def _close(payload: bytes) -> Event:
        if not payload:
            return Close(NO_STATUS, "")
        if len(payload) == 1:
            return Violation(PROTOCOL_ERROR, "close frame of one byte")
        code = struct.unpack("!H", payload[:2])[0]
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            return Violation(INVALID_DATA, "close reason is not UTF-8")
        return Close(code, reason)

    def _stop(self, events: list[Event], code: int, reason: str) -> list[Event]:
        self._done = True
        self._buffer = b""
        events.append(Violation(code, reason))
        return events
