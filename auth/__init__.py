"""Tokens for pushgate: verified by the gateway, minted by backends.

Backends import :func:`connection_token` to hand a browser its JWT; the
gateway uses :class:`TokenVerifier` to check it. Both sides live here so the
claims have one definition.
"""
from auth.tokens import (  # noqa: F401
    ConnectionClaims,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenVerifier,
    connection_token,
)
