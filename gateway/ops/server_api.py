"""Centrifugo's server HTTP API, so that its stock clients (``cent`` on PyPI,
``gocent``, ``phpcent``, ``rubycent``) drive pushgate unchanged.

* ``POST /api/<method>`` with the request as the JSON body (Centrifugo v5
  and v6, what ``cent`` 5.x speaks), and ``POST /api`` with
  ``{"method": ..., "params": ...}`` commands, one per line (Centrifugo v4's
  format, which v5 and v6 keep).
* Authenticated by ``X-API-Key: KEY`` or ``Authorization: apikey KEY``
  (``--api-key``), checked on the headers before a byte of the body is read.
* Replies: ``{"result": {...}}``, or ``{"error": {"code": N, "message": ...}}``
  with status 200, as Centrifugo answers; 400 for a body that is not a JSON
  object of the right shape, 401 for a wrong key, 403 without --api-key,
  404 for an unknown method, 413 for a body that is too big.

``POST /api/publish`` with ``Authorization: apikey`` and without
``X-API-Key`` keeps the answers documented in docs/nsq-contract.md (200
``{}``, 400 ``{"error": "reason"}``, 503); :mod:`gateway.ops.handlers` serves those.

Methods: ``publish``, ``broadcast`` (one NSQ message for all channels),
``subscribe``, ``unsubscribe``, ``disconnect``, ``refresh`` (applied to this
node's connections and sent to every other node through the control topic;
the reply comes once it is sent), ``presence``, ``presence_stats`` (this
node's view of every node), ``history`` (every node keeps the same),
``history_remove`` (on every node), ``channels`` (a survey of every node),
``info`` (every node's last heartbeat) and ``batch``. docs/api.md has the
shapes and what differs from Centrifugo.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import Any

import ujson

from gateway.core import vocabulary
from gateway.protocols.centrifugo import model
from gateway.protocols.centrifugo.json_codec import Raw, encode
from gateway.protocols.centrifugo.model import Error
from gateway.protocols.centrifugo.options import BadOverride, Unhonoured, options_for
from gateway.nsq.envelope import BadMessage, parse_envelope
from gateway.core.channels import foreign_personal, valid_channel
from gateway.core.history import Publication, Published, from_position
from gateway.core.tags import BadTags, check_tags
from gateway.cluster.peering import ControlNotSent, valid_disconnect
from gateway.node import Node
from gateway.nsq.publisher import NsqdUnavailable, PublishError, publish

log = logging.getLogger("pushgate.api")

ERROR_NOT_SENT = Error(100, "internal server error: the other nodes were not told (nsqd unreachable)")
ERROR_NSQD = Error(100, "internal server error: nsqd unreachable")

INT64_MIN, INT64_MAX = -2**63, 2**63 - 1

# Commands in one batch (or one /api body), at most: more is answered 400, so
# that one request cannot hold the node for long nor build an unbounded reply.
MAX_BATCH = 1000
# Commands run between two returns to the event loop: a batch of commands that
# need no I/O (presence, history, info) never holds the loop for long.
BATCH_SLICE = 16

# Centrifugo v4's method numbers, for /api commands that give one.
LEGACY_METHODS = ("publish", "broadcast", "unsubscribe", "disconnect", "presence", "presence_stats", "history",
                  "history_remove", "channels", "info", "rpc", "subscribe", "refresh")


class BadRequest(Exception):
    """A field of the wrong type: HTTP 400 on /api/<method>, error 107 in a batch."""


class Failed(Exception):
    def __init__(self, error: Error):
        super().__init__(error.message)
        self.error = error


def _field(params: dict, name: str, kind: type | tuple, required: bool = False) -> Any:
    value = params.get(name)
    if value is None:
        if required:
            raise Failed(model.ERROR_BAD_REQUEST)
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"{name}: wrong type")
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise BadRequest(f"{name}: out of range")   # Centrifugo decodes it into an int64
    return value


def _interchangeable(params: dict) -> bool:
    """Whether ``params`` is JSON every party reads alike (RFC 8259 section 8):
    no lone surrogate, no NaN or Infinity (``1e400`` reads as Infinity).
    Encoding says so, in C: ujson refuses NaN and Infinity, UTF-8 surrogates."""
    try:
        ujson.dumps(params, ensure_ascii=False, allow_nan=False).encode()
    except (UnicodeEncodeError, OverflowError):
        return False
    return True


def _json_text(value: Any) -> str | None:
    return None if value is None else ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False)


class ServerApi:
    """The methods, apart from HTTP. Each takes the request dict and returns the
    result dict, or raises :class:`Failed` (an error reply) or
    :class:`BadRequest`."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.methods = {
            "publish": self.publish, "broadcast": self.broadcast, "subscribe": self.subscribe,
            "unsubscribe": self.unsubscribe, "disconnect": self.disconnect, "refresh": self.refresh,
            "presence": self.presence, "presence_stats": self.presence_stats, "history": self.history,
            "history_remove": self.history_remove, "channels": self.channels, "info": self.info,
        }

    async def reply(self, method: str, params: dict, *, lenient: bool = False) -> dict:
        """``{"result": ...}`` or ``{"error": ...}``. A field of the wrong type,
        an integer out of int64's range, or params that are not interchangeable
        JSON (a lone surrogate, NaN, Infinity) raise BadRequest (HTTP 400, as
        Centrifugo answers a body it cannot decode), or with ``lenient`` (a
        batch, /api commands) are error 107."""
        metrics = self.node.metrics
        handler = self.methods.get(method)
        try:
            if handler is None:
                raise Failed(model.ERROR_METHOD_NOT_FOUND)
            if type(params) is not dict:
                raise BadRequest("params must be an object")
            if not _interchangeable(params):
                # A lone surrogate could not even be sent on to the other nodes.
                raise BadRequest("not interchangeable JSON: a lone surrogate, NaN or Infinity")
            result = await handler(params)
        except BadRequest:
            if not lenient:
                raise
            metrics.api_calls.labels(method if handler else "unknown", "107").inc()
            return {"error": _error(model.ERROR_BAD_REQUEST)}
        except Failed as exc:
            metrics.api_calls.labels(method if handler else "unknown", str(exc.error.code)).inc()
            return {"error": _error(exc.error)}
        metrics.api_calls.labels(method, "ok").inc()
        return {"result": result}

    async def batch(self, params: dict) -> dict:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise BadRequest("commands must be a list")
        if len(commands) > MAX_BATCH:
            raise BadRequest(f"more than {MAX_BATCH} commands: split the batch")
        replies = []
        for n, command in enumerate(commands):
            if n and n % BATCH_SLICE == 0:
                await asyncio.sleep(0)  # the other connections' turn
            if type(command) is not dict or len(command) != 1:
                replies.append({"error": _error(model.ERROR_BAD_REQUEST)})
                continue
            (method, request), = command.items()
            reply = await self.reply(method, request, lenient=True)
            replies.append({method: reply["result"]} if "result" in reply else reply)
        self.node.metrics.api_calls.labels("batch", "ok").inc()
        return {"replies": replies}

    async def commands(self, body: bytes) -> list[bytes]:
        """``POST /api``: Centrifugo v4's commands, ``{"id", "method", "params"}``,
        one a line; their replies, encoded, in order. Raises BadRequest for a
        line that is not a command object, no command, or too many."""
        lines = [line for line in body.split(b"\n") if line.strip()]
        if not lines:
            raise BadRequest("no command in the body")
        if len(lines) > MAX_BATCH:
            raise BadRequest(f"more than {MAX_BATCH} commands: split them over several requests")
        replies = []
        for n, line in enumerate(lines):
            if n and n % BATCH_SLICE == 0:
                await asyncio.sleep(0)  # the other connections' turn
            try:
                command = ujson.loads(line)
            except (ValueError, OverflowError):
                command = None
            if type(command) is not dict:
                raise BadRequest("each line must be a JSON command object")
            method = legacy_method(command.get("method"))
            reply = await self.reply(method or "", command.get("params") or {}, lenient=True)
            cmd_id = command.get("id")
            if isinstance(cmd_id, int) and cmd_id:
                reply = {"id": cmd_id, **reply}
            replies.append(encode(reply))
        return replies

    # --- publishing ----------------------------------------------------------------------

    async def _publish_envelope(self, envelope: dict) -> None:
        body = ujson.dumps(envelope, ensure_ascii=False, escape_forward_slashes=False).encode()
        settings = self.node.settings
        if len(body) > settings.max_message_bytes:
            raise Failed(Error(107, f"bad request: over --max-message-bytes ({settings.max_message_bytes})"))
        try:
            parse_envelope(body)
        except BadMessage as exc:
            raise Failed(Error(107, f"bad request: {exc.detail}")) from None
        try:
            await publish(settings.nsqd_http_address, settings.topic, body)
        except (NsqdUnavailable, PublishError) as exc:
            log.warning("server API: publish to nsqd at %s failed: %s", settings.nsqd_http_address, exc)
            raise Failed(ERROR_NSQD) from None

    def _targets(self, params: dict) -> dict:
        """pushgate's envelope extensions: ``user`` and ``users``."""
        out = {}
        user = _field(params, "user", (str, int))
        users = _field(params, "users", list)
        if user is not None:
            out["user"] = user
        if users:
            out["users"] = users
        return out

    def _data(self, params: dict) -> dict:
        """The publication fields of publish and broadcast, as envelope fields
        (docs/api.md has the table): ``data`` or ``b64data``, ``tags``,
        ``skip_history``, ``version`` / ``version_epoch``, and
        ``idempotency_key`` as the envelope's ``id`` (every node delivers an id
        once within its dedupe window). ``delta`` asks for what is an
        optimisation in Centrifugo: publications always go out whole here."""
        b64data = _field(params, "b64data", str)
        if b64data:
            if params.get("data") is not None:
                raise Failed(Error(107, "bad request: give data or b64data, not both"))
            try:
                base64.b64decode(b64data, validate=True)
            except (binascii.Error, ValueError):
                raise Failed(Error(107, "bad request: b64data is not base64")) from None
            envelope: dict = {"b64data": b64data}
        elif "data" in params:
            envelope = {"data": params["data"]}
        else:
            raise Failed(model.ERROR_BAD_REQUEST)
        key = _field(params, "idempotency_key", str)
        if key:
            envelope["id"] = key
        tags = _field(params, "tags", dict)
        if tags:
            try:
                envelope["tags"] = check_tags(tags)
            except BadTags as exc:
                raise Failed(Error(107, f"bad request: tags: {exc}")) from None
        if _field(params, "skip_history", bool):
            envelope["skip_history"] = True
        version = _field(params, "version", int)
        if version:
            if version < 0:
                raise Failed(Error(107, "bad request: version must not be negative"))
            envelope["version"] = version
            epoch = _field(params, "version_epoch", str)
            if epoch:
                envelope["version_epoch"] = epoch
        _field(params, "delta", bool)
        if _field(params, "receipt", bool):
            # Receipts name the message by its id (docs/events.md).
            if not key:
                raise BadRequest("receipt: needs idempotency_key, the id receipts name the message by")
            envelope["receipt"] = True
        return envelope

    async def publish(self, params: dict) -> dict:
        channel = _field(params, "channel", str)
        envelope = self._targets(params)
        if channel is not None:
            if not valid_channel(channel):
                raise Failed(model.ERROR_BAD_REQUEST)
            envelope["channel"] = channel
        if not envelope:
            raise Failed(model.ERROR_BAD_REQUEST)
        envelope.update(self._data(params))
        await self._publish_envelope(envelope)
        return {}

    async def broadcast(self, params: dict) -> dict:
        channels = _field(params, "channels", list)
        targets = self._targets(params)
        if not channels and not targets:
            raise Failed(model.ERROR_BAD_REQUEST)
        envelope = dict(targets, **self._data(params))
        good = [c for c in channels or () if isinstance(c, str) and valid_channel(c)]
        if good:
            envelope["channels"] = list(dict.fromkeys(good))
        error = None
        if good or targets:
            try:
                await self._publish_envelope(envelope)
            except Failed as exc:
                error = exc.error
        responses = []
        for channel in channels or ():
            if not (isinstance(channel, str) and valid_channel(channel)):
                responses.append({"error": _error(model.ERROR_BAD_REQUEST)})
            elif error is not None:
                responses.append({"error": _error(error)})
            else:
                responses.append({"result": {}})
        if error is not None and not channels:
            raise Failed(error)
        return {"responses": responses}

    # --- actions on connections, on every node -----------------------------------------------

    def _user(self, params: dict) -> str:
        _refuse_pro(params)
        user = _field(params, "user", str, required=True)
        if not user:
            raise Failed(model.ERROR_BAD_REQUEST)
        return user

    async def _act(self, kind: str, **fields: Any) -> dict:
        fields = {k: v for k, v in fields.items() if v is not None}
        try:
            await self.node.peering.act(kind, **fields)
        except ControlNotSent:
            raise Failed(ERROR_NOT_SENT) from None
        return {}

    async def subscribe(self, params: dict) -> dict:
        user = self._user(params)
        channel = _field(params, "channel", str, required=True)
        if not valid_channel(channel):
            raise Failed(model.ERROR_BAD_REQUEST)
        if foreign_personal(channel, user):
            raise Failed(model.ERROR_PERMISSION_DENIED)  # another user's personal channel: never
        if params.get("b64info") or params.get("b64data"):
            raise Failed(Error(108, "not available: b64info, b64data (info and data are JSON here)"))
        node = self.node
        expire_at = _field(params, "expire_at", int) or None
        if expire_at is not None and expire_at <= node.host.wall():
            raise Failed(Error(model.ERROR_EXPIRED.code, "expired: expire_at is not in the future"))
        since = self._recover_since(params, channel)
        override = params.get("override")
        try:
            options_for(override, channel, node.presence, node.host.history)
        except BadOverride as exc:
            raise Failed(Error(107, f"bad request: {exc}")) from None
        except Unhonoured as exc:
            raise Failed(Error(108, f"not available: {exc}")) from None
        fields = {"user": user, "channel": channel, "client": _field(params, "client", str),
                  "session": _field(params, "session", str) or None,
                  "info": _json_text(params.get("info")), "data": _json_text(params.get("data")),
                  "expire_at": expire_at, "since": since, "override": override or None}
        try:
            touched, refused = await self.node.peering.act_everywhere(
                "api-subscribe", **{k: v for k, v in fields.items() if v is not None})
        except ControlNotSent:
            raise Failed(ERROR_NOT_SENT) from None
        if not touched and refused:
            # Never a silent success: the user's connections could not take it
            # (e.g. all of them speak Action Cable, which has no such message).
            raise Failed(model.Error(model.ERROR_NOT_AVAILABLE.code, "; ".join(sorted(set(refused)))[:500]))
        return {}

    def _recover_since(self, params: dict, channel: str) -> list | None:
        """``recover_since`` ({offset, epoch}) as [epoch, offset], checked: the
        channel must keep history, or there is nothing to recover from (108)."""
        since = _field(params, "recover_since", dict)
        if since is None:
            return None
        offset, epoch = since.get("offset", 0), since.get("epoch", "")
        if type(offset) is not int or not 0 <= offset <= 2**64 - 1 or type(epoch) is not str:
            raise BadRequest("recover_since: {offset: uint64, epoch: string}")
        if not self.node.host.history.enabled(channel):
            raise Failed(Error(108, f"not available: {channel[:80]!r} keeps no history to recover from "
                                    "(--history-size, --history)"))
        return [epoch, offset]

    async def unsubscribe(self, params: dict) -> dict:
        user = self._user(params)
        channel = _field(params, "channel", str, required=True)
        if not channel:
            raise Failed(model.ERROR_BAD_REQUEST)
        return await self._act("api-unsubscribe", user=user, channel=channel, client=_field(params, "client", str),
                               session=_field(params, "session", str) or None)

    async def disconnect(self, params: dict) -> dict:
        user = self._user(params)
        whitelist = _field(params, "whitelist", list)
        if whitelist and not all(isinstance(c, str) for c in whitelist):
            raise BadRequest("whitelist: client ids (strings)")   # never dropped: it would disconnect them
        custom = _field(params, "disconnect", dict)
        code, reason = model.disconnect_of(vocabulary.FORCE_DISCONNECT)
        if custom is not None:
            code, reason = custom.get("code", 0), custom.get("reason", "")
            if not valid_disconnect(code, reason):
                raise Failed(Error(107, f"bad request: {disconnect_problem(code, reason)}"))
        return await self._act("api-disconnect", user=user, client=_field(params, "client", str),
                               session=_field(params, "session", str) or None,
                               whitelist=whitelist or None,
                               code=code, reason=reason)

    async def refresh(self, params: dict) -> dict:
        user = self._user(params)
        expired = _field(params, "expired", bool)
        expire_at = _field(params, "expire_at", int)
        if expire_at is not None and expire_at <= self.node.host.wall() and not expired:
            expired = True  # a time in the past: as good as expired
        info = _json_text(params.get("info"))
        if info is not None and not expired and not expire_at:
            # Centrifugo applies info only with a future expire_at; never dropped without a word.
            raise Failed(Error(107, "bad request: info applies with a future expire_at (as in Centrifugo)"))
        return await self._act("api-refresh", user=user, client=_field(params, "client", str),
                               session=_field(params, "session", str) or None, expired=expired or None,
                               expire_at=expire_at, info=None if expired else info)

    # --- what this node knows ------------------------------------------------------------------

    def _presence_channel(self, params: dict) -> str:
        channel = _field(params, "channel", str, required=True)
        if not channel:
            raise Failed(model.ERROR_BAD_REQUEST)
        if not self.node.presence.enabled(channel):
            raise Failed(model.ERROR_NOT_AVAILABLE)
        return channel

    async def presence(self, params: dict) -> dict:
        return {"presence": Raw(self.node.presence.clients_json(self._presence_channel(params)))}

    async def presence_stats(self, params: dict) -> dict:
        clients, users = self.node.presence.stats(self._presence_channel(params))
        return {"num_clients": clients, "num_users": users}

    def _history_channel(self, params: dict) -> str:
        channel = _field(params, "channel", str, required=True)
        if not channel:
            raise Failed(model.ERROR_BAD_REQUEST)
        if not self.node.host.history.enabled(channel):
            raise Failed(model.ERROR_NOT_AVAILABLE)
        return channel

    async def history(self, params: dict) -> dict:
        channel = self._history_channel(params)
        limit = _field(params, "limit", int) or 0
        since = _field(params, "since", dict)
        reverse = bool(_field(params, "reverse", bool))
        host = self.node.host
        epoch, top = host.history.top(channel, host.now_ns())
        after = None
        if since:
            offset = since.get("offset", 0)
            if since.get("epoch", "") != epoch or not isinstance(offset, int):
                raise Failed(model.ERROR_UNRECOVERABLE_POSITION)
            after = from_position(epoch, offset) if offset > 0 else None
        pubs = [] if limit == 0 else host.history.publications(channel, after=after, limit=limit, reverse=reverse)
        result: dict = {"publications": [_api_publication(pub) for pub in pubs], "epoch": epoch, "offset": top}
        return result

    async def history_remove(self, params: dict) -> dict:
        return await self._act("api-history-remove", channel=self._history_channel(params))

    async def channels(self, params: dict) -> dict:
        pattern = _field(params, "pattern", str)
        counts, silent = await self.node.peering.channels(pattern)
        if silent:
            log.warning("channels: no answer within the survey timeout from %s", ", ".join(silent))
        return {"channels": {channel: {"num_clients": n} for channel, n in sorted(counts.items())}}

    async def info(self, params: dict) -> dict:
        return {"nodes": self.node.peering.nodes()}


def _refuse_pro(params: dict) -> None:
    """Centrifugo PRO's ``label_filter`` and ``all_users`` (on subscribe,
    unsubscribe, disconnect, refresh) pick connections by labels pushgate does
    not keep: refused (108) rather than dropped, so the call never quietly
    reaches other connections than the caller meant."""
    given = [name for name in ("label_filter", "all_users") if params.get(name)]
    if given:
        raise Failed(Error(108, f"not available: {', '.join(given)} (Centrifugo PRO; pushgate has no "
                                "connection labels): name the user"))


def disconnect_problem(code: object, reason: object) -> str:
    """Why ``disconnect: {code, reason}`` is refused, and what would do."""
    if not isinstance(code, int) or isinstance(code, bool) or not 3000 <= code <= 4999:
        return (f"disconnect.code {code!r} is not one the SDKs act on: give 3000-4999 (3000-3499 and 4000-4499: "
                "the client reconnects; 3500-3999 and 4500-4999: it does not), e.g. 4501")
    if not isinstance(reason, str):
        return f"disconnect.reason must be a string, not {type(reason).__name__}"
    return f"disconnect.reason is {len(reason.encode())} bytes, over the 123 a close frame can carry"


def _api_publication(pub: Publication) -> Publication | dict:
    """A history publication as the server API returns it: as the JSON client
    protocol has it, but binary data that is not JSON as ``"data": null`` and
    ``b64data`` (JSON cannot carry it, and Centrifugo's HTTP API has no
    answer for it; ``data`` stays, so clients such as cent that require it
    still decode the reply)."""
    data = pub.data
    if type(data) is not Published or data.json_form() is not None:
        return pub
    out: dict = {"data": None, "b64data": base64.b64encode(data).decode(), "offset": pub.offset}
    if data.tags:
        out["tags"] = data.tags
    return out


def _error(error: Error) -> dict:
    return {"code": error.code, "message": error.message}


def legacy_method(value: object) -> str | None:
    """A v4 command's method: its name in any case, or its number."""
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(LEGACY_METHODS):
        return LEGACY_METHODS[value]
    return None
