"""What arrives from NSQ, parsed into deliveries (pure, no I/O).

Two shapes reach the gateway (the contract is ``docs/nsq-contract.md``):

* the **envelope topic**: a JSON object naming its targets
  (``channel``/``channels``/``user``/``users``), the ``data`` to deliver and
  an optional publisher ``id``;
* a **mapped topic**: the body is the publication data as it is, for one
  fixed channel.

Both become a :class:`Delivery` whose ``data`` is compact JSON as UTF-8
bytes, so the hub can embed it in every frame without touching it again.
Only interchangeable JSON (RFC 8259 section 8) goes out: ``NaN``,
``Infinity`` and lone surrogates, which ujson and Python's json accept but
browsers' ``JSON.parse`` and the Protobuf SDKs do not, make a message bad.
"""
from __future__ import annotations

import base64
import binascii
from typing import Callable, NamedTuple

import ujson

from gateway.core.channels import MAX_CHANNEL_LENGTH, PERSONAL_PREFIX, valid_channel
from gateway.core.tags import BadTags, check_tags


class BadMessage(Exception):
    """A message that cannot be delivered. ``reason`` is a short label for metrics."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Delivery(NamedTuple):
    channels: tuple[str, ...]
    data: bytes          # compact JSON, UTF-8; or a b64data's bytes (binary)
    id: str | None
    # The publisher, when a client published (the publish proxy): Centrifugo's
    # ClientInfo, {"user", "client", "conn_info", "chan_info"}; and whether the
    # publication stays out of history.
    info: dict | None = None
    skip_history: bool = False
    # The backend asked for delivery receipts (docs/events.md): per target user,
    # this node says how many of their connections it wrote the message to.
    receipt: bool = False
    # A connection that does not get it (its own echo): Action Cable's socket
    # id, the ``sid`` /cable gives it (``exclude_socket`` / ``X-Socket-ID``).
    exclude: str | None = None
    tags: dict[str, str] | None = None
    binary: bool = False         # data came as b64data: any bytes
    json: bytes | None = None    # when binary: the bytes as compact JSON, None if they are not JSON
    version: int = 0             # Centrifugo's version / version_epoch: stale ones are dropped
    version_epoch: str = ""

    @property
    def plain(self) -> bool:
        """Only data: the common case, delivered on the fast path."""
        return self.info is None and not self.skip_history and not self.receipt and self.exclude is None\
            and self.tags is None \
            and not self.binary and not self.version


def json_bytes(value: object) -> bytes:
    """Compact UTF-8 JSON of ``value``; raises :class:`BadMessage` for what is not
    interchangeable JSON (NaN, Infinity, lone surrogates)."""
    try:
        return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False,
                           allow_nan=False).encode("utf-8")
    except OverflowError:
        raise BadMessage("invalid_json", "NaN or Infinity is not JSON") from None
    except UnicodeEncodeError:
        raise BadMessage("invalid_json", "a string holds a lone surrogate") from None


def parse_envelope(body: bytes) -> Delivery:
    try:
        obj = ujson.loads(body)
    except (ValueError, OverflowError):
        raise BadMessage("not_json", "body is not JSON") from None
    if type(obj) is not dict:
        raise BadMessage("bad_envelope", "body is not a JSON object")
    if "data" not in obj and "b64data" not in obj:
        raise BadMessage("bad_envelope", 'no "data"')
    channels: list[str] = []
    _add_targets(channels, obj, "channel", "channels", _channel)
    _add_targets(channels, obj, "user", "users", _user_channel)
    if not channels:
        raise BadMessage("no_target", 'no "channel", "channels", "user" or "users"')
    msg_id = obj.get("id")
    if msg_id is not None:
        if type(msg_id) is int:
            msg_id = str(msg_id)
        elif not isinstance(msg_id, str) or not msg_id:
            raise BadMessage("bad_envelope", '"id" must be a non-empty string or an integer')
    # dict.fromkeys drops a channel named twice (e.g. by "channel" and "channels").
    targets = tuple(dict.fromkeys(channels))
    if _EXTRAS.isdisjoint(obj):
        return Delivery(targets, json_bytes(obj["data"]), msg_id)
    receipt = _flag(obj.get("receipt"), "receipt")
    if receipt and msg_id is None:
        raise BadMessage("bad_envelope", '"receipt" needs an "id" (receipts name the message by it)')
    binary = json_form = None
    if "b64data" in obj:
        if "data" in obj:
            raise BadMessage("bad_envelope", 'give "data" or "b64data", not both')
        binary, json_form = _b64data(obj["b64data"])
    try:
        tags = check_tags(obj.get("tags"))
    except BadTags as exc:
        raise BadMessage("bad_envelope", f'"tags": {exc}') from None
    version, version_epoch = obj.get("version", 0), obj.get("version_epoch", "")
    if type(version) is not int or not 0 <= version < 2**64 or type(version_epoch) is not str \
            or len(version_epoch) > 256:
        raise BadMessage("bad_envelope", '"version" must be a non-negative integer, "version_epoch" a string')
    return Delivery(targets, binary if binary is not None else json_bytes(obj["data"]), msg_id,
                    info=_info(obj.get("info")), skip_history=_flag(obj.get("skip_history"), "skip_history"),
                    receipt=receipt, exclude=_exclude(obj.get("exclude")), tags=tags, binary=binary is not None, json=json_form, version=version,
                    version_epoch=version_epoch)


# Envelope fields beyond the targets, "data" and "id".
_EXTRAS = frozenset(("info", "skip_history", "receipt", "exclude", "tags", "b64data", "version", "version_epoch"))


def _b64data(value: object) -> tuple[bytes, bytes | None]:
    """A binary publication: its bytes, and them as compact JSON for JSON
    clients (None when they are not interchangeable JSON)."""
    if type(value) is not str:
        raise BadMessage("bad_envelope", '"b64data" must be a base64 string')
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadMessage("bad_envelope", '"b64data" is not base64') from None
    try:
        return raw, json_bytes(ujson.loads(raw))
    except (ValueError, OverflowError, BadMessage):
        return raw, None


MAX_EXCLUDE = 256


def _exclude(value: object) -> str | None:
    if value is None:
        return None
    if type(value) is not str or not 0 < len(value) <= MAX_EXCLUDE:
        raise BadMessage("bad_envelope", f'"exclude" must be a connection id (1-{MAX_EXCLUDE} characters)')
    return value


def _info(info: object) -> dict | None:
    """A publication's ClientInfo: ``user`` and ``client`` strings, ``conn_info``
    and ``chan_info`` any JSON (kept as compact JSON bytes)."""
    if info is None:
        return None
    if type(info) is not dict or not all(type(info.get(k, "")) is str for k in ("user", "client")):
        raise BadMessage("bad_envelope", '"info" must be an object with string "user" and "client"')
    out: dict = {"user": info.get("user", ""), "client": info.get("client", "")}
    for key in ("conn_info", "chan_info"):
        if info.get(key) is not None:
            out[key] = json_bytes(info[key])
    return out


def _flag(value: object, name: str) -> bool:
    if value is None:
        return False
    if type(value) is not bool:
        raise BadMessage("bad_envelope", f'"{name}" must be true or false')
    return value


def parse_mapped(body: bytes, channel: str) -> Delivery:
    """A mapped topic's body: JSON is embedded as is, other UTF-8 text as a JSON string."""
    try:
        data = ujson.loads(body)
    except (ValueError, OverflowError):
        try:
            data = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadMessage("not_utf8", "body is neither JSON nor UTF-8 text") from None
    return Delivery((channel,), json_bytes(data), None)


def envelope_targets(body: bytes) -> tuple[str, ...]:
    """The channels an envelope names, read leniently (only the valid targets),
    for a message that is dropped: the node marks a gap in those channels'
    history. Empty when the body names none (nobody could have delivered it)."""
    try:
        obj = ujson.loads(body)
    except (ValueError, OverflowError):
        return ()
    if type(obj) is not dict:
        return ()
    found: list[str] = []
    for one, many, convert in (("channel", "channels", _channel), ("user", "users", _user_channel)):
        values = [obj[one]] if one in obj else []
        if type(obj.get(many)) is list:
            values.extend(obj[many])
        for value in values:
            try:
                found.append(convert(value, one))
            except BadMessage:
                pass
    return tuple(dict.fromkeys(found))


def _add_targets(out: list[str], obj: dict, one: str, many: str, convert: Callable[[object, str], str]) -> None:
    if one in obj:
        out.append(convert(obj[one], one))
    if many in obj:
        values = obj[many]
        if type(values) is not list:
            raise BadMessage("bad_envelope", f'"{many}" must be a list')
        out.extend(convert(v, many) for v in values)


def _channel(value: object, field: str) -> str:
    if not valid_channel(value):
        raise BadMessage("bad_envelope", f'"{field}" must name channels (1-{MAX_CHANNEL_LENGTH} printable characters)')
    return value


def _user_channel(value: object, field: str) -> str:
    if type(value) is int:
        value = str(value)
    if not isinstance(value, str) or not value or not valid_channel(PERSONAL_PREFIX + value):
        raise BadMessage("bad_envelope", f'"{field}" must be user ids (strings or integers)')
    return PERSONAL_PREFIX + value
