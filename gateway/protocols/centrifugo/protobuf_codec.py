"""The Centrifugo protocol in Protobuf, sans I/O.

A frame (a binary WebSocket message, or an HTTP stream) is a sequence of
``uvarint(length) || message``: ``Command`` from the client, ``Reply`` from
the server. A ping is the empty ``Reply`` (the single byte ``00``), a pong
the empty ``Command``. Payloads (``data``) are raw bytes: pushgate's
publications are JSON, and their bytes go out unchanged, as Centrifugo does.

Commands are parsed and results built with the ``protobuf`` package's C
runtime (upb) and the classes of :mod:`gateway.protocols.centrifugo.schema`; the
publication push, built once per publication for every Protobuf subscriber,
is written by hand: measured at about 1 µs, where building it with the
runtime costs 3 µs (docs/benchmarks.md).

proto3 leaves out zero values. centrifuge-python reads Protobuf replies
through ``MessageToDict``, which drops them too, and then indexes some
directly; the session therefore always sets ``client``, ``ttl`` with
``expires``, and error and disconnect codes and reasons.
"""
from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError

from gateway.core.vocabulary import ProtocolError
from gateway.protocols.centrifugo.model import METHODS, Command, Disconnect, Error, check_command
from gateway.protocols.centrifugo.schema import CLASSES
from gateway.core.history import Publication, Published

_Command = CLASSES["Command"]
_Reply = CLASSES["Reply"]


def uvarint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; raises ProtocolError."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ProtocolError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def split_delimited(data: bytes) -> list[bytes]:
    messages = []
    pos, size = 0, len(data)
    while pos < size:
        length, pos = read_uvarint(data, pos)
        if pos + length > size:
            raise ProtocolError("truncated message")
        messages.append(data[pos:pos + length])
        pos += length
    return messages


def _repeated(field: Any) -> bool:
    # protobuf 7 dropped FieldDescriptor.label for is_repeated (added in 5.x).
    is_repeated = getattr(field, "is_repeated", None)
    return is_repeated if is_repeated is not None else field.label == field.LABEL_REPEATED


def _to_dict(message: Any) -> dict:
    """The fields set in ``message``, by name; maps become dicts, nested
    messages dicts, bytes stay bytes."""
    out: dict = {}
    for field, value in message.ListFields():
        mtype = field.message_type
        if mtype is None:
            out[field.name] = list(value) if _repeated(field) else value
        elif mtype.GetOptions().map_entry:
            nested = mtype.fields_by_name["value"].message_type is not None
            out[field.name] = {k: (_to_dict(v) if nested else v) for k, v in value.items()}
        elif _repeated(field):
            out[field.name] = [_to_dict(v) for v in value]
        else:
            out[field.name] = _to_dict(value)
    return out


def _fill(message: Any, values: dict) -> None:
    """Set ``values`` (JSON field names, as the session builds results) on
    ``message``. Publications are :class:`Publication` tuples."""
    fields = message.DESCRIPTOR.fields_by_name
    for name, value in values.items():
        field = fields[name]
        mtype = field.message_type
        if mtype is None:
            setattr(message, name, value)
        elif mtype.GetOptions().map_entry:
            target = getattr(message, name)
            if mtype.fields_by_name["value"].message_type is None:
                target.update(value)
            else:
                for key, item in value.items():
                    entry = target[key]
                    entry.SetInParent()
                    _fill(entry, item)
        elif _repeated(field):
            target = getattr(message, name)
            for item in value:
                if isinstance(item, Publication):
                    pub = target.add(data=bytes(item.data))
                    if item.offset:
                        pub.offset = item.offset
                    data = item.data
                    if type(data) is Published:   # with its publisher, tags (binary data: its bytes)
                        if data.info is not None:
                            _fill(pub.info, data.info)
                        if data.tags:
                            pub.tags.update(data.tags)
                else:
                    _fill(target.add(), item)
        else:
            target = getattr(message, name)
            target.SetInParent()
            _fill(target, value)


class ProtobufCodec:
    """See the module doc. One instance serves every connection."""

    name = "protobuf"
    binary = True
    ping = b"\x00"
    unidirectional = False

    # --- client to server ------------------------------------------------------

    def count(self, data: str | bytes) -> int:
        if isinstance(data, str):
            return 1
        count, pos, size = 0, 0, len(data)
        try:
            while pos < size:
                length, pos = read_uvarint(data, pos)
                pos += length
                count += 1
        except ProtocolError:
            count += 1
        return max(count, 1)

    def decode(self, data: str | bytes) -> list[Command]:
        if isinstance(data, str):
            raise ProtocolError("text frame on a Protobuf connection")
        commands = []
        for raw in split_delimited(data):
            try:
                command = _Command.FromString(raw)
            except DecodeError:
                raise ProtocolError("malformed Protobuf command") from None
            for method in METHODS:
                if command.HasField(method):
                    commands.append(check_command(command.id, method, _to_dict(getattr(command, method))))
                    break
            else:
                commands.append(check_command(command.id, None, None))
        return commands

    # --- server to client ------------------------------------------------------

    def reply(self, cmd_id: int, method: str, result: dict | None = None) -> bytes:
        reply = _Reply(id=cmd_id)
        target = getattr(reply, method)
        target.SetInParent()  # present even when empty: the SDKs look for it
        if result:
            _fill(target, result)
        return _delimit(reply.SerializeToString())

    def error(self, cmd_id: int, error: Error) -> bytes:
        reply = _Reply(id=cmd_id)
        reply.error.code = error.code
        reply.error.message = error.message
        if error.temporary:
            reply.error.temporary = True
        return _delimit(reply.SerializeToString())

    def pub_push(self, channel: str, data: bytes, offset: int | None) -> bytes:
        # Reply{push(4): Push{channel(2), pub(4): Publication{data(4), offset(6)}}}
        pub = b"\x22" + uvarint(len(data)) + data
        if offset:
            pub += b"\x30" + uvarint(offset)
        name = channel.encode()
        push = b"\x12" + uvarint(len(name)) + name + b"\x22" + uvarint(len(pub)) + pub
        reply = b"\x22" + uvarint(len(push)) + push
        return uvarint(len(reply)) + reply

    def _pub_push(self, channel: str, pub: bytes) -> bytes:
        """:meth:`pub_push`'s wrapping of an encoded Publication."""
        name = channel.encode()
        push = b"\x12" + uvarint(len(name)) + name + b"\x22" + uvarint(len(pub)) + pub
        reply = b"\x22" + uvarint(len(push)) + push
        return uvarint(len(reply)) + reply

    def pub_push_full(self, channel: str, data: Published, offset: int | None) -> bytes:
        if data.info is None:
            # By hand as pub_push, and tags(7): map entries {key(1), value(2)}.
            raw = bytes(data)   # binary data: the exact bytes
            pub = b"\x22" + uvarint(len(raw)) + raw
            if offset:
                pub += b"\x30" + uvarint(offset)
            for key, value in (data.tags or {}).items():
                k, v = key.encode(), value.encode()
                entry = b"\x0a" + uvarint(len(k)) + k + b"\x12" + uvarint(len(v)) + v
                pub += b"\x3a" + uvarint(len(entry)) + entry
            return self._pub_push(channel, pub)
        body: dict = {"data": bytes(data)}
        if data.info is not None:
            body["info"] = data.info
        if offset:
            body["offset"] = offset
        if data.tags:
            body["tags"] = data.tags
        return self.push(channel, "pub", body)

    def push(self, channel: str, kind: str, body: dict) -> bytes:
        reply = _Reply()
        if channel:
            reply.push.channel = channel
        target = getattr(reply.push, kind)
        target.SetInParent()
        _fill(target, body)
        return _delimit(reply.SerializeToString())

    def event_push(self, channel: str, kind: str, body: dict) -> bytes | None:
        """join and leave, for the hub; another protocol's events (Action Cable's
        explicit presence) have no message here."""
        return self.push(channel, kind, body) if kind in ("join", "leave") else None

    def disconnect(self, disconnect: Disconnect) -> bytes:
        return self.push("", "disconnect", {"code": disconnect.code, "reason": disconnect.reason})


def _delimit(message: bytes) -> bytes:
    return uvarint(len(message)) + message


PROTOBUF = ProtobufCodec()


def emulation_request(body: bytes) -> dict:
    """A Protobuf ``EmulationRequest`` (``/emulation``) as a dict; raises ProtocolError."""
    try:
        return _to_dict(CLASSES["EmulationRequest"].FromString(body))
    except DecodeError:
        raise ProtocolError("malformed EmulationRequest") from None
