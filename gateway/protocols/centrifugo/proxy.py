"""Centrifugo's HTTP proxies, as this protocol asks them: the backend decides
connects without a token, refreshes, subscribes, publishes and RPCs.

The requests and answers are Centrifugo's JSON (``internal/proxyproto/
proxy.proto``, its HTTP form): every request carries ``client``,
``transport``, ``protocol`` (``json`` / ``protobuf``) and ``encoding``
(``json``, or ``binary`` for Protobuf clients, whose payloads travel as
``b64data``); later ones add ``user`` and the connection's ``meta``. The
answer is ``{"result": ...}``, ``{"error": {"code", "message",
"temporary"}}`` or ``{"disconnect": {"code", "reason"}}`` (disconnect
first, then error, as Centrifugo reads them). A call that fails (timeout,
backend down, a status other than 200, garbage) is error 100 for the client,
as Centrifugo answers it; the calls themselves are bounded by
:class:`gateway.backend.caller.Caller`. See docs/proxy.md.

Each proxy is off unless its URL is set: the session asks
:func:`proxies_of` only on a path that may need one, and a node without
proxies builds nothing.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import TYPE_CHECKING, Any, NamedTuple

import ujson

from gateway.backend.caller import Caller, CallerMetrics, Outcome, shared_metrics
from gateway.nsq import publisher
from gateway.core.channels import Patterns
from gateway.core.tags import BadTags, check_tags
from gateway.core.session import CONNECTED
from gateway.protocols.centrifugo import model
from gateway.protocols.centrifugo.options import BadOverride, SubscriptionOptions, Unhonoured, options_for

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.core.host import SessionHost
    from gateway.protocols.centrifugo.session import CentrifugoSession

log = logging.getLogger("pushgate.proxy")
SHARED_KEY = "centrifugo.proxies"
MAX_TIME = 2**53   # seconds: past it a time cannot be compared with the clock as a float
REFRESH_RETRY = 60  # seconds: a failed refresh call extends the connection this long, as Centrifugo does


class Proxies:
    """The node's proxies, each a bounded :class:`Caller` or None (off)."""

    def __init__(self, settings: Settings, metrics: CallerMetrics):
        def caller(name: str, url: str | None) -> Caller | None:
            if not url:
                return None
            return Caller(name, url, metrics, timeout=settings.proxy_timeout,
                          concurrency=settings.proxy_concurrency, queue=settings.proxy_queue)

        self.connect = caller("connect", settings.connect_proxy_url)
        self.refresh = caller("refresh", settings.refresh_proxy_url)
        self.subscribe = caller("subscribe", settings.subscribe_proxy_url)
        self.sub_refresh = caller("sub_refresh", settings.sub_refresh_proxy_url)
        self.publish = caller("publish", settings.publish_proxy_url)
        self.rpc = caller("rpc", settings.rpc_proxy_url)
        self.rpc_routes = [(prefix, caller(f"rpc:{prefix}", url)) for prefix, url in settings.rpc_proxy]
        self.subscribe_channels = Patterns(settings.subscribe_proxy)
        self.publish_channels = Patterns(settings.publish_proxy)
        self.headers = tuple(h for h in settings.proxy_headers.split(",") if h)
        self.emulated = frozenset(h for h in settings.proxy_emulated_headers.split(",") if h)

    def rpc_for(self, method: str) -> Caller | None:
        for prefix, rpc in self.rpc_routes:
            if method.startswith(prefix):
                return rpc
        return self.rpc

    def callers(self) -> list[Caller]:
        found = [self.connect, self.refresh, self.subscribe, self.sub_refresh, self.publish, self.rpc,
                 *(c for _, c in self.rpc_routes)]
        return [c for c in found if c is not None]


def any_proxy(settings: Settings) -> bool:
    return bool(settings.connect_proxy_url or settings.refresh_proxy_url or settings.subscribe_proxy_url
                or settings.sub_refresh_proxy_url or settings.publish_proxy_url or settings.rpc_proxy_url
                or settings.rpc_proxy)


def proxies_of(host: SessionHost) -> Proxies:
    return host.shared(SHARED_KEY, lambda h: Proxies(h.settings, shared_metrics(h)))


# What the proxies keep per connection, only for connections a proxy concerns
# (session -> ProxyState); a session's entry goes when it closes.
STATES: dict[Any, "ProxyState"] = {}


class ProxyState:
    """What a proxied connection keeps: the request headers passed to the
    proxies, the connect result's ``meta`` (never sent to the client), and,
    between the connect proxy's answer and the connect reply, its ``data``
    and per-channel ``subs``."""

    __slots__ = ("headers", "meta", "connect_data", "subs", "refreshed", "conn_info", "absent", "aside",
                 "chan_info", "unrecoverable")

    def __init__(self, headers: dict[str, str] | None = None):
        self.headers = headers
        self.meta: Any = None
        self.connect_data: bytes | None = None
        self.subs: dict[str, tuple[bytes | None, bytes | None]] = {}
        self.refreshed: set[str] = set()   # subscriptions whose expiry the sub refresh proxy decides
        self.conn_info: bytes | None = None  # the connection's info, for its publications
        self.absent: set[str] = set()   # connect subs kept out of presence (override presence false)
        self.unrecoverable: set[str] = set()   # connect subs answered without recoverable (force_recovery false)
        self.aside: set[asyncio.Future] = set()  # refresh calls under way, withdrawn when the connection closes
        self.chan_info: dict[str, bytes] = {}  # channel -> this connection's info there, for its publications


# --- the answers --------------------------------------------------------------------


class Garbage(Exception):
    """A backend answer of the wrong shape; the message says why."""


class Decision(NamedTuple):
    """What the backend decided: exactly one of ``result`` (a dict),
    ``error``, ``disconnect``; all None when the call failed."""

    result: dict | None = None
    error: model.Error | None = None
    disconnect: model.Disconnect | None = None

    @property
    def failed(self) -> bool:
        return self.result is None and self.error is None and self.disconnect is None


FAILED = Decision()


def _code(value: Any, what: str) -> int:
    if type(value) is not int or not 0 < value < 2**32:
        raise Garbage(f"{what} must be a positive integer, not {value!r}")
    return value


def decide(caller: Caller, outcome: Outcome) -> Decision:
    """The backend's decision, or FAILED (the call failed, or its answer is
    refused: counted and logged by the caller)."""
    if not outcome.ok:
        return FAILED
    body = outcome.body
    assert body is not None
    try:
        disconnect = body.get("disconnect")
        if disconnect is not None:
            if type(disconnect) is not dict:
                raise Garbage("disconnect is not an object")
            reason = disconnect.get("reason", "")
            if type(reason) is not str:
                raise Garbage("disconnect.reason is not a string")
            code = _code(disconnect.get("code"), "disconnect.code")
            if code < 3000:
                raise Garbage(f"disconnect.code {code} is below 3000")
            return Decision(disconnect=model.Disconnect(code, reason.encode()[:120].decode(errors="ignore")))
        error = body.get("error")
        if error is not None:
            if type(error) is not dict:
                raise Garbage("error is not an object")
            message = error.get("message", "")
            temporary = error.get("temporary", False)
            if type(message) is not str or type(temporary) is not bool:
                raise Garbage("error.message must be a string and error.temporary a boolean")
            return Decision(error=model.Error(_code(error.get("code"), "error.code"), message, temporary))
        result = body.get("result")
        if result is None:
            result = {}   # Centrifugo: an empty answer is an empty result
        if type(result) is not dict:
            raise Garbage("result is not an object")
        return Decision(result=result)
    except Garbage as exc:
        caller.refused(str(exc))
        return FAILED


def payload(session: CentrifugoSession, result: dict, name: str) -> bytes | None:
    """``result``'s ``name`` (``data``, ``info``) as the bytes the client gets:
    ``b64<name>`` decoded, or ``<name>`` (any JSON value) as compact JSON.
    For a JSON client the bytes must be JSON (they are embedded as they are).
    Raises Garbage."""
    encoded = result.get("b64" + name)
    if encoded not in (None, ""):
        if type(encoded) is not str:
            raise Garbage(f"b64{name} is not a string")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise Garbage(f"b64{name} is not base64") from None
        if session.codec.name == "json":
            try:
                ujson.loads(raw)
            except (ValueError, OverflowError):
                raise Garbage(f"b64{name} is not JSON, which a JSON client needs") from None
        return raw
    if name not in result:
        return None
    return ujson.dumps(result[name], ensure_ascii=False, escape_forward_slashes=False).encode()


def json_bytes(value: Any) -> bytes:
    return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False).encode()


def json_info(raw: bytes) -> bytes:
    """A result's info as compact JSON bytes, as presence and publications
    carry it; raises Garbage when it is not JSON (a Protobuf client's
    ``b64info`` may be any bytes)."""
    try:
        return json_bytes(ujson.loads(raw))
    except (ValueError, OverflowError):
        raise Garbage("info is not JSON (presence and publications carry JSON info here)") from None


def client_payload(data: Any) -> bytes | None:
    """A client's publish data as bytes: a JSON client's value as JSON, a
    Protobuf client's bytes as they are (binary publications are delivered
    as Centrifugo delivers them: see docs/api.md); None when there is none."""
    if data is None:
        return None
    if isinstance(data, bytes):
        return data
    return json_bytes(data)


def publish_options(result: dict) -> dict:
    """The publish proxy result's fields beyond the data, as envelope fields:
    ``skip_history``, ``tags``, ``idempotency_key`` (the envelope's ``id``),
    ``version`` / ``version_epoch``. ``delta`` asks for what is an
    optimisation in Centrifugo; publications always go out whole here.
    Raises Garbage."""
    options: dict = {}
    skip = result.get("skip_history")
    if skip is not None and type(skip) is not bool:
        raise Garbage("skip_history must be true or false")
    if skip:
        options["skip_history"] = True
    try:
        tags = check_tags(result.get("tags"))
    except BadTags as exc:
        raise Garbage(f"tags: {exc}") from None
    if tags:
        options["tags"] = tags
    key = result.get("idempotency_key")
    if key not in (None, ""):
        if type(key) is not str or len(key) > 256:
            raise Garbage("idempotency_key must be a string (256 characters at most)")
        options["id"] = key
    delta = result.get("delta")
    if delta is not None and type(delta) is not bool:
        raise Garbage("delta must be true or false")
    version, epoch = result.get("version"), result.get("version_epoch")
    if version not in (None, 0):
        if type(version) is not int or not 0 < version < 2**64:
            raise Garbage("version must be a positive integer")
        if epoch is not None and (type(epoch) is not str or len(epoch) > 256):
            raise Garbage("version_epoch must be a string")
        options["version"] = version
        if epoch:
            options["version_epoch"] = epoch
    return options


def _json(data: bytes) -> bool:
    try:
        ujson.loads(data)
    except (ValueError, OverflowError):
        return False
    return True


def publish(settings: Settings, channel: str, data: bytes, user: str, client: str, conn_info: bytes | None,
            chan_info: bytes | None, options: dict) -> asyncio.Future[bool]:
    """Publish a client's publication through NSQ, as a backend would (every
    node gets it, history keeps it unless ``skip_history``), with its
    publisher's ClientInfo and the backend's ``options`` (:func:`publish_options`);
    the future says whether nsqd took it. Data that is not JSON travels as
    ``b64data``."""
    info = b'{"user":%s,"client":%s%s%s}' % (json_bytes(user), json_bytes(client),
                                             b',"conn_info":' + conn_info if conn_info is not None else b"",
                                             b',"chan_info":' + chan_info if chan_info is not None else b"")
    payload = b'"data":%s' % data if _json(data) else b'"b64data":"%s"' % base64.b64encode(data)
    envelope = b'{"channel":%s,%s,"info":%s%s}' % (
        json_bytes(channel), payload, info, b"," + json_bytes(options)[1:-1] if options else b"")

    async def send() -> bool:
        try:
            await publisher.publish(settings.nsqd_http_address, settings.topic, envelope, timeout=settings.proxy_timeout)
        except (publisher.PublishError, publisher.NsqdUnavailable) as exc:
            log.error("publish to %s through nsqd failed: %s", channel, exc)
            return False
        return True

    return asyncio.ensure_future(send())


def json_value(raw: bytes | None) -> Any:
    """Bytes of JSON as a value (None when absent or not JSON)."""
    if raw is None:
        return None
    try:
        return ujson.loads(raw)
    except (ValueError, OverflowError):
        return None


def sub_options(session: CentrifugoSession, channel: str, result: dict) -> SubscriptionOptions:
    """``result``'s ``override`` for ``channel`` (a subscribe result, a connect
    ``subs`` entry), as pushgate honours it (gateway/protocols/centrifugo/
    options.py); one it cannot honour, or of the wrong shape, is Garbage."""
    cache_recover = result.get("cache_recover")
    if cache_recover is not None and type(cache_recover) is not bool:
        raise Garbage("cache_recover must be true or false")
    if cache_recover and not session.host.cache.match(channel):
        # Centrifugo applies it only in cache recovery mode: here, --cache channels (which recover always).
        raise Garbage(f"cache_recover: {channel[:80]!r} is not a --cache channel")
    try:
        return options_for(result.get("override"), channel, session.host.presence, session.host.history)
    except (BadOverride, Unhonoured) as exc:
        raise Garbage(str(exc)) from None


def expire_at(result: dict) -> int | None:
    """``expire_at``: None or 0 for never; raises Garbage."""
    value = result.get("expire_at")
    if value in (None, 0):
        return None
    if type(value) is not int or not 0 < value < MAX_TIME:
        raise Garbage(f"expire_at must be a Unix time in seconds, not {str(value)[:40]}")
    return value


# --- the requests -------------------------------------------------------------------


def request(session: CentrifugoSession, **fields: Any) -> dict:
    """The fields every proxy request carries, then ``fields``; with ``user``
    and ``meta`` once connected."""
    codec = session.codec.name
    body: dict[str, Any] = {"client": session.client_id, "transport": session.wire.name.split("-")[0],
                            "protocol": codec, "encoding": "binary" if codec == "protobuf" else "json"}
    if session.state is CONNECTED:
        body["user"] = session.user
        state = session.proxied
        if state is not None and state.meta is not None:
            body["meta"] = state.meta
    body.update(fields)
    return body


def with_data(session: CentrifugoSession, body: dict, data: Any) -> dict:
    """The client's payload in the request: raw JSON (``data``) from a JSON
    client, base64 (``b64data``) from a Protobuf one."""
    if data is None:
        return body
    if isinstance(data, bytes):
        body["b64data"] = base64.b64encode(data).decode()
    else:
        body["data"] = data
    return body


def encode(body: dict) -> bytes:
    return ujson.dumps(body, ensure_ascii=False, escape_forward_slashes=False).encode()


def emulated_headers(host: SessionHost, headers: Any) -> dict[str, str] | None:
    """The connect command's ``headers`` named in --proxy-emulated-headers
    (client input: never the real headers' allow-list), canonically named."""
    if not headers or not host.settings.proxy_emulated_headers or type(headers) is not dict:
        return None
    allowed = proxies_of(host).emulated
    return {canonical(k.lower()): v for k, v in headers.items()
            if type(k) is str and type(v) is str and k.lower() in allowed and len(v) <= 8192} or None


def canonical(name: str) -> str:
    """``cookie`` as ``Cookie``, ``x-user-id`` as ``X-User-Id``."""
    return "-".join(part.capitalize() for part in name.split("-"))


def headers_of(session: CentrifugoSession) -> dict[str, str] | None:
    state = session.proxied
    return state.headers if state is not None else None

