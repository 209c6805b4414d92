"""An Action Cable connection whose Rails app decides, over AnyCable's RPC
(``--cable-rpc-url``; the wire is :mod:`gateway.protocols.cable.rpc`).

A connection that brings no JWT is the app's: its ``connect`` call runs
``ApplicationCable::Connection#connect`` with the upgrade request's URL and
the headers named in ``--cable-rpc-headers`` (the session cookie), and every
``subscribe``, ``unsubscribe`` and ``message`` (a ``perform``) of a channel
becomes a ``command`` call. The app writes every protocol message itself
(``welcome``, ``confirm_subscription``, ``reject_subscription``, the
unauthorized ``disconnect``) as transmissions, passed on as they are; pushgate
adds none of its own. What the app answers changes what the subscription
reads (``streams``, ``stopped_streams``, ``stop_streams``: pushgate channels
every node reads from NSQ), its ``istate`` and the connection's ``cstate``
(kept here and sent back on every later call), and its explicit presence.
When the connection ends, ``disconnect`` is called once, with its
subscriptions and state, so ``unsubscribed`` and ``disconnect`` run; also
when the node drains (the node waits for those calls before it exits).

A connection with a JWT (``?jid=``, ``X-JID``, the ``anycable-token.``
subprotocol) is served as before, with no call at all, unless it is an
AnyCable token and --cable-jwt-ext is on: then, as anycable-go's JWT
identification, its ``ext`` identifiers are the connection's identifiers
(no connect call; commands and the disconnect call as above). ``$pubsub``
and Turbo streams (with ``--turbo-streams-secret``) are served here on
either kind.

The calls are bounded (:class:`gateway.backend.caller.Caller`): at most
``--cable-rpc-concurrency`` in flight, ``--cable-rpc-queue`` waiting, each
within ``--cable-rpc-timeout``. When the app is down, slow or answers
garbage, a connect is refused with ``{"type":"disconnect","reason":
"rpc_unavailable","reconnect":true}`` (the stock clients come back with
their back-off), a subscribe the same way (never a subscription left
without an answer), and a ``perform`` is logged as lost. A disconnect call
that could not reach the app is tried again for a minute.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Callable

import ujson

from auth.tokens import ConnectionClaims
from gateway.backend.caller import ANSWER, OVERLOADED, UNAVAILABLE, Caller, Outcome, shared_metrics
from gateway.core.channels import valid_channel
from gateway.core import vocabulary
from gateway.core.session import CONNECTED, Session
from gateway.core.vocabulary import Ending, Reason
from gateway.protocols.cable import protocol, rpc
from gateway.protocols.cable.rpc import FAILURE, PRESENCE_STATE, SUCCESS, Answer, Garbage
from gateway.protocols.cable.session import CableSession
from gateway.protocols.cable.streams import PUBSUB, TURBO

if TYPE_CHECKING:
    from gateway.core.host import SessionHost
    from gateway.core.wire import Transport
    from gateway.transports.endpoint import Request

log = logging.getLogger("pushgate.cable.rpc")

SHARED_KEY = "cable.rpc"
RPC_USER = ConnectionClaims(user="")   # the app knows who it is (its identifiers); pushgate keeps no user
# How a connection ends on the app's word or for want of it. The app's own
# refusals carry their message in its transmissions: nothing is added.
APP_REFUSED = Ending(Reason.PERMISSION_DENIED, "Auth Failed")
APP_CLOSED = Ending(Reason.FORCE_DISCONNECT, "Command Failed")
RPC_UNAVAILABLE = Ending(Reason.INTERNAL, "rpc_unavailable")
RPC_ERROR = Ending(Reason.INTERNAL, "rpc_error")
QUIET = (APP_REFUSED, APP_CLOSED)
SAID = (RPC_UNAVAILABLE, RPC_ERROR)
# A disconnect call that could not reach the app (refused, or no room in the
# queue) is sent again, after 1, 2, 4, 5, 5... seconds, for this long; calls
# the app may have seen (a timeout, an answer) are never repeated, so none
# runs twice. At most LAST_WORDS_LIMIT wait at once: past it they are lost
# (logged, counted).
RETRY_FOR = 60.0
RETRY_MAX_DELAY = 5.0
LAST_WORDS_LIMIT = 100_000


class RpcClient:
    """The node's Rails app: one bounded caller for its three calls."""

    def __init__(self, host: SessionHost):
        settings = host.settings
        assert settings.cable_rpc_url
        base = settings.cable_rpc_url.rstrip("/")
        self.urls = {name: f"{base}/{name}" for name in ("connect", "command", "disconnect")}
        self.caller = Caller("cable_rpc", self.urls["connect"], shared_metrics(host),
                             timeout=settings.cable_rpc_timeout, concurrency=settings.cable_rpc_concurrency,
                             queue=settings.cable_rpc_queue)
        self.secret = settings.cable_rpc_secret
        self.headers = tuple(h for h in settings.cable_rpc_headers.split(",") if h)
        self.host = host
        self._unauthorized_logged = -1.0
        self._lost_logged = -1.0
        self._disconnects = {outcome: host.metrics.cable_rpc_disconnects.labels(outcome)
                             for outcome in ("sent", "retried", "lost")}

    def call(self, name: str, body: bytes, sid: str) -> asyncio.Future[Outcome]:
        return self.caller.call(body, rpc.call_headers(self.secret, sid), self.urls[name])

    def answer(self, outcome: Outcome, what: str) -> Answer | None:
        """The app's answer, or None when there is none (the caller logged why)."""
        if not outcome.ok:
            now = self.host.clock()
            if outcome.detail == "HTTP 401" and now - self._unauthorized_logged >= 1.0:
                self._unauthorized_logged = now
                log.error("the RPC endpoint %s answers 401: --cable-rpc-secret is not the app's "
                          "(AnyCable's http_rpc_secret)", self.urls["connect"].rsplit("/", 1)[0])
            return None
        assert outcome.body is not None
        try:
            return rpc.parse_answer(outcome.body)
        except Garbage as exc:
            self.caller.refused(f"{what}: {exc}")
            return None

    def last_word(self, settle: Callable[[Outcome | None], bytes | None], sid: str,
                  sent: asyncio.Future[Outcome] | None) -> None:
        """A disconnect call, owed whatever happens to the connection: the node
        waits for it before it exits (``host.last_words``). ``sent``: a call of
        the connection still under way, whose outcome ``settle`` takes into
        account before it writes the body (None: no disconnect owed after all)."""
        pending = self.host.last_words
        if len(pending) >= LAST_WORDS_LIMIT:
            self._disconnects["lost"].inc()
            log.error("%d disconnect calls already waiting: one more lost (its unsubscribed and disconnect "
                      "callbacks do not run)", len(pending))
            return
        task = asyncio.ensure_future(self._disconnect(settle, sid, sent))
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def _disconnect(self, settle: Callable[[Outcome | None], bytes | None], sid: str,
                          sent: asyncio.Future[Outcome] | None) -> None:
        outcome = None
        if sent is not None:
            try:
                outcome = await sent   # within the caller's timeout: a Caller's future never hangs
            except asyncio.CancelledError:
                outcome = None
        body = settle(outcome)
        if body is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETRY_FOR
        delay = 1.0
        while True:
            outcome = await self.call("disconnect", body, sid)
            if outcome.kind not in (UNAVAILABLE, OVERLOADED):
                self._disconnects["sent" if outcome.kind == ANSWER else "lost"].inc()
                if outcome.ok:
                    answer = self.answer(outcome, "disconnect")
                    if answer is not None and answer.status not in (SUCCESS, FAILURE):
                        log.warning("disconnect of socket %s: the app answered an error: %s", sid[:12],
                                    answer.error[:200] or "(no error_msg)")
                return
            if loop.time() + delay > deadline:
                self._disconnects["lost"].inc()
                now = self.host.clock()
                if now - self._lost_logged >= 1.0:   # one line a second, however many are lost
                    self._lost_logged = now
                    log.error("disconnect of socket %s lost: the RPC endpoint was unreachable for %.0f s "
                              "(pushgate_cable_rpc_disconnects_total{outcome=\"lost\"} counts them all)",
                              sid[:12], RETRY_FOR)
                return
            self._disconnects["retried"].inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)


def rpc_client_of(host: SessionHost) -> RpcClient:
    client: RpcClient = host.shared(SHARED_KEY, RpcClient)
    return client


class RpcState:
    """What a connection the app decides keeps: the request it came with, the
    app's identifiers and state, and each subscription's streams."""

    __slots__ = ("url", "headers", "identifiers", "cstate", "istate", "streams", "subscribed", "connected", "told",
                 "pending")

    def __init__(self, url: str, headers: dict[str, str]):
        self.url = url
        self.headers = headers
        self.identifiers = ""
        self.cstate: dict[str, str] = {}
        self.istate: dict[str, dict[str, str]] = {}    # identifier -> its state
        self.streams: dict[str, set[str]] = {}          # identifier -> the channels it reads
        self.subscribed: dict[str, None] = {}           # identifiers the app confirmed, in order
        self.connected = False                          # the app said SUCCESS: a disconnect is owed
        self.told = False                               # the disconnect was sent
        self.pending: tuple[str, str] | None = None      # the call under way: (command, identifier)

    def stream_count(self) -> int:
        return sum(len(s) for s in self.streams.values())

    def state_size(self) -> int:
        return rpc.state_size(self.cstate) + sum(rpc.state_size(s) for s in self.istate.values())


class RpcCableSession(CableSession):
    """A /cable connection on a node with --cable-rpc-url: the app's when it
    brings no JWT (``rpc`` is then its state), else a plain CableSession."""

    __slots__ = ("rpc", "opened_with")

    def __init__(self, host: SessionHost, transport: Transport, subprotocol: str) -> None:
        super().__init__(host, transport, subprotocol)
        self.rpc: RpcState | None = None
        self.opened_with: tuple[str, dict[str, str]] | None = None   # a JWT connection's URL and headers

    def start_jwt(self, request: Request, token: str, restore_sid: str) -> None:
        """A JWT: checked here. An AnyCable token's identifiers (``ext``, with
        --cable-jwt-ext) make it the app's too, as anycable-go's JWT
        identification does: no connect call, its channels over the RPC."""
        self.opened_with = self._request_env(request)
        self.start(token, restore_sid)

    def identified(self, claims: ConnectionClaims) -> None:
        opened_with, self.opened_with = self.opened_with, None
        if claims.identifiers is None or opened_with is None:
            return
        if len(claims.identifiers) > rpc.MAX_STATE_BYTES:
            log.warning("client %s: the token's identifiers are more than %d bytes: its channels are not passed "
                        "to the app", self.client_id, rpc.MAX_STATE_BYTES)
            return
        state = self.rpc = RpcState(*opened_with)
        state.identifiers = claims.identifiers
        state.connected = True   # the app's disconnect runs when it ends, as after its own connect
        if not self.ext:
            # The socket id the calls carry (an ext connection gets one next, in start()).
            self.sid = self.cable.new_sid()
            self.host.sockets[self.sid] = self

    def _request_env(self, request: Request) -> tuple[str, dict[str, str]]:
        """The URL and headers (--cable-rpc-headers) the app's calls carry."""
        client = rpc_client_of(self.host)
        headers = {name: request.headers[name] for name in client.headers if name in request.headers}
        if request.peer:
            headers["REMOTE_ADDR"] = request.peer
        return f"http://{request.headers.get('host', '')}{request.target}", headers

    # --- connect -----------------------------------------------------------------------

    def start_rpc(self, request: Request) -> None:
        """No JWT: the app's connect decides who this is."""
        client = rpc_client_of(self.host)
        self.client_id = str(uuid.uuid4())
        self.sid = self.cable.new_sid()   # the socket id: X-AnyCable-Meta-Sid, and what "exclude" names
        self.host.sockets[self.sid] = self
        url, headers = self._request_env(request)
        state = self.rpc = RpcState(url, headers)
        state.pending = ("connect", "")
        future = client.call("connect", rpc.connect_body(url, headers), self.sid)
        self.wait(future, lambda outcome, waiting: self._connected(state, outcome, waiting), [])

    def _connected(self, state: RpcState, outcome: Outcome, waiting: list) -> None:
        state.pending = None
        client = rpc_client_of(self.host)
        answer = client.answer(outcome, "connect")
        if answer is None:
            self.host.metrics.token_errors.labels("rpc_unavailable").inc()
            self.close(RPC_UNAVAILABLE)
            return
        if answer.status == SUCCESS and len(answer.identifiers) > rpc.MAX_STATE_BYTES:
            client.caller.refused(f"connect: identifiers of {len(answer.identifiers)} bytes, more than a connection "
                                  f"may keep ({rpc.MAX_STATE_BYTES})")
            self.close(RPC_ERROR)
            return
        if answer.status == SUCCESS:
            refusal = self.begin(RPC_USER)
            if refusal is not None:
                self.close(refusal)
                return
            state.connected = True
            state.identifiers = answer.identifiers
            self._merge_cstate(answer.cstate)
            for transmission in answer.transmissions:
                self.send(transmission)
            self.established()
            if waiting:
                self.run(waiting)
            return
        for transmission in answer.transmissions:
            self.send(transmission)
        if answer.status == FAILURE:
            self.host.metrics.token_errors.labels("rpc").inc()
            log.info("client %s: connect refused by the app (reject_unauthorized_connection)", self.client_id)
            self.close(APP_REFUSED)
        else:
            self.host.metrics.token_errors.labels("rpc_error").inc()
            log.error("client %s: the app's connect failed: %s", self.client_id,
                      answer.error[:300] or "(no error_msg)")
            self.close(RPC_ERROR)

    # --- commands ------------------------------------------------------------------------

    def _ask(self, name: str, identifier: str, data: str, then: Callable[[Answer | None], None]) -> None:
        """A command call; this connection's later commands wait for its answer,
        which ``then`` applies (None: no answer, the caller logged why)."""
        state = self.rpc
        assert state is not None
        client = rpc_client_of(self.host)
        body = rpc.command_body(name, identifier, state.identifiers, data, state.url, state.headers,
                                state.cstate or None, state.istate.get(identifier) or None)

        def answered(outcome: Outcome, waiting: list) -> None:
            state.pending = None
            try:
                then(client.answer(outcome, f"command {name}"))
            except Exception:
                log.exception("client %s: internal error applying the app's answer to %s", self.client_id, name)
                self.close(vocabulary.INTERNAL)
                return
            if waiting and self.state is CONNECTED:
                if self.held is not None:
                    self.held[1].extend(waiting)
                else:
                    self.run(waiting)

        state.pending = (name, identifier)
        self.wait(client.call("command", body, self.sid), answered, [])

    @staticmethod
    def _local(identifier: str, turbo: bool) -> bool:
        """Whether pushgate serves this identifier itself ($pubsub; Turbo streams
        when it can verify them): no call, as AnyCable-Go serves them."""
        try:
            params = ujson.loads(identifier)
        except (ValueError, OverflowError):
            return False
        name = params.get("channel") if type(params) is dict else None
        return name == PUBSUB or (name == TURBO and turbo)

    def _held(self, identifier: str) -> bool:
        return super()._held(identifier) or (self.rpc is not None and identifier in self.rpc.subscribed)

    def _subscribe(self, command: dict) -> None:
        state = self.rpc
        identifier = command["identifier"]
        if self._local(identifier, bool(self.host.settings.turbo_streams_secret)):
            super()._subscribe(command)
            return
        if self._held(identifier):
            return   # a duplicate: a no-op, as in Rails
        if state is None:
            self.host.metrics.refused_subscriptions.inc()
            log.warning("client %s: subscription to %s refused: a connection with a JWT (other than an AnyCable "
                        "token with --cable-jwt-ext) is never passed to the "
                        "app (connect without ?jid= to have it decide)", self.client_id, identifier[:120])
            self.send(protocol.reject(identifier))
            return
        limit = self.host.settings.max_channels_per_connection
        if len(self.subscriptions) + len(state.subscribed) + len(self.awaiting or ()) >= limit:
            self.host.metrics.refused_subscriptions.inc()
            log.warning("client %s: subscription refused: more than %d subscriptions", self.client_id, limit)
            self.send(protocol.reject(identifier))
            return
        self._ask("subscribe", identifier, "", lambda answer: self._subscribed(identifier, answer, command))

    def _subscribed(self, identifier: str, answer: Answer | None, command: dict) -> None:
        state = self.rpc
        assert state is not None
        if answer is None:
            # Never a subscription left unanswered: the client comes back and subscribes again.
            self.close(RPC_UNAVAILABLE)
            return
        if answer.status == SUCCESS:
            state.subscribed[identifier] = None
        elif answer.status != FAILURE:
            log.error("client %s: the app's subscribe to %s failed: %s", self.client_id, identifier[:120],
                      answer.error[:300] or "(no error_msg)")
            if not answer.transmissions:
                self.send(protocol.reject(identifier))   # not left waiting for an answer
        self._apply(identifier, answer)
        if answer.status != SUCCESS or self.state is not CONNECTED:
            return
        if self.ext and "history" in command:
            self._rpc_history(identifier, command["history"])
        if "presence" in command:
            self._join(command)

    def _rpc_history(self, identifier: str, request: object) -> None:
        """A history request for a subscription the app confirmed: answered from
        the one stream it reads; several would interleave with no order the
        client could check, so they are refused honestly."""
        state = self.rpc
        assert state is not None
        streams = state.streams.get(identifier) or set()
        if len(streams) == 1:
            self._answer_history(identifier, next(iter(streams)), request)
        else:
            self.host.metrics.recoveries.labels("false").inc()
            self.send(protocol.reject_history(identifier))

    def _history(self, command: dict) -> None:
        state = self.rpc
        if state is not None and self.ext and command["identifier"] in state.subscribed:
            self._rpc_history(command["identifier"], command.get("history"))
        else:
            super()._history(command)

    def _unsubscribe(self, command: dict) -> None:
        state = self.rpc
        identifier = command["identifier"]
        if state is None or identifier not in state.subscribed:
            super()._unsubscribe(command)
            return
        self._ask("unsubscribe", identifier, "", lambda answer: self._unsubscribed_rpc(identifier, answer))

    def _unsubscribed_rpc(self, identifier: str, answer: Answer | None) -> None:
        # The client has forgotten the subscription whatever the app says: it goes.
        if answer is None:
            log.error("client %s: unsubscribe from %s: no answer from the app, its unsubscribed callback did "
                      "not run", self.client_id, identifier[:120])
        else:
            self._apply(identifier, answer)
        self._drop(identifier)

    def _drop(self, identifier: str) -> None:
        state = self.rpc
        assert state is not None
        state.subscribed.pop(identifier, None)
        self._leave_presence(identifier)
        state.istate.pop(identifier, None)
        for channel in state.streams.pop(identifier, ()):
            self._rejoin(channel)

    def _message(self, command: dict) -> None:
        state = self.rpc
        identifier = command["identifier"]
        if state is None or identifier not in state.subscribed:
            if state is not None and identifier not in self.subscriptions:
                self.explain(command, "no subscription by that identifier (subscribe first)")
                return
            super()._message(command)
            return
        data = command.get("data")
        if type(data) is not str:
            self.explain(command, '"data" must be a JSON string (what perform() sends)')
            return
        self._ask("message", identifier, data, lambda answer: self._performed(identifier, answer))

    def _performed(self, identifier: str, answer: Answer | None) -> None:
        if answer is None:
            log.error("client %s: perform on %s lost: no answer from the app", self.client_id, identifier[:120])
            return
        if answer.status not in (SUCCESS, FAILURE):
            log.error("client %s: the app's perform on %s failed: %s", self.client_id, identifier[:120],
                      answer.error[:300] or "(no error_msg)")
        self._apply(identifier, answer)

    # --- what an answer changes ---------------------------------------------------------------

    def _apply(self, identifier: str, answer: Answer) -> None:
        """An answer to a command of ``identifier``, in AnyCable-Go's order:
        streams, state, transmissions, presence, then a disconnect."""
        state = self.rpc
        assert state is not None
        if self.state is not CONNECTED:
            return
        streams = state.streams.get(identifier)
        changed: set[str] = set()
        if streams:
            if answer.stop_streams:
                changed |= streams
                streams.clear()
            else:
                for stream in answer.stopped_streams:
                    channel = self.cable.streams.channel_of(stream)
                    if channel in streams:
                        streams.discard(channel)
                        changed.add(channel)
        for stream in answer.streams:
            channel = self.cable.streams.channel_of(stream)
            if not valid_channel(channel):
                rpc_client_of(self.host).caller.refused(f"stream {stream[:80]!r} is not a channel name")
                continue
            if streams is None:
                streams = state.streams[identifier] = set()
            if channel in streams:
                continue
            if state.stream_count() >= rpc.MAX_STREAMS:
                log.warning("client %s: stream %s not read: more than %d streams on one connection",
                            self.client_id, stream[:80], rpc.MAX_STREAMS)
                continue
            streams.add(channel)
            changed.add(channel)
        if streams is not None and not streams:
            state.streams.pop(identifier, None)
        for channel in changed:
            self._rejoin(channel)
        if answer.istate:
            kept = state.istate.setdefault(identifier, {})
            self._bounded_merge(kept, answer.istate, "istate")
            if not kept:
                del state.istate[identifier]
        self._merge_cstate(answer.cstate)
        for transmission in answer.transmissions:
            self.send(transmission)
        if self.state is not CONNECTED:
            return   # cut as slow while it was sent: nothing more is kept for it
        if answer.presence is not None:
            self._app_presence(identifier, answer.presence)
        if answer.disconnect:
            self.close(APP_CLOSED)

    def _merge_cstate(self, changes: dict[str, str] | None) -> None:
        state = self.rpc
        if changes and state is not None:
            self._bounded_merge(state.cstate, changes, "cstate")

    def _bounded_merge(self, kept: dict[str, str], changes: dict[str, str], what: str) -> None:
        state = self.rpc
        assert state is not None
        before = dict(kept)
        rpc.merge(kept, changes)
        if state.state_size() > rpc.MAX_STATE_BYTES:
            kept.clear()
            kept.update(before)
            rpc_client_of(self.host).caller.refused(
                f"{what} change refused: a connection's state would exceed {rpc.MAX_STATE_BYTES} bytes")

    def _app_presence(self, identifier: str, presence: rpc.Presence) -> None:
        channel = self.state_stream(identifier, PRESENCE_STATE)
        command = {"command": f"presence {presence.kind}", "identifier": identifier}
        if channel is None:
            self.explain(command, "the app's presence answer names no presence stream (istate $p)")
        elif presence.kind == "join":
            self.join_presence(identifier, channel, presence.id, presence.info, command)
        else:
            self._leave_presence(identifier)

    def state_stream(self, identifier: str, key: str) -> str | None:
        state = self.rpc
        if state is None or identifier not in state.subscribed:
            return super().state_stream(identifier, key)
        stream = state.istate.get(identifier, {}).get(key)
        if not stream:
            return None
        channel = self.cable.streams.channel_of(stream)
        return channel if valid_channel(channel) else None

    # --- the end ---------------------------------------------------------------------------

    def _naming(self, channel: str) -> tuple[str, ...]:
        own = super()._naming(channel)
        state = self.rpc
        if state is None:
            return own
        theirs = [i for i, channels in state.streams.items() if channel in channels]
        return tuple(sorted({*own, *theirs})) if theirs else own

    def goodbye(self, ending: Ending) -> tuple[int, str]:
        if ending in QUIET:
            return 1000, ending.detail   # the app's transmissions said it
        if ending in SAID:
            self.send(protocol.disconnect(ending.detail, True))
            return 1000, ending.detail
        return super().goodbye(ending)

    def transport_closed(self) -> None:
        if self.rpc is None:
            super().transport_closed()
        else:
            Session.transport_closed(self)   # the app's sessions are not restored here: it would not know

    def _release(self) -> None:
        state = self.rpc
        client = rpc_client_of(self.host) if state is not None else None
        sent: asyncio.Future[Outcome] | None = None
        if state is not None and client is not None and state.pending is not None:
            held = self.held
            if held is not None and isinstance(held[0], asyncio.Future):
                self.held = None   # settled here, not cancelled blindly by the core
                if not client.caller.withdraw(held[0]):
                    sent = held[0]   # the app acts on it: its answer decides what disconnect says
        super()._release()
        if state is None or client is None or state.told or (sent is None and not state.connected):
            return
        state.told = True
        what = state.pending if sent is not None else None

        def settle(outcome: Outcome | None) -> bytes | None:
            """The disconnect body once the call under way has its answer (None: none owed)."""
            assert state is not None and client is not None
            if outcome is not None and what is not None:
                name, identifier = what
                answer = client.answer(outcome, f"{name} (its connection closed meanwhile)")
                if name == "connect" and answer is not None and answer.status == SUCCESS:
                    state.connected = True   # the app's connect ran: so must its disconnect
                    state.identifiers = answer.identifiers
                    rpc.merge(state.cstate, answer.cstate)
                elif name == "subscribe" and answer is not None and answer.status == SUCCESS:
                    state.subscribed[identifier] = None   # subscribed ran: unsubscribed must too
                    if answer.istate:
                        rpc.merge(state.istate.setdefault(identifier, {}), answer.istate)
                elif name == "unsubscribe":
                    state.subscribed.pop(identifier, None)   # unsubscribed ran (or runs): not twice
            if not state.connected:
                return None
            return rpc.disconnect_body(state.identifiers, list(state.subscribed), state.url, state.headers,
                                       state.cstate or None, state.istate)

        client.last_word(settle, self.sid, sent)


RpcCableSession.handlers = {
    **CableSession.handlers,
    "subscribe": RpcCableSession._subscribe,
    "unsubscribe": RpcCableSession._unsubscribe,
    "message": RpcCableSession._message,
    "history": RpcCableSession._history,
}

