"""pushgate from any Python backend (Django, Flask, a worker).

    import pushgate_bridge as pushgate

    pushgate.publish_to_user(42, {"event": "invoice.paid"})
    pushgate.broadcast("news", {"title": "Hello"})
    with pushgate.batch():                      # one /mpub for all of them
        for user in users:
            pushgate.publish_to_user(user.id, {"event": "digest"})
    token = pushgate.connection_token(42, ttl=600, channels=["news"])

The module-level functions use a default :class:`Publisher` configured from
the gateway's environment variables (``PUSHGATE_NSQD_HTTP_ADDRESS``,
``PUSHGATE_TOPIC``, ``PUSHGATE_JWT_SECRET``); :func:`configure` overrides
them in code.

This package is its own distribution (``pip install ./bridges/python``) and
needs nothing but the standard library: a backend that installs it gets
neither the gateway nor its dependencies.
"""
from __future__ import annotations

import os
import threading
from typing import Any

from pushgate_bridge import tokens
from pushgate_bridge._version import __version__
from pushgate_bridge.envelope import encode as encode_envelope
from pushgate_bridge.publisher import AsyncPublisher, NsqdUnavailable, PublishError, Publisher

__all__ = [
    "AsyncPublisher", "NsqdUnavailable", "PublishError", "Publisher", "batch", "broadcast", "configure",
    "connection_token", "encode_envelope", "publish", "publish_to_user", "subscription_token",
]

_lock = threading.Lock()
_publisher: Publisher | None = None
_secret: str | None = None


def configure(*, secret: str | None = None, **publisher_options: Any) -> Publisher:
    """Set the JWT secret and/or the default publisher's options
    (``nsqd_http_address``, ``topic``, ``max_message_bytes``, ``retries``, ...).
    A secret shorter than 32 bytes raises ValueError, as the gateway refuses it."""
    global _publisher, _secret
    with _lock:
        if secret is not None:
            _secret = tokens.check_secret(secret)
        if publisher_options or _publisher is None:
            _publisher = Publisher(**publisher_options)
        return _publisher


def default_publisher() -> Publisher:
    return _publisher or configure()


def publish(envelope: dict[str, Any]) -> None:
    default_publisher().publish(envelope)


def publish_to_user(user_id: object, data: Any, *, id: str | None = None, receipt: bool = False) -> None:
    """``receipt=True`` (with an ``id``) asks the gateway for a ``delivered`` or
    ``undelivered`` event about it (docs/events.md; pushgate_bridge.events reads them)."""
    default_publisher().publish_to_user(user_id, data, id=id, receipt=receipt)


def broadcast(channel: str, data: Any, *, id: str | None = None) -> None:
    default_publisher().broadcast(channel, data, id=id)


def batch():
    return default_publisher().batch()


def _jwt_secret() -> str:
    secret = _secret or os.environ.get("PUSHGATE_JWT_SECRET")
    if not secret:
        raise RuntimeError("no JWT secret: set PUSHGATE_JWT_SECRET or call pushgate_bridge.configure(secret=...)")
    return secret


def connection_token(user_id: object, *, ttl: float | None = 3600, channels: list[str] | None = None,
                     info: Any = None, now: float | None = None) -> str:
    """A connection JWT for ``user_id`` (HS256 with the configured secret).
    ``ttl`` is at least 1 second, or None for a token that never expires."""
    return tokens.connection_token(_jwt_secret(), user_id, ttl=ttl, channels=channels, info=info, now=now)


def subscription_token(user_id: object, channel: str, *, ttl: float | None = 3600,
                       now: float | None = None) -> str:
    """A subscription JWT letting ``user_id`` subscribe to the private ``channel``."""
    return tokens.subscription_token(_jwt_secret(), user_id, channel, ttl=ttl, now=now)
