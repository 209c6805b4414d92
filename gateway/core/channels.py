"""Channel names, as every part of the gateway reads them: what a valid
name is, the personal channel of a user (``#<user>``: every connection of
that user reads it, nobody else ever does), and channel patterns
(``chat:*``) matched in constant time. Pure, no I/O.
"""
from __future__ import annotations

from typing import Iterable, TypeGuard

MAX_CHANNEL_LENGTH = 255
PERSONAL_PREFIX = "#"


def personal_channel(user: str) -> str:
    """Every connection of ``user`` is subscribed to this channel, on every node."""
    return PERSONAL_PREFIX + user


class Patterns:
    """Channel names and prefixes (``chat:*``), matched in constant time
    (``--public-channels``, ``--presence``, ``--join-leave``)."""

    __slots__ = ("exact", "prefixes")

    def __init__(self, patterns: Iterable[str]):
        patterns = list(patterns)
        self.exact = frozenset(p for p in patterns if not p.endswith("*"))
        self.prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixes)

    def match(self, channel: str) -> bool:
        return channel in self.exact or (bool(self.prefixes) and channel.startswith(self.prefixes))


def foreign_personal(channel: str, user: str) -> bool:
    """``channel`` is a personal channel that is not ``user``'s own (an anonymous
    user, ``""``, has none): never readable by ``user``, whatever a token,
    a signature or the server API says."""
    return channel.startswith(PERSONAL_PREFIX) and (not user or channel != PERSONAL_PREFIX + user)


def valid_channel(name: object) -> TypeGuard[str]:
    return isinstance(name, str) and 0 < len(name) <= MAX_CHANNEL_LENGTH and name.isprintable()
