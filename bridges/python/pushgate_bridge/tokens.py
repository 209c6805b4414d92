"""Connection and subscription tokens (HS256/384/512 JWTs), with the standard
library only.

The bytes are canonical and the same in every bridge
(``bridges/testdata/tokens.json``): header ``{"alg":"HS256","typ":"JWT"}``,
claims in the order ``sub, channel, iat, exp, channels, info``, compact JSON
with UTF-8 left as is, base64url without padding.

A secret shorter than 32 bytes is refused (the gateway refuses it too:
RFC 7518 3.2 wants an HS256 key as long as the hash), and so is a ``ttl``
under one second; ``ttl=None`` makes a token that never expires.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

MIN_SECRET_BYTES = 32
_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def connection_token(secret: str, user: object, *, ttl: float | None = 3600, channels: list[str] | None = None,
                     info: Any = None, now: float | None = None, algorithm: str = "HS256") -> str:
    """A token to connect as ``user``: its personal channel ``#<user>`` plus
    ``channels``, subscribed by the gateway. ``ttl=None`` never expires."""
    claims: dict[str, Any] = {"sub": str(user)}
    _times(claims, ttl, now)
    if channels:
        claims["channels"] = [str(c) for c in channels]
    if info is not None:
        claims["info"] = info
    return sign(claims, secret, algorithm)


def subscription_token(secret: str, user: object, channel: str, *, ttl: float | None = 3600,
                       now: float | None = None, algorithm: str = "HS256") -> str:
    """A token that lets ``user`` subscribe to the private ``channel``.

    Never for a personal channel (``#...``): it is its owner's alone,
    subscribed server-side at connect, and the gateway refuses it whatever a
    token says; asking for one is a bug in the caller."""
    if str(channel).startswith("#"):
        raise ValueError(f"no subscription token for a personal channel ({channel}): its user reads it server-side")
    claims: dict[str, Any] = {"sub": str(user), "channel": str(channel)}
    _times(claims, ttl, now)
    return sign(claims, secret, algorithm)


def check_secret(secret: object) -> str:
    """The secret, or ValueError when the gateway would refuse it."""
    if not isinstance(secret, str) or not secret:
        raise ValueError("no JWT secret: set PUSHGATE_JWT_SECRET (the gateway's --jwt-secret)")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"the JWT secret is {len(secret.encode())} bytes: it must be at least "
                         f"{MIN_SECRET_BYTES}, like the gateway's --jwt-secret")
    return secret


def check_ttl(ttl: object) -> int | None:
    """Whole seconds until expiry (None: never), or ValueError."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl >= 1:
        raise ValueError(f"ttl must be at least 1 second, or None for a token that never expires: {ttl!r}")
    return int(ttl)


def sign(claims: dict[str, Any], secret: str, algorithm: str = "HS256") -> str:
    digest = _HASHES.get(algorithm)
    if digest is None:
        raise ValueError(f"tokens are signed with {', '.join(_HASHES)}, not {algorithm!r}")
    key = check_secret(secret).encode()
    header = _b64(b'{"alg":"%s","typ":"JWT"}' % algorithm.encode())
    payload = _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
    signing_input = header + b"." + payload
    return (signing_input + b"." + _b64(hmac.new(key, signing_input, digest).digest())).decode()


def _times(claims: dict[str, Any], ttl: float | None, now: float | None) -> None:
    seconds = check_ttl(ttl)
    issued = int(time.time() if now is None else now)
    claims["iat"] = issued
    if seconds is not None:
        claims["exp"] = issued + seconds


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")
