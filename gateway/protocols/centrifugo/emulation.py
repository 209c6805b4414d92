"""``POST /emulation``: the commands of an emulation client (http_stream, sse)
after its connect, on any node, with no sticky sessions.

centrifuge-js sends each later command (subscribe, unsubscribe, pong,
refresh, ...) as ``{"session": ..., "node": ..., "data": "<commands>"}``
(``data`` a JSON string holding newline-joined commands; a Protobuf
``EmulationRequest`` with ``Content-Type: application/octet-stream``). The
replies go out on the client's stream, never in this response
(centrifugo-protocol.md §9.4).

Routing, by the ``node`` the connect result named:

* **This node**: the session is looked up in :class:`EmulationSessions`
  (session id → session, one entry per open emulation stream, removed when
  the stream closes) and handed the commands; answer 204. A session that is
  gone (its stream ended or is ending) is answered 204 too, as Centrifugo
  does: the client learns it from its stream.
* **Another node**: forwarded on the control bus (gateway/cluster/bus.py) as an
  ``emulation`` message addressed to that node, which hands the commands to
  its session the same way; answer 204 once nsqd has taken the message. The
  replies come on the stream, from the owner, after one trip through NSQ
  (docs/benchmarks.md measures it).
* **A node that is not there**: 404, which makes centrifuge-js close the
  transport and connect again, to a node that is up. A node is there while
  it reads the control topic: nsqd lists its ephemeral channel
  (``<node>#ephemeral``) with a consumer (:class:`ControlReaders`). A node
  that stops or dies loses its channel at once, and its clients have lost
  their streams anyway: they reconnect and recover what they missed.
* nsqd unreachable: 503 (forwarding is impossible; centrifuge-js closes the
  transport and reconnects, through a load balancer that sees the node's
  ``/health`` at 503 too).

**Bounded before forwarding.** The request needs no authentication, and a
forwarded one reaches every node's reader, so before anything is published:

* the body is at most 64 KiB (413), and well formed (400 with the reason):
  printable ``node`` and ``session``, and ``data`` that is text (no lone
  surrogate) with no raw control character (JSON has none; each would grow
  sixfold when re-escaped), so a forward is at most twice its request;
* the node is there (above) and the session id is one that node issued: an
  id carries a tag made with its node's key (:class:`SessionIds`), and each
  node asks the others for their keys over the control topic
  (``emulation-key``, once, again at most once a second when an id does not
  check out, e.g. after the node started again under its name; a node that
  does not answer within :data:`KEY_WAIT` is answered 503). An id no node
  of this cluster issued: 404, and nothing is published; a client cannot
  forward without a stream of its own, opened through admission with a
  valid token;
* the session has not forwarded more than the connection command rate
  through this node (``--client-command-rate``, ``--client-command-burst``),
  each KiB of commands counting as one: 429 with ``Retry-After: 1``
  (centrifuge-js fails that one command);
* the other nodes do not parse it: the bus drops a message addressed to
  another node by its first bytes (gateway/cluster/bus.py).

Malformed requests get 400 with the reason; bodies over 64 KiB get 413
(centrifuge-js then fails that one command only). Browser origins are
checked as for the streams (``--allowed-origins``), with CORS headers for
allowed ones.

Delivery through NSQ is at least once and unordered. Each forwarded message
carries a random id and the owner drops a repeat (:class:`RecentIds`); the
order of commands sent through different nodes is not guaranteed, and need
not be: centrifuge-js waits for a reply before every command whose order
matters (an unsubscribe waits for its subscribe's reply). Commands arriving
on one node are handed to the session in arrival order.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import secrets
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import ujson
from prometheus_client import CollectorRegistry, Counter
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from gateway.core.limits import KeyedBuckets
from gateway.core.vocabulary import ProtocolError
from gateway.core.wire import SessionIds, issued_under
from gateway.protocols.centrifugo.protobuf_codec import emulation_request
from gateway.config import ephemeral_channel
from gateway.nsq.dedupe import RecentIds
from gateway.nsq.publisher import NsqdUnavailable, PublishError
from gateway.protocols.centrifugo.endpoints import PROTOBUF_TYPE
from gateway.transports.http import StreamEndpoint

if TYPE_CHECKING:
    from gateway.core.session import Session
    from gateway.transports.host import TransportHost

log = logging.getLogger("pushgate.emulation")

KIND = "emulation"           # the control-bus message kind
MAX_ID = 256                 # characters of a session id or node name worth looking up
READERS_FRESH = 1.0          # seconds what nsqd said of a node is taken as it is
READERS_TTL = 10.0           # seconds it is still taken while nsqd is asked again
READERS_MIN_REFRESH = 0.5    # seconds between two /stats requests for unknown nodes
DEDUPE_WINDOW = 4096         # forwarded message ids remembered
KEY_KIND = "emulation-key"   # the control-bus message kind of a node's key
KEY_WAIT = 1.0               # seconds a forward waits for a node to tell its key
KEY_ASK_EVERY = 1.0          # seconds between two asks of one node for its key
MAX_NODES = 1024             # other nodes whose keys (and asks) are remembered
SILENT_LOG_EVERY = 60.0      # seconds between two warnings about one silent node
UNFORWARDED_LOG_EVERY = 10.0  # seconds between two warnings that nsqd is unreachable
COST_BYTES = 1024            # bytes of forwarded commands that count as one command
NO_SESSION = "no such session on that node (it may have started again): connect again"
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,%d}" % MAX_ID)   # base64url, as SessionIds.new() makes them
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")   # control characters but tab, newline, return


class ControlReaders:
    """Which nodes read the control topic now, as nsqd says: the ephemeral
    channels of ``topic`` on the local nsqd (``--nsqd-http-address``, where
    this node publishes) that have a consumer. That is exactly "a message
    published here reaches that node".

    What nsqd said of a node is taken as it is for :data:`READERS_FRESH`
    seconds; until :data:`READERS_TTL` it is still taken, while nsqd is asked
    again in the background, so a node gone is known about a second after
    requests for it resume, and no request waits for nsqd on a busy path. An
    unknown name waits for an answer from nsqd. Asks are at least
    :data:`READERS_MIN_REFRESH` seconds apart (a later one waits its turn) and
    concurrent ones share one request. Raises NsqdUnavailable when nsqd
    cannot be asked.
    """

    def __init__(self, nsqd_http_address: str, topic: str, clock: Callable[[], float] = time.monotonic):
        self._url = f"{nsqd_http_address}/stats?" + urllib.parse.urlencode(
            {"format": "json", "topic": topic, "include_clients": "false"})
        self._topic = topic
        self._clock = clock
        self._seen: dict[str, float] = {}   # channel -> when nsqd last listed it
        self._last_ask = -READERS_MIN_REFRESH
        self._asking: asyncio.Future | None = None

    async def there(self, node: str) -> bool:
        channel = ephemeral_channel(node)
        seen = self._seen.get(channel)
        age = self._clock() - seen if seen is not None else None
        if age is not None and age < READERS_TTL:
            if age >= READERS_FRESH and self._asking is None:
                self._ask_soon()  # answered from what nsqd said a moment ago; checked again meanwhile
            return True
        asking = self._asking
        if asking is None:
            asking = self._ask_soon()
        await asyncio.shield(asking)
        seen = self._seen.get(channel)
        return seen is not None and self._clock() - seen < READERS_TTL

    def _ask_soon(self) -> asyncio.Future:
        asking = self._asking = asyncio.ensure_future(self._ask())
        asking.add_done_callback(self._asked)
        return asking

    def _asked(self, asking: asyncio.Future) -> None:
        self._asking = None
        if not asking.cancelled():
            asking.exception()  # each waiter has it raised; none is left unretrieved

    async def _ask(self) -> None:
        wait = self._last_ask + READERS_MIN_REFRESH - self._clock()
        if wait > 0:  # a flood of unknown names costs nsqd one request per interval
            await asyncio.sleep(wait)
        self._last_ask = self._clock()
        try:
            response = await AsyncHTTPClient().fetch(self._url, request_timeout=2, connect_timeout=1)
            stats = ujson.loads(response.body)
        except (HTTPClientError, OSError, ValueError) as exc:
            raise NsqdUnavailable(f"nsqd /stats: {exc}") from None
        now = self._clock()
        seen = {}
        for topic in stats.get("topics") or ():
            if topic.get("topic_name") != self._topic:
                continue
            for channel in topic.get("channels") or ():
                if int(channel.get("client_count", 0)) > 0:
                    seen[channel.get("channel_name")] = now
        self._seen = seen


class EmulationSessions:
    """The emulation sessions of this node by session id, and the routing of
    ``/emulation`` requests (see the module doc).

    ``send(kind, to=node, **fields)`` publishes a control message (the
    node's ControlBus.send); ``there(node)`` tells whether a node reads the
    control topic (:meth:`ControlReaders.there`). Both are passed in, so
    that the routing can be tested in process.
    """

    def __init__(self, node_name: str, send: Callable[..., Awaitable[None]],
                 there: Callable[[str], Awaitable[bool]], registry: CollectorRegistry | None = None,
                 sessions: dict[str, Session] | None = None, ids: SessionIds | None = None,
                 limits: KeyedBuckets | None = None, clock: Callable[[], float] = time.monotonic,
                 key_wait: float = KEY_WAIT) -> None:
        self.node_name = node_name
        self._send = send
        self._there = there
        # The session host's registry of emulation sessions (SessionHost.by_id),
        # which adds and removes them as they open and close.
        self._sessions: dict[str, Session] = sessions if sessions is not None else {}
        self._recent = RecentIds(DEDUPE_WINDOW)
        # This node's session ids, and the keys of the other nodes', to check an
        # id before forwarding to it (gateway.core.wire.SessionIds).
        self.ids = ids if ids is not None else SessionIds()
        self._keys: dict[str, bytes] = {}                   # node -> its key, as it told it
        self._asked: dict[str, float] = {}                  # node -> when it was last asked for it
        self._waiting: dict[str, asyncio.Future[bytes]] = {}   # node -> its answer, while it is awaited
        self._silent: dict[str, float] = {}                 # node -> when its silence was last logged
        # What one session may have forwarded through this node: its commands,
        # each KiB counting as one, at the connection's command rate.
        self._limits = limits if limits is not None else KeyedBuckets(50.0, 200)
        self._clock = clock
        self._key_wait = key_wait
        self._unforwarded_at = -UNFORWARDED_LOG_EVERY   # when nsqd's absence was last logged
        self._unforwarded_count = 0
        self.requests = Counter("pushgate_emulation_requests", "/emulation requests and forwarded commands, "
                                "by what became of them.", ["result"],
                                registry=registry) if registry is not None else None

    # --- the registry ----------------------------------------------------------------

    def add(self, session_id: str, session: Session) -> None:
        self._sessions[session_id] = session

    def remove(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def count(self, result: str) -> None:
        if self.requests is not None:
            self.requests.labels(result).inc()

    # --- routing -----------------------------------------------------------------------

    async def route(self, node: str, session_id: str, data: str | bytes) -> tuple[int, str]:
        """Hand ``data`` (commands) to ``session_id`` on ``node``, here or
        through the control bus. Returns the HTTP status and, for an error,
        the reason."""
        if node == self.node_name:
            if not self.ids.issued(session_id):
                self.count("unverified")
                return 404, NO_SESSION
            self.count("local")
            return self.deliver(session_id, data)
        # Before anything goes on the control topic, which every node reads: the
        # node is there, the session id is one it issued, and the session has
        # not forwarded more than its rate through this node.
        try:
            if not await self._there(node):
                self.count("unknown_node")
                return 404, "no such node (it may have stopped): connect again"
            key = await self._key(node)
            if key is None or not issued_under(key, session_id):
                key = await self._key(node, again=True)   # it may have started again under its name
        except (NsqdUnavailable, PublishError) as exc:
            self.count("failed")
            self._unforwarded(node, exc)
            return 503, "nsqd unreachable: cannot forward to the session's node"
        if key is None:
            self.count("failed")
            return 503, "the session's node does not answer: connect again"
        if not issued_under(key, session_id):
            self.count("unverified")
            return 404, NO_SESSION
        if not self._limits.take(session_id, self._cost(data)):
            self.count("limited")
            return 429, "too many commands for this session: slow down"
        fields = {"session": session_id, "fid": secrets.token_hex(8)}
        if isinstance(data, str):
            fields["data"] = data
        else:
            fields["b64"] = base64.b64encode(data).decode()
        try:
            await self._send(KIND, to=node, **fields)
        except (NsqdUnavailable, PublishError) as exc:
            self.count("failed")
            self._unforwarded(node, exc)
            return 503, "nsqd unreachable: cannot forward to the session's node"
        self.count("forwarded")
        return 204, ""

    def _cost(self, data: str | bytes) -> float:
        """What forwarding ``data`` takes from its session's bucket: a command
        each (as the session counts them), or a KiB each if that is more, so a
        session forwards at most about a KiB per command it may send."""
        commands = data.count("\n") + 1 if isinstance(data, str) else 1
        return min(self._limits.burst, max(commands, len(data) / COST_BYTES))

    # --- the other nodes' keys -------------------------------------------------------

    async def _key(self, node: str, again: bool = False) -> bytes | None:
        """``node``'s key: as it told it, or asked for now (``again``: even if it
        told one), waiting ``key_wait`` (:data:`KEY_WAIT`) seconds at most for the answer. A
        node is asked at most once every :data:`KEY_ASK_EVERY` seconds, and
        concurrent requests share the answer. None when it never answered.
        Raises NsqdUnavailable or PublishError when it cannot be asked."""
        key = self._keys.get(node)
        if key is not None and not again:
            return key
        waiting = self._waiting.get(node)
        if waiting is None:
            asked = self._asked.get(node)
            if asked is not None and self._clock() - asked < KEY_ASK_EVERY:
                return key   # asked a moment ago: what it said then is the answer
            if len(self._asked) >= MAX_NODES:
                self._asked.clear()
            self._asked[node] = self._clock()
            waiting = self._waiting[node] = asyncio.get_running_loop().create_future()
            try:
                await self._send(KEY_KIND, to=node, key=self.ids.key.hex(), ask=True)
            except BaseException:
                self._waiting.pop(node, None)
                raise
        try:
            return await asyncio.wait_for(asyncio.shield(waiting), self._key_wait)
        except asyncio.TimeoutError:
            if self._waiting.get(node) is waiting:
                self._waiting.pop(node, None)
                self._log_silent(node)
            return self._keys.get(node)

    def key_received(self, message: dict) -> Awaitable[None] | None:
        """A control message of kind ``emulation-key``: a node's key, and
        whether it asks for this node's."""
        sender, key = message.get("from"), message.get("key")
        if not isinstance(sender, str) or not isinstance(key, str) or len(key) != 64:
            return None
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            return None
        if sender not in self._keys and len(self._keys) >= MAX_NODES:
            self._keys.clear()
        self._keys[sender] = raw
        waiting = self._waiting.pop(sender, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(raw)
        if message.get("ask") is True:
            return self._tell_key(sender)
        return None

    async def _tell_key(self, node: str) -> None:
        try:
            await self._send(KEY_KIND, to=node, key=self.ids.key.hex(), ask=False)
        except (NsqdUnavailable, PublishError) as exc:
            log.warning("could not tell node %s this node's emulation key: %s", node[:100], exc)

    def _unforwarded(self, node: str, exc: Exception) -> None:
        """nsqd could not be reached: a warning, then at most one a
        :data:`UNFORWARDED_LOG_EVERY` seconds with how many more there were
        (every request fails alike while nsqd is away)."""
        self._unforwarded_count += 1
        now = self._clock()
        if now - self._unforwarded_at < UNFORWARDED_LOG_EVERY:
            return
        more = self._unforwarded_count - 1
        self._unforwarded_at, self._unforwarded_count = now, 0
        log.warning("emulation request for node %s not forwarded: %s%s", node[:100], exc,
                    f" ({more} more since the last warning)" if more else "")

    def _log_silent(self, node: str) -> None:
        now = self._clock()
        if now - self._silent.get(node, -SILENT_LOG_EVERY) < SILENT_LOG_EVERY:
            return
        if len(self._silent) >= MAX_NODES:
            self._silent.clear()
        self._silent[node] = now
        log.warning("node %s reads the control topic but did not say within %.0f s which session ids it issued "
                    "(busy, or a version before emulation keys): its /emulation requests are answered 503",
                    node[:100], self._key_wait)

    def deliver(self, session_id: str, data: str | bytes) -> tuple[int, str]:
        """Hand ``data`` to a session of this node."""
        session = self._sessions.get(session_id)
        if session is None:
            # Gone (its stream ended, or is ending with a disconnect push): the
            # client hears it from its stream, as with Centrifugo.
            self.count("unknown_session")
            return 204, ""
        if isinstance(data, bytes) != session.wire.codec.binary:
            self.count("bad")
            return 400, f"this session speaks {'protobuf' if session.wire.codec.binary else 'json'}: send its encoding"
        if data:
            session.handle_frame(data)
        return 204, ""

    def forwarded(self, message: dict) -> None:
        """A control message of kind ``emulation`` for this node."""
        session_id = message.get("session")
        fid = message.get("fid")
        if not isinstance(session_id, str):
            self.count("bad")
            return
        if isinstance(fid, str) and self._recent.seen(fid):
            self.count("duplicate")
            return
        data = message.get("data")
        if data is None and isinstance(message.get("b64"), str):
            try:
                data = base64.b64decode(message["b64"], validate=True)
            except (binascii.Error, ValueError):
                data = None
        if not isinstance(data, (str, bytes)):
            self.count("bad")
            return
        self.count("received")
        status, reason = self.deliver(session_id, data)
        if status != 204:
            log.warning("forwarded emulation request from %s refused: %s", str(message.get("from"))[:100], reason)


def parse(body: bytes, content_type: str) -> tuple[str, str, str | bytes]:
    """``(node, session, data)`` of an emulation request; raises ValueError
    with what is wrong."""
    if content_type == PROTOBUF_TYPE:
        try:
            request = emulation_request(body)
        except ProtocolError as exc:
            raise ValueError(exc.detail) from None
        data: str | bytes = request.get("data", b"")
    else:
        try:
            request = ujson.loads(body)
        except (ValueError, OverflowError):
            raise ValueError("the body is not JSON") from None
        if type(request) is not dict:
            raise ValueError("the body is not a JSON object")
        data = request.get("data", "")
        if not isinstance(data, str):
            raise ValueError("data must be a JSON string holding the commands")
        if _CONTROL.search(data):
            # JSON has none: a browser's JSON.stringify escapes them. Forwarded,
            # each would grow sixfold (\u0001) on the control topic.
            raise ValueError("data: commands are JSON, which holds no raw control characters")
        try:
            data.encode()
        except UnicodeEncodeError:
            raise ValueError("data: a lone surrogate (\\ud800-\\udfff) is not text") from None
    node, session = request.get("node"), request.get("session")
    if not isinstance(node, str) or not node or len(node) > MAX_ID or not node.isprintable():
        raise ValueError("node: the node of the connect result is required")
    if not isinstance(session, str) or not SESSION_ID.fullmatch(session):
        raise ValueError("session: the session of the connect result is required")
    return node, session, data


class EmulationEndpoint(StreamEndpoint):
    """``POST /emulation`` (and its CORS preflight)."""

    admit = False  # requests of connections already admitted

    def initialize(self, host: TransportHost, **kwargs: Any) -> None:
        super().initialize(host)
        self.sessions: EmulationSessions = kwargs["sessions"]

    async def post(self) -> None:
        if self._finished:
            return
        sessions = self.sessions
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            node, session_id, data = parse(self.body, content_type)
        except ValueError as exc:
            sessions.count("bad")
            self.refuse(400, str(exc))
            return
        status, reason = await sessions.route(node, session_id, data)
        if status == 429:
            self.set_header("Retry-After", "1")
        if status == 204:
            self.set_status(204)
            self.finish()
        else:
            self.set_status(status)
            self.set_header("Content-Type", "application/json")
            self.finish({"error": reason})
