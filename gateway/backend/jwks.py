"""The GET that fetches a JWKS endpoint's key set for :class:`auth.jwks.KeyStore`:
bounded in time (``timeout``, connecting included) and size (``MAX_BYTES``),
asynchronous (aiohttp, as the proxies' caller), so a slow or dead identity
provider never holds the event loop. Errors are raised to the store, which
logs them and keeps the keys it has."""
from __future__ import annotations

from typing import Awaitable, Callable

import aiohttp

MAX_BYTES = 1 << 20   # a key set is a few KB; Keycloak's with many realms' keys, tens
TIMEOUT = 2.0          # seconds for the whole request


def fetcher(url: str, timeout: float = TIMEOUT, max_bytes: int = MAX_BYTES) -> Callable[[], Awaitable[bytes]]:
    """A coroutine function that GETs ``url`` and returns its body (HTTP 200
    only); raises ValueError or aiohttp/OS errors."""

    async def fetch() -> bytes:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(url, headers={"Accept": "application/json"}, allow_redirects=False) as answer:
                if answer.status != 200:
                    raise ValueError(f"HTTP {answer.status}")
                body = await answer.content.read(max_bytes + 1)
                if len(body) > max_bytes:
                    raise ValueError(f"answer larger than {max_bytes} bytes")
                return body

    return fetch
