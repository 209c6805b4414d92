"""The Centrifugo client protocol's Protobuf schema, written down here from
the protocol's published definition (centrifugal/protocol
``definitions/client.proto``, field numbers unchanged since v0.21 and
compatible with every SDK build: see docs/architecture.md). Only the
messages pushgate reads or writes; fields it never uses are left out, which
is safe both ways: proto3 decoders skip unknown fields.

The table is turned into message classes at import, with the ``protobuf``
package's runtime (upb), without protoc or generated code. The classes live
in a private descriptor pool: an SDK in the same process (the tests run
centrifuge-python) registers the same names in the default pool.
"""
from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "pushgate.centrifugo"

# (field name, number, type, label) per message. Types: a scalar name, a
# message name, or "map<key,value>". Label "repeated" or "" (proto3 singular).
MESSAGES: dict[str, tuple[tuple[str, int, str, str], ...]] = {
    "Error": (("code", 1, "uint32", ""), ("message", 2, "string", ""), ("temporary", 3, "bool", "")),
    "Command": (
        ("id", 1, "uint32", ""), ("connect", 4, "ConnectRequest", ""), ("subscribe", 5, "SubscribeRequest", ""),
        ("unsubscribe", 6, "UnsubscribeRequest", ""), ("publish", 7, "PublishRequest", ""),
        ("presence", 8, "PresenceRequest", ""), ("presence_stats", 9, "PresenceStatsRequest", ""),
        ("history", 10, "HistoryRequest", ""), ("ping", 11, "PingRequest", ""), ("send", 12, "SendRequest", ""),
        ("rpc", 13, "RPCRequest", ""), ("refresh", 14, "RefreshRequest", ""),
        ("sub_refresh", 15, "SubRefreshRequest", ""),
    ),
    "Reply": (
        ("id", 1, "uint32", ""), ("error", 2, "Error", ""), ("push", 4, "Push", ""),
        ("connect", 5, "ConnectResult", ""), ("subscribe", 6, "SubscribeResult", ""),
        ("unsubscribe", 7, "UnsubscribeResult", ""), ("publish", 8, "PublishResult", ""),
        ("presence", 9, "PresenceResult", ""), ("presence_stats", 10, "PresenceStatsResult", ""),
        ("history", 11, "HistoryResult", ""), ("ping", 12, "PingResult", ""), ("rpc", 13, "RPCResult", ""),
        ("refresh", 14, "RefreshResult", ""), ("sub_refresh", 15, "SubRefreshResult", ""),
    ),
    "Push": (
        ("channel", 2, "string", ""), ("pub", 4, "Publication", ""), ("join", 5, "Join", ""),
        ("leave", 6, "Leave", ""), ("unsubscribe", 7, "Unsubscribe", ""), ("message", 8, "Message", ""),
        ("subscribe", 9, "Subscribe", ""), ("connect", 10, "Connect", ""), ("disconnect", 11, "Disconnect", ""),
        ("refresh", 12, "Refresh", ""),
    ),
    "ClientInfo": (("user", 1, "string", ""), ("client", 2, "string", ""), ("conn_info", 3, "bytes", ""),
                   ("chan_info", 4, "bytes", "")),
    "Publication": (("data", 4, "bytes", ""), ("info", 5, "ClientInfo", ""), ("offset", 6, "uint64", ""),
                    ("tags", 7, "map<string,string>", "")),
    "Join": (("info", 1, "ClientInfo", ""),),
    "Leave": (("info", 1, "ClientInfo", ""),),
    "Unsubscribe": (("code", 2, "uint32", ""), ("reason", 3, "string", "")),
    "Subscribe": (("recoverable", 1, "bool", ""), ("epoch", 4, "string", ""), ("offset", 5, "uint64", ""),
                  ("positioned", 6, "bool", ""), ("data", 7, "bytes", "")),
    "Message": (("data", 1, "bytes", ""),),
    "Connect": (
        ("client", 1, "string", ""), ("version", 2, "string", ""), ("data", 3, "bytes", ""),
        ("subs", 4, "map<string,SubscribeResult>", ""), ("expires", 5, "bool", ""), ("ttl", 6, "uint32", ""),
        ("ping", 7, "uint32", ""), ("pong", 8, "bool", ""), ("session", 9, "string", ""), ("node", 10, "string", ""),
        ("time", 11, "int64", ""),
    ),
    "Disconnect": (("code", 1, "uint32", ""), ("reason", 2, "string", ""), ("reconnect", 3, "bool", "")),
    "Refresh": (("expires", 1, "bool", ""), ("ttl", 2, "uint32", "")),
    "ConnectRequest": (
        ("token", 1, "string", ""), ("data", 2, "bytes", ""), ("subs", 3, "map<string,SubscribeRequest>", ""),
        ("name", 4, "string", ""), ("version", 5, "string", ""), ("headers", 6, "map<string,string>", ""),
    ),
    "ConnectResult": (
        ("client", 1, "string", ""), ("version", 2, "string", ""), ("expires", 3, "bool", ""),
        ("ttl", 4, "uint32", ""), ("data", 5, "bytes", ""), ("subs", 6, "map<string,SubscribeResult>", ""),
        ("ping", 7, "uint32", ""), ("pong", 8, "bool", ""), ("session", 9, "string", ""), ("node", 10, "string", ""),
        ("time", 11, "int64", ""),
    ),
    "RefreshRequest": (("token", 1, "string", ""),),
    "RefreshResult": (("client", 1, "string", ""), ("version", 2, "string", ""), ("expires", 3, "bool", ""),
                      ("ttl", 4, "uint32", "")),
    "SubscribeRequest": (
        ("channel", 1, "string", ""), ("token", 2, "string", ""), ("recover", 3, "bool", ""),
        ("epoch", 6, "string", ""), ("offset", 7, "uint64", ""), ("data", 8, "bytes", ""),
        ("positioned", 9, "bool", ""), ("recoverable", 10, "bool", ""), ("join_leave", 11, "bool", ""),
        ("delta", 12, "string", ""), ("tf", 13, "FilterNode", ""), ("flag", 14, "int64", ""),
        ("type", 15, "int32", ""),
    ),
    "FilterNode": (("op", 1, "string", ""), ("key", 2, "string", ""), ("cmp", 3, "string", ""),
                   ("val", 4, "string", ""), ("vals", 5, "string", "repeated"),
                   ("nodes", 6, "FilterNode", "repeated")),
    "SubscribeResult": (
        ("expires", 1, "bool", ""), ("ttl", 2, "uint32", ""), ("recoverable", 3, "bool", ""),
        ("epoch", 6, "string", ""), ("publications", 7, "Publication", "repeated"), ("recovered", 8, "bool", ""),
        ("offset", 9, "uint64", ""), ("positioned", 10, "bool", ""), ("data", 11, "bytes", ""),
        ("was_recovering", 12, "bool", ""),
    ),
    "SubRefreshRequest": (("channel", 1, "string", ""), ("token", 2, "string", ""), ("type", 3, "int32", "")),
    "SubRefreshResult": (("expires", 1, "bool", ""), ("ttl", 2, "uint32", "")),
    "UnsubscribeRequest": (("channel", 1, "string", ""),),
    "UnsubscribeResult": (),
    "PublishRequest": (("channel", 1, "string", ""), ("data", 2, "bytes", ""), ("type", 3, "int32", ""),
                       ("key", 4, "string", ""), ("removed", 5, "bool", "")),
    "PublishResult": (),
    "PresenceRequest": (("channel", 1, "string", ""),),
    "PresenceResult": (("presence", 1, "map<string,ClientInfo>", ""),),
    "PresenceStatsRequest": (("channel", 1, "string", ""),),
    "PresenceStatsResult": (("num_clients", 1, "uint32", ""), ("num_users", 2, "uint32", "")),
    "StreamPosition": (("offset", 1, "uint64", ""), ("epoch", 2, "string", "")),
    "HistoryRequest": (("channel", 1, "string", ""), ("limit", 7, "int32", ""), ("since", 8, "StreamPosition", ""),
                       ("reverse", 9, "bool", "")),
    "HistoryResult": (("publications", 1, "Publication", "repeated"), ("epoch", 2, "string", ""),
                      ("offset", 3, "uint64", "")),
    "PingRequest": (),
    "PingResult": (),
    "RPCRequest": (("data", 1, "bytes", ""), ("method", 2, "string", "")),
    "RPCResult": (("data", 1, "bytes", ""),),
    "SendRequest": (("data", 1, "bytes", ""),),
    "EmulationRequest": (("node", 1, "string", ""), ("session", 2, "string", ""), ("data", 3, "bytes", "")),
}

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "bool": _F.TYPE_BOOL, "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64, "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64,
}


def _field(message: descriptor_pb2.DescriptorProto, name: str, number: int, type_: str, label: str) -> None:
    field = message.field.add(name=name, number=number, json_name=name)
    if type_.startswith("map<"):
        key, value = type_[4:-1].split(",")
        entry_name = "".join(part.capitalize() for part in name.split("_")) + "Entry"
        entry = message.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        _field(entry, "key", 1, key, "")
        _field(entry, "value", 2, value, "")
        field.label = _F.LABEL_REPEATED
        field.type = _F.TYPE_MESSAGE
        field.type_name = f".{PACKAGE}.{message.name}.{entry_name}"
        return
    field.label = _F.LABEL_REPEATED if label == "repeated" else _F.LABEL_OPTIONAL
    if type_ in _SCALARS:
        field.type = _SCALARS[type_]
    else:
        field.type = _F.TYPE_MESSAGE
        field.type_name = f".{PACKAGE}.{type_}"


def _build() -> dict[str, Any]:
    # Message classes made at run time from the descriptor: their fields are
    # known to protobuf, not to a type checker (hence Any).
    file = descriptor_pb2.FileDescriptorProto(name="pushgate/centrifugo/client.proto", package=PACKAGE,
                                              syntax="proto3")
    for name, fields in MESSAGES.items():
        message = file.message_type.add(name=name)
        for field in fields:
            _field(message, *field)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
            for name in MESSAGES}


CLASSES = _build()
