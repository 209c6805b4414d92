"""What a session sees of the node: the session host.

A session needs the hub, history and token expiry it shares with every other
connection, the token verifier, the subscribe rules, the per-user cap, the
heartbeat, metrics and a clock. The host holds exactly those and the
registry of open sessions; it knows nothing of NSQ, HTTP or sockets, so a
test builds one in process (``tests/inprocess.py``) with a fake clock.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from auth.tokens import ConnectionClaims, SubscriptionClaims, TokenInvalid, TokenVerifier
from gateway import __version__
from gateway.core import vocabulary
from gateway.core.vocabulary import Ending
from gateway.config import Settings
from gateway.core.channels import PERSONAL_PREFIX, Patterns
from gateway.core.events import NO_EVENTS, ConnectionEvents
from gateway.core.expiry import Expiry
from gateway.core.heartbeat import Heartbeat
from gateway.core.history import History
from gateway.core.hub import Hub
from gateway.core.metrics import Metrics
from gateway.core.presence import NO_PRESENCE, ChannelPresence

if TYPE_CHECKING:
    from gateway.core.session import Session

HOLD_POLL = 0.05  # seconds between checks of held recoveries (one timer for all)
FAST_PING_INTERVAL = 3  # seconds: Action Cable's beat (clients reopen after 6 s of silence)


class SessionHost:
    version = f"pushgate {__version__}"

    def __init__(self, settings: Settings, metrics: Metrics, *, hub: Hub, history: History, expiry: Expiry,
                 heartbeat: Heartbeat, verifier: TokenVerifier | None, name: str = "",
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 now_ns: Callable[[], int] = time.time_ns, fast_heartbeat: Heartbeat | None = None,
                 presence: ChannelPresence = NO_PRESENCE, events: ConnectionEvents = NO_EVENTS):
        self.settings = settings
        self.metrics = metrics
        self.hub = hub
        self.history = history
        self.expiry = expiry
        self.heartbeat = heartbeat
        # Sessions whose clients expect frequent pings (Session.fast_pings) are
        # pinged from this one instead, on the same one-second tick.
        self.fast_heartbeat = fast_heartbeat or Heartbeat(FAST_PING_INTERVAL, 1, heartbeat.stale_after, clock=clock)
        self.verifier = verifier
        self.name = name            # the node's name (emulation transports route by it)
        self.clock = clock          # monotonic seconds: rate limits, holds
        self.wall = wall            # seconds since the epoch: token expiry
        self.now_ns = now_ns        # nanoseconds since the epoch: stream positions
        # Presence and join/leave: the cluster's table (gateway.cluster.presence),
        # which the node passes in; without it nothing is tracked.
        self.presence = presence
        # The backend's events (gateway.cluster.events); NO_EVENTS when off.
        self.events = events
        self.sessions: set[Session] = set()
        # Sessions whose commands arrive apart from their connection (an
        # emulation transport: /emulation), by the session id of their connect result.
        self.by_id: dict[str, Session] = {}
        self.user_connections: dict[str, int] = {}
        self.held: set[Session] = set()   # sessions whose recovery waits for this node to catch up
        self._hold_timer: asyncio.TimerHandle | None = None
        self._public = Patterns(settings.public_channel_patterns)
        # Channels whose subscribers get the latest publication at once (--cache).
        self.cache = Patterns(settings.cache)
        self._shared: dict[str, Any] = {}
        # Connections by socket id (Action Cable's sid), for publications that
        # skip one connection (an envelope's "exclude"); only those that have one.
        self.sockets: dict[str, Session] = {}
        # Publish an envelope through NSQ to every node (the node sets it; a
        # client's whisper goes this way); the result says whether nsqd took it.
        self.publish: Callable[[bytes], Awaitable[bool]] | None = None
        # Calls to the backend that must be made before the node exits (a
        # closed connection's last word to the app): awaited by the node's stop.
        self.last_words: set[asyncio.Future] = set()

    def shared(self, key: str, build: Callable[[SessionHost], Any]) -> Any:
        """State a protocol shares among its sessions on this node (e.g. the
        Action Cable protocol's per-identifier wire formats), built on first use."""
        state = self._shared.get(key)
        if state is None:
            state = self._shared[key] = build(self)
        return state

    def heartbeat_of(self, session: Session) -> Heartbeat:
        return self.fast_heartbeat if session.fast_pings else self.heartbeat

    # --- lifecycle of a session ---------------------------------------------------

    def accept(self, session: Session) -> Session:
        self.sessions.add(session)
        transport = session.transport
        if transport.emulation:
            self.by_id[transport.session_id] = session
        self.heartbeat_of(session).expect_connect(session)
        self.metrics.connections.inc()
        return session

    def admit(self, user: str) -> Ending | None:
        """The per-user cap, checked at connect."""
        cap = self.settings.max_user_connections
        if cap and user and self.user_connections.get(user, 0) >= cap:
            self.metrics.refused_connects.labels("user_limit").inc()
            return vocabulary.CONNECTION_LIMIT
        return None

    def connected(self, session: Session) -> None:
        self.heartbeat_of(session).add(session)
        events = self.events
        if events.active:
            events.connected(session)
        user = session.user
        if user:
            count = self.user_connections[user] = self.user_connections.get(user, 0) + 1
            if count == 1 and events.active:
                events.user_here(user)
        self.metrics.connects.inc()

    def forget(self, session: Session) -> None:
        self.held.discard(session)
        if session.transport.emulation:
            self.by_id.pop(session.transport.session_id, None)
        # In the heartbeat exactly when connected() counted it (established, not
        # yet forgotten): a session that closes between its connect's checks
        # and its answer was never counted, and must not be uncounted.
        counted = session.slot >= 0
        self.heartbeat_of(session).remove(session)
        if session in self.sessions:
            self.sessions.discard(session)
            self.metrics.connections.dec()
            if counted and session.user:
                count = self.user_connections.get(session.user, 0) - 1
                if count > 0:
                    self.user_connections[session.user] = count
                elif self.user_connections.pop(session.user, None) is not None and self.events.active:
                    self.events.user_gone(session.user)

    def hold(self, session: Session) -> None:
        """Poll ``session``'s held recovery from the one shared timer."""
        self.held.add(session)
        if self._hold_timer is None:
            self._hold_timer = asyncio.get_running_loop().call_later(HOLD_POLL, self._poll_held)

    def _poll_held(self) -> None:
        self._hold_timer = None
        now = self.clock()
        for session in list(self.held):
            if session.resume(now):
                self.held.discard(session)
        if self.held:
            self._hold_timer = asyncio.get_running_loop().call_later(HOLD_POLL, self._poll_held)

    # --- tokens and rules ------------------------------------------------------------

    def verify_token(self, token: str, ext: bool = False) -> ConnectionClaims:
        """A connection token's claims (``ext``: AnyCable's tokens too); raises
        TokenExpired, TokenInvalid or KeyPending (wait for its key set, then ask again)."""
        if self.verifier is None:
            raise TokenInvalid("this gateway has no JWT key configured")
        return self.verifier.verify_connection(token, ext=ext)

    def verify_subscription_token(self, token: object, user: str, channel: str, client: str) -> SubscriptionClaims:
        if self.verifier is None:
            raise TokenInvalid("this gateway has no JWT key configured")
        return self.verifier.verify_subscription(token, user, channel, client)  # type: ignore[arg-type]

    def may_subscribe(self, user: str, channel: str) -> bool:
        """A subscribe without a token: only channels matched by --public-channels.

        Personal channels are never public: a user reads their own through the
        server-side subscription and nobody else's.
        """
        if channel.startswith(PERSONAL_PREFIX):
            return False
        return self._public.match(channel)

    # --- losses --------------------------------------------------------------------------

    def streams_broken(self, channels: tuple[str, ...]) -> None:
        """Publications of ``channels`` were lost here (history already has the
        gap): their subscribers missed them live too, and each is told (see
        :meth:`gateway.core.session.Session.stream_broken`)."""
        for channel in channels:
            for session in self.hub.subscribers(channel):
                session.stream_broken(channel)

    def everything_broken(self) -> None:
        """Publications were lost for channels nobody can name: every position
        handed out so far is unrecoverable and every positioned subscriber is told."""
        self.history.continuity_from(self.now_ns())
        for session in list(self.sessions):
            for channel in [c for c in session.channels if self.history.enabled(c)]:
                session.stream_broken(channel)
