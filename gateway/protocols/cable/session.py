"""A connection speaking the Action Cable protocol (``actioncable-v1-json``, or
AnyCable's ``actioncable-v1-ext-json``).

What differs from the Centrifugo protocol, and lives here:

* the connection authenticates when it opens (the token comes with the
  request: ``X-JID``, an ``anycable-token.`` subprotocol, or ``?jid=``), and
  is answered ``welcome``, or ``disconnect`` with a reason;
* a subscription is named by an *identifier*, a JSON string the client
  chooses, which every message of the subscription echoes;
  :mod:`gateway.protocols.cable.streams` turns it into a pushgate channel, and the
  session decides whether this user may read it;
* a duplicate ``subscribe`` is a no-op (the stock client resends it every
  500 ms until answered) and ``unsubscribe`` is never answered, as in Rails;
* on ``actioncable-v1-ext-json``, history requests (on every subscribe, and
  the ``history`` command after a restore) are answered from pushgate's own
  history with the same rule as the Centrifugo protocol: exactly the missed
  publications and ``confirm_history``, or ``reject_history`` and none of
  them. Positions are the same on every node, so this works on any node;
  sessions themselves are restored on the node that had them.
* on a ``--cache`` channel, a subscribe that asks no history gets the latest
  publication right after ``confirm_subscription`` (either subprotocol).

Identity, channels in the hub, token expiry, the rate limit, held recoveries
and closing come from :class:`gateway.core.session.Session`; the core's
disconnect codes become Action Cable's ``disconnect`` messages
(:func:`gateway.protocols.cable.protocol.disconnect_reason`).
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable

import ujson

from auth.tokens import ConnectionClaims, KeyPending, TokenExpired, TokenInvalid
from gateway.protocols.cable import protocol, rpc
from gateway.protocols.cable.rpc import PRESENCE_STATE, WHISPER_STATE
from gateway.protocols.cable.protocol import EXT
from gateway.protocols.cable.state import CableState, CableWire, IdentifierCodec
from gateway.protocols.cable.streams import PUBSUB, Refused
from gateway.core import vocabulary
from gateway.core.vocabulary import Ending, Reason, Refusal, SubscriptionEnd
from gateway.core.channels import PERSONAL_PREFIX, foreign_personal
from gateway.core.history import Publication, Published, Recovery, epoch_of, from_position, offset_of
from gateway.core.session import CHANNEL_LIMIT, CONNECTED, ServerSubscription, Session

if TYPE_CHECKING:
    from gateway.core.host import SessionHost
    from gateway.core.wire import Transport

log = logging.getLogger("pushgate.cable")

# A restored subscription waits for the client's history request (it holds
# the client's positions) before it joins the hub; one that has not had it
# after this many seconds is joined at the next ping, with what was
# published since the restore.
RESTORE_WAIT = 1.0


class CableSession(Session):
    protocol = "actioncable"
    __slots__ = ("cable", "ext", "subscriptions", "sid", "awaiting", "restored_at", "joined")

    fast_pings = True  # a ping every 3 s: clients reopen the connection after 6 s of silence
    handlers: ClassVar[dict[str, Callable[[Any, dict], None]]]   # command -> method, set below

    def __init__(self, host: SessionHost, transport: Transport, subprotocol: str) -> None:
        super().__init__(host, transport)
        self.cable: CableState = host.shared("cable", CableState)
        self.ext = subprotocol == EXT
        # identifier -> channel, for subscriptions in the hub
        self.subscriptions: dict[str, str] = {}
        self.sid = ""
        # Restored subscriptions waiting for their history request:
        # identifier -> (channel, absolute position of the restore, or None).
        self.awaiting: dict[str, tuple[str, int | None]] | None = None
        self.restored_at = 0.0
        # Explicit presence this connection joined: identifier -> channel.
        self.joined: dict[str, str] | None = None

    # --- opening ---------------------------------------------------------------------

    def start(self, token: str, restore_sid: str = "", restorable: bool = True) -> None:
        """The connection is open: authenticate, then ``welcome`` (restoring the
        subscriptions of ``restore_sid`` when this node kept them) or refuse.
        ``restorable``: an ext connection gets a session id to come back to.
        With --cable-jwt-ext an AnyCable token (identifiers in ``ext``) names
        the user too."""
        try:
            claims = self.authenticate(token, self.host.settings.cable_jwt_ext)
        except KeyPending as pending:
            # Its key is being fetched (JWKS): decided once the fetch is over;
            # frames that arrive meanwhile wait behind it.
            log.info("client -: %s; the connection waits for it", pending)
            self.wait(pending.ready, lambda _, waiting: self._start_late(token, restore_sid, restorable, waiting), [])
            return
        except TokenExpired:
            # AnyCable's answer; @anycable/web refreshes its token on exactly this.
            # The stock client keeps retrying on its own schedule (its URL may be
            # a function that mints a new token), so it is told to reconnect.
            # (goodbye() says so to an ext client refused here.)
            self.close(vocabulary.EXPIRED)
            return
        except TokenInvalid:
            self.close(vocabulary.INVALID_TOKEN)
            return
        refusal = self.begin(claims)
        if refusal is not None:
            self.close(refusal)
            return
        self.identified(claims)
        restored = None
        if self.ext and restorable:
            self.sid = self.cable.new_sid()
            self.host.sockets[self.sid] = self   # an envelope's "exclude" names it
            if restore_sid:
                restored = self._restore(restore_sid)
        self.send(protocol.welcome(self.sid, restored))
        self.established()

    def identified(self, claims: ConnectionClaims) -> None:
        """The token checked out (``claims``), before the welcome: a subclass
        that serves the app's channels takes the token's identifiers here."""

    def _start_late(self, token: str, restore_sid: str, restorable: bool, waiting: list) -> None:
        self.start(token, restore_sid, restorable)
        if waiting and self.state is CONNECTED and self.held is None:
            self.run(waiting)

    def _restore(self, sid: str) -> list[str] | None:
        kept = self.cable.restorable.take(sid)
        if kept is None:
            return None
        if kept.user != self.user:
            log.warning("client %s: session %s belongs to another user, not restored", self.client_id, sid[:8])
            return None
        history = self.host.history
        now_ns = self.host.now_ns()
        restored = []
        awaiting: dict[str, tuple[str, int | None]] = {}
        for identifier in kept.identifiers[:self.host.settings.max_channels_per_connection]:
            try:
                channel = self.resolve(identifier)  # the rules may have changed since
            except Refused:
                continue
            if history.enabled(channel):
                epoch, top = history.top(channel, now_ns)
                awaiting[identifier] = (channel, from_position(epoch, top))
            else:
                self._add(identifier, channel)
            restored.append(identifier)
        if awaiting:
            self.awaiting = awaiting
            self.restored_at = self.host.clock()
        return restored

    # --- frames ----------------------------------------------------------------------

    def count(self, data: str | bytes) -> int:
        return 1

    def decode(self, data: str | bytes) -> list[dict]:
        return [protocol.parse(data)]

    def run(self, commands: list[dict], state: Any = None) -> None:
        try:
            for i, command in enumerate(commands):
                if self.state is not CONNECTED:
                    return
                name = command["command"]
                if name in ("subscribe", "history") and self._behind(command) and self.hold(None, commands[i:]):
                    return
                handler = self.handlers.get(name)
                if handler is None:
                    # Rails logs an unknown command and carries on; so do we.
                    self.host.metrics.ignored_commands.labels("cable_unknown").inc()
                    log.info("client %s: unknown command %r ignored", self.client_id, name[:40])
                else:
                    handler(self, command)
                    if self.held is not None:   # it waits for the backend: the rest waits behind it
                        self.held[1].extend(commands[i + 1:])
                        return
        except Exception:
            log.exception("client %s: internal error handling %s", self.client_id or "-",
                          [str(c.get("command"))[:20] for c in commands[:8]])
            self.close(vocabulary.INTERNAL)

    def still_behind(self, commands: list[dict]) -> bool:
        return self._behind(commands[0])

    def unsubscribed(self, channel: str, end: SubscriptionEnd) -> None:
        if not end.resubscribe:
            # For good (the server API's unsubscribe): reject_subscription for
            # each identifier that named the channel, on which the stock client
            # forgets the subscription, and does not subscribe again, even
            # after a reconnect.
            identifiers = [i for i, c in self.subscriptions.items() if c == channel]
            for identifier in identifiers:
                del self.subscriptions[identifier]
                self.send(protocol.reject(identifier))
            return
        # Action Cable has no message for a subscription the server ends and the
        # client should take again (this node lost a publication the client
        # should have had). Reconnecting is the honest answer: a stock client
        # calls connected({reconnected: true}) (Rails' cue to refetch), and an
        # ext client asks for history from its positions and is told whether
        # the gap can be filled.
        self.close(vocabulary.INSUFFICIENT_STATE)

    def server_subscribe(self, channel: str, sub: ServerSubscription) -> Refusal | None:
        return Refusal("an Action Cable connection cannot be subscribed by the server: the protocol has no "
                       "message for it (the client subscribes itself; list the channel in the token's "
                       "channels claim or in --public-channels)")

    def refreshed(self, expires_at: int | None) -> None:
        pass  # Action Cable has no message for it: the new expiry applies silently

    # --- identifiers and channels -------------------------------------------------------

    def resolve(self, identifier: str) -> str:
        """The channel ``identifier`` names, if this user may read it; raises Refused."""
        stream = self.cable.streams.resolve(identifier)
        channel = stream.channel
        if foreign_personal(channel, self.user):
            # Personal streams: one's own only, even under a valid signature.
            raise Refused("another user's personal stream")
        own = channel.startswith(PERSONAL_PREFIX)   # one's own, after the check above
        if not own and not stream.signed and channel not in self.server_channels \
                and not self.host.may_subscribe(self.user, channel):
            raise Refused(f"{channel[:80]!r} is not a public channel (--public-channels) "
                          "nor in the token's channels")
        return channel

    def _add(self, identifier: str, channel: str) -> None:
        self.subscriptions[identifier] = channel
        self._rejoin(channel)

    def _remove(self, identifier: str) -> None:
        channel = self.subscriptions.pop(identifier)
        self._rejoin(channel)

    def _naming(self, channel: str) -> tuple[str, ...]:
        """The identifiers that read ``channel`` on this connection, sorted."""
        return tuple(sorted(i for i, c in self.subscriptions.items() if c == channel))

    def _rejoin(self, channel: str) -> None:
        """Hold ``channel`` in the hub with the wire format of the identifiers that
        name it on this connection (usually one), or leave it when none do."""
        identifiers = self._naming(channel)
        if not identifiers:
            self.leave(channel)
            return
        wires = self.cable.wires
        old = self._wire(channel)
        self.join(channel, wires.acquire(self.ext, identifiers, channel, self.wire.frame))
        if old is not None:
            wires.release(old)

    def leave(self, channel: str) -> None:
        # Every way a subscription ends (the client's unsubscribe, the core's
        # end_subscription, a lost stream) gives the shared wire format back.
        wire = self._wire(channel)
        super().leave(channel)
        if wire is not None:
            self.cable.wires.release(wire)

    def _wire(self, channel: str) -> CableWire | None:
        wire = self.host.hub.wire_of(channel, self) if channel in self.channels else None
        return wire if isinstance(wire, CableWire) else None

    def _release(self) -> None:
        wires = self.cable.wires
        for channel in self.channels:
            wire = self._wire(channel)
            if wire is not None:
                wires.release(wire)
        if self.joined:
            presence = self.host.presence
            for channel in self.joined.values():
                presence.explicit_leave(self, channel)
            self.joined = None
        if self.sid and self.host.sockets.get(self.sid) is self:
            del self.host.sockets[self.sid]
        super()._release()

    # --- positions and history ------------------------------------------------------------

    def _behind(self, command: dict) -> bool:
        """A history request from a position this node has not reached yet (the
        client came from a node that was ahead): worth holding a moment."""
        if not self.ext:
            return False
        request = command.get("history")
        streams = request.get("streams") if isinstance(request, dict) else None
        if not isinstance(streams, dict):
            return False
        history = self.host.history
        now_ns = self.host.now_ns()
        return any(
            isinstance(position, dict) and isinstance(channel, str) and history.enabled(channel)
            and history.behind(channel, str(position.get("epoch") or ""), position.get("offset"), now_ns)
            for channel, position in streams.items())

    def _recovery(self, channel: str, request: object, mark: int | None = None) -> Recovery | None:
        """What this node can vouch for of ``channel`` after the client's history
        ``request``: from the position it gives for the channel, else from its
        ``since`` (Unix seconds), else from ``mark`` (a restore's position).
        None when nothing was asked."""
        history = self.host.history
        now_ns = self.host.now_ns()
        streams = request.get("streams") if isinstance(request, dict) else None
        position = streams.get(channel) if isinstance(streams, dict) else None
        since = request.get("since") if isinstance(request, dict) else None
        if isinstance(position, dict):
            epoch, offset = position.get("epoch"), position.get("offset")
            if not isinstance(offset, int) or isinstance(offset, bool):
                offset = -1
            return history.recover(channel, str(epoch or ""), offset, now_ns)
        if isinstance(since, (int, float)) and not isinstance(since, bool) and since > 0:
            # Publications from that second on. A moment the node has not
            # vouched for yet (the client's clock, or just now) is what it has
            # seen so far: anything after that arrives live.
            epoch, top = history.top(channel, now_ns)
            start = min(int(since * 1e9) - 1, from_position(epoch, top) or 0)
            return history.recover(channel, epoch_of(start), offset_of(start), now_ns)
        if mark is not None:
            return history.recover(channel, epoch_of(mark), offset_of(mark), now_ns)
        return None

    def _answer_history(self, identifier: str, channel: str, request: object, mark: int | None = None,
                        quiet: bool = False) -> None:
        """Send what the client missed of ``channel`` and ``confirm_history``, or
        ``reject_history`` and none of it. ``quiet``: nothing was asked, so a
        success needs no ``confirm_history`` (a failure is still reported)."""
        metrics = self.host.metrics
        if not self.host.history.enabled(channel):
            if not quiet:
                metrics.recoveries.labels("false").inc()
                self.send(protocol.reject_history(identifier))
            return
        answer = self._recovery(channel, request, mark)
        if answer is None:
            return
        metrics.recoveries.labels("true" if answer.recovered else "false").inc()
        if not answer.recovered:
            self.send(protocol.reject_history(identifier))
            return
        if not self._push_recorded(self.cable.wires.codec(True, identifier, channel), channel,
                                   answer.publications):
            return
        if not quiet:
            self.send(protocol.confirm_history(identifier))

    def _latest(self, identifier: str, channel: str) -> None:
        """--cache: the channel's latest publication right after the
        confirmation, as a message, when this node vouches that nothing after
        it was lost (Centrifugo's cache mode, :meth:`History.latest`). Else
        nothing: a subscribe that asked no history has no reject to be told."""
        host = self.host
        history = host.history
        if not history.enabled(channel):
            return
        answer = history.latest(channel, "", 0, host.now_ns())
        host.metrics.recoveries.labels("true" if answer.recovered else "false").inc()
        self._push_recorded(self.cable.wires.codec(self.ext, identifier, channel), channel, answer.publications)

    def _push_recorded(self, codec: IdentifierCodec, channel: str, publications: Iterable[Publication]) -> bool:
        """Publications from history as messages; False once one could not be
        carried (binary data that is not JSON) and the connection is closed,
        as live delivery closes it."""
        frame = self.wire.frame
        for publication in publications:
            data: bytes | None = publication.data
            if type(data) is Published:
                data = data.json_form()
                if data is None:
                    self.close(vocabulary.INAPPROPRIATE_PROTOCOL)
                    return False
            assert data is not None
            self.push(frame(codec.pub_push(channel, data, publication.offset)))
        return True

    # --- commands ------------------------------------------------------------------------

    def _held(self, identifier: str) -> bool:
        return identifier in self.subscriptions or (self.awaiting is not None and identifier in self.awaiting)

    def _subscribe(self, command: dict) -> None:
        identifier = command["identifier"]
        if self._held(identifier):
            return  # Rails: a duplicate subscribe is a no-op (it was confirmed once)
        try:
            limit = self.host.settings.max_channels_per_connection
            if len(self.subscriptions) + len(self.awaiting or ()) >= limit:
                raise Refused(f"more than {limit} subscriptions")
            channel = self.resolve(identifier)
        except Refused as exc:
            self.host.metrics.refused_subscriptions.inc()
            log.warning("client %s: subscription refused: %s", self.client_id, exc)
            self.send(protocol.reject(identifier))
            return
        # Confirm, send the backlog, and join the hub in this one callback: no
        # live publication can come between them or twice.
        self.send(protocol.confirm(identifier))
        if self.ext and "history" in command:
            self._answer_history(identifier, channel, command["history"])
        elif self.host.cache and self.host.cache.match(channel):
            self._latest(identifier, channel)
        self._add(identifier, channel)
        if "presence" in command:   # @anycable/web rejoins the presence it had with its subscribe
            self._join(command)

    def _history(self, command: dict) -> None:
        identifier = command["identifier"]
        request = command.get("history")
        if not self.ext:
            self.explain(command, "history is AnyCable's extension: offer actioncable-v1-ext-json")
            return
        awaiting = self.awaiting
        if awaiting is not None and identifier in awaiting:
            channel, mark = awaiting.pop(identifier)
            if not awaiting:
                self.awaiting = None
            # From the client's positions when it gives them, else from the restore.
            self._answer_history(identifier, channel, request, mark, quiet=request is None)
            self._add(identifier, channel)
        elif identifier in self.subscriptions:
            self._answer_history(identifier, self.subscriptions[identifier], request)
        else:
            self.send(protocol.reject_history(identifier))

    def _unsubscribe(self, command: dict) -> None:
        # Never answered, as in Rails.
        identifier = command["identifier"]
        self._leave_presence(identifier)
        if identifier in self.subscriptions:
            self._remove(identifier)
        elif self.awaiting is not None:
            self.awaiting.pop(identifier, None)

    def explain(self, command: dict, reason: str) -> None:
        """A command pushgate does not serve: counted, and logged with why (at
        most once a second per kind, so a client cannot flood the log)."""
        kind = f"cable_{command['command']}"
        self.host.metrics.ignored_commands.labels(kind).inc()
        now = self.host.clock()
        if now - _LOGGED.get(kind, -1.0) >= 1.0:
            _LOGGED[kind] = now
            log.warning("client %s: %s on %s not served: %s", self.client_id or "-", command["command"],
                        str(command.get("identifier"))[:120], reason)

    def _message(self, command: dict) -> None:
        # A Ruby channel's action: no channel code runs here unless the app is
        # asked (--cable-rpc-url, gateway.protocols.cable.rpc_session).
        identifier = command["identifier"]
        if identifier in self.subscriptions:
            self.explain(command, "a $pubsub or Turbo stream has no channel code to perform it")
        elif self.host.settings.cable_rpc_url:
            self.explain(command, "a connection authenticated by a JWT (?jid=) is never passed to the RPC")
        else:
            self.explain(command, "no subscription by that identifier, and Ruby channels run only with "
                         "--cable-rpc-url")

    # --- whispers and presence (AnyCable's) -----------------------------------------------

    def state_stream(self, identifier: str, key: str) -> str | None:
        """The channel a subscription whispers to (``$w``) or keeps presence in
        (``$p``): a $pubsub stream's own, as AnyCable serves them."""
        channel = self.subscriptions.get(identifier)
        if channel is None:
            return None
        try:
            name = ujson.loads(identifier).get("channel")
        except (ValueError, AttributeError):
            return None
        return channel if name == PUBSUB else None

    def _whisper(self, command: dict) -> None:
        settings = self.host.settings
        if not settings.cable_whisper:
            self.explain(command, "whispers are off (--cable-whisper)")
            return
        channel = self.state_stream(command["identifier"], WHISPER_STATE)
        if channel is None:
            self.explain(command, "the subscription names no whisper stream (istate $w, anycable-rails' "
                         "whispers_to, or a $pubsub stream)")
            return
        if "data" not in command:
            self.explain(command, 'no "data"')
            return
        try:
            data = protocol.json_text(command["data"])
        except ValueError:
            self.explain(command, "data is not interchangeable JSON")
            return
        if len(data) > settings.max_message_bytes - 512 or not self.sid:
            self.explain(command, "larger than --max-message-bytes" if self.sid else "no socket id to exclude")
            return
        publish = self.host.publish
        if publish is None:
            self.explain(command, "this host publishes nothing")
            return
        cable = self.cable
        if cable.whispers_in_flight >= WHISPERS_IN_FLIGHT:
            self.explain(command, f"{WHISPERS_IN_FLIGHT} whispers already wait for nsqd")
            return
        envelope = b'{"channel":%s,"data":%s,"exclude":%s,"skip_history":true}' % (
            protocol.quote(channel), data, protocol.quote(self.sid))
        self.host.metrics.cable_whispers.inc()
        cable.whispers_in_flight += 1

        def done(_: asyncio.Future) -> None:
            cable.whispers_in_flight -= 1

        # To every node; the node logs a failure.
        asyncio.ensure_future(publish(envelope)).add_done_callback(done)

    def _join(self, command: dict) -> None:
        identifier = command["identifier"]
        channel = self.state_stream(identifier, PRESENCE_STATE)
        if channel is None:
            self.explain(command, "the subscription keeps no presence (istate $p)")
            return
        presence = command.get("presence")
        pid = presence.get("id") if type(presence) is dict else None
        if type(pid) is int:
            pid = str(pid)
        if type(pid) is not str or not 0 < len(pid) <= MAX_PRESENCE_ID:
            self.explain(command, f'presence needs an "id" (a string of 1-{MAX_PRESENCE_ID} characters)')
            return
        assert isinstance(presence, dict)
        info = None
        if presence.get("info") is not None:
            try:
                info = protocol.json_text(presence["info"])
            except ValueError:
                self.explain(command, "presence info is not interchangeable JSON")
                return
        self.join_presence(identifier, channel, pid, info, command)

    def join_presence(self, identifier: str, channel: str, pid: str, info: bytes | None, command: dict) -> None:
        if self.state is not CONNECTED:
            return   # closed meanwhile: an entry now would outlive it
        if not self.host.presence.explicit_join(self, channel, pid, info):
            self.explain(command, "presence is kept only with --cable-rpc-url")
            return
        joined = self.joined
        if joined is None:
            joined = self.joined = {}
        old = joined.get(identifier)
        if old is not None and old != channel:
            self.host.presence.explicit_leave(self, old)
        joined[identifier] = channel

    def _leave(self, command: dict) -> None:
        if not self._leave_presence(command["identifier"]):
            self.explain(command, "this connection has not joined that subscription's presence")

    def _leave_presence(self, identifier: str) -> bool:
        joined = self.joined
        channel = joined.pop(identifier, None) if joined else None
        if channel is None:
            return False
        self.host.presence.explicit_leave(self, channel)
        return True

    def _presence(self, command: dict) -> None:
        # Always answered: @anycable/web's presence.info() waits for it.
        identifier = command["identifier"]
        channel = self.state_stream(identifier, PRESENCE_STATE)
        found = self.host.presence.explicit_info(channel) if channel is not None else None
        quoted = protocol.quote(identifier)
        if found is None:
            self.explain(command, "the subscription keeps no presence (istate $p)" if channel is None
                         else "presence is kept only with --cable-rpc-url")
            self.send(rpc.presence_reply(quoted, rpc.PRESENCE_ERROR))
            return
        self.send(rpc.presence_reply(quoted, rpc.presence_info(*found)))

    def _pong(self, command: dict) -> None:
        pass  # AnyCable clients may answer pings; nothing is owed or checked

    # --- output ----------------------------------------------------------------------------

    def ping(self) -> None:
        """Called by the host's fast heartbeat, every 3 s."""
        self.push(self.cable.ping_frame(self.wire.frame))
        if self.awaiting is not None and self.host.clock() - self.restored_at >= RESTORE_WAIT:
            self._join_awaiting()

    def _join_awaiting(self) -> None:
        """Restored subscriptions whose history request never came: joined with
        what was published since the restore."""
        awaiting, self.awaiting = self.awaiting or {}, None
        for identifier, (channel, mark) in awaiting.items():
            self._answer_history(identifier, channel, None, mark, quiet=True)
            self._add(identifier, channel)

    def goodbye(self, ending: Ending) -> tuple[int, str]:
        reason, reconnect = protocol.disconnect_reason(ending)
        if ending.reason is Reason.EXPIRED and self.ext and not self.client_id:
            # A token expired at connect: @anycable/web refreshes its token on
            # token_expired with reconnect false; the stock client keeps
            # retrying on its own schedule (its URL may be a function that
            # mints a new token), so it is told to reconnect.
            reconnect = False
        if ending.reason is not Reason.SLOW:  # a slow client's queue is dropped anyway
            self.send(protocol.disconnect(reason, reconnect))
        # The disconnect message says it all; the close frame is 1000, as Rails sends.
        return 1000, reason

    def transport_closed(self) -> None:
        """The connection dropped without a disconnect: an ext client may come
        back to this node with its session id and find its subscriptions."""
        if self.state is CONNECTED and self.sid:
            identifiers = tuple(self.subscriptions) + tuple(self.awaiting or ())
            if identifiers:
                self.cable.restorable.keep(self.sid, self.user, identifiers)
        super().transport_closed()


# When each kind of unserved command was last logged (CableSession.explain).
_LOGGED: dict[str, float] = {}
MAX_PRESENCE_ID = 256
WHISPERS_IN_FLIGHT = 1000   # per node: past it a whisper is refused (logged) until nsqd catches up

CableSession.handlers = {
    "subscribe": CableSession._subscribe,
    "unsubscribe": CableSession._unsubscribe,
    "history": CableSession._history,
    "pong": CableSession._pong,
    "message": CableSession._message,
    "whisper": CableSession._whisper,
    "join": CableSession._join,
    "leave": CableSession._leave,
    "presence": CableSession._presence,
}
