"""Connection JWTs: claims, verification and minting.

Claims follow Centrifugo's connection token:

``sub``       the user id (a string; ``""`` is an anonymous user)
``exp``       expiry, seconds since the epoch (optional)
``channels``  shared channels the connection is subscribed to server-side
``info``      any JSON value describing the connection
``aud/iss``   checked when the gateway is configured with an audience/issuer

A token naming a single ``channel`` is a subscription token, never a
connection token, and is refused here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = ("ES256", "ES384", "ES512")


class TokenError(Exception):
    """The token cannot be used; ``str(exc)`` says why (for logs, not clients)."""


class TokenExpired(TokenError):
    """The token was valid but its ``exp`` has passed: the client should get a new one."""


class TokenInvalid(TokenError):
    """The token is malformed, forged, or has claims the gateway refuses."""


@dataclass(frozen=True)
class ConnectionClaims:
    user: str
    channels: tuple[str, ...] = ()
    info: Any = None
    expires_at: int | None = None


class TokenVerifier:
    """Verifies connection tokens against one HMAC secret and/or one public key.

    The key is chosen by the token's ``alg`` family and each key only serves its
    own family, so a token signed with HS256 using the public key as the secret
    (algorithm confusion) and ``alg: none`` are both refused.
    """

    def __init__(self, *, secret: str | None = None, public_key_pem: bytes | None = None,
                 audience: str | None = None, issuer: str | None = None, leeway: float = 0):
        if not secret and not public_key_pem:
            raise ValueError("a JWT secret or public key is required")
        self._keys: dict[str, Any] = {}
        if secret:
            for alg in HMAC_ALGORITHMS:
                self._keys[alg] = secret
        if public_key_pem:
            key = load_pem_public_key(public_key_pem)
            if isinstance(key, rsa.RSAPublicKey):
                algs = RSA_ALGORITHMS
            elif isinstance(key, ec.EllipticCurvePublicKey):
                algs = EC_ALGORITHMS
            else:
                raise ValueError("public key must be RSA or EC")
            for alg in algs:
                self._keys[alg] = key
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway

    def verify_connection(self, token: str) -> ConnectionClaims:
        claims = self._decode(token)
        if "channel" in claims:
            raise TokenInvalid("a connection token must not carry a channel claim")
        user = claims.get("sub", "")
        if not isinstance(user, str):
            raise TokenInvalid("sub must be a string")
        channels = claims.get("channels", [])
        if not isinstance(channels, list) or not all(isinstance(c, str) and c for c in channels):
            raise TokenInvalid("channels must be a list of channel names")
        exp = claims.get("exp")
        return ConnectionClaims(user=user, channels=tuple(channels), info=claims.get("info"),
                                expires_at=int(exp) if exp is not None else None)

    def _decode(self, token: str) -> dict:
        if not isinstance(token, str) or not token:
            raise TokenInvalid("empty token")
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as exc:
            raise TokenInvalid(f"malformed token: {exc}") from None
        key = self._keys.get(alg) if isinstance(alg, str) else None
        if key is None:
            raise TokenInvalid(f"algorithm {alg!r} is not accepted")
        try:
            return jwt.decode(
                token, key, algorithms=[alg], audience=self._audience, issuer=self._issuer,
                leeway=self._leeway,
                options={"verify_aud": self._audience is not None, "require": ["sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("token expired") from None
        except jwt.PyJWTError as exc:
            raise TokenInvalid(str(exc)) from None


def connection_token(secret: str, user: str, *, ttl: float | None = 3600,
                     channels: list[str] | None = None, info: Any = None,
                     algorithm: str = "HS256", now: float | None = None,
                     extra: dict | None = None) -> str:
    """Mint a connection token for ``user`` (HMAC). ``ttl=None`` never expires."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": str(user), "iat": issued}
    if ttl is not None:
        claims["exp"] = issued + int(ttl)
    if channels:
        claims["channels"] = list(channels)
    if info is not None:
        claims["info"] = info
    if extra:
        claims.update(extra)
    return jwt.encode(claims, secret, algorithm=algorithm)
