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

Malformed requests get 400 with the reason; bodies over 64 KiB get 413
(centrifuge-js then fails that one command only). Browser origins are
checked as for the streams (``--allowed-origins``), with CORS headers for
allowed ones.

Delivery through NSQ is at least once and unordered. Each forwarded message
carries a random id and the owner drops a repeat (:class:`RecentIds`); the
order of commands sent through different nodes is not guaranteed, and need
not be: centrifuge-js waits for a reply before every command whose order
matters (an unsubscribe waits for its subscribe's reply). Commands arriving
on one node are handed to the session in arrival order. Every forwarded
request reaches every node's reader, which drops it unless it is addressed
to it: a JSON parse per node per forwarded request.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import ujson
from prometheus_client import CollectorRegistry, Counter
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from gateway.core.vocabulary import ProtocolError
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
                 sessions: dict[str, Session] | None = None) -> None:
        self.node_name = node_name
        self._send = send
        self._there = there
        # The session host's registry of emulation sessions (SessionHost.by_id),
        # which adds and removes them as they open and close.
        self._sessions: dict[str, Session] = sessions if sessions is not None else {}
        self._recent = RecentIds(DEDUPE_WINDOW)
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
            self.count("local")
            return self.deliver(session_id, data)
        try:
            there = await self._there(node)
        except NsqdUnavailable as exc:
            self.count("failed")
            log.warning("emulation request for node %s not forwarded: %s", node[:100], exc)
            return 503, "nsqd unreachable: cannot forward to the session's node"
        if not there:
            self.count("unknown_node")
            return 404, "no such node (it may have stopped): connect again"
        fields = {"session": session_id, "fid": secrets.token_hex(8)}
        if isinstance(data, str):
            fields["data"] = data
        else:
            fields["b64"] = base64.b64encode(data).decode()
        try:
            await self._send(KIND, to=node, **fields)
        except (NsqdUnavailable, PublishError) as exc:
            self.count("failed")
            log.warning("emulation request for node %s not forwarded: %s", node[:100], exc)
            return 503, "nsqd unreachable: cannot forward to the session's node"
        self.count("forwarded")
        return 204, ""

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
    node, session = request.get("node"), request.get("session")
    if not isinstance(node, str) or not node or len(node) > MAX_ID:
        raise ValueError("node: the node of the connect result is required")
    if not isinstance(session, str) or not session or len(session) > MAX_ID:
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
        if status == 204:
            self.set_status(204)
            self.finish()
        else:
            self.set_status(status)
            self.set_header("Content-Type", "application/json")
            self.finish({"error": reason})
