"""What the session core asks of presence: which channels are tracked, and
who joins and leaves them.

The table itself is the cluster's (:class:`gateway.cluster.presence.Presence`:
every node's subscribers, kept in step over the control bus); the session
core sees it only through :class:`ChannelPresence`, and a host without
presence gets :data:`NO_PRESENCE`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import ujson

if TYPE_CHECKING:
    from gateway.core.session import Session

INFO_LIMIT = 1024          # bytes of a token's info claim kept in presence
# Explicit presence (AnyCable's: a client joins with its own id and info, not
# by subscribing) is kept in the same table under this prefix and the
# stream's channel; no channel name can start with it (names are printable).
EXPLICIT = "\x01"


def compact_info(info: object) -> bytes | None:
    """A token's ``info`` claim as compact JSON bytes, or None (absent, or over
    INFO_LIMIT: left out of presence)."""
    if info is None:
        return None
    data = ujson.dumps(info, ensure_ascii=False, escape_forward_slashes=False).encode()
    return data if len(data) <= INFO_LIMIT else None


class ChannelPresence(Protocol):
    @property
    def active(self) -> bool:
        """Whether any channel is tracked (--presence or --join-leave)."""

    def tracks(self, channel: str) -> bool:
        """Joins and leaves of ``channel`` are recorded (presence, or join/leave pushes)."""

    def enabled(self, channel: str) -> bool:
        """Who is in ``channel`` can be asked (--presence)."""

    def announces(self, channel: str) -> bool:
        """Joins and leaves of ``channel`` are pushed to its subscribers (--join-leave)."""

    def join(self, session: Session, channel: str, chan_info: bytes | None = None) -> None: ...

    def leave(self, session: Session, channel: str) -> None: ...

    def update(self, session: Session, channel: str, chan_info: bytes | None = None) -> None:
        """``session``'s conn_info changed (a refresh with info), or its
        ``chan_info`` in ``channel`` (a sub refresh with info; None: unchanged):
        its entry there, if it has one, takes them, on every node."""

    def stats(self, channel: str) -> tuple[int, int]:
        """Clients and distinct users in ``channel``, on every node."""

    def clients(self, channel: str) -> dict[str, dict]:
        """Every client in ``channel``, by client id, as the protocols report it."""

    def clients_json(self, channel: str) -> bytes:
        """:meth:`clients` as compact JSON, built in one pass."""

    def explicit_join(self, session: Session, channel: str, pid: str, info: bytes | None) -> bool:
        """``session`` joins ``channel``'s explicit presence as ``pid`` (AnyCable's
        presence ``join``); False when this node keeps none."""

    def explicit_leave(self, session: Session, channel: str) -> None: ...

    def explicit_info(self, channel: str) -> tuple[int, list[tuple[str, bytes | None]]] | None:
        """Distinct ids in ``channel``'s explicit presence on every node, and one
        record (id, info) each; None when this node keeps none."""


class NoPresence:
    """A host that tracks no channel."""

    active = False

    def tracks(self, channel: str) -> bool:
        return False

    def enabled(self, channel: str) -> bool:
        return False

    def announces(self, channel: str) -> bool:
        return False

    def join(self, session: Session, channel: str, chan_info: bytes | None = None) -> None:
        pass

    def leave(self, session: Session, channel: str) -> None:
        pass

    def update(self, session: Session, channel: str, chan_info: bytes | None = None) -> None:
        pass

    def stats(self, channel: str) -> tuple[int, int]:
        return 0, 0

    def clients(self, channel: str) -> dict[str, dict]:
        return {}

    def clients_json(self, channel: str) -> bytes:
        return b"{}"

    def explicit_join(self, session: Session, channel: str, pid: str, info: bytes | None) -> bool:
        return False

    def explicit_leave(self, session: Session, channel: str) -> None:
        pass

    def explicit_info(self, channel: str) -> tuple[int, list[tuple[str, bytes | None]]] | None:
        return None


NO_PRESENCE = NoPresence()
