"""Connection and subscription JWTs: claims, verification and minting.

Connection token (Centrifugo's claims):

``sub``       the user id (a string; ``""`` is an anonymous user)
``iat/exp``   issued-at and expiry, seconds since the epoch (``exp`` optional)
``channels``  shared channels the connection is subscribed to server-side
``info``      any JSON value describing the connection

Subscription token, for a private channel a client subscribes to itself:

``sub``       must be the connection's user
``channel``   must be the channel subscribed to
``client``    optional: binds the token to one connection id (Centrifugo's rule)
``iat/exp``   as above

``aud``/``iss`` are checked when the gateway is configured with them.

Minting is byte-exact and shared with every bridge through the vectors in
``bridges/testdata``: header ``{"alg":"HS256","typ":"JWT"}``, claims in the
order above, compact JSON with UTF-8 left as is, base64url without padding.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = ("ES256", "ES384", "ES512")
_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


class TokenError(Exception):
    """The token cannot be used; ``str(exc)`` says why (for logs, not clients)."""


class TokenExpired(TokenError):
    """The token was valid but its ``exp`` has passed: the client should get a new one."""


class TokenInvalid(TokenError):
    """The token is malformed, forged, or has claims the gateway refuses."""


class TokenMismatch(TokenInvalid):
    """A valid subscription token issued for another channel or user."""


@dataclass(frozen=True)
class ConnectionClaims:
    user: str
    channels: tuple[str, ...] = ()
    info: Any = None
    expires_at: int | None = None


@dataclass(frozen=True)
class SubscriptionClaims:
    user: str
    channel: str
    expires_at: int | None = None
    client: str | None = None


class TokenVerifier:
    """Verifies tokens against one HMAC secret and/or one public key.

    The key is chosen by the token's ``alg`` family and each key only serves its
    own family, so a token signed with HS256 using the public key as the secret
    (algorithm confusion) and ``alg: none`` are both refused. ``clock`` gives
    the current time in seconds (tests pin it).

    HMAC tokens, the common case and one per connect, are checked here
    directly (strict base64url, ``hmac.compare_digest``, the same claim
    rules): PyJWT took about 75 µs a token, most of it re-parsing the header
    and checking base64 character by character in Python; this takes a few.
    RSA and EC tokens go through PyJWT. tests/test_tokens.py runs every case
    through both.
    """

    def __init__(self, *, secret: str | None = None, public_key_pem: bytes | None = None,
                 audience: str | None = None, issuer: str | None = None, leeway: float = 0,
                 clock: Callable[[], float] = time.time):
        if not secret and not public_key_pem:
            raise ValueError("a JWT secret or public key is required")
        self._keys: dict[str, Any] = {}
        if secret:
            for alg in HMAC_ALGORITHMS:
                self._keys[alg] = secret
        if public_key_pem:
            key = load_pem_public_key(public_key_pem)
            algs: tuple[str, ...]
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
        self._clock = clock
        self._hmac = {alg: (secret.encode(), _HASHES[alg]) for alg in HMAC_ALGORITHMS} if secret else {}
        self._headers: dict[str, str | None] = {}  # header segment -> its alg: a few distinct headers

    def verify_connection(self, token: str) -> ConnectionClaims:
        claims = self._decode(token)
        if "channel" in claims:
            raise TokenInvalid("a connection token must not carry a channel claim")
        user = _user(claims)
        channels = claims.get("channels", [])
        if not isinstance(channels, list) or not all(isinstance(c, str) and c for c in channels):
            raise TokenInvalid("channels must be a list of channel names")
        return ConnectionClaims(user=user, channels=tuple(channels), info=claims.get("info"),
                                expires_at=_expiry(claims))

    def verify_subscription(self, token: str, user: str, channel: str, client: str | None = None
                            ) -> SubscriptionClaims:
        """Check a subscription token for ``channel`` on the connection ``client``
        of ``user``. A token with a ``client`` claim serves that connection only."""
        claims = self._decode(token)
        token_channel = claims.get("channel")
        if not isinstance(token_channel, str) or not token_channel:
            raise TokenInvalid("a subscription token needs a channel claim")
        token_user = _user(claims)
        token_client = claims.get("client")
        if token_client is not None and not isinstance(token_client, str):
            raise TokenInvalid("client must be a string")
        if token_channel != channel:
            raise TokenMismatch(f"token is for channel {token_channel!r}, not {channel!r}")
        if token_user != user:
            raise TokenMismatch("token is for another user")
        if token_client and token_client != client:
            raise TokenMismatch("token is for another connection (client claim)")
        return SubscriptionClaims(user=token_user, channel=token_channel, expires_at=_expiry(claims),
                                  client=token_client or None)

    def _decode(self, token: str) -> dict:
        if not isinstance(token, str) or not token:
            raise TokenInvalid("empty token")
        if not token.isascii():
            # A JWT is base64url and dots. Anything else (a lone surrogate from a
            # JSON escape) is malformed here, before PyJWT encodes it and fails.
            raise TokenInvalid("malformed token: not ASCII")
        header, sep, rest = token.partition(".")
        alg: object = self._headers.get(header)
        if alg is None:
            alg = self._read_alg(token, header)  # what the header says: any JSON value
        if not isinstance(alg, str) or alg not in self._keys:
            raise TokenInvalid(f"algorithm {alg!r} is not accepted")
        key = self._keys[alg]
        if alg in self._hmac:
            claims = self._decode_hmac(alg, header, rest)
        else:
            try:
                claims = jwt.decode(
                    token, key, algorithms=[alg], audience=self._audience, issuer=self._issuer,
                    options={"verify_aud": self._audience is not None, "require": ["sub"],
                             "verify_exp": False, "verify_nbf": False, "verify_iat": False},
                )
            except jwt.PyJWTError as exc:
                raise TokenInvalid(str(exc)) from None
        # PyJWT parses claims with the standard json module, which accepts NaN,
        # Infinity and lone surrogates: none of them may reach the gateway.
        problem = _not_interchangeable(claims)
        if problem:
            raise TokenInvalid(f"claims are not valid JSON: {problem}")
        # Time claims are checked here, against the injectable clock.
        now = self._clock()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        for name, value in (("exp", exp), ("nbf", nbf)):
            if value is not None and not _time(value):
                raise TokenInvalid(f"{name} must be a number of seconds")
        if exp is not None and exp <= now - self._leeway:
            raise TokenExpired("token expired")
        if nbf is not None and nbf > now + self._leeway:
            raise TokenInvalid("token not yet valid")
        return claims

    def _read_alg(self, token: str, header: str) -> object:
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as exc:
            raise TokenInvalid(f"malformed token: {exc}") from None
        if isinstance(alg, str) and alg in self._keys:
            if len(self._headers) > 64:  # tokens carry a handful of distinct headers
                self._headers.clear()
            self._headers[header] = alg
        return alg

    def _decode_hmac(self, alg: str, header: str, rest: str) -> dict:
        payload, sep, signature = rest.partition(".")
        if not sep or "." in signature:
            raise TokenInvalid("malformed token: not three segments")
        secret, digest = self._hmac[alg]
        expected = hmac.new(secret, f"{header}.{payload}".encode("ascii", "replace"), digest).digest()
        if not hmac.compare_digest(expected, _b64decode(signature, "signature")):
            raise TokenInvalid("Signature verification failed")
        try:
            claims = json.loads(_b64decode(payload, "payload"))
        except ValueError:
            raise TokenInvalid("malformed token: payload is not JSON") from None
        if type(claims) is not dict:
            raise TokenInvalid("malformed token: payload is not a JSON object")
        if "sub" not in claims:
            raise TokenInvalid('Token is missing the "sub" claim')
        if self._audience is not None:
            aud = claims.get("aud")
            audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
            if audiences is None:
                raise TokenInvalid('Token is missing the "aud" claim' if aud is None else "Invalid audience")
            if self._audience not in audiences:
                raise TokenInvalid("Audience doesn't match")
        if self._issuer is not None and claims.get("iss") != self._issuer:
            raise TokenInvalid('Token is missing the "iss" claim' if "iss" not in claims else "Invalid issuer")
        return claims


MAX_CLAIMS_DEPTH = 32


def _not_interchangeable(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` is not interchangeable JSON (RFC 8259 section 8: no NaN or
    Infinity, no lone surrogates), or None when it is."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "a string with a lone surrogate"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "a non-finite number"
    if depth > MAX_CLAIMS_DEPTH:
        return "nested too deeply"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _not_interchangeable(key, depth + 1) or _not_interchangeable(item, depth + 1)
            if problem:
                return problem
    elif isinstance(value, list):
        for item in value:
            problem = _not_interchangeable(item, depth + 1)
            if problem:
                return problem
    return None


_B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def _b64decode(segment: str, name: str) -> bytes:
    """Strict base64url without padding, as JWTs use it."""
    try:
        raw = segment.encode("ascii")
    except UnicodeEncodeError:
        raise TokenInvalid(f"malformed token: {name} is not base64url") from None
    if len(raw) % 4 == 1 or not _B64URL.issuperset(raw):
        raise TokenInvalid(f"malformed token: {name} is not base64url")
    try:
        return binascii.a2b_base64(raw.translate(_TO_STANDARD) + b"=" * (-len(raw) % 4), strict_mode=True)
    except binascii.Error:
        raise TokenInvalid(f"malformed token: {name} is not base64url") from None


def _time(value: object) -> bool:
    """A time claim: a number of seconds a float can hold (a 400-digit integer
    cannot be compared with the clock nor turned into a ttl)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _user(claims: dict) -> str:
    user = claims.get("sub", "")
    if not isinstance(user, str):
        raise TokenInvalid("sub must be a string")
    return user


def _expiry(claims: dict) -> int | None:
    exp = claims.get("exp")
    return int(exp) if exp is not None else None


# --- minting (backends) ----------------------------------------------------------

def connection_token(secret: str, user: object, *, ttl: float | None = 3600,
                     channels: list[str] | None = None, info: Any = None,
                     algorithm: str = "HS256", now: float | None = None,
                     extra: dict | None = None) -> str:
    """Mint a connection token for ``user``. ``ttl=None`` never expires."""
    claims: dict[str, Any] = {"sub": str(user)}
    _times(claims, ttl, now)
    if channels:
        claims["channels"] = list(channels)
    if info is not None:
        claims["info"] = info
    if extra:
        claims.update(extra)
    return sign(claims, secret, algorithm)


def subscription_token(secret: str, user: object, channel: str, *, ttl: float | None = 3600,
                       algorithm: str = "HS256", now: float | None = None,
                       extra: dict | None = None) -> str:
    """Mint a token that lets ``user`` subscribe to the private ``channel``."""
    claims: dict[str, Any] = {"sub": str(user), "channel": channel}
    _times(claims, ttl, now)
    if extra:
        claims.update(extra)
    return sign(claims, secret, algorithm)


def _times(claims: dict, ttl: float | None, now: float | None) -> None:
    issued = int(time.time() if now is None else now)
    claims["iat"] = issued
    if ttl is not None:
        claims["exp"] = issued + int(ttl)


def sign(claims: dict, secret: str, algorithm: str = "HS256") -> str:
    """An HMAC JWT with the canonical encoding (see the module doc)."""
    digest = _HASHES.get(algorithm)
    if digest is None:
        raise ValueError(f"minting supports {', '.join(_HASHES)}, not {algorithm}")
    header = _b64(b'{"alg":"%s","typ":"JWT"}' % algorithm.encode())
    payload = _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
    signing_input = header + b"." + payload
    signature = _b64(hmac.new(secret.encode(), signing_input, digest).digest())
    return (signing_input + b"." + signature).decode()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")
