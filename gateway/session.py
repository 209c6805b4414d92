"""One client connection's protocol state machine, independent of transport.

A transport hands the session each text frame it receives
(:meth:`Session.handle_frame`) and tells it when the connection is gone
(:meth:`Session.transport_closed`). The session answers through the
transport's interface:

``frame(payload) -> bytes``   (class-level) wrap one JSON message for the wire
``send(frame)``               queue framed bytes; never closes synchronously
``disconnect(d)``             end the connection with a protocol code

The session keeps ``send`` and the transport's class as ``push`` and
``kind``: the hub calls them once per delivery, the hottest line there is.

States: ``CONNECTING`` (until a good ``connect``) → ``CONNECTED`` → ``CLOSED``.
Closing releases everything the node keeps for the session (hub, heartbeat,
expiry, held recoveries, per-user counts) at once.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING

from auth.tokens import ConnectionClaims, TokenExpired, TokenInvalid, TokenMismatch
from gateway import protocol
from gateway.envelope import PERSONAL_PREFIX, personal_channel, valid_channel
from gateway.history import from_position
from gateway.protocol import Command, Disconnect, ProtocolError

if TYPE_CHECKING:
    from gateway.node import Node

log = logging.getLogger("pushgate.session")

CONNECTING, CONNECTED, CLOSED = "connecting", "connected", "closed"
CHANNEL_LIMIT = 128
ANONYMOUS = ConnectionClaims(user="")
REJECT_UNRECOVERED = 2  # subscribe flag: answer 112 rather than recovered:false
RECOVERY_WAIT = 2.0     # seconds a recovery may wait for this node to catch up
# Commands a session may queue behind a held recovery: a connect with all its
# subscribes, and then some. More is not what an SDK does: a protocol error.
HELD_LIMIT = CHANNEL_LIMIT + 32


class Session:
    __slots__ = ("node", "transport", "push", "kind", "state", "client_id", "user", "channels", "pong_due",
                 "slot", "expiry", "sub_expiry", "held", "held_until", "credit", "credit_at", "server_channels")

    def __init__(self, node: Node, transport) -> None:
        self.node = node
        self.transport = transport
        self.push = transport.send
        self.kind = transport.__class__
        self.state = CONNECTING
        self.client_id = ""
        self.user = ""
        self.channels: set[str] = set()
        self.pong_due = False   # a ping was sent and no pong has come back yet
        self.slot = -1          # the heartbeat bucket this session is pinged from
        self.expiry = None      # the connection token's entry in the node's Expiry
        self.sub_expiry: dict | None = None  # channel -> its subscription token's Expiry entry
        # A recovery held while this node catches up: (claims of a held connect or
        # None, the held command and those after it). Only after the token checked out.
        self.held: tuple[ConnectionClaims | None, list[Command]] | None = None
        self.held_until = 0.0
        self.credit = float(node.settings.client_command_burst)  # the command rate bucket
        self.credit_at = time.monotonic()
        self.server_channels: tuple[str, ...] = ()  # subscribed at connect (personal, token)

    # --- input from the transport ----------------------------------------

    def handle_frame(self, text: str) -> None:
        if self.state is CLOSED:
            return
        # Every command counts against the rate limit, pongs included, and is
        # counted before it is parsed: a flood costs its sender, not the node.
        if not self._spend(text.count("\n") + 1):
            return
        try:
            commands = protocol.parse_frame(text)
        except ProtocolError as exc:
            self.node.metrics.bad_frames.inc()
            log.warning("client %s: bad frame (%s), disconnecting", self.client_id or "-", exc.detail)
            self.close(exc.disconnect)
            return
        if self.held is not None:
            claims, waiting = self.held
            if len(waiting) + len(commands) > HELD_LIMIT:
                self.node.metrics.bad_frames.inc()
                log.warning("client %s: more than %d commands behind a held recovery, disconnecting",
                            self.client_id or "-", HELD_LIMIT)
                self.close(protocol.DISCONNECT_BAD_REQUEST)
                return
            waiting.extend(commands)  # in order, after the command being held
            return
        self._run(commands)

    def _spend(self, commands: int) -> bool:
        """Take ``commands`` from the token bucket; over the limit, disconnect 3013."""
        now = time.monotonic()
        settings = self.node.settings
        credit = min(settings.client_command_burst,
                     self.credit + (now - self.credit_at) * settings.client_command_rate) - commands
        self.credit_at = now
        self.credit = credit
        if credit >= 0:
            return True
        self.node.metrics.refused_commands.inc()
        log.warning("client %s: over %g commands/s (burst %d), disconnecting", self.client_id or "-",
                    settings.client_command_rate, settings.client_command_burst)
        self.close(protocol.DISCONNECT_TOO_MANY_REQUESTS)
        return False

    def _run(self, commands: list[Command], claims: ConnectionClaims | None = None) -> None:
        """Handle commands in order. ``claims`` are those of ``commands[0]``, a
        connect whose token was checked before it was held."""
        try:
            for i, cmd in enumerate(commands):
                if self.state is CLOSED:
                    return
                if self.state is CONNECTING:
                    if cmd.method != "connect":
                        self.node.metrics.bad_frames.inc()
                        log.warning("client -: %s before connect, disconnecting", cmd.method or "pong")
                        self.close(protocol.DISCONNECT_BAD_REQUEST)
                        return
                    if i > 0 or claims is None:
                        claims = self._authenticate(cmd)
                        if claims is None:
                            return  # refused: the rest of the frame is dropped
                    if self._hold(cmd, claims, commands, i):
                        return
                    self._connect(cmd, claims)
                    if self.state is not CONNECTED:
                        return
                elif cmd.method == "subscribe" and self._hold(cmd, None, commands, i):
                    return
                else:
                    _HANDLERS[cmd.method](self, cmd)
        except Exception:
            # A bug must cost one connection, not the node: the client reconnects.
            # Only method names are logged: commands carry tokens.
            log.exception("client %s: internal error handling %s", self.client_id or "-",
                          [c.method or "pong" for c in commands[:8]])
            self.close(protocol.DISCONNECT_INTERNAL)

    def _hold(self, cmd: Command, claims: ConnectionClaims | None, commands: list[Command], i: int) -> bool:
        """The client saw more than this node has received yet (it comes from a
        node that was ahead): hold this command, and all after it, a moment
        for this node to catch up, so the recovery is exact instead of
        ``recovered: false``. The node polls held sessions from one timer."""
        if time.monotonic() < self.held_until or not self.node.recovery_behind(cmd):
            return False
        self.held = (claims, commands[i:])
        self.held_until = time.monotonic() + RECOVERY_WAIT
        self.node.hold(self)
        return True

    def resume(self, now: float) -> bool:
        """Called by the node's poll: run the held commands once this node has
        caught up or the wait is over. Returns whether the hold ended."""
        if self.state is CLOSED or self.held is None:
            return True
        claims, commands = self.held
        if now < self.held_until and self.node.recovery_behind(commands[0]):
            return False
        self.held = None
        self.held_until = now + RECOVERY_WAIT  # this one is not held again
        self._run(commands, claims)
        self.held_until = 0.0
        return True

    def transport_closed(self) -> None:
        """The connection is gone (client left, network error, or our close)."""
        if self.state is not CLOSED:
            self.state = CLOSED
            self._release()

    # --- output -------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        self.push(self.kind.frame(payload))

    def close(self, disconnect: Disconnect) -> None:
        if self.state is CLOSED:
            return
        self.state = CLOSED
        self._release()
        self.node.metrics.disconnects.labels(str(disconnect.code)).inc()
        self.transport.disconnect(disconnect)

    def ping(self, frame: bytes) -> None:
        """Called by the heartbeat with the transport's pre-framed ping."""
        self.pong_due = True
        self.push(frame)

    def _release(self) -> None:
        hub = self.node.hub
        for channel in self.channels:
            hub.unsubscribe(channel, self)
        self.channels = set()
        expiry = self.node.expiry
        expiry.cancel(self.expiry)
        self.expiry = None
        if self.sub_expiry:
            for entry in self.sub_expiry.values():
                expiry.cancel(entry)
        self.sub_expiry = None
        self.held = None
        self.node.forget(self)

    def end_subscription(self, channel: str, code: int, reason: str) -> None:
        """The server ends one subscription (e.g. its token expired); the SDKs
        resubscribe for codes from 2500 up."""
        if channel in self.channels:
            self._leave(channel)
            if code == protocol.UNSUBSCRIBE_EXPIRED[0]:
                self.node.metrics.expirations.labels("subscription").inc()
            self.send(protocol.unsubscribe_push(channel, code, reason))

    def stream_broken(self, channel: str) -> None:
        """This node lost a publication of ``channel`` that this client should have
        had (Centrifugo's "insufficient state"): the client recovers from its
        last position, and history answers honestly that it cannot."""
        if channel not in self.channels:
            return
        if channel in self.server_channels:
            self.close(protocol.DISCONNECT_INSUFFICIENT_STATE)
        else:
            self.end_subscription(channel, *protocol.UNSUBSCRIBE_INSUFFICIENT_STATE)

    # --- commands -----------------------------------------------------------

    def _authenticate(self, cmd: Command) -> ConnectionClaims | None:
        """The connect's claims, or None when it is refused (answered here)."""
        node = self.node
        token = cmd.params.get("token") or ""
        try:
            claims = node.verify_token(token) if token else None
        except TokenExpired:
            node.metrics.token_errors.labels("expired").inc()
            self.send(protocol.error_reply(cmd.id, protocol.ERROR_TOKEN_EXPIRED))
            return None
        except TokenInvalid as exc:
            return self._refuse_token("invalid", str(exc))
        if claims is None:
            if not node.settings.allow_anonymous:
                node.metrics.token_errors.labels("missing").inc()
                log.warning("connect refused: no token")
                self.close(protocol.DISCONNECT_BAD_REQUEST)
                return None
            return ANONYMOUS
        if not claims.user and not node.settings.allow_anonymous:
            return self._refuse_token("anonymous", 'sub "" (anonymous) without --allow-anonymous')
        if claims.user and not valid_channel(personal_channel(claims.user)):
            return self._refuse_token("invalid", "sub is not a user id an envelope can address "
                                      "(1-254 printable characters)")
        for channel in claims.channels:
            if channel.startswith(PERSONAL_PREFIX) and channel != personal_channel(claims.user):
                return self._refuse_token("invalid", f"channels claim names {channel!r}, another user's "
                                          "personal channel")
        return claims

    def _refuse_token(self, reason: str, detail: str) -> None:
        self.node.metrics.token_errors.labels(reason).inc()
        log.warning("connect refused: invalid token (%s)", detail)
        self.close(protocol.DISCONNECT_INVALID_TOKEN)
        return None

    def _connect(self, cmd: Command, claims: ConnectionClaims) -> None:
        node = self.node
        refusal = node.admit(claims.user)
        if refusal is not None:
            self.close(refusal)
            return
        channels = [personal_channel(claims.user)] if claims.user else []
        channels.extend(c for c in claims.channels if valid_channel(c) and c not in channels)
        if len(channels) > CHANNEL_LIMIT:
            self.close(protocol.DISCONNECT_CHANNEL_LIMIT)
            return
        self.user = claims.user
        self.client_id = str(uuid.uuid4())
        self.state = CONNECTED
        self.server_channels = tuple(channels)
        result = {"client": self.client_id, "version": node.version, "ping": node.settings.ping_interval,
                  "pong": True}
        if claims.expires_at is not None:
            result["expires"] = True
            result["ttl"] = _ttl(claims.expires_at)
            self.expiry = node.expiry.watch(self, claims.expires_at)
        # Server-side subscriptions, recovered where the client asks (it sends the
        # positions it had for them in connect.subs).
        wanted = cmd.params.get("subs")
        wanted = wanted if isinstance(wanted, dict) else {}
        subs = {}
        for channel in channels:
            request = wanted.get(channel)
            subs[channel], _ = node.subscribe_result(channel, request if isinstance(request, dict) else None)
        result["subs"] = subs
        # The reply is queued before the channels join the hub, and nothing else
        # runs in between, so no live publication can precede or overlap it.
        self.send(protocol.reply(cmd.id, "connect", result))
        for channel in channels:
            self._join(channel)
        node.connected(self)

    def _refresh(self, cmd: Command) -> None:
        """A new connection token on the same socket, before the old one expires."""
        node = self.node
        token = cmd.params.get("token")
        if not isinstance(token, str) or not token:
            self.close(protocol.DISCONNECT_BAD_REQUEST)
            return
        try:
            claims = node.verify_token(token)
        except TokenExpired:
            self.close(protocol.DISCONNECT_EXPIRED)
            return
        except TokenInvalid as exc:
            log.warning("client %s: invalid refresh token (%s)", self.client_id, exc)
            self.close(protocol.DISCONNECT_INVALID_TOKEN)
            return
        if claims.user != self.user:
            log.warning("client %s: refresh token for another user", self.client_id)
            self.close(protocol.DISCONNECT_INVALID_TOKEN)
            return
        result = {"client": self.client_id, "version": node.version, "expires": False}
        node.expiry.cancel(self.expiry)
        self.expiry = None
        if claims.expires_at is not None:
            result["expires"] = True
            result["ttl"] = _ttl(claims.expires_at)
            self.expiry = node.expiry.watch(self, claims.expires_at)
        self.send(protocol.reply(cmd.id, "refresh", result))

    def _subscribe(self, cmd: Command) -> None:
        channel = cmd.params.get("channel")
        if not isinstance(channel, str) or not channel:
            self.close(protocol.DISCONNECT_BAD_REQUEST)
            return
        expires_at = None
        if not valid_channel(channel):
            error = protocol.ERROR_BAD_REQUEST
        elif channel in self.channels:
            error = protocol.ERROR_ALREADY_SUBSCRIBED
        elif channel.startswith(PERSONAL_PREFIX):
            # Another user's personal channel: never, whatever a token says.
            self.node.metrics.refused_subscriptions.inc()
            log.warning("client %s: subscribe to another user's personal channel refused", self.client_id)
            error = protocol.ERROR_PERMISSION_DENIED
        elif len(self.channels) >= CHANNEL_LIMIT:
            error = protocol.ERROR_LIMIT_EXCEEDED
        elif cmd.params.get("token"):
            error, expires_at = self._check_subscription_token(cmd.params["token"], channel)
            if self.state is CLOSED:
                return
        elif not self.node.may_subscribe(self.user, channel):
            self.node.metrics.refused_subscriptions.inc()
            error = protocol.ERROR_PERMISSION_DENIED
        else:
            error = None
        if error is not None:
            self.send(protocol.error_reply(cmd.id, error))
            return
        result, recovered = self.node.subscribe_result(channel, cmd.params)
        flag = cmd.params.get("flag")
        if recovered is False and isinstance(flag, int) and flag & REJECT_UNRECOVERED:
            self.send(protocol.error_reply(cmd.id, protocol.ERROR_UNRECOVERABLE_POSITION))
            return
        if expires_at is not None:
            result["expires"] = True
            result["ttl"] = self._watch_subscription(channel, expires_at)
        self.send(protocol.reply(cmd.id, "subscribe", result))
        self._join(channel)

    def _check_subscription_token(self, token: object, channel: str) -> tuple[protocol.Error | None, int | None]:
        """A subscription token grants a private channel (Centrifugo's rules:
        expired 109, invalid 103, issued for another channel, user or
        connection 3500). Returns the error, or None and the token's expiry."""
        node = self.node
        try:
            claims = node.verify_subscription_token(token, self.user, channel, self.client_id)
        except TokenExpired:
            node.metrics.token_errors.labels("subscription_expired").inc()
            return protocol.ERROR_TOKEN_EXPIRED, None
        except TokenMismatch as exc:
            node.metrics.token_errors.labels("subscription_mismatch").inc()
            log.warning("client %s: subscription token refused (%s), disconnecting", self.client_id, exc)
            self.close(protocol.DISCONNECT_INVALID_TOKEN)
            return None, None
        except TokenInvalid as exc:
            node.metrics.token_errors.labels("subscription_invalid").inc()
            log.warning("client %s: invalid subscription token for %s (%s)", self.client_id, channel, exc)
            return protocol.ERROR_PERMISSION_DENIED, None
        return None, claims.expires_at

    def _sub_refresh(self, cmd: Command) -> None:
        channel = cmd.params.get("channel")
        token = cmd.params.get("token")
        if not isinstance(channel, str) or not isinstance(token, str) or not token:
            self.close(protocol.DISCONNECT_BAD_REQUEST)
            return
        if channel not in self.channels:
            self.send(protocol.error_reply(cmd.id, protocol.ERROR_PERMISSION_DENIED))
            return
        error, expires_at = self._check_subscription_token(token, channel)
        if self.state is CLOSED:
            return
        if error is not None:
            self.send(protocol.error_reply(cmd.id, error))
            return
        result = {"expires": expires_at is not None}
        if self.sub_expiry is not None:
            self.node.expiry.cancel(self.sub_expiry.pop(channel, None))
        if expires_at is not None:
            result["ttl"] = self._watch_subscription(channel, expires_at)
        self.send(protocol.reply(cmd.id, "sub_refresh", result))

    def _watch_subscription(self, channel: str, expires_at: int) -> int:
        """Track a subscription token's expiry; returns the ttl to announce."""
        if self.sub_expiry is None:
            self.sub_expiry = {}
        self.node.expiry.cancel(self.sub_expiry.get(channel))
        self.sub_expiry[channel] = self.node.expiry.watch(self, expires_at, channel)
        return _ttl(expires_at)

    def _history(self, cmd: Command) -> None:
        """Publications of a channel this connection is subscribed to."""
        params = cmd.params
        channel = params.get("channel")
        history = self.node.history
        if not isinstance(channel, str) or channel not in self.channels:
            self.send(protocol.error_reply(cmd.id, protocol.ERROR_PERMISSION_DENIED))
            return
        if not history.enabled(channel):
            self.send(protocol.error_reply(cmd.id, protocol.ERROR_NOT_AVAILABLE))
            return
        limit, since, reverse = params.get("limit", 0), params.get("since"), params.get("reverse", False)
        if not isinstance(limit, int) or isinstance(limit, bool) or (since is not None and not isinstance(since, dict)):
            self.send(protocol.error_reply(cmd.id, protocol.ERROR_BAD_REQUEST))
            return
        epoch, top = history.top(channel, time.time_ns())
        after = None
        if since:
            if since.get("epoch") != epoch:
                self.send(protocol.error_reply(cmd.id, protocol.ERROR_UNRECOVERABLE_POSITION))
                return
            offset = since.get("offset")
            after = from_position(epoch, offset) if isinstance(offset, int) and offset > 0 else None
        pubs = [] if limit == 0 else history.publications(channel, after=after, limit=limit, reverse=bool(reverse))
        self.send(protocol.reply(cmd.id, "history", {
            "publications": [protocol.publication(p.data, p.offset) for p in pubs], "epoch": epoch, "offset": top}))

    def _unsubscribe(self, cmd: Command) -> None:
        # Always a success: an error makes both SDKs tear the connection down.
        channel = cmd.params.get("channel")
        if not isinstance(channel, str):
            self.close(protocol.DISCONNECT_BAD_REQUEST)
            return
        if channel in self.channels:
            self._leave(channel)
        self.send(protocol.reply(cmd.id, "unsubscribe"))

    def _join(self, channel: str) -> None:
        self.channels.add(channel)
        self.node.hub.subscribe(channel, self)

    def _leave(self, channel: str) -> None:
        """Pairs :meth:`_join`: everything a subscription holds goes with it."""
        self.channels.discard(channel)
        self.node.hub.unsubscribe(channel, self)
        if self.sub_expiry:
            self.node.expiry.cancel(self.sub_expiry.pop(channel, None))

    def _pong(self, cmd: Command) -> None:
        self.pong_due = False

    def _send(self, cmd: Command) -> None:
        # Asynchronous client messages have no consumer in pushgate; no reply is due.
        self.node.metrics.ignored_commands.labels("send").inc()

    def _refuse_publish(self, cmd: Command) -> None:
        # Clients never publish: backends publish through NSQ or /api/publish.
        self.send(protocol.error_reply(cmd.id, protocol.ERROR_PERMISSION_DENIED))

    def _not_available(self, cmd: Command) -> None:
        self.node.metrics.ignored_commands.labels(cmd.method).inc()
        self.send(protocol.error_reply(cmd.id, protocol.ERROR_NOT_AVAILABLE))

    def _second_connect(self, cmd: Command) -> None:
        log.warning("client %s: second connect, disconnecting", self.client_id)
        self.close(protocol.DISCONNECT_BAD_REQUEST)


_HANDLERS = {
    "": Session._pong,
    "connect": Session._second_connect,
    "subscribe": Session._subscribe,
    "unsubscribe": Session._unsubscribe,
    "publish": Session._refuse_publish,
    "send": Session._send,
    "presence": Session._not_available,
    "presence_stats": Session._not_available,
    "history": Session._history,
    "ping": Session._not_available,
    "rpc": Session._not_available,
    "refresh": Session._refresh,
    "sub_refresh": Session._sub_refresh,
}


def _ttl(expires_at: int) -> int:
    """Seconds until ``expires_at``, at least 1 (the SDKs refresh when it runs out)."""
    return max(1, int(expires_at - time.time()))
