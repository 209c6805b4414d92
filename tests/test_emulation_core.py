"""Emulation and unidirectional sessions in process, on a fake clock: what
the connect result says on each kind of transport, the unidirectional
connect, and the routing of /emulation requests between two nodes (the
control bus stood in for by a loop that delivers each message, as JSON, to
the node it names; tests/test_emulation.py runs it through NSQ)."""
from __future__ import annotations

import asyncio
import json

import pytest
import ujson

from auth import connection_token
from gateway.core import vocabulary
from gateway.protocols.centrifugo import model
from gateway.protocols.centrifugo.json_codec import JSON_UNI
from gateway.protocols.centrifugo.protobuf_codec import PROTOBUF
from gateway.protocols.centrifugo.session import CentrifugoSession
from gateway.nsq.publisher import NsqdUnavailable
from gateway.core.session import CLOSED, CONNECTED
from gateway.core.wire import WireFormat
from gateway.core.limits import KeyedBuckets
from gateway.core.wire import SessionIds
from gateway.protocols.centrifugo.emulation import KEY_KIND, KIND, EmulationSessions, parse
from tests.inprocess import WIRE_JSON, FakeClock, FakeTransport, frame, make_host
from tests.stack import SECRET

WIRE_UNI = WireFormat("test-uni", JSON_UNI, lambda message: message)
WIRE_PB = WireFormat("test-pb", PROTOBUF, lambda message: message)


class EmulatedTransport(FakeTransport):
    emulation = True

    def __init__(self, session_id: str, wire: WireFormat = WIRE_JSON) -> None:
        super().__init__(wire)
        self.session_id = session_id


class UniTransport(FakeTransport):
    unidirectional = True
    pongs = False
    session_id = "uni-session"

    def __init__(self) -> None:
        super().__init__(WIRE_UNI)


def token(host, user="u", **options) -> str:
    return connection_token(SECRET, user, now=host.wall(), **options)


# --- the connect result ----------------------------------------------------------------

def test_the_connect_result_names_session_and_node_on_emulation_session_only_on_unidirectional():
    host = make_host(FakeClock())
    results = {}
    for kind, transport in (("websocket", FakeTransport()), ("emulation", EmulatedTransport("s-1")),
                            ("uni", UniTransport())):
        session = host.accept(CentrifugoSession(host, transport))
        if kind == "uni":
            session.connect_unidirectional({"token": token(host)})
            results[kind] = transport.messages()[0]
        else:
            session.handle_frame(frame({"id": 1, "connect": {"token": token(host)}}))
            results[kind] = transport.messages()[0]
    websocket = results["websocket"]["connect"]
    assert "session" not in websocket and "node" not in websocket and websocket["pong"] is True
    emulation = results["emulation"]["connect"]
    assert emulation["session"] == "s-1" and emulation["node"] == host.name and emulation["pong"] is True
    # A unidirectional client gets a push, not a reply: no id, unwrapped.
    uni = results["uni"]
    assert set(uni) == {"connect"}
    assert uni["connect"]["session"] == "uni-session" and "node" not in uni["connect"]
    assert uni["connect"]["pong"] is False and "#u" in uni["connect"]["subs"]


# --- the unidirectional connect ----------------------------------------------------------

def test_a_unidirectional_connect_is_refused_with_disconnects_and_never_owes_a_pong():
    clock = FakeClock()
    host = make_host(clock, ping_interval=4, pong_timeout=2)
    expired = host.accept(CentrifugoSession(host, UniTransport()))
    expired.connect_unidirectional({"token": connection_token(SECRET, "u", ttl=1, now=clock.wall() - 10)})
    # No reply to carry error 109: 3005, and the client connects with a fresh token.
    assert expired.state is CLOSED and expired.transport.closed == model.DISCONNECT_EXPIRED
    invalid = host.accept(CentrifugoSession(host, UniTransport()))
    invalid.connect_unidirectional({"token": "not-a-jwt"})
    assert invalid.transport.closed == model.DISCONNECT_INVALID_TOKEN
    missing = host.accept(CentrifugoSession(host, UniTransport()))
    missing.connect_unidirectional({})
    assert missing.transport.closed == model.DISCONNECT_BAD_REQUEST

    live = host.accept(CentrifugoSession(host, UniTransport()))
    live.connect_unidirectional({"token": token(host, "live")})
    live.transport.messages()
    for _ in range(12):
        clock.advance(1)
        host.heartbeat.tick()
    assert live.state is CONNECTED
    assert live.transport.sent.count(b"{}") >= 2   # pinged, and never cut for not answering
    live.connect_unidirectional({"token": token(host, "live")})  # a second connect changes nothing
    assert live.state is CONNECTED


def test_a_unidirectional_client_recovers_from_the_positions_it_sends_and_gets_bare_pushes():
    clock = FakeClock()
    host = make_host(clock)
    host.history.continuity_from(clock.ns() - 60 * 10**9)
    first = host.accept(CentrifugoSession(host, UniTransport()))
    first.connect_unidirectional({"token": token(host, "uma", channels=["news"])})
    subs = first.transport.messages()[0]["connect"]["subs"]
    assert set(subs) == {"#uma", "news"}
    position = {"recover": True, "epoch": subs["#uma"]["epoch"], "offset": subs["#uma"]["offset"]}
    first.transport_closed()
    clock.advance(1)
    for n in range(3):
        offset = host.history.add("#uma", clock.ns() + n, b'{"n":%d}' % n, clock.ns())
        host.hub.publish("#uma", b'{"n":%d}' % n, offset)
    clock.advance(2)
    again = host.accept(CentrifugoSession(host, UniTransport()))
    again.connect_unidirectional({"token": token(host, "uma", channels=["news"]), "subs": {"#uma": position}})
    result = again.transport.messages()[0]["connect"]["subs"]["#uma"]
    assert result["recovered"] and result["was_recovering"]
    assert [p["data"] for p in result["publications"]] == [{"n": 0}, {"n": 1}, {"n": 2}]
    offset = host.history.add("#uma", clock.ns(), b'{"n":3}', clock.ns())
    host.hub.publish("#uma", b'{"n":3}', offset)
    assert again.transport.messages() == [{"channel": "#uma", "pub": {"data": {"n": 3}, "offset": offset}}]
    again.close(vocabulary.SHUTDOWN)
    assert again.transport.closed == model.DISCONNECT_SHUTDOWN


# --- routing /emulation requests ----------------------------------------------------------

class Cluster:
    """Two or more nodes' EmulationSessions, and a bus that delivers each
    control message to the node it names, encoded and decoded as NSQ would
    carry it, to the handler of its kind (as gateway/app.py registers them).
    ``silent`` nodes read the control topic but answer nothing (a version
    before emulation keys)."""

    def __init__(self, *names: str, silent: tuple[str, ...] = (), rate: float = 50.0, burst: int = 200) -> None:
        self.clock = FakeClock()
        self.hosts = {name: make_host(self.clock, node_name=name) for name in names}
        self.ids = {name: SessionIds() for name in names}
        self.sessions = {name: EmulationSessions(name, self._sender(name), self._there, ids=self.ids[name],
                                                 limits=KeyedBuckets(rate, burst, clock=self.clock.monotonic),
                                                 clock=self.clock.monotonic, key_wait=0.05)
                         for name in names}
        self.silent = set(silent)
        self.sent: list[dict] = []
        self.down = False

    def _sender(self, origin: str):
        async def send(kind: str, to: str = "", **fields) -> None:
            if self.down:
                raise NsqdUnavailable("nsqd is down")
            message = ujson.loads(ujson.dumps({"kind": kind, "from": origin, "to": to, **fields}))
            self.sent.append(message)
            if to in self.silent:
                return
            handler = {KIND: self.sessions[to].forwarded, KEY_KIND: self.sessions[to].key_received}[kind]
            result = handler(message)
            if result is not None:
                asyncio.ensure_future(result)
        return send

    async def _there(self, node: str) -> bool:
        return node in self.sessions or node in self.silent

    def forwards(self) -> list[dict]:
        """The emulation messages that went on the bus (not the key exchange)."""
        return [m for m in self.sent if m["kind"] == KIND]

    def open(self, name: str, wire: WireFormat = WIRE_JSON, user: str = "u"):
        host = self.hosts[name]
        session_id = self.ids[name].new()
        transport = EmulatedTransport(session_id, wire)
        session = host.accept(CentrifugoSession(host, transport))
        self.sessions[name].add(session_id, session)
        if wire is WIRE_JSON:
            session.handle_frame(frame({"id": 1, "connect": {"token": token(host, user)}}))
        else:
            from tests.test_core import pb_command
            session.handle_frame(pb_command(1, "connect", token=token(host, user)))
        transport.sent.clear()
        return session, transport


def route(cluster: Cluster, via: str, node: str, session_id: str, data) -> tuple[int, str]:
    return asyncio.run(cluster.sessions[via].route(node, session_id, data))


def test_a_request_reaches_its_session_on_its_own_node_or_through_the_bus_from_another():
    cluster = Cluster("a", "b")
    session, transport = cluster.open("a")
    sid = transport.session_id
    subscribe = frame({"id": 2, "subscribe": {"channel": "news"}})
    assert route(cluster, "a", "a", sid, subscribe) == (204, "")
    assert transport.messages()[0]["id"] == 2 and cluster.sent == []
    # On node b: forwarded to a (once b knows a's key, asked for once), answered on a's stream.
    assert route(cluster, "b", "a", sid, frame({"id": 3, "unsubscribe": {"channel": "news"}})) == (204, "")
    assert transport.messages() == [{"id": 3, "unsubscribe": {}}]
    assert [(m["kind"], m["to"]) for m in cluster.sent] == [(KEY_KIND, "a"), (KEY_KIND, "b"), (KIND, "a")]
    assert cluster.forwards()[0]["session"] == sid
    # A pong through b clears the ping a sent.
    session.ping()
    assert session.pong_due
    assert route(cluster, "b", "a", sid, "{}") == (204, "")
    assert not session.pong_due
    assert len([m for m in cluster.sent if m["kind"] == KEY_KIND]) == 2   # the keys were asked for once


def test_unknown_nodes_get_404_gone_sessions_204_and_nothing_reaches_another_session():
    cluster = Cluster("a", "b")
    session, transport = cluster.open("a")
    sid = transport.session_id
    status, reason = route(cluster, "b", "c", sid, "{}")
    assert status == 404 and "connect again" in reason and cluster.sent == []
    # A session id its node issued but does not hold (the stream ended): 204, the
    # client hears it from its stream.
    gone = cluster.ids["a"].new()
    assert route(cluster, "b", "a", gone, frame({"id": 2, "subscribe": {"channel": "news"}})) == (204, "")
    assert route(cluster, "a", "a", gone, "{}") == (204, "")
    assert transport.sent == [] and session.channels == {"#u"}
    # Closed: removed, and requests for it reach nothing.
    cluster.sessions["a"].remove(sid)
    session.transport_closed()
    assert len(cluster.sessions["a"]) == 0
    assert route(cluster, "b", "a", sid, frame({"id": 3, "subscribe": {"channel": "news"}})) == (204, "")
    assert transport.sent == []


def test_a_forwarded_request_delivered_twice_is_handled_once():
    cluster = Cluster("a", "b")
    session, transport = cluster.open("a")
    route(cluster, "b", "a", transport.session_id, frame({"id": 2, "subscribe": {"channel": "news"}}))
    assert len(transport.messages()) == 1
    cluster.sessions["a"].forwarded(dict(cluster.sent[-1]))  # NSQ redelivers the same message
    assert transport.messages() == []
    assert session.channels == {"#u", "news"}


def test_encodings_must_match_and_nsqd_down_is_503():
    cluster = Cluster("a", "b")
    json_session, json_transport = cluster.open("a")
    pb_session, pb_transport = cluster.open("a", WIRE_PB)
    status, reason = route(cluster, "a", "a", pb_transport.session_id, "{}")
    assert status == 400 and "protobuf" in reason
    status, reason = route(cluster, "a", "a", json_transport.session_id, b"\x00")
    assert status == 400 and "json" in reason
    # Protobuf commands cross the bus as base64 and arrive as the same bytes.
    pb_session.ping()
    assert route(cluster, "b", "a", pb_transport.session_id, b"\x00") == (204, "")
    assert not pb_session.pong_due and "b64" in cluster.sent[-1]
    cluster.down = True
    status, reason = route(cluster, "b", "a", json_transport.session_id, "{}")
    assert status == 503 and "nsqd" in reason
    assert json_session.state is CONNECTED and pb_session.state is CONNECTED


def test_while_nsqd_is_away_each_request_is_503_and_the_log_says_so_every_ten_seconds(caplog):
    cluster = Cluster("a", "b")
    session, transport = cluster.open("a")
    assert route(cluster, "b", "a", transport.session_id, "{}") == (204, "")
    cluster.down = True
    for _ in range(100):
        assert route(cluster, "b", "a", transport.session_id, "{}") == (503, "nsqd unreachable: cannot forward "
                                                                                 "to the session's node")
    cluster.clock.advance(10)
    assert route(cluster, "b", "a", transport.session_id, "{}")[0] == 503
    warnings = [r.getMessage() for r in caplog.records if "not forwarded" in r.getMessage()]
    assert len(warnings) == 2 and "(99 more since the last warning)" in warnings[1], warnings


# --- what a forward may cost the cluster (the control topic reaches every node) ----------------

def test_a_session_id_its_node_never_issued_is_404_and_never_reaches_the_control_topic():
    cluster = Cluster("a", "b")
    session, transport = cluster.open("a")
    forged = [SessionIds().new(), "A" * 32, transport.session_id[:-1] + ("A" if transport.session_id[-1] != "A" else "B")]
    # What one anonymous client sent in the issue: request after request of 60 KB.
    for n in range(300):
        status, reason = route(cluster, "b", "a", forged[n % 3], "{}" + " " * 60_000)
        assert status == 404 and "no such session" in reason
    status, reason = route(cluster, "a", "a", forged[0], "{}")     # on its own node too
    assert status == 404
    assert cluster.forwards() == [] and transport.sent == []
    # b asked a for its key once, and again at most once a second, not once per request.
    asks = [m for m in cluster.sent if m["kind"] == KEY_KIND and m["to"] == "a"]
    assert len(asks) == 1
    cluster.clock.advance(1.5)
    route(cluster, "b", "a", forged[0], "{}")
    route(cluster, "b", "a", forged[1], "{}")
    assert len([m for m in cluster.sent if m["kind"] == KEY_KIND and m["to"] == "a"]) == 2


def test_a_session_forwards_at_most_its_command_rate_through_a_node_each_kib_a_command():
    cluster = Cluster("a", "b", rate=50, burst=200)
    session, transport = cluster.open("a")
    sid = transport.session_id
    results = [route(cluster, "b", "a", sid, "{}")[0] for _ in range(201)]
    assert results == [204] * 200 + [429]    # a pong each: the session's own burst, then no more
    cluster.clock.advance(1)
    assert [route(cluster, "b", "a", sid, "{}")[0] for _ in range(51)] == [204] * 50 + [429]
    # Bytes count too: 60 KB of commands is 60 commands' worth.
    other, other_transport = cluster.open("a")
    big = frame({"id": 2, "rpc": {"method": "m", "data": {"pad": "x" * 60_000}}})
    statuses = [route(cluster, "b", "a", other_transport.session_id, big)[0] for _ in range(5)]
    assert statuses == [204, 204, 204, 429, 429]
    # Sessions are limited apart: a third one is served.
    third, third_transport = cluster.open("a")
    assert route(cluster, "b", "a", third_transport.session_id, "{}") == (204, "")
    sizes = [len(ujson.dumps(m)) for m in cluster.forwards()]
    assert max(sizes) < 2 * 65536


def test_a_node_started_again_under_its_name_is_asked_its_new_key():
    cluster = Cluster("a", "b")
    old_session, old_transport = cluster.open("a")
    assert route(cluster, "b", "a", old_transport.session_id, "{}") == (204, "")
    # a restarts: a new key, new sessions; b still holds the old key.
    cluster.ids["a"] = cluster.sessions["a"].ids = SessionIds()
    cluster.clock.advance(1.5)
    session, transport = cluster.open("a")
    session.ping()
    assert route(cluster, "b", "a", transport.session_id, "{}") == (204, "")
    assert not session.pong_due
    assert route(cluster, "b", "a", old_transport.session_id, "{}")[0] == 404   # the old one's stream is gone


def test_a_node_that_never_says_its_key_is_503_and_logged_once(caplog):
    cluster = Cluster("b", silent=("old",))
    sid = SessionIds().new()
    statuses = [route(cluster, "b", "old", sid, "{}")[0] for _ in range(5)]
    assert statuses == [503] * 5 and cluster.forwards() == []
    assert len([r for r in caplog.records if "did not say" in r.getMessage()]) == 1


@pytest.mark.parametrize("body, problem", [
    (b"{", "not JSON"),
    (b"[]", "not a JSON object"),
    (json.dumps({"session": "s", "node": "n", "data": {"id": 1}}).encode(), "JSON string"),
    (json.dumps({"session": "s", "data": "{}"}).encode(), "node"),
    (json.dumps({"node": "n", "data": "{}"}).encode(), "session"),
    (json.dumps({"session": "s" * 300, "node": "n", "data": "{}"}).encode(), "session"),
])
def test_malformed_emulation_requests_say_what_is_wrong(body, problem):
    with pytest.raises(ValueError) as error:
        parse(body, "application/json")
    assert problem in str(error.value)


def test_a_protobuf_emulation_request_is_parsed():
    from gateway.protocols.centrifugo.schema import CLASSES
    raw = CLASSES["EmulationRequest"](node="a", session="s", data=b"\x00").SerializeToString()
    assert parse(raw, "application/octet-stream") == ("a", "s", b"\x00")
    with pytest.raises(ValueError):
        parse(b"\xff\xff", "application/octet-stream")


# --- fan-out and lifetime on the stream transports ---------------------------------------------

def test_subscribers_of_one_stream_kind_share_one_frame_per_publication():
    from gateway.protocols.centrifugo.endpoints import HTTP_STREAM_JSON, SSE_JSON, UNI_HTTP_STREAM, UNI_SSE
    host = make_host(FakeClock())
    transports = {}
    for wire in (SSE_JSON, SSE_JSON, UNI_SSE, UNI_SSE, HTTP_STREAM_JSON, UNI_HTTP_STREAM):
        transport = UniTransport() if wire.codec.unidirectional else EmulatedTransport("s")
        transport.wire = wire
        session = host.accept(CentrifugoSession(host, transport))
        if wire.codec.unidirectional:
            session.connect_unidirectional({"token": token(host, "fan", channels=["news"])})
        else:
            session.handle_frame(frame({"id": 1, "connect": {"token": token(host, "fan", channels=["news"])}}))
        transport.sent.clear()
        transports.setdefault(wire, []).append(transport)
    assert host.hub.publish("news", b'{"n":1}', 7) == 6
    sse, uni_sse = transports[SSE_JSON], transports[UNI_SSE]
    assert sse[0].sent[0] is sse[1].sent[0] and uni_sse[0].sent[0] is uni_sse[1].sent[0]
    assert sse[0].sent == [b'data: {"push":{"channel":"news","pub":{"data":{"n":1},"offset":7}}}\n\n']
    assert uni_sse[0].sent == [b'data: {"channel":"news","pub":{"data":{"n":1},"offset":7}}\n\n']
    assert transports[HTTP_STREAM_JSON][0].sent == [b'{"push":{"channel":"news","pub":{"data":{"n":1},"offset":7}}}\n']
    assert transports[UNI_HTTP_STREAM][0].sent == [b'{"channel":"news","pub":{"data":{"n":1},"offset":7}}\n']


def test_a_unidirectional_connection_whose_token_expires_is_closed_with_3005():
    clock = FakeClock()
    host = make_host(clock, expired_close_delay=1.0)
    session = host.accept(CentrifugoSession(host, UniTransport()))
    session.connect_unidirectional({"token": token(host, "exp", ttl=2)})
    connect = session.transport.messages()[0]["connect"]
    assert connect["expires"] is True and connect["ttl"] == 2
    clock.advance(2.5)
    host.expiry.check(clock.wall())
    assert session.state is CONNECTED
    clock.advance(1)
    host.expiry.check(clock.wall())
    assert session.transport.closed == model.DISCONNECT_EXPIRED


def test_a_stream_notices_its_client_leave_and_leaves_nothing_behind():
    import socket
    from types import SimpleNamespace

    from gateway.protocols import ENDPOINTS
    from gateway.protocols.centrifugo.endpoints import choose_http_stream
    from gateway.transports.endpoint import Request
    from gateway.transports.http import HttpStream
    from gateway.transports.stream import Closing, WriteBatcher

    async def scenario():
        host = make_host(FakeClock())
        loop = asyncio.get_running_loop()
        transports = SimpleNamespace(session_host=host, max_queue_bytes=host.settings.max_queue_bytes,
                                     batcher=WriteBatcher(lambda: 0.0), closing=Closing(),
                                     watch=loop.add_reader, unwatch=loop.remove_reader,
                                     emulation_session_id=SessionIds().new)
        sessions = EmulationSessions("unit", None, None, sessions=host.by_id)
        endpoint = next(e for e in ENDPOINTS if e.path == "/connection/http_stream")
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        body = frame({"id": 1, "connect": {"token": token(host)}}).encode()
        request = Request("POST", endpoint.path, {}, {}, body)
        transport = HttpStream(transports, endpoint, ours, choose_http_stream(request), request, None)
        session = transport.session
        assert session.state is CONNECTED and len(sessions) == 1
        await asyncio.sleep(0.01)   # the batcher writes the head and the connect reply
        theirs.settimeout(1)
        assert theirs.recv(4096).startswith(b'HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n')
        theirs.close()
        for _ in range(100):
            if session.state is CLOSED:
                break
            await asyncio.sleep(0.01)
        assert session.state is CLOSED and len(host.sessions) == 0 and len(sessions) == 0

    asyncio.run(scenario())
