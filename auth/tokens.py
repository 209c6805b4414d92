"""Connection and subscription JWTs: claims, verification and minting.

Connection token (Centrifugo's claims):

``sub``       the user id (a string; ``""`` is an anonymous user)
``iat/exp``   issued-at and expiry, seconds since the epoch (``exp`` optional)
``channels``  shared channels the connection is subscribed to server-side
``subs``      the same with options: ``{channel: {info, b64info, data, b64data,
              override}}``; when given, ``channels`` is not used (Centrifugo's rule)
``info``      any JSON value describing the connection
``expire_at`` the connection's expiry when it differs from ``exp`` (``0``: never);
              ``exp`` still says whether the token itself is good
``meta``      any JSON value kept on the server and sent with proxy calls

Subscription token, for a private channel a client subscribes to itself:

``sub``       must be the connection's user
``channel``   must be the channel subscribed to
``client``    optional: binds the token to one connection id (Centrifugo's rule)
``iat/exp``   as above

``aud``/``iss`` are checked when the gateway is configured with them. The
user may come from another claim than ``sub`` (``user_claim``: a claim name,
or a dotted path into nested objects). An AnyCable token (``ext``: the
connection's identifiers as a JSON string, no ``sub``) is read where the
caller allows it (``/cable`` with ``--cable-jwt-ext``).

Keys: one HMAC secret and a previous one (rotation), one PEM public key,
and/or the keys of a JWKS endpoint, chosen by the token's ``kid``
(:mod:`auth.jwks`). A token whose ``kid`` the key set does not know yet
raises :class:`KeyPending`: the caller decides it again once the key set
has been fetched.

Minting is byte-exact and shared with every bridge through the vectors in
``bridges/testdata``: header ``{"alg":"HS256","typ":"JWT"}``, claims in the
order above, compact JSON with UTF-8 left as is, base64url without padding.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import math
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

if TYPE_CHECKING:
    from auth.jwks import KeyStore

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = ("ES256", "ES384", "ES512")
JWKS_ALGORITHMS = (*RSA_ALGORITHMS, *EC_ALGORITHMS, "ES256K", "EdDSA")
MAX_TOKEN_CHARS = 65536  # an identity provider's token with many roles is a few KB
MAX_KID = 256
_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


class TokenError(Exception):
    """The token cannot be used; ``str(exc)`` says why (for logs, not clients)."""


class TokenExpired(TokenError):
    """The token was valid but its ``exp`` has passed: the client should get a new one."""


class TokenInvalid(TokenError):
    """The token is malformed, forged, or has claims the gateway refuses."""


class TokenMismatch(TokenInvalid):
    """A valid subscription token issued for another channel or user."""


class KeyPending(TokenInvalid):
    """The token names a key (``kid``) the JWKS store does not know and is
    fetching now: decide the token again once ``ready`` is done (it never
    fails). Whoever cannot wait treats it as invalid, which it is a subclass of."""

    def __init__(self, message: str, ready: asyncio.Future):
        super().__init__(message)
        self.ready = ready


@dataclass(frozen=True)
class ServerSub:
    """One entry of a connection token's ``subs`` claim: a server-side
    subscription with its options, payloads as the bytes clients get."""

    channel: str
    info: bytes | None = None    # chan_info in presence, join/leave and publications
    data: bytes | None = None    # sent in the channel's SubscribeResult of the connect reply
    in_presence: bool = True     # override.presence {"value": false} keeps it out of presence
    override: Any = None         # the override as given (shape checked); the gateway applies all of it


@dataclass(frozen=True)
class ConnectionClaims:
    user: str
    channels: tuple[str, ...] = ()
    info: Any = None
    expires_at: int | None = None   # the connection's expiry: expire_at, else exp
    subs: tuple[ServerSub, ...] = ()  # the subs claim; its channels are in ``channels`` too
    meta: Any = None
    identifiers: str | None = None  # an AnyCable token's ext: the connection's identifiers, as JSON text


@dataclass(frozen=True)
class SubscriptionClaims:
    user: str
    channel: str
    expires_at: int | None = None   # the subscription's expiry: expire_at, else exp
    client: str | None = None
    info: bytes | None = None       # chan_info (info / b64info)
    data: bytes | None = None       # sent in the SubscribeResult (data / b64data)
    in_presence: bool = True        # override.presence {"value": false}: kept out of presence
    override: Any = None            # the override as given (shape checked); the gateway applies all of it


class TokenVerifier:
    """Verifies tokens against an HMAC secret (and the previous one, while
    rotating), one public key, and/or the keys of a JWKS endpoint.

    The key is chosen by the token's ``alg`` family and each key only serves its
    own family, so a token signed with HS256 using the public key as the secret
    (algorithm confusion) and ``alg: none`` are both refused. An RS/PS/ES/EdDSA
    token with a ``kid`` is checked with that key of the set (and only for the
    algorithms it may verify); one without, with the public key. ``clock``
    gives the current time in seconds (tests pin it).

    HMAC tokens, the common case and one per connect, are checked here
    directly (strict base64url, ``hmac.compare_digest``, the same claim
    rules): PyJWT took about 75 µs a token, most of it re-parsing the header
    and checking base64 character by character in Python; this takes a few.
    RSA and EC tokens go through PyJWT. tests/test_tokens.py runs every case
    through both.
    """

    def __init__(self, *, secret: str | None = None, public_key_pem: bytes | None = None,
                 audience: str | None = None, issuer: str | None = None, leeway: float = 0,
                 clock: Callable[[], float] = time.time, previous_secret: str | None = None,
                 jwks: KeyStore | None = None, user_claim: str | None = None):
        if not secret and not public_key_pem and jwks is None:
            raise ValueError("a JWT secret, public key or JWKS endpoint is required")
        if previous_secret and not secret:
            raise ValueError("a previous secret needs the current one")
        self._keys: dict[str, Any] = {}
        self._jwks = jwks
        if jwks is not None:
            for alg in JWKS_ALGORITHMS:
                self._keys[alg] = None   # the key comes from the set, by kid
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
        secrets = [s.encode() for s in (secret, previous_secret) if s]
        self._hmac = {alg: (secrets, _HASHES[alg]) for alg in HMAC_ALGORITHMS} if secret else {}
        # header segment -> its alg and kid: a few distinct headers
        self._headers: dict[str, tuple[str, str | None]] = {}
        self._user_claim = user_claim or None

    def verify_connection(self, token: str, *, ext: bool = False) -> ConnectionClaims:
        """The claims of a connection token. ``ext``: an AnyCable token (its
        ``ext`` claim, the connection's identifiers) is accepted too."""
        claims = self._decode(token, allow_ext=ext)
        if "channel" in claims:
            raise TokenInvalid("a connection token must not carry a channel claim")
        if ext and "ext" in claims:
            return ConnectionClaims(user=self._ext_user(claims), expires_at=_expiry(claims),
                                    identifiers=claims["ext"])
        user = self._user(claims)
        channels = claims.get("channels", [])
        if not isinstance(channels, list) or not all(isinstance(c, str) and c for c in channels):
            raise TokenInvalid("channels must be a list of channel names")
        subs = _subs(claims.get("subs"))
        if subs:
            channels = [sub.channel for sub in subs]   # subs takes precedence, as in Centrifugo
        info = claims.get("info")
        if claims.get("b64info") not in (None, ""):   # Centrifugo: it takes priority over info
            info = _b64_json(claims, "b64info")
        return ConnectionClaims(user=user, channels=tuple(channels), info=info,
                                expires_at=_connection_expiry(claims), subs=subs, meta=claims.get("meta"))

    def verify_subscription(self, token: str, user: str, channel: str, client: str | None = None
                            ) -> SubscriptionClaims:
        """Check a subscription token for ``channel`` on the connection ``client``
        of ``user``. A token with a ``client`` claim serves that connection only."""
        claims = self._decode(token)
        token_channel = claims.get("channel")
        if not isinstance(token_channel, str) or not token_channel:
            raise TokenInvalid("a subscription token needs a channel claim")
        token_user = self._user(claims)
        token_client = claims.get("client")
        if token_client is not None and not isinstance(token_client, str):
            raise TokenInvalid("client must be a string")
        if token_channel != channel:
            raise TokenMismatch(f"token is for channel {token_channel!r}, not {channel!r}")
        if token_user != user:
            raise TokenMismatch("token is for another user")
        if token_client and token_client != client:
            raise TokenMismatch("token is for another connection (client claim)")
        return SubscriptionClaims(user=token_user, channel=token_channel, expires_at=_connection_expiry(claims),
                                  client=token_client or None, info=_payload(claims, "info", ""),
                                  data=_payload(claims, "data", ""), in_presence=_in_presence(claims, ""),
                                  override=claims.get("override"))

    def _user(self, claims: dict) -> str:
        """The user id: ``sub``, or the claim ``user_claim`` names. A name the
        claims hold as it is wins (``https://example.com/uid``, Auth0's
        namespaced claims); else its dots walk into nested objects (``user.id``).
        A number is taken as its decimal string."""
        path = self._user_claim
        if path is None:
            user = claims.get("sub", "")
            if not isinstance(user, str):
                raise TokenInvalid("sub must be a string")
            return user
        value = claim_at(claims, path)
        if value is None:
            raise TokenInvalid(f"Token is missing the {path[:80]!r} claim (--jwt-user-claim)")
        return _user_id(value, path)

    def _ext_user(self, claims: dict) -> str:
        """The user of an AnyCable token: ``ext`` is a JSON string of the
        connection's identifiers (``identified_by``), e.g. ``{"current_user":
        "<GlobalID>"}`` or ``{"user_id": 42}``. The user is the identifier
        ``user_claim`` names, else the only one, else ``current_user`` or
        ``user``. A GlobalID (``gid://app/User/42``, or its base64url
        ``to_gid_param``) gives its id, ``42``, as the Rails bridge keys users."""
        raw = claims.get("ext")
        if not isinstance(raw, str):
            raise TokenInvalid("ext must be a JSON string of identifiers")
        try:
            identifiers = json.loads(raw)
        except (ValueError, RecursionError):
            raise TokenInvalid("ext is not JSON") from None
        if type(identifiers) is not dict or not identifiers:
            raise TokenInvalid("ext must name the connection's identifiers (a JSON object)")
        problem = _not_interchangeable(identifiers)
        if problem:
            raise TokenInvalid(f"ext is not valid JSON: {problem}")
        name = self._user_claim
        if name is None:
            if len(identifiers) == 1:
                name = next(iter(identifiers))
            else:
                name = next((n for n in ("current_user", "user") if n in identifiers), None)
                if name is None:
                    raise TokenInvalid("ext has several identifiers and none is current_user or user: "
                                       "name the user's with --jwt-user-claim")
        value = claim_at(identifiers, name)
        if value is None:
            raise TokenInvalid(f"ext has no identifier {name[:80]!r}")
        user = _user_id(value, f"ext.{name}")
        return _global_id(user) or user

    def _decode(self, token: str, allow_ext: bool = False) -> dict:
        if not isinstance(token, str) or not token:
            raise TokenInvalid("empty token")
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenInvalid(f"token longer than {MAX_TOKEN_CHARS} characters")
        if not token.isascii():
            # A JWT is base64url and dots. Anything else (a lone surrogate from a
            # JSON escape) is malformed here, before PyJWT encodes it and fails.
            raise TokenInvalid("malformed token: not ASCII")
        header, sep, rest = token.partition(".")
        known = self._headers.get(header)
        alg, kid = known if known is not None else self._read_header(token, header)
        if alg in self._hmac:
            claims = self._decode_hmac(alg, header, rest)
        else:
            key = self._public_key(alg, kid)
            try:
                claims = jwt.decode(
                    token, key, algorithms=[alg], audience=self._audience, issuer=self._issuer,
                    options={"verify_aud": self._audience is not None,
                             "verify_exp": False, "verify_nbf": False, "verify_iat": False},
                )
            except jwt.PyJWTError as exc:
                raise TokenInvalid(str(exc)) from None
            except RecursionError:
                raise TokenInvalid("malformed token: payload nested too deeply") from None
        if self._user_claim is None and "sub" not in claims and not (allow_ext and "ext" in claims):
            raise TokenInvalid('Token is missing the "sub" claim')
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

    def _read_header(self, token: str, header: str) -> tuple[str, str | None]:
        """The token's ``alg`` (one this verifier accepts) and ``kid``; remembered
        per header segment."""
        try:
            fields = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, RecursionError) as exc:
            raise TokenInvalid(f"malformed token: {str(exc)[:100]}") from None
        alg, kid = fields.get("alg"), fields.get("kid")
        if not isinstance(alg, str) or alg not in self._keys:
            raise TokenInvalid(f"algorithm {str(alg)[:40]!r} is not accepted")
        if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID):
            raise TokenInvalid("kid must be a key id (a string of 1-256 characters)")
        if len(header) <= 512:   # tokens carry a handful of distinct, short headers
            if len(self._headers) > 64:
                self._headers.clear()
            self._headers[header] = (alg, kid)
        return alg, kid

    def _public_key(self, alg: str, kid: str | None) -> Any:
        """The key that verifies an ``alg`` token: the JWKS key its ``kid`` names,
        else the configured public key. Raises TokenInvalid, or KeyPending."""
        jwks = self._jwks
        if jwks is not None and kid is not None:
            found = jwks.get(kid)
            if found is None:
                pending = jwks.unknown(kid)
                if pending is not None:
                    raise pending
                raise TokenInvalid(f"key {kid[:40]!r} is not in the key set")
            if alg not in found.algorithms:
                raise TokenInvalid(f"key {kid[:40]!r} does not verify {alg}")
            return found.key
        key = self._keys.get(alg)
        if key is None:
            raise TokenInvalid(f"an {alg} token needs a kid (the key set's key id)")
        return key

    def _decode_hmac(self, alg: str, header: str, rest: str) -> dict:
        payload, sep, signature = rest.partition(".")
        if not sep or "." in signature:
            raise TokenInvalid("malformed token: not three segments")
        secrets, digest = self._hmac[alg]
        signing_input = f"{header}.{payload}".encode("ascii", "replace")
        signed = _b64decode(signature, "signature")
        # The current secret, then the previous one (rotation): each is compared in constant time.
        if not hmac.compare_digest(hmac.new(secrets[0], signing_input, digest).digest(), signed) and not (
                len(secrets) > 1 and hmac.compare_digest(hmac.new(secrets[1], signing_input, digest).digest(),
                                                         signed)):
            raise TokenInvalid("Signature verification failed")
        try:
            claims = json.loads(_b64decode(payload, "payload"))
        except ValueError:
            raise TokenInvalid("malformed token: payload is not JSON") from None
        except RecursionError:
            raise TokenInvalid("malformed token: payload nested too deeply") from None
        if type(claims) is not dict:
            raise TokenInvalid("malformed token: payload is not a JSON object")
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


def claim_at(claims: dict, path: str) -> Any:
    """The claim ``path`` names: the top-level claim of that name, else the
    value its dots lead to through nested objects; None when absent."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for step in path.split("."):
        if type(value) is not dict or step not in value:
            return None
        value = value[step]
    return value


def _user_id(value: object, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TokenInvalid(f"{name[:80]} must be a string or an integer (the user id)")


def _global_id(value: str) -> str | None:
    """The model id of a GlobalID, ``gid://app/User/42`` or its base64url form
    (Rails' ``to_gid_param``); None when ``value`` is not one."""
    uri = value
    if not value.startswith("gid://"):
        if len(value) > 512 or not _B64URL.issuperset(value.encode("ascii", "replace").rstrip(b"=")):
            return None
        try:
            uri = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        if not uri.startswith("gid://"):
            return None
    parts = urllib.parse.urlsplit(uri).path.split("/")   # /Model/id
    if len(parts) != 3 or not parts[1] or not parts[2]:
        return None
    return urllib.parse.unquote(parts[2])


def _connection_expiry(claims: dict) -> int | None:
    """``expire_at`` when the token has it (``0``: never), else ``exp``."""
    if "expire_at" not in claims or claims["expire_at"] is None:
        return _expiry(claims)
    value = claims["expire_at"]
    if not _time(value) or value < 0:
        raise TokenInvalid("expire_at must be a Unix time in seconds (0: never)")
    return int(value) or None


def _subs(value: object) -> tuple[ServerSub, ...]:
    """The ``subs`` claim: channel -> options, as Centrifugo reads them."""
    if value is None:
        return ()
    if type(value) is not dict:
        raise TokenInvalid("subs must map channels to options")
    subs = []
    for channel, options in value.items():
        if not channel:
            raise TokenInvalid("subs names an empty channel")
        if options is None:
            options = {}
        if type(options) is not dict:
            raise TokenInvalid(f"subs.{channel[:80]} must be an object of options")
        where = f"subs.{channel[:80]}."
        subs.append(ServerSub(channel, _payload(options, "info", where), _payload(options, "data", where),
                              _in_presence(options, where), options.get("override")))
    return tuple(subs)


def _payload(options: dict, name: str, where: str) -> bytes | None:
    """``b64<name>`` decoded, else ``<name>`` (any JSON value) as compact JSON;
    ``where`` prefixes the claim's name in errors."""
    encoded = options.get("b64" + name)
    if encoded not in (None, ""):
        if not isinstance(encoded, str):
            raise TokenInvalid(f"{where}b64{name} must be a base64 string")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise TokenInvalid(f"{where}b64{name} is not base64") from None
    if name not in options:
        return None
    return json.dumps(options[name], separators=(",", ":"), ensure_ascii=False).encode()


def _b64_json(claims: dict, name: str) -> Any:
    """A connection's ``b64info``: its bytes must be JSON, the form presence,
    join/leave and publications carry a connection's info in here."""
    raw = _payload(claims, name[3:], "")
    try:
        value = json.loads(raw) if raw is not None else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise TokenInvalid(f"{name} must be base64 of JSON (a connection's info is kept as JSON here)") from None
    problem = _not_interchangeable(value)
    if problem:
        raise TokenInvalid(f"{name} is not valid JSON: {problem}")
    return value


def _in_presence(options: dict, where: str) -> bool:
    """``override``: each a ``{"value": bool}``; ``presence`` false keeps the
    subscriber out of the channel's presence and join/leave."""
    override = options.get("override")
    if override is None:
        return True
    if type(override) is not dict:
        raise TokenInvalid(f"{where}override must be an object")
    for key, value in override.items():
        if value is not None and (type(value) is not dict or type(value.get("value", False)) is not bool):
            raise TokenInvalid(f"{where}override.{key[:40]} must be {{\"value\": true or false}}")
    presence = override.get("presence")
    return not (presence is not None and presence.get("value") is False)


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
