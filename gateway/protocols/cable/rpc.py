"""AnyCable's RPC over HTTP, as AnyCable-Go speaks it (pure: bodies in,
answers out, no I/O).

A Rails app running anycable-rails' HTTP RPC endpoint (or the bridge's own,
bridges/rails) decides what only Ruby can: who a connection is (its
``ApplicationCable::Connection#connect``), whether a subscription is allowed
and what it streams (a channel's ``subscribed``), what a ``perform`` does,
and what ``unsubscribed`` / ``disconnect`` record. pushgate keeps the
sockets, the streams and the fan-out.

The wire is Go's plain ``encoding/json`` of ``rpc.proto``'s messages
(``github:anycable/anycable``: ``etc/rpc.proto``, ``rpc/http.go``,
``protocol/protocol.go``), not the proto3 JSON mapping:

* ``POST <url>/connect``, ``/command``, ``/disconnect``, with
  ``Content-Type: application/json``, ``Authorization: Bearer <secret>``
  and ``X-AnyCable-Meta-Sid`` / ``X-AnyCable-Meta-Protov`` (the session id,
  and the RPC protocol version ``v1``), as AnyCable-Go sends them;
* snake_case keys (``connection_identifiers``, ``stop_streams``,
  ``stopped_streams``, ``error_msg``); empty fields left out (``omitempty``);
* ``status`` a number: 1 SUCCESS, 2 FAILURE, 0 or absent ERROR;
* ``identifiers``, ``data``, each transmission, and presence ``info`` are
  JSON-encoded *strings*; ``env.headers``, ``cstate``, ``istate`` string
  maps, except the disconnect's ``istate``, which maps each identifier to
  its state map JSON-encoded (``buildDisconnectEnv``).

An answer of the wrong shape raises :class:`Garbage`, whose text says what
was wrong; the session then answers as for a failed call.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import ujson

SUCCESS, FAILURE, ERROR = 1, 2, 0
PROTOCOL_VERSION = "v1"
WHISPER_STATE = "$w"     # istate key: the stream whispers go to (anycable-rails' whispers_to)
PRESENCE_STATE = "$p"    # istate key: the stream presence is kept for
# Bounds on what the app may make a connection keep: its state maps (keys and
# values together) and the streams of all its subscriptions.
MAX_STATE_BYTES = 65536
MAX_STREAMS = 256


class Garbage(Exception):
    """An RPC answer of the wrong shape; ``str()`` says what."""


def _dumps(value: Any) -> bytes:
    return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False).encode()


def _env(url: str, headers: dict[str, str], cstate: dict[str, str] | None,
         istate: dict[str, str] | None = None) -> dict:
    env: dict[str, Any] = {}
    if url:
        env["url"] = url
    if headers:
        env["headers"] = headers
    if cstate:
        env["cstate"] = cstate
    if istate:
        env["istate"] = istate
    return env


def connect_body(url: str, headers: dict[str, str], cstate: dict[str, str] | None = None) -> bytes:
    """``ConnectionRequest``: ``{"env": {"url", "headers"}}``."""
    return _dumps({"env": _env(url, headers, cstate)})


def command_body(command: str, identifier: str, identifiers: str, data: str, url: str,
                 headers: dict[str, str], cstate: dict[str, str] | None, istate: dict[str, str] | None) -> bytes:
    """``CommandMessage`` for ``subscribe``, ``unsubscribe`` or ``message``
    (``data``: the client's data string, for ``message`` only)."""
    body: dict[str, Any] = {"command": command, "identifier": identifier}
    if identifiers:
        body["connection_identifiers"] = identifiers
    if data:
        body["data"] = data
    env = _env(url, headers, cstate, istate)
    if env:
        body["env"] = env
    return _dumps(body)


def disconnect_body(identifiers: str, subscriptions: list[str], url: str, headers: dict[str, str],
                    cstate: dict[str, str] | None, istates: dict[str, dict[str, str]]) -> bytes:
    """``DisconnectRequest``; each subscription's istate JSON-encoded, as
    AnyCable-Go's ``buildDisconnectEnv`` sends it."""
    body: dict[str, Any] = {}
    if identifiers:
        body["identifiers"] = identifiers
    if subscriptions:
        body["subscriptions"] = subscriptions
    encoded = {identifier: _dumps(state).decode() for identifier, state in istates.items() if state}
    env = _env(url, headers, cstate, encoded)
    if env:
        body["env"] = env
    return _dumps(body)


def call_headers(secret: str | None, sid: str) -> dict[str, str]:
    headers = {"X-AnyCable-Meta-Sid": sid, "X-AnyCable-Meta-Protov": PROTOCOL_VERSION}
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    return headers


# --- answers -----------------------------------------------------------------------


class Presence(NamedTuple):
    kind: str            # "join" or "leave"
    id: str
    info: bytes | None   # compact JSON


class Answer(NamedTuple):
    """A ``ConnectionResponse`` or ``CommandResponse``, checked."""

    status: int
    identifiers: str = ""
    transmissions: tuple[bytes, ...] = ()
    error: str = ""
    cstate: dict[str, str] | None = None
    istate: dict[str, str] | None = None
    disconnect: bool = False
    stop_streams: bool = False
    streams: tuple[str, ...] = ()
    stopped_streams: tuple[str, ...] = ()
    presence: Presence | None = None


def _status(body: dict) -> int:
    status = body.get("status", ERROR)
    if status is None:
        return ERROR
    if type(status) is not int or status not in (SUCCESS, FAILURE, ERROR):
        raise Garbage(f"status must be 0, 1 or 2, not {str(status)[:20]}")
    return status


def _string(body: dict, key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if type(value) is not str:
        raise Garbage(f"{key} must be a string")
    return value


def _strings(body: dict, key: str) -> tuple[str, ...]:
    value = body.get(key)
    if value is None:
        return ()
    if type(value) is not list or not all(type(v) is str for v in value):
        raise Garbage(f"{key} must be a list of strings")
    return tuple(value)


def _map(env: dict, key: str) -> dict[str, str] | None:
    value = env.get(key)
    if value is None:
        return None
    if type(value) is not dict or not all(type(v) is str for v in value.values()):
        raise Garbage(f"env.{key} must map strings to strings")
    return value


def _transmissions(body: dict) -> tuple[bytes, ...]:
    out = []
    for text in _strings(body, "transmissions"):
        # Passed on as they are: each must be a JSON text the client can parse.
        try:
            ujson.loads(text)
        except (ValueError, OverflowError):
            raise Garbage(f"a transmission is not JSON: {text[:60]!r}") from None
        out.append(text.encode())
    return tuple(out)


def _presence(body: dict) -> Presence | None:
    value = body.get("presence")
    if value is None:
        return None
    if type(value) is not dict:
        raise Garbage("presence must be an object")
    kind = value.get("type")
    if kind not in ("join", "leave"):
        raise Garbage(f"presence.type must be join or leave, not {str(kind)[:20]!r}")
    pid = _string(value, "id")
    info = _string(value, "info")
    raw = None
    if info:
        try:
            raw = _dumps(ujson.loads(info))
        except (ValueError, OverflowError):
            raw = _dumps(info)   # AnyCable-Go keeps an info that is not JSON as a string
    if kind == "join" and not pid:
        raise Garbage("presence join without an id")
    return Presence(kind, pid, raw)


def parse_answer(body: dict) -> Answer:
    """A connect's or a command's answer; raises Garbage."""
    status = _status(body)
    env = body.get("env")
    if env is None:
        env = {}
    if type(env) is not dict:
        raise Garbage("env must be an object")
    disconnect = body.get("disconnect", False)
    stop = body.get("stop_streams", False)
    if type(disconnect) is not bool or type(stop) is not bool:
        raise Garbage("disconnect and stop_streams must be true or false")
    return Answer(status, _string(body, "identifiers"), _transmissions(body), _string(body, "error_msg"),
                  _map(env, "cstate"), _map(env, "istate"), disconnect, stop, _strings(body, "streams"),
                  _strings(body, "stopped_streams"), _presence(body))


def merge(state: dict[str, str], changes: dict[str, str] | None) -> None:
    """``changes`` merged into ``state``: an empty value deletes its key."""
    if not changes:
        return
    for key, value in changes.items():
        if value == "":
            state.pop(key, None)
        else:
            state[key] = value


def state_size(state: dict[str, str]) -> int:
    return sum(len(k) + len(v) for k, v in state.items())


def presence_info(total: int, records: list[tuple[str, bytes | None]]) -> bytes:
    """The ``message`` of a presence info answer: ``{"type":"info","total",
    "records":[{"id","info"}]}`` (AnyCable's ``PresenceInfo``)."""
    parts = []
    for pid, info in records:
        record = b'{"id":%s' % _dumps(pid)
        if info is not None:
            record += b',"info":' + info
        parts.append(record + b"}")
    return b'{"type":"info","total":%d,"records":[%s]}' % (total, b",".join(parts))


PRESENCE_ERROR = b'{"type":"error","total":0}'


def presence_reply(identifier: bytes, message: bytes) -> bytes:
    """``{"type":"presence","identifier":…,"message":…}`` (``identifier``
    already a JSON string)."""
    return b'{"type":"presence","identifier":%s,"message":%s}' % (identifier, message)
