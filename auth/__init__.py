"""Tokens for pushgate: verified by the gateway, minted by backends.

Backends call :func:`connection_token` to hand a browser its JWT and
:func:`subscription_token` for a private channel; the gateway uses
:class:`TokenVerifier` to check both. Both sides live here so the claims
have one definition.
"""
from auth.tokens import (  # noqa: F401
    ConnectionClaims,
    KeyPending,
    ServerSub,
    SubscriptionClaims,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenMismatch,
    TokenVerifier,
    connection_token,
    subscription_token,
)
