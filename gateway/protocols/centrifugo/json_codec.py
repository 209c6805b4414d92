"""The Centrifugo protocol in JSON, sans I/O.

The rules that keep the stock SDKs (centrifuge-js, centrifuge-python,
centrifuge-go) working are the ones in ``centrifugo-protocol.md``: several
``\\n``-separated commands per frame, processed in order; every reply carries
its result key even when empty; errors always carry ``message``; payloads
are embedded raw JSON with no raw newline (the data bytes from history are
compact JSON, so they are embedded as they are, never parsed again).

``JSON_UNI`` is the unidirectional variant: the same encoding, but pushes go
out as bare ``Push`` objects, without the ``{"push": ...}`` wrapper.
"""
from __future__ import annotations

from typing import Any

import ujson

from gateway.core.vocabulary import INAPPROPRIATE_PROTOCOL, ProtocolError
from gateway.protocols.centrifugo.model import METHOD_SET, Command, Disconnect, Error, check_command
from gateway.core.history import Publication, Published


def dumps(obj: Any) -> str:
    """Compact JSON with no raw newline (ujson escapes control characters)."""
    return ujson.dumps(obj, ensure_ascii=False, escape_forward_slashes=False)


class Raw(bytes):
    """Bytes that are already JSON: embedded as they are."""


_RAW = (bytes, Raw, Publication)


def _holds_raw(obj: Any) -> bool:
    """Whether ``obj`` holds bytes or publications anywhere (then the slow,
    embedding encoder runs; otherwise ujson alone, about 15 times faster)."""
    if type(obj) is dict:
        obj = obj.values()
    elif type(obj) not in (list, tuple):
        return isinstance(obj, _RAW)
    for value in obj:
        kind = type(value)
        if kind is dict or kind is list:
            if _holds_raw(value):
                return True
        elif kind is bytes or kind is Publication or kind is Raw:
            return True
    return False


def encode(obj: Any) -> bytes:
    """JSON bytes of ``obj``; :class:`Raw` values and publications are embedded
    without being parsed or encoded again."""
    if not _holds_raw(obj):
        return dumps(obj).encode()
    return _embed(obj)


def _embed(obj: Any) -> bytes:
    if isinstance(obj, Raw):
        return bytes(obj)
    if isinstance(obj, Publication):
        data = obj.data
        if type(data) is Published:   # with its publisher, tags; binary data as JSON
            pub = publication(data, obj.offset)
            if pub is None:
                raise ProtocolError("a binary publication that is not JSON, for a JSON client",
                                    INAPPROPRIATE_PROTOCOL)
            return _embed(pub)
        return b'{"data":%s,"offset":%d}' % (data, obj.offset)
    if isinstance(obj, dict):
        if not any(isinstance(v, (Raw, dict, list, tuple, bytes)) for v in obj.values()):
            return dumps(obj).encode()
        return b"{" + b",".join(dumps(k).encode() + b":" + _embed(v) for k, v in obj.items()) + b"}"
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (Raw, dict, list, tuple, bytes)) for v in obj):
        return b"[" + b",".join(_embed(v) for v in obj) + b"]"
    if isinstance(obj, bytes):  # a payload: JSON bytes
        return bytes(obj)
    return dumps(obj).encode()


def _info(info: dict) -> dict:
    """A publisher's ClientInfo, its JSON parts embedded as they are."""
    return {k: Raw(v) if isinstance(v, bytes) else v for k, v in info.items()}


def publication(data: Published, offset: int | None) -> dict | None:
    """A Publication with extras as a JSON dict (None: its bytes are not JSON)."""
    json = data.json_form()
    if json is None:
        return None
    pub: dict = {"data": Raw(json)}
    if data.info is not None:
        pub["info"] = _info(data.info)
    if offset:
        pub["offset"] = offset
    if data.tags:
        pub["tags"] = data.tags
    return pub


class JsonCodec:
    """See the module doc. One instance serves every connection."""

    name = "json"
    binary = False

    def __init__(self, unidirectional: bool = False):
        self.unidirectional = unidirectional
        self.ping = b"{}"

    # --- client to server ------------------------------------------------------

    def count(self, data: str | bytes) -> int:
        return (data.count("\n") if isinstance(data, str) else data.count(b"\n")) + 1

    def decode(self, data: str | bytes) -> list[Command]:
        commands = []
        lines: list[str] | list[bytes] = data.split("\n") if isinstance(data, str) else data.split(b"\n")
        for line in lines:
            if not line or line.isspace():
                continue
            try:
                obj = ujson.loads(line)
            except (ValueError, OverflowError):
                raise ProtocolError("malformed JSON") from None
            commands.append(_command(obj))
        return commands

    # --- server to client ------------------------------------------------------

    def reply(self, cmd_id: int, method: str, result: dict | None = None) -> bytes:
        return encode({"id": cmd_id, method: result or {}})

    def error(self, cmd_id: int, error: Error) -> bytes:
        body = {"code": error.code, "message": error.message}
        if error.temporary:
            body["temporary"] = True
        return dumps({"id": cmd_id, "error": body}).encode()

    def pub_push(self, channel: str, data: bytes, offset: int | None) -> bytes:
        # Built by concatenation: the payload is embedded as it is.
        pub = b'{"data":%s}' % data if offset is None else b'{"data":%s,"offset":%d}' % (data, offset)
        if self.unidirectional:
            return b"".join((b'{"channel":', dumps(channel).encode(), b',"pub":', pub, b"}"))
        return b"".join((b'{"push":{"channel":', dumps(channel).encode(), b',"pub":', pub, b"}}"))

    def pub_push_full(self, channel: str, data: Published, offset: int | None) -> bytes | None:
        # Built by concatenation too, in the field order of publication().
        json = data.json_form()
        if json is None:
            return None
        pub = b'{"data":' + json
        if data.info is not None:
            pub += b',"info":' + _embed(_info(data.info))
        if offset:
            pub += b',"offset":%d' % offset
        if data.tags:
            pub += b',"tags":' + dumps(data.tags).encode()
        pub += b"}"
        if self.unidirectional:
            return b"".join((b'{"channel":', dumps(channel).encode(), b',"pub":', pub, b"}"))
        return b"".join((b'{"push":{"channel":', dumps(channel).encode(), b',"pub":', pub, b"}}"))

    def push(self, channel: str, kind: str, body: dict) -> bytes:
        push = {kind: body} if not channel else {"channel": channel, kind: body}
        return encode(push if self.unidirectional else {"push": push})

    def event_push(self, channel: str, kind: str, body: dict) -> bytes | None:
        """join and leave, for the hub; another protocol's events (Action Cable's
        explicit presence) have no message here."""
        return self.push(channel, kind, body) if kind in ("join", "leave") else None

    def disconnect(self, disconnect: Disconnect) -> bytes:
        return self.push("", "disconnect", {"code": disconnect.code, "reason": disconnect.reason})


def _command(obj: Any) -> Command:
    if type(obj) is not dict:
        raise ProtocolError("command is not an object")
    cmd_id = obj.get("id", 0)
    for key, value in obj.items():
        if key in METHOD_SET and value is not None:
            return check_command(cmd_id, key, value)
    if not all(k == "id" or k in METHOD_SET for k in obj):
        raise ProtocolError("unknown command")
    return check_command(cmd_id, None, None)


JSON = JsonCodec()
JSON_UNI = JsonCodec(unidirectional=True)
