"""A connection speaking the Centrifugo client protocol, in either encoding.

The transport's wire format names the codec (JSON or Protobuf); everything
here works on decoded :class:`Command` tuples and result dicts, so both
encodings share every rule. What only this protocol says lives here too:
the SubscribeResult with its stream position and recovery answer, and when
a recovering command is worth holding while this node catches up.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Callable, TypeVar, cast

import ujson

from auth.tokens import ConnectionClaims, KeyPending, SubscriptionClaims, TokenExpired, TokenInvalid, TokenMismatch
from gateway.backend.caller import Caller, Outcome
from gateway.protocols.centrifugo import model, proxy
from gateway.protocols.centrifugo.codec import Codec
from gateway.protocols.centrifugo.json_codec import JsonCodec, Raw
from gateway.protocols.centrifugo.protobuf_codec import ProtobufCodec
from gateway.core import vocabulary
from gateway.core.vocabulary import Ending, ProtocolError, Reason, Refusal, SubscriptionEnd
from gateway.core.history import Published
from gateway.core.tags import BadFilter, Predicate, compile_filter
from gateway.protocols.centrifugo.model import Command
from gateway.core.channels import PERSONAL_PREFIX, foreign_personal, valid_channel
from gateway.core.history import from_position
from gateway.core.session import CLOSED, CONNECTED, CONNECTING, MissingToken, ServerSubscription, Session
from gateway.protocols.centrifugo.options import (DEFAULT, BadOverride, SubscriptionOptions, Unhonoured,
                                                  options_for)

if TYPE_CHECKING:
    from gateway.core.host import SessionHost
    from gateway.core.wire import Transport

_Read = TypeVar("_Read")   # what a proxy answer handler reads from the result
log = logging.getLogger("pushgate.session")

REJECT_UNRECOVERED = 2  # subscribe flag: answer 112 rather than recovered:false
PING_RPC = "ping"       # the rpc method answered here with an empty result (Centrifugo's rpc.ping)


class CentrifugoSession(Session):
    protocol = "centrifugo"
    __slots__ = ()

    def __init__(self, host: SessionHost, transport: Transport) -> None:
        if not isinstance(transport.wire.codec, (JsonCodec, ProtobufCodec)):
            raise TypeError(f"{transport.wire!r} does not speak the Centrifugo protocol")
        super().__init__(host, transport)

    @property
    def proxied(self) -> proxy.ProxyState | None:
        """What the proxies keep of this connection: None until one is involved.
        Kept apart (proxy.STATES), so a connection no proxy concerns costs not
        a byte more."""
        states = proxy.STATES
        return states.get(self) if states else None

    @proxied.setter
    def proxied(self, state: proxy.ProxyState) -> None:
        if self.state is not CLOSED:
            proxy.STATES[self] = state

    @property
    def codec(self) -> Codec:
        """The wire format's codec: one of this protocol's (checked when the session was made)."""
        return cast(Codec, self.wire.codec)

    # --- frames --------------------------------------------------------------------

    def count(self, data: str | bytes) -> int:
        return self.codec.count(data)

    def decode(self, data: str | bytes) -> list[Command]:
        return self.codec.decode(data)

    def connect_unidirectional(self, request: dict) -> None:
        """A unidirectional transport's connect: a bare ConnectRequest (token,
        subs with the positions to recover from, ...), not a command frame."""
        if self.state is not CONNECTING or not self._spend(1):
            return
        self.run([Command(1, "connect", request)])

    def run(self, commands: list[Command], claims: ConnectionClaims | None = None) -> None:
        """Handle commands in order. ``claims`` are those of ``commands[0]``, a
        connect whose token was checked before it was held."""
        try:
            for i, cmd in enumerate(commands):
                if self.state is CLOSED:
                    return
                if self.state is CONNECTING:
                    if cmd.method != "connect":
                        self.host.metrics.bad_frames.inc()
                        log.warning("client -: %s before connect, disconnecting", cmd.method or "pong")
                        self.close(vocabulary.BAD_REQUEST)
                        return
                    if i > 0 or claims is None:
                        if self.host.settings.connect_proxy_url and not cmd.params.get("token"):
                            self._proxy_connect(cmd)   # the backend decides; the rest waits behind it
                            if self.held is not None:
                                self.held[1].extend(commands[i + 1:])
                            return
                        claims = self._authenticate(cmd)
                        if claims is None:
                            if self.held is not None:   # it waits for the key set: the rest waits behind it
                                self.held[1].extend(commands[i + 1:])
                            return  # or refused: the rest of the frame is dropped
                    if self._behind(cmd) and self.hold(claims, commands[i:]):
                        return
                    self._connect(cmd, claims)
                    if self.state is not CONNECTED:
                        return
                elif cmd.method == "subscribe" and self._behind(cmd) and self.hold(None, commands[i:]):
                    return
                else:
                    _HANDLERS[cmd.method](self, cmd)
                    if self.held is not None:   # it waits for the backend: the rest waits behind it
                        self.held[1].extend(commands[i + 1:])
                        return
        except ProtocolError as exc:
            # A reply this connection's encoding cannot carry (binary data for a JSON client).
            log.info("client %s: %s, disconnecting", self.client_id or "-", exc.detail)
            self.close(exc.ending)
        except Exception:
            # A bug must cost one connection, not the node: the client reconnects.
            # Only method names are logged: commands carry tokens.
            log.exception("client %s: internal error handling %s", self.client_id or "-",
                          [c.method or "pong" for c in commands[:8]])
            self.close(vocabulary.INTERNAL)

    def still_behind(self, commands: list[Command]) -> bool:
        return self._behind(commands[0])

    def unsubscribed(self, channel: str, end: SubscriptionEnd) -> None:
        code, reason = model.UNSUBSCRIBE_CODES[end]
        self.send(self.codec.push(channel, "unsubscribe", {"code": code, "reason": reason}))

    # --- recovery, as this protocol says it -------------------------------------------

    def _behind(self, cmd: Command) -> bool:
        """A recovering connect or subscribe asks for a position this node has
        not received yet (the client came from a node that was ahead)."""
        history = self.host.history
        now_ns = self.host.now_ns()
        if cmd.method == "subscribe":
            channel = cmd.params.get("channel")
            requests = {channel: cmd.params} if isinstance(channel, str) else {}
        else:
            subs = cmd.params.get("subs")
            requests = subs if isinstance(subs, dict) else {}
        return any(
            isinstance(request, dict) and request.get("recover") and isinstance(channel, str)
            and history.enabled(channel)
            and history.behind(channel, str(request.get("epoch") or ""), request.get("offset", 0), now_ns)
            for channel, request in requests.items())

    def _subscribe_result(self, channel: str, request: dict | None,
                          recoverable: bool = True) -> tuple[dict, bool | None]:
        """The SubscribeResult for ``channel``: its stream position when it keeps
        history, and the recovery answer when ``request`` asks to recover (or,
        on a --cache channel, always: the latest publication). Returns the
        result and whether it recovered (None: nothing asked; a cache answer
        is never refused with 112, as in Centrifugo). ``recoverable`` False
        (override force_recovery false): positioned only, no recovery."""
        host = self.host
        history = host.history
        if not history.enabled(channel):
            return {}, None
        now_ns = host.now_ns()
        offset = request.get("offset", 0) if request else None
        if recoverable and host.cache and host.cache.match(channel):
            return self._cache_result(channel, request, now_ns), None
        if recoverable and request and request.get("recover") and isinstance(offset, int) \
                and not isinstance(offset, bool):
            answer = history.recover(channel, str(request.get("epoch") or ""), offset, now_ns)
            host.metrics.recoveries.labels("true" if answer.recovered else "false").inc()
            result = {"recoverable": True, "positioned": True, "epoch": answer.epoch, "offset": answer.offset,
                      "was_recovering": True, "recovered": answer.recovered}
            if answer.publications:
                result["publications"] = answer.publications
            return result, answer.recovered
        epoch, top = history.top(channel, now_ns)
        if not recoverable:
            return {"positioned": True, "epoch": epoch, "offset": top}, None
        return {"recoverable": True, "positioned": True, "epoch": epoch, "offset": top}, None

    def _cache_result(self, channel: str, request: dict | None, now_ns: int) -> dict:
        """Centrifugo's cache recovery mode with auto recovery: every subscribe
        recovers, and gets the latest publication (docs/recovery.md)."""
        epoch, offset = "", 0
        if request and request.get("recover"):
            epoch = str(request.get("epoch") or "")
            given = request.get("offset", 0)
            offset = given if isinstance(given, int) and not isinstance(given, bool) and given > 0 else 0
        accepts = tags_filter(request.get("tf")) if request else None   # checked by _subscribe
        answer = self.host.history.latest(channel, epoch, offset, now_ns,
                                          None if accepts is None else lambda data: accepts(tags_of(data)))
        self.host.metrics.recoveries.labels("true" if answer.recovered else "false").inc()
        result = {"recoverable": True, "positioned": True, "epoch": answer.epoch, "offset": answer.offset,
                  "was_recovering": True, "recovered": answer.recovered}
        if answer.publications:
            result["publications"] = answer.publications
        return result

    # --- commands ----------------------------------------------------------------------

    def _authenticate(self, cmd: Command) -> ConnectionClaims | None:
        """The connect's claims, or None when it is refused (answered here) or
        waits for the JWKS key set (then it runs again)."""
        token = cmd.params.get("token") or ""
        try:
            claims = self.authenticate(token if isinstance(token, str) else "")
        except KeyPending as pending:
            self._retry_when(pending, cmd)
            return None
        except TokenExpired:
            if self.transport.unidirectional:
                # No reply to carry error 109: Centrifugo's answer is 3005, after
                # which the client connects again with a fresh token.
                self.close(vocabulary.EXPIRED)
            else:
                self.send(self.codec.error(cmd.id, model.ERROR_TOKEN_EXPIRED))
        except MissingToken:
            self.close(vocabulary.BAD_REQUEST)
        except TokenInvalid:
            self.close(vocabulary.INVALID_TOKEN)
        else:
            if claims.expires_at is not None and claims.expires_at <= self.host.wall():
                # exp is good but expire_at has passed: Centrifugo's answer, 110.
                self.host.metrics.token_errors.labels("expired").inc()
                if self.transport.unidirectional:
                    self.close(vocabulary.EXPIRED)
                else:
                    self.send(self.codec.error(cmd.id, model.ERROR_EXPIRED))
                return None
            json_client = self.codec.name == "json"
            if claims.subs and not all(_json(sub.info) and (not json_client or _json(sub.data)) for sub in claims.subs):
                # info is kept as JSON (presence, join/leave); data is sent as it is, and a JSON client needs JSON.
                self.host.metrics.token_errors.labels("invalid").inc()
                log.warning("connect refused: the token's subs carry b64info (or, to a JSON client, b64data) "
                            "that is not JSON")
                self.close(vocabulary.INVALID_TOKEN)
                return None
            problem = self._token_subs_options(claims)
            if isinstance(problem, str):
                # The backend asked for what pushgate cannot do (the same rules as the
                # server API's subscribe and the proxies' override): never half done.
                self.host.metrics.token_errors.labels("invalid").inc()
                log.warning("connect refused: the token's subs %s", problem)
                self.close(vocabulary.INVALID_TOKEN)
                return None
            return claims
        return None

    def _token_subs_options(self, claims: ConnectionClaims) -> dict[str, SubscriptionOptions] | str:
        """The options of the token's ``subs`` (their ``override``, by the rules
        of options.py), or why one cannot be honoured."""
        host = self.host
        chosen = {}
        for sub in claims.subs:
            try:
                chosen[sub.channel] = options_for(sub.override, sub.channel, host.presence, host.history)
            except (BadOverride, Unhonoured) as exc:
                return f"{sub.channel[:80]!r}: {exc}"
        return chosen

    def _retry_when(self, pending: KeyPending, cmd: Command) -> None:
        """``cmd``'s token names a key the JWKS store is fetching: run it again
        (and what arrives meanwhile after it) once the fetch is over."""
        log.info("client %s: %s; %s waits for it", self.client_id or "-", pending, cmd.method)
        self.wait(pending.ready, lambda _, waiting: self.run([cmd, *waiting]), [])

    def _connect(self, cmd: Command, claims: ConnectionClaims) -> None:
        # With the refresh proxy, the backend is asked when the expiry comes (no delay), not the client.
        server_refresh = bool(self.host.settings.refresh_proxy_url)
        refusal = self.begin(claims, 0 if server_refresh else None)
        if refusal is not None:
            self.close(refusal)
            return
        host = self.host
        transport = self.transport
        result = {"client": self.client_id, "version": host.version, "ping": host.settings.ping_interval,
                  "pong": transport.pongs}
        if transport.session_id:
            # What an emulation client puts in its /emulation requests to reach
            # this session, wherever they land (centrifugo-protocol.md §4.2, §9.4).
            result["session"] = transport.session_id
            if transport.emulation:
                result["node"] = host.name
        if claims.expires_at is not None and not server_refresh:
            result["expires"] = True
            result["ttl"] = self.ttl(claims.expires_at)
        state = self.proxied
        granted: dict[str, tuple[bytes | None, bytes | None]] = {}
        absent: set[str] | tuple[()] = ()
        if state is not None:  # the connect proxy's data, and its subs' info and data
            if state.connect_data is not None:
                result["data"] = state.connect_data
            granted, state.subs, state.connect_data = state.subs, {}, None
            absent, state.absent = state.absent, set()
        unrecoverable: set[str] | tuple[()] = state.unrecoverable if state is not None else ()
        if claims.subs:   # the token's subs claim: each channel's info, data, override
            granted = {**{sub.channel: (sub.info, sub.data) for sub in claims.subs}, **granted}
            chosen = self._token_subs_options(claims)
            if isinstance(chosen, str):   # checked by _authenticate; the settings do not change
                chosen = {}
            absent = {*absent, *(channel for channel, options in chosen.items() if not options.in_presence)}
            unrecoverable = {*unrecoverable, *(channel for channel, options in chosen.items()
                                               if not options.recoverable)}
        # Server-side subscriptions, recovered where the client asks (it sends the
        # positions it had for them in connect.subs).
        wanted = cmd.params.get("subs")
        wanted = wanted if isinstance(wanted, dict) else {}
        subs = {}
        for channel in self.server_channels:
            request = wanted.get(channel)
            subs[channel], _ = self._subscribe_result(channel, request if isinstance(request, dict) else None,
                                                      channel not in unrecoverable)
            data = granted.get(channel, (None, None))[1]
            if data is not None:
                subs[channel]["data"] = data
        result["subs"] = subs
        # The reply is queued before the channels join the hub, and nothing else
        # runs in between, so no live publication can precede or overlap it.
        # A unidirectional client sent a bare ConnectRequest: it gets a push.
        if transport.unidirectional:
            self.send(self.codec.push("", "connect", result))
        else:
            self.send(self.codec.reply(cmd.id, "connect", result))
        for channel in self.server_channels:
            self.join(channel, chan_info=granted[channel][0] if channel in granted else None,
                      in_presence=channel not in absent)
        if state is not None:
            state.absent = set()
            state.unrecoverable = set()
        if claims.meta is not None and proxy.any_proxy(host.settings):
            # The token's meta: never sent to the client, sent with every proxy call.
            state = self.proxied = self.proxied or proxy.ProxyState()
            state.meta = claims.meta
        if claims.info is not None and host.settings.publish_proxy_url:
            # The publisher's conn_info in its publications (Centrifugo's ClientInfo).
            state = self.proxied = self.proxied or proxy.ProxyState()
            state.conn_info = proxy.json_bytes(claims.info)
        self.established()

    def _refresh(self, cmd: Command) -> None:
        """A new connection token on the same socket, before the old one expires."""
        token = cmd.params.get("token")
        if not isinstance(token, str) or not token:
            self.close(vocabulary.BAD_REQUEST)
            return
        try:
            claims = self.host.verify_token(token)
        except KeyPending as pending:
            self._retry_when(pending, cmd)
            return
        except TokenExpired:
            self.close(vocabulary.EXPIRED)
            return
        except TokenInvalid as exc:
            log.warning("client %s: invalid refresh token (%s)", self.client_id, exc)
            self.close(vocabulary.INVALID_TOKEN)
            return
        if claims.user != self.user:
            log.warning("client %s: refresh token for another user", self.client_id)
            self.close(vocabulary.INVALID_TOKEN)
            return
        self.reauthenticate(claims)
        if claims.meta is not None and proxy.any_proxy(self.host.settings):
            state = self.proxied = self.proxied or proxy.ProxyState()
            state.meta = claims.meta
        result = {"client": self.client_id, "version": self.host.version, "expires": False}
        if claims.expires_at is not None:
            result["expires"] = True
            result["ttl"] = self.ttl(claims.expires_at)
        self.send(self.codec.reply(cmd.id, "refresh", result))

    def _subscribe(self, cmd: Command) -> None:
        channel = cmd.params.get("channel")
        if not isinstance(channel, str) or not channel:
            self.close(vocabulary.BAD_REQUEST)
            return
        host = self.host
        granted: SubscriptionClaims | None = None
        error: model.Error | None
        if not valid_channel(channel):
            error = model.ERROR_BAD_REQUEST
        elif channel in self.channels:
            error = model.ERROR_ALREADY_SUBSCRIBED
        elif channel.startswith(PERSONAL_PREFIX):
            # Another user's personal channel: never, whatever a token says.
            host.metrics.refused_subscriptions.inc()
            log.warning("client %s: subscribe to another user's personal channel refused", self.client_id)
            error = model.ERROR_PERMISSION_DENIED
        elif len(self.channels) >= host.settings.max_channels_per_connection:
            error = model.ERROR_LIMIT_EXCEEDED
        elif not self._valid_filter(cmd.params.get("tf")):
            error = model.ERROR_BAD_REQUEST
        elif cmd.params.get("type"):
            error = model.ERROR_NO_MAPS
        elif cmd.params.get("token"):
            error, granted = self._check_subscription_token(cmd.params["token"], channel, cmd)
            if self.state is CLOSED or self.held is not None:
                return
        elif host.settings.subscribe_proxy_url and proxy.proxies_of(host).subscribe_channels.match(channel):
            self._proxy_subscribe(cmd, channel)   # the backend decides
            return
        elif not host.may_subscribe(self.user, channel):
            host.metrics.refused_subscriptions.inc()
            error = model.ERROR_PERMISSION_DENIED
        else:
            error = None
        if error is not None:
            self.send(self.codec.error(cmd.id, error))
            return
        if granted is None:
            self._admit_subscription(cmd, channel, None)
        else:   # the subscription token's expire_at (or exp), info, data and override
            try:
                options = options_for(granted.override, channel, host.presence, host.history)
            except (BadOverride, Unhonoured) as exc:
                # Never half done: the same rules, and the same 108, as the server API's subscribe.
                host.metrics.token_errors.labels("subscription_invalid").inc()
                log.warning("client %s: subscription token for %s: %s", self.client_id, channel[:80], exc)
                self.send(self.codec.error(cmd.id, model.Error(108, f"not available: {exc}"[:200])))
                return
            self._admit_subscription(cmd, channel, granted.expires_at, chan_info=granted.info, data=granted.data,
                                     options=options)

    def _admit_subscription(self, cmd: Command, channel: str, expires_at: int | None, *,
                            chan_info: bytes | None = None, data: bytes | None = None,
                            server_refresh: bool = False, options: SubscriptionOptions = DEFAULT) -> None:
        """A permitted subscribe: its result (position, recovery, the backend's
        data), the reply, then the channel joins the hub, in one callback."""
        codec = self.codec
        result, recovered = self._subscribe_result(channel, cmd.params, options.recoverable)
        flag = cmd.params.get("flag")
        if recovered is False and isinstance(flag, int) and flag & REJECT_UNRECOVERED:
            self.send(codec.error(cmd.id, model.ERROR_UNRECOVERABLE_POSITION))
            return
        accepts = tags_filter(cmd.params.get("tf"))   # checked by _subscribe
        if accepts is not None and "publications" in result:
            # Recovered publications pass the same filter as live ones.
            result["publications"] = [pub for pub in result["publications"] if accepts(tags_of(pub.data))]
        if expires_at is not None:
            if server_refresh:   # the sub refresh proxy is asked when it comes, not the client
                self.watch_subscription(channel, expires_at, 0)
            else:
                result["expires"] = True
                result["ttl"] = self.ttl(expires_at)
                self.watch_subscription(channel, expires_at)
        if data is not None:
            result["data"] = data
        self.send(codec.reply(cmd.id, "subscribe", result))
        self.join(channel, chan_info=chan_info, in_presence=options.in_presence)
        if accepts is not None:
            self.host.hub.set_filter(channel, self, accepts)
        if chan_info is not None and self.host.settings.publish_proxy_url:
            state = self.proxied = self.proxied or proxy.ProxyState()
            state.chan_info[channel] = chan_info   # the publisher's chan_info in its publications there

    def _valid_filter(self, tf: object) -> bool:
        """A subscribe's ``tf`` is absent or a filter centrifuge would accept
        (else the subscribe is refused with 107, as Centrifugo refuses it)."""
        if tf is None:
            return True
        try:
            compile_filter(tf)
        except BadFilter as exc:
            self.host.metrics.bad_frames.inc()
            log.info("client %s: invalid tags filter (%s)", self.client_id, exc)
            return False
        return True

    def _check_subscription_token(self, token: object, channel: str, cmd: Command
                                  ) -> tuple[model.Error | None, SubscriptionClaims | None]:
        """A subscription token grants a private channel (Centrifugo's rules:
        expired 109, invalid 103, issued for another channel, user or
        connection 3500). Returns the error, or None and the token's claims;
        or (None, None) with ``cmd`` held until the JWKS key set is fetched."""
        metrics = self.host.metrics
        try:
            claims = self.host.verify_subscription_token(token, self.user, channel, self.client_id)
        except KeyPending as pending:
            self._retry_when(pending, cmd)
            return None, None
        except TokenExpired:
            metrics.token_errors.labels("subscription_expired").inc()
            return model.ERROR_TOKEN_EXPIRED, None
        except TokenMismatch as exc:
            metrics.token_errors.labels("subscription_mismatch").inc()
            log.warning("client %s: subscription token refused (%s), disconnecting", self.client_id, exc)
            self.close(vocabulary.INVALID_TOKEN)
            return None, None
        except TokenInvalid as exc:
            metrics.token_errors.labels("subscription_invalid").inc()
            log.warning("client %s: invalid subscription token for %s (%s)", self.client_id, channel, exc)
            return model.ERROR_PERMISSION_DENIED, None
        if not _json(claims.info) or (self.codec.name == "json" and not _json(claims.data)):
            metrics.token_errors.labels("subscription_invalid").inc()
            log.warning("client %s: subscription token for %s carries b64info (or, to a JSON client, b64data) "
                        "that is not JSON", self.client_id, channel)
            return model.ERROR_PERMISSION_DENIED, None
        return None, claims

    def _sub_refresh(self, cmd: Command) -> None:
        channel = cmd.params.get("channel")
        token = cmd.params.get("token")
        if not isinstance(channel, str) or not isinstance(token, str) or not token:
            self.close(vocabulary.BAD_REQUEST)
            return
        codec = self.codec
        if cmd.params.get("type"):   # track/untrack: refused, never taken for a plain sub_refresh
            self.send(codec.error(cmd.id, model.ERROR_NO_MAPS))
            return
        if channel not in self.channels:
            self.send(codec.error(cmd.id, model.ERROR_PERMISSION_DENIED))
            return
        error, granted = self._check_subscription_token(token, channel, cmd)
        if self.state is CLOSED or self.held is not None:
            return
        if error is not None or granted is None:
            self.send(codec.error(cmd.id, error or model.ERROR_INTERNAL))
            return
        expires_at = granted.expires_at
        result: dict[str, bool | int] = {"expires": expires_at is not None}
        self.watch_subscription(channel, expires_at)
        if expires_at is not None:
            result["ttl"] = self.ttl(expires_at)
        self.send(codec.reply(cmd.id, "sub_refresh", result))

    def _history(self, cmd: Command) -> None:
        """Publications of a channel this connection is subscribed to."""
        params = cmd.params
        channel = params.get("channel")
        history = self.host.history
        codec = self.codec
        if not isinstance(channel, str) or channel not in self.channels:
            self.send(codec.error(cmd.id, model.ERROR_PERMISSION_DENIED))
            return
        if not history.enabled(channel):
            self.send(codec.error(cmd.id, model.ERROR_NOT_AVAILABLE))
            return
        limit, since, reverse = params.get("limit", 0), params.get("since"), params.get("reverse", False)
        if not isinstance(limit, int) or isinstance(limit, bool) or (since is not None and not isinstance(since, dict)):
            self.send(codec.error(cmd.id, model.ERROR_BAD_REQUEST))
            return
        epoch, top = history.top(channel, self.host.now_ns())
        after = None
        if since:
            if since.get("epoch", "") != epoch:
                self.send(codec.error(cmd.id, model.ERROR_UNRECOVERABLE_POSITION))
                return
            offset = since.get("offset", 0)
            after = from_position(epoch, offset) if isinstance(offset, int) and offset > 0 else None
        pubs = [] if limit == 0 else history.publications(channel, after=after, limit=limit, reverse=bool(reverse))
        self.send(codec.reply(cmd.id, "history", {"publications": pubs, "epoch": epoch, "offset": top}))

    def _unsubscribe(self, cmd: Command) -> None:
        # Always a success: an error makes both SDKs tear the connection down.
        channel = cmd.params.get("channel")
        if not isinstance(channel, str):
            self.close(vocabulary.BAD_REQUEST)
            return
        if channel in self.channels:
            self.leave(channel)
        self.send(self.codec.reply(cmd.id, "unsubscribe"))

    def _presence_channel(self, cmd: Command) -> str | None:
        """The channel of a presence or presence_stats command, or None when
        it is refused (answered here): only a subscriber asks, only where
        presence is kept (``--presence``)."""
        channel = cmd.params.get("channel")
        codec = self.codec
        if not isinstance(channel, str) or channel not in self.channels:
            self.send(codec.error(cmd.id, model.ERROR_PERMISSION_DENIED))
            return None
        if not self.host.presence.enabled(channel):
            self.host.metrics.ignored_commands.labels(cmd.method).inc()
            self.send(codec.error(cmd.id, model.ERROR_NOT_AVAILABLE))
            return None
        return channel

    def _presence(self, cmd: Command) -> None:
        channel = self._presence_channel(cmd)
        if channel is not None:
            codec = self.codec
            presence = self.host.presence
            # JSON: the map as text in one pass (Raw is embedded as it is); Protobuf: the dicts.
            clients = Raw(presence.clients_json(channel)) if codec.name == "json" else presence.clients(channel)
            self.send(codec.reply(cmd.id, "presence", {"presence": clients}))

    def _presence_stats(self, cmd: Command) -> None:
        channel = self._presence_channel(cmd)
        if channel is not None:
            clients, users = self.host.presence.stats(channel)
            self.send(self.codec.reply(cmd.id, "presence_stats", {"num_clients": clients, "num_users": users}))

    # --- the server API's actions on this connection ----------------------------------

    def server_subscribe(self, channel: str, sub: ServerSubscription) -> Refusal | None:
        """Subscribe this connection to ``channel`` from the server (the server
        API's ``subscribe``): a ``subscribe`` push with the stream position, then
        publications, like a channel of the token. With ``sub.since``, the
        publications after it come first, each as a publication push (the
        Subscribe push has no field for them), and the push says whether it
        recovered: ``was_recovering``, ``recovered`` in JSON, which
        centrifuge-js reports; Protobuf's Subscribe has no such fields, and a
        client there learns only from the offset (its own when recovered).
        ``sub.expires_at`` ends it then: the connection closes with 3006, or
        the sub refresh proxy is asked."""
        host = self.host
        if self.state is not CONNECTED:
            return Refusal("not connected")
        if not valid_channel(channel) or foreign_personal(channel, self.user):
            return Refusal("not a channel this user may read")
        if channel in self.channels:
            return Refusal("already subscribed")
        limit = self.host.settings.max_channels_per_connection
        if len(self.channels) >= limit:
            return Refusal(f"{limit} channels already (--max-channels-per-connection)")
        if sub.expires_at is not None and sub.expires_at <= host.wall():
            return Refusal("expire_at is not in the future")
        try:
            options = options_for(sub.override, channel, host.presence, host.history)
        except (BadOverride, Unhonoured) as exc:
            return Refusal(str(exc))
        request = {"recover": True, "epoch": sub.since[0], "offset": sub.since[1]} if sub.since else None
        result, recovered = self._subscribe_result(channel, request, options.recoverable)
        codec = self.codec
        push = {key: result[key] for key in ("recoverable", "epoch", "offset", "positioned") if key in result}
        if sub.data is not None:
            push["data"] = sub.data
        if "was_recovering" in result and codec.name == "json":
            push["was_recovering"], push["recovered"] = True, result["recovered"]
        recovered_pushes = []
        for publication in result.get("publications", ()):
            data = publication.data
            message = codec.pub_push_full(channel, data, publication.offset) if type(data) is Published \
                else codec.pub_push(channel, data, publication.offset)
            if message is None:   # binary data a JSON connection cannot carry: closed, as live delivery closes it
                self.close(vocabulary.INAPPROPRIATE_PROTOCOL)
                return Refusal("a recovered binary publication that a JSON connection cannot carry (closed, 3506)")
            recovered_pushes.append(message)
        self.send(codec.push(channel, "subscribe", push))
        for message in recovered_pushes:
            self.send(message)
        self.server_channels = (*self.server_channels, channel)
        self.join(channel, chan_info=sub.chan_info, in_presence=options.in_presence)
        if sub.expires_at is not None:
            if host.settings.sub_refresh_proxy_url:
                state = self.proxied = self.proxied or proxy.ProxyState()
                state.refreshed.add(channel)
            self.watch_subscription(channel, sub.expires_at, 0)
        return None

    def goodbye(self, ending: Ending) -> tuple[int, str]:
        disconnect = model.disconnect_of(ending)
        # A client with no close frame to read (an HTTP stream, SSE) or that
        # reads only messages (the unidirectional transports) learns why from
        # a disconnect push, as Centrifugo sends it. A slow client's queue is
        # dropped anyway.
        transport = self.transport
        if ending.reason is not Reason.SLOW and (transport.unidirectional or transport.emulation):
            self.send(self.codec.disconnect(disconnect))
        return disconnect

    def refreshed(self, expires_at: int | None) -> None:
        """The server API changed this connection's expiry: tell the client."""
        body = {"expires": True, "ttl": self.ttl(expires_at)} if expires_at is not None else {"expires": False}
        self.send(self.codec.push("", "refresh", body))

    def _pong(self, cmd: Command) -> None:
        self.pong()

    def _send(self, cmd: Command) -> None:
        # Asynchronous client messages have no consumer in pushgate; no reply is due.
        self.host.metrics.ignored_commands.labels("send").inc()

    def _refuse_publish(self, cmd: Command) -> None:
        # Clients never publish: backends publish through NSQ or /api/publish.
        self.send(self.codec.error(cmd.id, model.ERROR_PERMISSION_DENIED))

    def _not_available(self, cmd: Command) -> None:
        self.host.metrics.ignored_commands.labels(cmd.method).inc()
        self.send(self.codec.error(cmd.id, model.ERROR_NOT_AVAILABLE))

    def _second_connect(self, cmd: Command) -> None:
        log.warning("client %s: second connect, disconnecting", self.client_id)
        self.close(vocabulary.BAD_REQUEST)


    # --- the backend decides: Centrifugo's proxies (docs/proxy.md) --------------------------

    def _ask(self, caller: Caller, body: dict, then: Callable[[proxy.Decision], None]) -> None:
        """Ask the backend; this connection's later commands wait for its
        decision, which ``then`` applies before they run."""
        future = caller.call(proxy.encode(body), proxy.headers_of(self))

        def decided(outcome: Outcome, waiting: list[Command]) -> None:
            try:
                then(proxy.decide(caller, outcome))
            except ProtocolError as exc:   # a reply this encoding cannot carry, as in run()
                log.info("client %s: %s, disconnecting", self.client_id or "-", exc.detail)
                self.close(exc.ending)
                return
            except Exception:
                log.exception("client %s: internal error applying the %s proxy's answer", self.client_id or "-",
                              caller.name)
                self.close(vocabulary.INTERNAL)
                return
            if waiting and self.state is not CLOSED:
                if self.held is not None:   # it waits again (a publish for nsqd, a recovery for this node)
                    self.held[1].extend(waiting)
                elif self.state is not CONNECTING:
                    self.run(waiting)
                # else the connect was refused: what came with it is dropped, as after a refused token

        self.wait(future, decided, [])

    def _ask_aside(self, caller: Caller, body: dict, then: Callable[[proxy.Decision], None]) -> None:
        """Ask the backend on the server's behalf (a refresh): the client's
        commands do not wait for it."""
        state = self.proxied = self.proxied or proxy.ProxyState()

        def decided(future: asyncio.Future[Outcome]) -> None:
            state.aside.discard(future)
            if self.state is CLOSED or future.cancelled():
                return
            try:
                then(proxy.decide(caller, future.result()))
            except Exception:
                log.exception("client %s: internal error applying the %s proxy's answer", self.client_id,
                              caller.name)
                self.close(vocabulary.INTERNAL)

        future = caller.call(proxy.encode(body), proxy.headers_of(self))
        state.aside.add(future)   # withdrawn if the connection closes first (_release)
        future.add_done_callback(decided)

    def info_changed(self, info: bytes) -> None:
        super().info_changed(info)
        if self.host.settings.publish_proxy_url:
            state = self.proxied = self.proxied or proxy.ProxyState()
            state.conn_info = info   # its publications from now on

    def leave(self, channel: str) -> None:
        super().leave(channel)
        if proxy.STATES:
            state = self.proxied
            if state is not None and state.chan_info:
                state.chan_info.pop(channel, None)

    def _release(self) -> None:
        super()._release()
        if proxy.STATES:
            state = proxy.STATES.pop(self, None)
            if state is not None and state.aside:
                for future in list(state.aside):
                    future.cancel()

    def _backend_disconnect(self, disconnect: model.Disconnect) -> None:
        reason = Reason.FORCE_RECONNECT if disconnect.reconnect else Reason.FORCE_DISCONNECT
        self.close(Ending(reason, disconnect.reason or reason.words, disconnect.code))

    def _read_decision(self, caller: Caller, decision: proxy.Decision,
                       read: Callable[[dict], _Read]) -> tuple[_Read | None, model.Error | None] | None:
        """A proxy's answer to a command, the same way for every proxy: None
        when the backend disconnected the client (done here: nothing to
        answer); else what ``read`` made of the result and None, or None and
        the error to answer: the backend's own, or 100 when the call failed
        or ``read`` found the result malformed (``proxy.Garbage``, counted
        and logged by ``caller``)."""
        if decision.disconnect is not None:
            self._backend_disconnect(decision.disconnect)
            return None
        if decision.failed:
            return None, model.ERROR_INTERNAL
        if decision.error is not None:
            return None, decision.error
        assert decision.result is not None
        try:
            return read(decision.result), None
        except proxy.Garbage as exc:
            caller.refused(str(exc))
            return None, model.ERROR_INTERNAL

    def _proxy_connect(self, cmd: Command) -> None:
        """A connect without a token: the connect proxy decides who this is."""
        caller = proxy.proxies_of(self.host).connect
        assert caller is not None
        params = cmd.params
        # The connection's id, as Centrifugo sends it in the connect request: the
        # backend can tie the connect to the connection's later calls.
        self.client_id = self.client_id or str(uuid.uuid4())
        body = proxy.request(self)
        for key in ("name", "version"):
            if isinstance(params.get(key), str) and params[key]:
                body[key] = params[key]
        proxy.with_data(self, body, params.get("data"))
        emulated = proxy.emulated_headers(self.host, params.get("headers"))
        if emulated:
            # Headers the client put in its connect command (centrifuge-js's `headers`: a browser
            # cannot set a WebSocket's), passed on only when named; a real request header wins.
            state = self.proxied or proxy.ProxyState({})
            state.headers = {**emulated, **(state.headers or {})}
            self.proxied = state
        self._ask(caller, body, lambda decision: self._proxied_connect(cmd, caller, decision))

    def _proxied_connect(self, cmd: Command, caller: Caller, decision: proxy.Decision) -> None:
        answer = self._read_decision(caller, decision, self._proxy_claims)
        if answer is None:
            return
        claims, error = answer
        if claims is not None and claims.expires_at is not None and claims.expires_at <= self.host.wall():
            error = model.ERROR_EXPIRED
        if error is not None or claims is None:
            self.host.metrics.token_errors.labels("proxy").inc()
            error = error or model.ERROR_INTERNAL
            if self.transport.unidirectional:
                # No reply to carry the error: a temporary one reconnects, another is final.
                self.close(vocabulary.INTERNAL if error.temporary or error.code == 100
                           else Ending(Reason.PERMISSION_DENIED, error.message[:100]))
            else:
                self.send(self.codec.error(cmd.id, error))
            return  # the rest of the frame is dropped, as after a refused token
        self.run([cmd], claims)   # commands that arrived meanwhile run after it (see _ask)

    def _proxy_claims(self, result: dict) -> ConnectionClaims:
        """The connect proxy's result as a token's claims would be; its data,
        subs and meta kept for the reply and later calls. Raises Garbage."""
        user = result.get("user", "")
        if type(user) is not str or (user and not valid_channel(PERSONAL_PREFIX + user)):
            raise proxy.Garbage(f"user must be a user id (1-254 printable characters), not {user!r}")
        channels = result.get("channels") or []
        subs = result.get("subs") or {}
        if type(channels) is not list or not all(type(c) is str for c in channels):
            raise proxy.Garbage("channels must be a list of channel names")
        if type(subs) is not dict or not all(type(o) is dict for o in subs.values()):
            raise proxy.Garbage("subs must map channels to options")
        for channel in [*channels, *subs]:
            if foreign_personal(channel, user):
                raise proxy.Garbage(f"{channel!r} is another user's personal channel")
        info = proxy.payload(self, result, "info")
        state = self.proxied or proxy.ProxyState()
        state.meta = result.get("meta")
        state.connect_data = proxy.payload(self, result, "data")
        state.subs = {channel: (proxy.payload(self, options, "info"), proxy.payload(self, options, "data"))
                      for channel, options in subs.items()}
        chosen = {channel: proxy.sub_options(self, channel, options) for channel, options in subs.items()}
        state.absent = {channel for channel, options in chosen.items() if not options.in_presence}
        state.unrecoverable = {channel for channel, options in chosen.items() if not options.recoverable}
        self.proxied = state
        return ConnectionClaims(user=user, channels=tuple(dict.fromkeys([*channels, *subs])),
                                info=proxy.json_value(proxy.json_info(info)) if info is not None else None,
                                expires_at=proxy.expire_at(result))

    def _proxy_subscribe(self, cmd: Command, channel: str) -> None:
        caller = proxy.proxies_of(self.host).subscribe
        assert caller is not None
        body = proxy.with_data(self, proxy.request(self, channel=channel), cmd.params.get("data"))
        self._ask(caller, body, lambda decision: self._proxied_subscribe(cmd, channel, caller, decision))

    def _proxied_subscribe(self, cmd: Command, channel: str, caller: Caller, decision: proxy.Decision) -> None:
        def read(result: dict) -> tuple[int | None, bytes | None, bytes | None, SubscriptionOptions]:
            return (proxy.expire_at(result), proxy.payload(self, result, "info"), proxy.payload(self, result, "data"),
                    proxy.sub_options(self, channel, result))
        answer = self._read_decision(caller, decision, read)
        if answer is None:
            return
        fields, error = answer
        if error is not None or fields is None:
            self.host.metrics.refused_subscriptions.inc()
            self.send(self.codec.error(cmd.id, error or model.ERROR_INTERNAL))
            return
        expires_at, chan_info, data, options = fields
        if expires_at is not None and expires_at <= self.host.wall():
            self.send(self.codec.error(cmd.id, model.ERROR_EXPIRED))
            return
        if len(self.channels) >= self.host.settings.max_channels_per_connection or channel in self.channels:
            self.send(self.codec.error(cmd.id, model.ERROR_LIMIT_EXCEEDED if channel not in self.channels
                                       else model.ERROR_ALREADY_SUBSCRIBED))
            return
        server_refresh = bool(self.host.settings.sub_refresh_proxy_url)
        if expires_at is not None and server_refresh:
            state = self.proxied = self.proxied or proxy.ProxyState()
            state.refreshed.add(channel)
        self._admit_subscription(cmd, channel, expires_at, chan_info=chan_info, data=data,
                                 server_refresh=server_refresh, options=options)

    def _publish(self, cmd: Command) -> None:
        """A client publish: only to channels of --publish-proxy, as the backend decides."""
        host = self.host
        channel = cmd.params.get("channel")
        if cmd.params.get("type") or cmd.params.get("key") or cmd.params.get("removed"):
            # A map publish taken as a plain one would reach subscribers as something it is not.
            self.send(self.codec.error(cmd.id, model.ERROR_NO_MAPS))
            return
        if not host.settings.publish_proxy_url or not isinstance(channel, str) or not valid_channel(channel) \
                or channel.startswith(PERSONAL_PREFIX) or not proxy.proxies_of(host).publish_channels.match(channel):
            self._refuse_publish(cmd)
            return
        caller = proxy.proxies_of(host).publish
        assert caller is not None
        body = proxy.with_data(self, proxy.request(self, channel=channel), cmd.params.get("data"))
        self._ask(caller, body, lambda decision: self._proxied_publish(cmd, channel, caller, decision))

    def _proxied_publish(self, cmd: Command, channel: str, caller: Caller, decision: proxy.Decision) -> None:
        answer = self._read_decision(caller, decision,
                                     lambda result: (proxy.payload(self, result, "data"), proxy.publish_options(result)))
        if answer is None:
            return
        fields, error = answer
        data, options = fields if fields is not None else (None, {})
        if error is None and data is None:   # the client's own data, as it sent it
            data = proxy.client_payload(cmd.params.get("data"))
            if data is None:
                error = model.ERROR_BAD_REQUEST   # nothing to publish
        if error is not None or data is None:
            self.send(self.codec.error(cmd.id, error or model.ERROR_INTERNAL))
            return
        state = self.proxied
        conn_info = state.conn_info if state is not None else None
        chan_info = state.chan_info.get(channel) if state is not None else None
        published = proxy.publish(self.host.settings, channel, data, self.user, self.client_id, conn_info,
                                  chan_info, options)
        self.wait(published, lambda ok, waiting: self._published(cmd, ok, waiting), [])

    def _published(self, cmd: Command, ok: bool, waiting: list[Command]) -> None:
        self.send(self.codec.reply(cmd.id, "publish") if ok else self.codec.error(cmd.id, model.ERROR_INTERNAL))
        if waiting and self.state is not CLOSED and self.held is None:
            self.run(waiting)

    def _rpc(self, cmd: Command) -> None:
        settings = self.host.settings
        method = cmd.params.get("method", "")
        if not isinstance(method, str):
            self.send(self.codec.error(cmd.id, model.ERROR_BAD_REQUEST))
            return
        proxied = settings.rpc_proxy_url or settings.rpc_proxy
        caller = proxy.proxies_of(self.host).rpc_for(method) if proxied else None
        if caller is None and method == PING_RPC:
            # Centrifugo's ping RPC (rpc.ping): an empty result, for clients that
            # measure the round trip; an rpc proxy that claims "ping" answers instead.
            self.send(self.codec.reply(cmd.id, "rpc"))
            return
        if not proxied:
            self._not_available(cmd)
            return
        if caller is None:
            self.send(self.codec.error(cmd.id, model.ERROR_METHOD_NOT_FOUND))
            return
        body = proxy.with_data(self, proxy.request(self, method=method), cmd.params.get("data"))
        self._ask(caller, body, lambda decision: self._rpc_answered(cmd, caller, decision))

    def _rpc_answered(self, cmd: Command, caller: Caller, decision: proxy.Decision) -> None:
        answer = self._read_decision(caller, decision, lambda result: proxy.payload(self, result, "data"))
        if answer is None:
            return
        data, error = answer
        if error is not None:
            self.send(self.codec.error(cmd.id, error))
            return
        self.send(self.codec.reply(cmd.id, "rpc", {"data": data} if data is not None else {}))

    # --- expiry: the refresh proxies ask the backend instead of the client ------------------

    def expire(self, channel: str | None) -> None:
        settings = self.host.settings
        if self.state is CONNECTED:
            if channel is None and settings.refresh_proxy_url:
                self._proxy_refresh()
                return
            state = self.proxied
            if channel is not None and state is not None and channel in state.refreshed \
                    and settings.sub_refresh_proxy_url:
                self._proxy_sub_refresh(channel)
                return
        super().expire(channel)

    def _proxy_refresh(self) -> None:
        caller = proxy.proxies_of(self.host).refresh
        assert caller is not None
        self._ask_aside(caller, proxy.request(self), lambda decision: self._proxied_refresh(caller, decision))

    def _proxied_refresh(self, caller: Caller, decision: proxy.Decision) -> None:
        if decision.disconnect is not None:
            self._backend_disconnect(decision.disconnect)
            return
        result = decision.result
        expires_at: int | None
        try:
            if result is None:
                raise proxy.Garbage("no result")   # failed, or an error: try again in a minute
            if result.get("expired") is True:
                self.close(vocabulary.EXPIRED)
                return
            expires_at = proxy.expire_at(result)
            info = proxy.payload(self, result, "info")
            state = self.proxied
            if state is not None and "meta" in result:
                state.meta = result["meta"]
            if info is not None:
                self.info_changed(proxy.json_info(info))
        except proxy.Garbage as exc:
            if result is not None:
                caller.refused(str(exc))
            # As Centrifugo: one more minute, then the backend is asked again.
            expires_at = int(self.host.wall()) + proxy.REFRESH_RETRY
        self.reauthenticate(ConnectionClaims(user=self.user, expires_at=expires_at), 0)

    def _proxy_sub_refresh(self, channel: str) -> None:
        caller = proxy.proxies_of(self.host).sub_refresh
        assert caller is not None
        self._ask_aside(caller, proxy.request(self, channel=channel),
                        lambda decision: self._proxied_sub_refresh(channel, caller, decision))

    def _proxied_sub_refresh(self, channel: str, caller: Caller, decision: proxy.Decision) -> None:
        if channel not in self.channels:
            return
        if decision.disconnect is not None:
            self._backend_disconnect(decision.disconnect)
            return
        result = decision.result
        expires_at: int | None
        try:
            if result is None:
                raise proxy.Garbage("no result")
            if result.get("expired") is True:
                Session.expire(self, channel)   # ended (2501), or closed (3006) if the server made it
                return
            expires_at = proxy.expire_at(result)
            info = proxy.payload(self, result, "info")
            if info is not None:
                # The subscriber's channel info from now on, as Centrifugo takes it.
                info = proxy.json_info(info)
                self.chan_info_changed(channel, info)
                if self.host.settings.publish_proxy_url:
                    state = self.proxied = self.proxied or proxy.ProxyState()
                    state.chan_info[channel] = info   # its publications there
        except proxy.Garbage as exc:
            if result is not None:
                caller.refused(str(exc))
            expires_at = int(self.host.wall()) + proxy.REFRESH_RETRY
        self.watch_subscription(channel, expires_at, 0)


def tags_filter(tf: object) -> Predicate | None:
    """The predicate of a subscribe's ``tf`` (already checked), or None."""
    return compile_filter(tf) if tf is not None else None


def tags_of(data: bytes) -> dict[str, str]:
    return (data.tags or {}) if type(data) is Published else {}


def _json(payload: bytes | None) -> bool:
    """Whether ``payload`` may be embedded in a JSON client's message."""
    if payload is None:
        return True
    try:
        ujson.loads(payload)
    except (ValueError, OverflowError):
        return False
    return True


_HANDLERS = {
    "": CentrifugoSession._pong,
    "connect": CentrifugoSession._second_connect,
    "subscribe": CentrifugoSession._subscribe,
    "unsubscribe": CentrifugoSession._unsubscribe,
    "publish": CentrifugoSession._publish,
    "send": CentrifugoSession._send,
    "presence": CentrifugoSession._presence,
    "presence_stats": CentrifugoSession._presence_stats,
    "history": CentrifugoSession._history,
    "ping": CentrifugoSession._not_available,
    "rpc": CentrifugoSession._rpc,
    "refresh": CentrifugoSession._refresh,
    "sub_refresh": CentrifugoSession._sub_refresh,
}
