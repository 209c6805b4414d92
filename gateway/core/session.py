"""One client connection's state, whatever protocol it speaks.

The session core holds what every protocol shares: who the client is (its
token's claims, checked by one set of rules), which channels it reads, its
token's expiry, its place in the heartbeat, its command rate, a recovery
held while the node catches up, and the closing that releases all of it at
once. A protocol (:mod:`gateway.protocols.centrifugo.session`, the Action Cable
session) subclasses it: it decodes frames into commands, answers them, and
renders what the core asks it to say (an unsubscribe, a broken stream).

A session sees the node only through its :class:`~gateway.core.host.SessionHost`
and its transport only through :class:`~gateway.core.wire.Transport`.
It keeps ``transport.send`` as ``push`` and the transport's wire format as
``wire``: the hub calls ``push`` once per delivery, the hottest line there is.

States: ``CONNECTING`` (until a good connect) → ``CONNECTED`` → ``CLOSED``.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from auth.tokens import ConnectionClaims, KeyPending, TokenExpired, TokenInvalid
from gateway.core import vocabulary
from gateway.core.vocabulary import Ending, ProtocolError, Reason, Refusal, SubscriptionEnd
from gateway.core.channels import foreign_personal, personal_channel, valid_channel
from gateway.core.presence import INFO_LIMIT, compact_info

if TYPE_CHECKING:
    from gateway.core.expiry import Entry
    from gateway.core.host import SessionHost
    from gateway.core.wire import Transport, WireFormat

log = logging.getLogger("pushgate.session")

CONNECTING, CONNECTED, CLOSED = "connecting", "connected", "closed"
CHANNEL_LIMIT = 128     # channels per connection, the personal one included (--max-channels-per-connection)
ANONYMOUS = ConnectionClaims(user="")
RECOVERY_WAIT = 2.0     # seconds a recovery may wait for this node to catch up
# Commands a session may queue behind a held recovery: a connect with all its
# subscribes, and then some. More is not what an SDK does: a protocol error.
HELD_LIMIT = CHANNEL_LIMIT + 32
# The longest ttl a client is told, in seconds: the protocols' field is a
# uint32 (about 136 years), which a far-off exp would overflow.
MAX_TTL = 2**32 - 1


class MissingToken(TokenInvalid):
    """No token, and anonymous connections are not allowed."""


class ServerSubscription(NamedTuple):
    """What the server API's ``subscribe`` asks beside the channel."""

    chan_info: bytes | None = None   # the subscriber's channel info (presence, join/leave)
    data: bytes | None = None        # sent to the client with the subscription
    expires_at: int | None = None    # Unix seconds: the subscription ends then (3006)
    since: tuple[str, int] | None = None   # (epoch, offset) to recover from
    override: Any = None             # the protocol's per-subscription overrides, as sent


class Session:
    __slots__ = ("host", "transport", "push", "wire", "state", "client_id", "user", "channels", "pong_due",
                 "slot", "expiry", "sub_expiry", "held", "held_until", "credit", "credit_at", "server_channels",
                 "conn_info")

    # Whether the protocol's clients expect a ping every few seconds (Action
    # Cable: 3 s, or they reopen the connection) rather than every
    # --ping-interval: the host pings such sessions from its fast heartbeat.
    fast_pings = False
    # The protocol's name in events (the backend's connect and disconnect).
    protocol = ""

    def __init__(self, host: SessionHost, transport: Transport) -> None:
        self.host = host
        self.transport = transport
        self.push = transport.send
        self.wire: WireFormat = transport.wire
        self.state = CONNECTING
        self.client_id = ""
        self.user = ""
        self.channels: set[str] = set()
        self.pong_due = False   # a ping was sent and no pong has come back yet
        self.slot = -1          # the heartbeat bucket this session is pinged from
        self.expiry: Entry | None = None   # the connection token's entry in the host's Expiry
        self.sub_expiry: dict[str, Entry] | None = None  # channel -> its subscription token's Expiry entry
        # A recovery held while this node catches up: what the protocol needs to
        # resume (its commands, from the held one on). Only after the token checked out.
        self.held: tuple[Any, list] | None = None
        self.held_until = 0.0
        self.credit = float(host.settings.client_command_burst)  # the command rate bucket
        self.credit_at = host.clock()
        self.server_channels: tuple[str, ...] = ()  # subscribed at connect (personal, token)
        self.conn_info: bytes | None = None  # the token's info claim, kept only for presence

    # --- what a protocol provides ------------------------------------------------

    def count(self, data: str | bytes) -> int:
        """An upper bound of the commands in ``data``, before decoding."""
        raise NotImplementedError

    def decode(self, data: str | bytes) -> list:
        """The commands in one frame, in order; raises ProtocolError."""
        raise NotImplementedError

    def run(self, commands: list, state: Any = None) -> None:
        """Handle decoded commands in order (``state``: what a held one carried)."""
        raise NotImplementedError

    def unsubscribed(self, channel: str, end: SubscriptionEnd) -> None:
        """Tell the client the server ended its subscription to ``channel``."""
        raise NotImplementedError

    def goodbye(self, ending: Ending) -> tuple[int, str]:
        """Say ``ending`` the protocol's way: queue its last message, if it has
        one, and return the close code and words for a transport with close
        frames. Called once, after the session has let go of everything."""
        raise NotImplementedError

    # --- what the server may ask of a session (the server API) ----------------------

    def server_subscribe(self, channel: str, sub: ServerSubscription) -> Refusal | None:
        """Subscribe this connection to ``channel`` from the server, as a
        channel of its token; None when done, else why not."""
        raise NotImplementedError

    def server_unsubscribe(self, channel: str) -> bool:
        """End this connection's subscription to ``channel`` for good (the client
        is told, and does not subscribe again); whether it had one."""
        if channel not in self.channels:
            return False
        self.server_channels = tuple(c for c in self.server_channels if c != channel)
        self.end_subscription(channel, SubscriptionEnd.SERVER)
        return True

    def server_refresh(self, expires_at: int | None, info: bytes | None = None) -> None:
        """The server changed this connection's expiry (None: it no longer
        expires), and its info when given; the protocol tells the client of the
        expiry if it has a way to."""
        self.reauthenticate(ConnectionClaims(user=self.user, expires_at=expires_at))
        if info is not None:
            self.info_changed(info)
        self.refreshed(expires_at)

    def info_changed(self, info: bytes) -> None:
        """The connection's info is now ``info`` (compact JSON): its presence
        entries take it, on every node."""
        presence = self.host.presence
        if not presence.active:
            return
        self.conn_info = info if len(info) <= INFO_LIMIT else None
        for channel in self.channels:
            if presence.tracks(channel):
                presence.update(self, channel)

    def refreshed(self, expires_at: int | None) -> None:
        """Tell the client its connection's new expiry."""
        raise NotImplementedError

    def send(self, message: bytes) -> None:
        """Frame one encoded message and queue it."""
        self.push(self.wire.frame(message))

    def _decoded(self, data: str | bytes) -> list | None:
        """:meth:`decode`, or None when the frame breaks the protocol (the
        session is then closed with the protocol error's code)."""
        try:
            return self.decode(data)
        except ProtocolError as exc:
            self.host.metrics.bad_frames.inc()
            log.warning("client %s: bad frame (%s), disconnecting", self.client_id or "-", exc.detail)
            self.close(exc.ending)
            return None

    def receive(self, data: str | bytes) -> None:
        commands = self._decoded(data)
        if commands is not None:
            self.run(commands)

    def queue(self, data: str | bytes, waiting: list) -> bool:
        """Append ``data``'s commands to ``waiting`` (a held recovery); False when
        the frame is refused (and the session closed)."""
        commands = self._decoded(data)
        if commands is None:
            return False
        waiting.extend(commands)  # in order, after the command being held
        return True

    # --- input from the transport ----------------------------------------------------

    def handle_frame(self, data: str | bytes) -> None:
        if self.state is CLOSED:
            return
        # Every command counts against the rate limit, pongs included, and is
        # counted before it is decoded: a flood costs its sender, not the node.
        if not self._spend(self.count(data)):
            return
        if self.held is not None:
            state, waiting = self.held
            if not self.queue(data, waiting):
                return
            limit = max(HELD_LIMIT, self.host.settings.max_channels_per_connection + 32)
            if len(waiting) > limit:
                self.host.metrics.bad_frames.inc()
                log.warning("client %s: more than %d commands behind a held recovery, disconnecting",
                            self.client_id or "-", limit)
                self.close(vocabulary.BAD_REQUEST)
            return
        self.receive(data)

    def _spend(self, commands: int) -> bool:
        """Take ``commands`` from the token bucket; over the limit, disconnect 3013."""
        host = self.host
        settings = host.settings
        now = host.clock()
        credit = min(settings.client_command_burst,
                     self.credit + (now - self.credit_at) * settings.client_command_rate) - commands
        self.credit_at = now
        self.credit = credit
        if credit >= 0:
            return True
        host.metrics.refused_commands.inc()
        log.warning("client %s: over %g commands/s (burst %d), disconnecting", self.client_id or "-",
                    settings.client_command_rate, settings.client_command_burst)
        self.close(vocabulary.TOO_MANY_REQUESTS)
        return False

    def hold(self, state: Any, commands: list) -> bool:
        """Hold ``commands`` (the first of which recovers from a position this node
        has not reached) a moment while the node catches up; the host polls held
        sessions from one timer. False when this session may not wait again."""
        now = self.host.clock()
        if now < self.held_until:
            return False
        self.held = (state, commands)
        self.held_until = now + RECOVERY_WAIT
        self.host.hold(self)
        return True

    def wait(self, future: asyncio.Future, then: Callable[[Any, list], None], rest: list) -> None:
        """Suspend this session's commands until ``future`` (a call to the
        backend) is done: frames that arrive meanwhile queue behind it, in
        order, as behind a held recovery (and bounded the same way). Then
        ``then(result, commands)`` runs with the commands that waited
        (``rest`` first), and is in charge of running them. If the session
        closes first, the future is cancelled (a call still queued is never
        sent) and ``then`` never runs. ``future`` must not raise."""
        waiting = list(rest)
        self.held = (future, waiting)

        def done(finished: asyncio.Future) -> None:
            held = self.held
            if self.state is CLOSED or held is None or held[0] is not finished or finished.cancelled():
                return
            self.held = None
            then(finished.result(), held[1])

        future.add_done_callback(done)

    def still_behind(self, commands: list) -> bool:
        """Whether the held recovery should keep waiting (the protocol knows)."""
        raise NotImplementedError

    def resume(self, now: float) -> bool:
        """Called by the host's poll: run the held commands once this node has
        caught up or the wait is over. Returns whether the hold ended."""
        if self.state is CLOSED or self.held is None:
            return True
        state, commands = self.held
        if now < self.held_until and self.still_behind(commands):
            return False
        self.held = None
        self.held_until = now + RECOVERY_WAIT  # this one is not held again
        self.run(commands, state)
        self.held_until = 0.0
        return True

    def expire(self, channel: str | None) -> None:
        """Called by the host's Expiry when the connection's (``channel`` None)
        or a subscription's expiry has come: closed as ``EXPIRED``, or the
        subscription ended. A protocol that asks the backend instead overrides it."""
        if channel is None:
            self.close(vocabulary.EXPIRED)
        elif channel in self.server_channels:
            # The client cannot refresh a subscription the server made: as
            # Centrifugo, the connection closes (3006) and comes back without it.
            self.host.metrics.expirations.labels("subscription").inc()
            self.close(vocabulary.SUBSCRIPTION_EXPIRED)
        else:
            self.end_subscription(channel, SubscriptionEnd.EXPIRED)

    def transport_closed(self) -> None:
        """The connection is gone (client left, network error, or our close)."""
        if self.state is not CLOSED:
            self.state = CLOSED
            self._release()
            if self.host.events.active:
                self.host.events.disconnected(self, 0, "connection closed")

    # --- identity ------------------------------------------------------------------

    def authenticate(self, token: str, ext: bool = False) -> ConnectionClaims:
        """The claims of a connect's token, under the rules every protocol shares
        (``ext``: AnyCable's tokens are accepted too).

        Raises TokenExpired, or TokenInvalid (MissingToken when there is none
        and anonymous connections are not allowed), counted and logged here;
        or KeyPending, not counted: the protocol waits for the key set (see
        :meth:`wait`) and authenticates again.
        """
        host = self.host
        try:
            if not token:
                if not host.settings.allow_anonymous:
                    raise MissingToken("no token")
                return ANONYMOUS
            claims = host.verify_token(token, ext)
            if not claims.user and not host.settings.allow_anonymous:
                raise TokenInvalid('sub "" (anonymous) without --allow-anonymous')
            if claims.user and not valid_channel(personal_channel(claims.user)):
                raise TokenInvalid("sub is not a user id an envelope can address (1-254 printable characters)")
            for channel in claims.channels:
                if foreign_personal(channel, claims.user):
                    raise TokenInvalid(f"channels claim names {channel!r}, another user's personal channel")
            return claims
        except TokenExpired:
            host.metrics.token_errors.labels("expired").inc()
            raise
        except KeyPending:
            raise
        except MissingToken:
            host.metrics.token_errors.labels("missing").inc()
            log.warning("connect refused: no token")
            raise
        except TokenInvalid as exc:
            host.metrics.token_errors.labels("invalid").inc()
            log.warning("connect refused: invalid token (%s)", exc)
            raise

    def begin(self, claims: ConnectionClaims, delay: float | None = None) -> Ending | None:
        """Become ``claims``' connection: checks the per-user cap and the channel
        limit, and watches the token's expiry. Returns a refusal, or None; the
        protocol then answers and joins :attr:`server_channels`."""
        host = self.host
        refusal = host.admit(claims.user)
        if refusal is not None:
            return refusal
        channels = [personal_channel(claims.user)] if claims.user else []
        channels.extend(c for c in claims.channels if valid_channel(c) and c not in channels)
        if len(channels) > host.settings.max_channels_per_connection:
            return vocabulary.CHANNEL_LIMIT
        self.user = claims.user
        self.client_id = self.client_id or str(uuid.uuid4())   # a proxied connect named it already
        self.state = CONNECTED
        self.server_channels = tuple(channels)
        if claims.info is not None and host.presence.active:
            self.conn_info = compact_info(claims.info)
        if claims.expires_at is not None:
            self.expiry = host.expiry.watch(self, claims.expires_at, None, delay)
        return None

    def established(self) -> None:
        """The connect was answered: from now on the session is pinged."""
        self.host.connected(self)

    def reauthenticate(self, claims: ConnectionClaims, delay: float | None = None) -> None:
        """A refreshed token for the same user: its expiry replaces the old one
        (``delay``: seconds after it, the host's close delay by default)."""
        expiry = self.host.expiry
        expiry.cancel(self.expiry)
        self.expiry = expiry.watch(self, claims.expires_at, None, delay) if claims.expires_at is not None else None

    def ttl(self, expires_at: int) -> int:
        """Seconds until ``expires_at``, at least 1 (the SDKs refresh when it runs
        out) and at most :data:`MAX_TTL` (a token for the year 9999 means "never")."""
        return max(1, min(MAX_TTL, int(expires_at - self.host.wall())))

    def chan_info_changed(self, channel: str, info: bytes) -> None:
        """This connection's info in ``channel`` is now ``info`` (compact JSON):
        its presence entry there takes it, on every node."""
        presence = self.host.presence
        if presence.active and channel in self.channels and presence.tracks(channel):
            presence.update(self, channel, info)

    # --- channels --------------------------------------------------------------------

    def join(self, channel: str, wire: WireFormat | None = None, chan_info: bytes | None = None,
             in_presence: bool = True) -> None:
        """Subscribe to ``channel``; ``in_presence`` False keeps this subscriber
        out of its presence and join/leave (the backend said so)."""
        host = self.host
        self.channels.add(channel)
        host.hub.subscribe(channel, self, wire or self.wire)
        presence = host.presence
        if in_presence and presence.active and presence.tracks(channel):
            presence.join(self, channel, chan_info)
        events = host.events
        if events.active and events.watches(channel):
            events.subscribed(self, channel)

    def leave(self, channel: str) -> None:
        """Pairs :meth:`join`: everything a subscription holds goes with it."""
        host = self.host
        self.channels.discard(channel)
        host.hub.unsubscribe(channel, self)
        presence = host.presence
        if presence.active and presence.tracks(channel):
            presence.leave(self, channel)
        events = host.events
        if events.active and events.watches(channel):
            events.unsubscribed(self, channel)
        if self.sub_expiry:
            self.host.expiry.cancel(self.sub_expiry.pop(channel, None))

    def watch_subscription(self, channel: str, expires_at: int | None, delay: float | None = None) -> None:
        """Track (or stop tracking, with None) a subscription token's expiry
        (``delay``: seconds after it, the host's close delay by default)."""
        expiry = self.host.expiry
        if self.sub_expiry is not None:
            expiry.cancel(self.sub_expiry.pop(channel, None))
        if expires_at is not None:
            if self.sub_expiry is None:
                self.sub_expiry = {}
            self.sub_expiry[channel] = expiry.watch(self, expires_at, channel, delay)

    def end_subscription(self, channel: str, end: SubscriptionEnd) -> None:
        """The server ends one subscription (e.g. its token expired); the client
        subscribes again when ``end`` says so."""
        if channel in self.channels:
            self.leave(channel)
            if end is SubscriptionEnd.EXPIRED:
                self.host.metrics.expirations.labels("subscription").inc()
            self.unsubscribed(channel, end)

    def stream_broken(self, channel: str) -> None:
        """This node lost a publication of ``channel`` that this client should have
        had (Centrifugo's "insufficient state"): the client recovers from its
        last position, and history answers honestly that it cannot."""
        if channel not in self.channels:
            return
        if channel in self.server_channels:
            self.close(vocabulary.INSUFFICIENT_STATE)
        else:
            self.end_subscription(channel, SubscriptionEnd.INSUFFICIENT_STATE)

    # --- output ----------------------------------------------------------------------

    def close(self, ending: Ending) -> None:
        if self.state is CLOSED:
            return
        self.state = CLOSED
        self._release()
        self.host.metrics.disconnects.labels(ending.reason.label).inc()
        code, words = self.goodbye(ending)
        if self.host.events.active:
            self.host.events.disconnected(self, code, ending.words)
        # A slow client's queue is dropped: it would not read it anyway.
        self.transport.disconnect(code, words, ending.reason is not Reason.SLOW)

    def ping(self) -> None:
        """Called by the heartbeat: the wire format's pre-framed ping."""
        if self.transport.pongs:
            self.pong_due = True
        self.push(self.wire.ping_frame)

    def pong(self) -> None:
        self.pong_due = False

    def _release(self) -> None:
        host = self.host
        hub = host.hub
        presence = host.presence
        events = host.events
        for channel in self.channels:
            hub.unsubscribe(channel, self)
            if presence.active and presence.tracks(channel):
                presence.leave(self, channel)
            if events.active and events.watches(channel):
                events.unsubscribed(self, channel)
        self.channels = set()
        expiry = host.expiry
        expiry.cancel(self.expiry)
        self.expiry = None
        if self.sub_expiry:
            for entry in self.sub_expiry.values():
                expiry.cancel(entry)
        self.sub_expiry = None
        held = self.held
        if held is not None and isinstance(held[0], asyncio.Future):
            held[0].cancel()    # a backend call this session waits for: withdrawn if not sent yet
        self.held = None
        host.forget(self)
