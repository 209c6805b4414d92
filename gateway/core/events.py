"""What the session core tells the backend's events (``--events-topic``):
connections opened and closed, subscriptions to the watched channels, and a
user's first connection here and last one gone.

The events themselves, their queue to nsqd and the cluster-wide decisions
(users online and offline, receipts) are :mod:`gateway.cluster.events`; the
session core sees them only through :class:`ConnectionEvents`. Every call
site checks ``active`` first, so a host without events (:data:`NO_EVENTS`)
pays one attribute read per connect, close, subscribe and unsubscribe.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.core.session import Session


class ConnectionEvents(Protocol):
    @property
    def active(self) -> bool:
        """Whether events are on (--events-topic)."""

    def watches(self, channel: str) -> bool:
        """Subscribes to ``channel`` are events (--events-channels)."""

    def connected(self, session: Session) -> None: ...

    def disconnected(self, session: Session, code: int, reason: str) -> None:
        """A connection that :meth:`connected` announced is gone (``code`` 0: the
        client or the network ended it)."""

    def subscribed(self, session: Session, channel: str) -> None: ...

    def unsubscribed(self, session: Session, channel: str) -> None: ...

    def user_here(self, user: str) -> None:
        """``user`` has their first connection on this node."""

    def user_gone(self, user: str) -> None:
        """``user``'s last connection on this node closed."""


class NoEvents:
    """A host that publishes no events."""

    active = False

    def watches(self, channel: str) -> bool:
        return False

    def connected(self, session: Session) -> None:
        pass

    def disconnected(self, session: Session, code: int, reason: str) -> None:
        pass

    def subscribed(self, session: Session, channel: str) -> None:
        pass

    def unsubscribed(self, session: Session, channel: str) -> None:
        pass

    def user_here(self, user: str) -> None:
        pass

    def user_gone(self, user: str) -> None:
        pass


NO_EVENTS = NoEvents()
