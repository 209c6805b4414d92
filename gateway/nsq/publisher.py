"""Publishing into NSQ through nsqd's HTTP API (``/pub``).

Used by ``POST /api/publish`` (async) and ``pushgate publish`` (sync).
"""
from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest


class PublishError(Exception):
    """nsqd refused the message (a 4xx/5xx); ``status`` and nsqd's ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(f"nsqd answered {status}: {message}")
        self.status = status
        self.message = message


class NsqdUnavailable(Exception):
    """nsqd could not be reached at all."""


def pub_url(http_address: str, topic: str) -> str:
    return f"{http_address}/pub?{urllib.parse.urlencode({'topic': topic})}"


async def publish(http_address: str, topic: str, body: bytes, timeout: float = 5.0) -> None:
    await _post(pub_url(http_address, topic), body, timeout)


async def mpublish(http_address: str, topic: str, bodies: list[bytes], timeout: float = 5.0) -> None:
    """Several messages in one ``/mpub`` (newline-separated: none may hold a newline)."""
    await _post(f"{http_address}/mpub?{urllib.parse.urlencode({'topic': topic})}", b"\n".join(bodies), timeout)


async def _post(url: str, body: bytes, timeout: float) -> None:
    request = HTTPRequest(url, method="POST", body=body, connect_timeout=timeout, request_timeout=timeout)
    try:
        await AsyncHTTPClient().fetch(request)
    except HTTPClientError as exc:
        if exc.code == 599:
            raise NsqdUnavailable(str(exc)) from None
        message = exc.response.body.decode(errors="replace").strip() if exc.response else str(exc)
        raise PublishError(exc.code, message) from None
    except OSError as exc:
        raise NsqdUnavailable(str(exc)) from None


def publish_sync(http_address: str, topic: str, body: bytes, timeout: float = 5.0) -> None:
    request = urllib.request.Request(pub_url(http_address, topic), data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise PublishError(exc.code, exc.read().decode(errors="replace").strip()) from None
    except (urllib.error.URLError, OSError) as exc:
        raise NsqdUnavailable(_why(getattr(exc, "reason", exc))) from None


def _why(reason: object) -> str:
    """What went wrong, in words: 'Connection refused', not '[Errno 111] Connection refused'."""
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__
