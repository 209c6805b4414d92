"""Signing keys from a JWKS endpoint (RFC 7517), as Keycloak, Auth0 and
Cognito publish them: the keys a token's ``kid`` header names.

The store keeps the last good set and never blocks: a lookup answers from
memory. It is fetched again

* when it is older than ``refresh_every`` (an hour, as Centrifugo caches it),
  in the background, the known keys serving meanwhile;
* when a token names a ``kid`` it does not know (a rotation added a key): the
  token waits for that one fetch (:class:`KeyPending`), then is decided. Such
  fetches are at most one every ``min_interval`` seconds, counted from the end
  of the last one, and all waiting tokens share it, so a flood of made-up kids
  costs the endpoint one request every few seconds and this node no memory
  (unknown kids are not remembered).

A failed fetch (endpoint down, slow, garbage, too big) changes nothing: the
known kids keep working and an unknown one is refused. A good fetch replaces
the set, so a key the issuer withdrew stops working.

PyJWT's ``PyJWKClient`` is not used: it fetches with urllib, which would
block the event loop, and retries on every unknown kid. The fetch itself is
handed in (``fetch``: a coroutine returning the body), so this module does no
I/O of its own; the node gives it a bounded HTTP GET.

Keys are kept when they may sign: ``use`` absent or ``sig`` (``enc`` keys are
skipped), key type RSA, EC (P-256/384/521, secp256k1) or OKP (Ed25519), as
PyJWT reads them; symmetric (``oct``) keys from a public endpoint are skipped.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from jwt import PyJWK
from jwt.exceptions import PyJWTError

from auth.tokens import RSA_ALGORITHMS, KeyPending

log = logging.getLogger("pushgate.jwks")

MAX_KEYS = 64           # keys kept from one set; an issuer publishes a handful
MAX_KID = 256           # characters of a kid worth looking up
REFRESH_EVERY = 3600.0  # seconds a good set is used before it is fetched again
MIN_INTERVAL = 5.0      # seconds between fetches for unknown kids (and after a failure)
_CURVE_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K"}


@dataclass(frozen=True)
class SigningKey:
    kid: str
    key: Any                       # a cryptography public key
    algorithms: frozenset[str]     # the token algorithms it verifies


def parse(raw: bytes) -> tuple[dict[str, SigningKey], list[str]]:
    """The signing keys of a JWKS document by kid, and what was skipped and why.
    Raises ValueError when the document is not a key set at all."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not JSON") from None
    if type(document) is not dict or type(document.get("keys")) is not list:
        raise ValueError('not a key set (an object with a "keys" list)')
    keys: dict[str, SigningKey] = {}
    skipped: list[str] = []
    for entry in document["keys"]:
        if type(entry) is not dict:
            skipped.append("an entry that is not an object")
            continue
        kid = entry.get("kid")
        if type(kid) is not str or not kid or len(kid) > MAX_KID:
            skipped.append("a key without a kid")
            continue
        if entry.get("use", "sig") != "sig":
            skipped.append(f"{kid[:40]}: use {str(entry.get('use'))[:20]}, not sig")
            continue
        kty = entry.get("kty")
        if kty not in ("RSA", "EC", "OKP"):
            skipped.append(f"{kid[:40]}: key type {str(kty)[:20]}")
            continue
        algorithms = _algorithms(entry)
        if not algorithms:
            skipped.append(f"{kid[:40]}: no algorithm pushgate verifies")
            continue
        try:
            key = PyJWK(entry).key
        except (PyJWTError, ValueError, TypeError, KeyError) as exc:
            skipped.append(f"{kid[:40]}: {str(exc)[:80]}")
            continue
        if kid in keys:
            skipped.append(f"{kid[:40]}: listed twice, the first kept")
            continue
        if len(keys) >= MAX_KEYS:
            skipped.append(f"keys past the first {MAX_KEYS}")
            break
        keys[kid] = SigningKey(kid, key, algorithms)
    return keys, skipped


def _algorithms(entry: dict) -> frozenset[str]:
    """The algorithms a JWK may verify: its ``alg`` alone when it names one,
    else every algorithm of its key type (and curve)."""
    kty, crv, alg = entry.get("kty"), entry.get("crv"), entry.get("alg")
    if kty == "RSA":
        family = frozenset(RSA_ALGORITHMS)
    elif kty == "EC":
        family = frozenset([_CURVE_ALGORITHMS[crv]]) if crv in _CURVE_ALGORITHMS else frozenset()
    elif kty == "OKP" and crv == "Ed25519":
        family = frozenset(["EdDSA"])
    else:
        family = frozenset()
    if alg is None:
        return family
    return frozenset([alg]) if alg in family else frozenset()


class KeyStore:
    """The keys of one JWKS endpoint; see the module doc."""

    def __init__(self, fetch: Callable[[], Awaitable[bytes]], *, url: str = "",
                 clock: Callable[[], float] = time.monotonic, refresh_every: float = REFRESH_EVERY,
                 min_interval: float = MIN_INTERVAL,
                 on_fetch: Callable[[str], None] | None = None):
        self._fetch = fetch
        self.url = url
        self._clock = clock
        self._refresh_every = refresh_every
        self._min_interval = min_interval
        self._on_fetch = on_fetch      # called with "ok" or "failed" after each fetch (metrics)
        self.keys: dict[str, SigningKey] = {}
        self.loaded_at: float | None = None     # when the current set was fetched
        self._last_end = -float("inf")          # when the last fetch ended, good or not
        self._inflight: asyncio.Future[None] | None = None
        self.fetches = 0

    def get(self, kid: str) -> SigningKey | None:
        """The key ``kid`` names, from memory; a stale set is fetched again in
        the background (the known keys serve meanwhile)."""
        now = self._clock()
        if self.loaded_at is not None and now - self.loaded_at >= self._refresh_every \
                and now - self._last_end >= self._min_interval:
            self.refresh()
        return self.keys.get(kid)

    def unknown(self, kid: str) -> KeyPending | None:
        """A token names ``kid``, which is not known: the fetch it may wait for
        (one already under way, or a new one), or None when the last fetch
        ended less than ``min_interval`` ago (the kid is then refused)."""
        if self._inflight is None and self._clock() - self._last_end < self._min_interval:
            return None
        # Each waiter gets its own future: one that is cancelled (its connection
        # closed) leaves the fetch to the others.
        return KeyPending(f"key {kid[:40]!r} unknown: fetching {self.url or 'the key set'} again",
                          asyncio.shield(self.refresh()))

    def refresh(self) -> asyncio.Future[None]:
        """Fetch the set (unless a fetch is under way): a future that completes,
        never with an error, when the fetch is over."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._run())
        return self._inflight

    async def _run(self) -> None:
        self.fetches += 1
        outcome = "failed"
        try:
            raw = await self._fetch()
            keys, skipped = parse(raw)
            for why in skipped:
                log.info("JWKS %s: skipped %s", self.url, why)
            if not keys:
                raise ValueError("no signing key pushgate can use")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("JWKS %s: fetch failed (%s); %d known key(s) still used", self.url, str(exc)[:200],
                        len(self.keys))
        else:
            outcome = "ok"
            gone = set(self.keys) - set(keys)
            added = set(keys) - set(self.keys)
            if gone or added:
                log.info("JWKS %s: %d key(s), added %s, withdrawn %s", self.url, len(keys),
                         sorted(added) or "none", sorted(gone) or "none")
            self.keys = keys
            self.loaded_at = self._clock()
        finally:
            self._last_end = self._clock()
            self._inflight = None
        if self._on_fetch is not None:
            self._on_fetch(outcome)
