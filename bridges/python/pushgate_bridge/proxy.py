"""Answer the gateway's proxy calls (Centrifugo's HTTP proxy JSON) from any
web framework: parse the request body, decide, send back one of
:func:`result`, :func:`error` or :func:`disconnect` as JSON with status 200.

    from pushgate_bridge import proxy

    # Django
    def connect(request):
        call = proxy.parse_request(request.body, request.headers)
        if not request.user.is_authenticated:
            return JsonResponse(proxy.disconnect(4501, "unauthorized"))
        return JsonResponse(proxy.result(user=str(request.user.pk), info={"name": request.user.username}))

    # Flask
    @app.post("/centrifugo/subscribe")
    def subscribe():
        call = proxy.parse_request(flask.request.get_data(), flask.request.headers)
        if not may_enter(call.user, call.channel):
            return proxy.error(403, "not in this room")
        return proxy.result(data={"welcome": call.channel})

Payloads: a JSON client's ``data`` arrives as JSON (``call.data``); a
Protobuf client's as ``b64data`` (``call.data`` is then the decoded bytes,
and :func:`result` with ``data=bytes`` answers ``b64data``). Standard
library only. See docs/proxy.md.
"""
from __future__ import annotations

import base64
import json
from typing import Any, Mapping

__all__ = ["ProxyRequest", "parse_request", "result", "error", "disconnect", "BadRequest"]


class BadRequest(ValueError):
    """The body is not a proxy request (not a JSON object)."""


class ProxyRequest:
    """One proxy call: the common fields, the event's own (``channel``,
    ``method``, ``data``, ...) and the request headers the gateway passed
    (``--proxy-headers``; case-insensitive lookups with ``headers.get``)."""

    def __init__(self, body: dict, headers: Mapping[str, str] | None = None):
        self.body = body
        self.headers = _Headers(headers or {})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.body.get(name)

    @property
    def data(self) -> Any:
        """The client's payload: JSON, or bytes when it came as ``b64data``."""
        if self.body.get("b64data"):
            return base64.b64decode(self.body["b64data"])
        return self.body.get("data")

    @property
    def binary(self) -> bool:
        """The client speaks Protobuf: payloads travel as base64."""
        return self.body.get("encoding") == "binary"

    def __repr__(self) -> str:
        return f"<ProxyRequest {self.body!r}>"


class _Headers(dict):
    def __init__(self, headers: Mapping[str, str]):
        super().__init__((k.lower(), v) for k, v in headers.items())

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


def parse_request(body: bytes | str, headers: Mapping[str, str] | None = None) -> ProxyRequest:
    try:
        parsed = json.loads(body)
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(parsed, dict):
        raise BadRequest("the body is not a JSON object")
    return ProxyRequest(parsed, headers)


def _payloads(fields: dict) -> dict:
    """``data``/``info`` given as bytes travel as ``b64data``/``b64info``."""
    out = {}
    for key, value in fields.items():
        if value is None:
            continue
        if key in ("data", "info") and isinstance(value, (bytes, bytearray)):
            out["b64" + key] = base64.b64encode(value).decode()
        elif key == "subs" and isinstance(value, dict):
            out[key] = {channel: _payloads(options) for channel, options in value.items()}
        else:
            out[key] = value
    return out


def result(**fields: Any) -> dict:
    """``{"result": {...}}``: e.g. ``result(user="42", expire_at=..., info=..., data=...,
    channels=[...], subs={...}, meta=...)`` for connect; ``result(data=...)`` for
    subscribe, publish and RPC; ``result(expire_at=...)`` or ``result(expired=True)``
    for the refreshes. None values are left out."""
    return {"result": _payloads(fields)}


def error(code: int, message: str, temporary: bool = False) -> dict:
    """``{"error": ...}``: the client gets this code (use 400-1999 for your own)."""
    body: dict[str, Any] = {"code": int(code), "message": message}
    if temporary:
        body["temporary"] = True
    return {"error": body}


def disconnect(code: int, reason: str) -> dict:
    """``{"disconnect": ...}``: the connection is closed with this code
    (4000-4499: the client reconnects; 4500-4999: it does not)."""
    return {"disconnect": {"code": int(code), "reason": reason}}
