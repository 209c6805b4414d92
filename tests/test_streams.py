"""The streaming HTTP transports over real sockets: the unidirectional ones
read as a client with no SDK would (curl -N, an EventSource, a bare
WebSocket), SSE emulation by hand, and what the endpoints answer to
browsers, proxies, bad requests, limits and the end of a node."""
from __future__ import annotations

import asyncio
import json
import signal
import socket
import urllib.parse
import urllib.request

import pytest
import websockets

from auth import connection_token
from tests.helpers import run, wait_for, wait_for_time, wait_until, wait_until_time
from tests.httpstream import HttpStreamClient
from tests.stack import SECRET, Reading, http

FAST = ("--public-channels=news", "--ping-interval=2", "--pong-timeout=1", "--history-margin=0.2")


def token(user: str, **options) -> str:
    return connection_token(SECRET, user, **options)


async def uni_http_stream(port: int, request: dict) -> HttpStreamClient:
    return await HttpStreamClient.open(port, "POST", "/connection/uni_http_stream", request)


async def uni_sse(port: int, request: dict, **headers) -> HttpStreamClient:
    return await HttpStreamClient.open(port, "GET", "/connection/uni_sse", headers=headers,
                                       query={"cf_connect": json.dumps(request)})


async def skip_pings(read):
    while (message := await read()) == {}:
        pass
    return message


# --- unidirectional: no SDK needed ---------------------------------------------------------

@pytest.mark.parametrize("kind", ["uni_http_stream", "uni_sse"])
def test_a_client_with_no_sdk_receives_is_pinged_and_recovers_from_its_positions(start_gateway, nsqd, kind):
    gateway = start_gateway(*FAST)
    wait_until_time(gateway.recovers_from())  # it vouches for the client's first position

    async def open_stream(request):
        if kind == "uni_http_stream":
            client = await uni_http_stream(gateway.port, request)
            return client, client.line
        client = await uni_sse(gateway.port, request)
        assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
        return client, client.event

    async def scenario():
        client, read = await open_stream({"token": token("ula", channels=["news"])})
        assert client.status == 200 and client.headers["x-accel-buffering"] == "no"
        connect = (await read())["connect"]
        assert connect["pong"] is False and connect["ping"] == 2 and connect["session"]
        assert set(connect["subs"]) == {"#ula", "news"}
        epoch = connect["subs"]["#ula"]["epoch"]
        nsqd.publish({"user": "ula", "data": {"n": 0}})
        pub = await skip_pings(read)
        assert pub["channel"] == "#ula" and pub["pub"]["data"] == {"n": 0}
        offset = pub["pub"]["offset"]
        # Pings every 2 s, no pong expected: the stream lives on.
        assert await read(timeout=3) == {}
        await asyncio.sleep(3)  # the thing under test: longer than a ping and its pong timeout, no pong
        nsqd.publish({"channel": "news", "data": {"n": "still here"}})
        assert (await skip_pings(read))["pub"]["data"] == {"n": "still here"}
        await wait_for_time(gateway.margin_passed())  # the position is older than the node's --history-margin
        client.close()

        read = Reading(gateway)
        for n in range(1, 4):
            nsqd.publish({"user": "ula", "data": {"n": n}})
        await wait_for(lambda: read.caught_up(3), what="the node to read 1, 2 and 3")
        client, read = await open_stream({"token": token("ula", channels=["news"]),
                                          "subs": {"#ula": {"recover": True, "epoch": epoch, "offset": offset}}})
        sub = (await read())["connect"]["subs"]["#ula"]
        assert sub["recovered"] and sub["was_recovering"], (sub, epoch, offset)
        assert [p["data"] for p in sub["publications"]] == [{"n": 1}, {"n": 2}, {"n": 3}]
        nsqd.publish({"user": "ula", "data": {"n": 4}})
        assert (await skip_pings(read))["pub"]["data"] == {"n": 4}
        client.close()

    run(scenario())
    wait_until(lambda: gateway.health()[1]["connections"] == 0, what="the closed streams to be forgotten")
    assert gateway.metric("pushgate_disconnects_total", reason="no_pong") == 0


def test_uni_sse_takes_a_post_and_uni_http_stream_answers_an_expired_token_with_3005(start_gateway, nsqd):
    gateway = start_gateway()

    async def scenario():
        client = await HttpStreamClient.open(gateway.port, "POST", "/connection/uni_sse",
                                             {"token": token("vic")})
        assert (await client.event())["connect"]["subs"]["#vic"]["recoverable"]
        client.close()
        expired = await uni_http_stream(gateway.port, {"token": token("vic", ttl=1, now=0)})
        assert await expired.line() == {"disconnect": {"code": 3005, "reason": "connection expired"}}
        assert await expired.line() is None  # and the stream ends
        invalid = await uni_http_stream(gateway.port, {"token": "nope"})
        assert (await invalid.line())["disconnect"]["code"] == 3500
        bad = await HttpStreamClient.open(gateway.port, "POST", "/connection/uni_http_stream", "[1]")
        assert bad.status == 400 and b"JSON object" in await bad.body()

    run(scenario())


def test_uni_websocket_takes_cf_connect_or_a_first_message(start_gateway, nsqd):
    gateway = start_gateway()
    base = f"ws://127.0.0.1:{gateway.port}/connection/uni_websocket"

    async def scenario():
        query = urllib.parse.urlencode({"cf_connect": json.dumps({"token": token("wes")})})
        async with websockets.connect(f"{base}?{query}") as ws:
            assert "#wes" in json.loads(await ws.recv())["connect"]["subs"]
            nsqd.publish({"user": "wes", "data": {"hi": 1}})
            pub = json.loads(await ws.recv())
            assert pub["channel"] == "#wes" and pub["pub"]["data"] == {"hi": 1} and pub["pub"]["offset"] > 0
        async with websockets.connect(base) as ws:
            await ws.send(json.dumps({"token": token("wes")}))
            assert json.loads(await ws.recv())["connect"]["pong"] is False
            await ws.send("anything: ignored")
            nsqd.publish({"user": "wes", "data": {"hi": 2}})
            assert json.loads(await ws.recv())["pub"]["data"] == {"hi": 2}
        async with websockets.connect(base) as ws:
            await ws.send(json.dumps({"token": "nope"}))
            assert json.loads(await ws.recv()) == {"disconnect": {"code": 3500, "reason": "invalid token"}}
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 3500

    run(scenario())


# --- SSE emulation by hand -------------------------------------------------------------------

def test_sse_emulation_by_hand_commands_through_a_second_node(start_gateway, nsqd):
    a, b = start_gateway("--public-channels=news"), start_gateway("--public-channels=news")

    async def scenario():
        command = json.dumps({"id": 1, "connect": {"token": token("xia")}})
        client = await HttpStreamClient.open(a.port, "GET", "/connection/sse", query={"cf_connect": command})
        assert client.status == 200
        first = await client.reader.readuntil(b"\n\n")
        assert first.startswith(b"\r\ndata: {\"id\":1,\"connect\":")  # the empty line, then one event
        connect = json.loads(first.split(b"data: ", 1)[1])["connect"]
        assert connect["node"] == a.health()[1]["node"]
        body = {"session": connect["session"], "node": connect["node"],
                "data": json.dumps({"id": 2, "subscribe": {"channel": "news"}})}
        status, answer = http("POST", f"{b.url}/emulation", json.dumps(body).encode(),
                              {"Content-Type": "application/json"})
        assert (status, answer) == (204, b"")
        reply = await client.event()
        assert reply["id"] == 2 and reply["subscribe"]["recoverable"]
        nsqd.publish({"channel": "news", "data": {"n": 1}})
        assert (await client.event())["push"]["pub"]["data"] == {"n": 1}
        client.close()

    run(scenario())


# --- what browsers, proxies and bad requests get ----------------------------------------------

def test_cors_and_origins_on_streams_and_emulation(start_gateway):
    app = "http://app.example.com"
    gateway = start_gateway(f"--allowed-origins={app}")

    async def scenario():
        client = await HttpStreamClient.open(gateway.port, "POST", "/connection/http_stream",
                                             {"id": 1, "connect": {"token": token("yan")}}, {"Origin": app})
        assert client.headers["access-control-allow-origin"] == app and client.headers["vary"] == "Origin"
        assert client.headers["content-type"] == "application/x-ndjson"
        assert client.headers["cache-control"].startswith("private, no-cache")
        assert (await client.line())["connect"]["node"]
        client.close()
        evil = await HttpStreamClient.open(gateway.port, "GET", "/connection/uni_sse",
                                           headers={"Origin": "http://evil.example"})
        assert evil.status == 403 and b"--allowed-origins" in await evil.body()

    run(scenario())
    for path in ("/emulation", "/connection/http_stream", "/connection/sse"):
        status, _ = http("OPTIONS", f"{gateway.url}{path}", headers={
            "Origin": app, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
        assert status == 204
    request = urllib.request.Request(f"{gateway.url}/emulation", method="OPTIONS", headers={"Origin": app})
    with urllib.request.urlopen(request) as response:
        assert response.headers["Access-Control-Allow-Origin"] == app
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert "Content-Type" in response.headers["Access-Control-Allow-Headers"]
    status, body = http("POST", f"{gateway.url}/emulation", b"{}", {"Origin": "http://evil.example"})
    assert status == 403 and b"--allowed-origins" in body
    assert "refused a browser request to /emulation from origin 'http://evil.example'" in gateway.log()


def test_emulation_requests_are_answered_quickly_and_clearly(start_gateway):
    a, b, c = start_gateway(), start_gateway(), start_gateway()
    c_name = c.health()[1]["node"]
    a_name = a.health()[1]["node"]

    def post(gateway, body, content_type="application/json"):
        return http("POST", f"{gateway.url}/emulation", body if isinstance(body, bytes) else json.dumps(body).encode(),
                    {"Content-Type": content_type})


    async def ended_session(gateway) -> str:
        """The session id of a stream that has ended: one its node issued."""
        client = await HttpStreamClient.open(gateway.port, "POST", "/connection/http_stream",
                                             {"id": 1, "connect": {"token": token("gone")}})
        session = (await client.line())["connect"]["session"]
        client.close()
        return session

    on_a, on_c = run(ended_session(a)), run(ended_session(c))
    # A node that is up: forwarded, answered 204 (its session may be gone: the stream says so).
    wait_until(lambda: post(b, {"session": on_c, "node": c_name, "data": "{}"})[0] == 204,
               what="node b to see node c on the control topic")
    assert post(a, {"session": on_a, "node": a_name, "data": "{}"}) == (204, b"")
    # A session id the node never issued: 404, here or through another node.
    for via in (a, b):
        status, body = post(via, {"session": "never-issued", "node": a_name, "data": "{}"})
        assert status == 404 and b"no such session" in body
    # A node that is gone: 404 (centrifuge-js then connects again, to a node that is up).
    # Within a second or two of its stop: what b knew of it is checked again with nsqd.
    c.stop()
    wait_until(lambda: post(b, {"session": on_c, "node": c_name, "data": "{}"})[0] == 404, timeout=5,
               what="node b to learn that node c is gone")
    status, body = post(b, {"session": on_c, "node": c_name, "data": "{}"})
    assert status == 404 and b"no such node" in body
    status, body = post(b, {"session": "s", "node": "never-was", "data": "{}"})
    assert status == 404
    # Malformed, oversized, wrong method.
    status, body = post(a, b"{not json")
    assert status == 400 and body == b'{"error": "the body is not JSON"}'
    status, body = post(a, {"session": "s", "node": a_name, "data": "x" * 70000})
    assert status == 413 and b"65536" in body
    assert post(a, b"\x0a\x01", "application/octet-stream")[0] == 400
    assert http("GET", f"{a.url}/emulation")[0] == 405
    # Stream requests without a connect.
    assert http("GET", f"{a.url}/connection/sse")[0] == 400
    assert http("POST", f"{a.url}/connection/http_stream", b"")[0] == 400
    assert http("POST", f"{a.url}/connection/http_stream", b"x" * 70000)[0] == 413
    assert b.metric("pushgate_emulation_requests_total", result="unknown_node") >= 3


def test_tokens_in_cf_connect_never_reach_the_log(start_gateway):
    gateway = start_gateway("--allowed-origins=http://app.example.com", "--log-level=debug")
    secret = token("zed")

    async def scenario():
        for path, request in (("/connection/uni_sse", {"token": secret}),
                              ("/connection/sse", {"id": 1, "connect": {"token": secret}})):
            client = await HttpStreamClient.open(gateway.port, "GET", path,
                                                 query={"cf_connect": json.dumps(request)})
            await client.event()
            client.close()
            refused = await HttpStreamClient.open(gateway.port, "GET", path, headers={"Origin": "http://evil.example"},
                                                  query={"cf_connect": json.dumps(request)})
            assert refused.status == 403
            refused.close()
        bad = await HttpStreamClient.open(gateway.port, "GET", "/connection/uni_sse",
                                          query={"cf_connect": secret})  # not JSON: 400
        assert bad.status == 400
        # Not UTF-8: Tornado's own 400, whose message would quote the argument
        for path in ("/connection/uni_sse", "/connection/uni_websocket"):
            garbled = await HttpStreamClient.open(gateway.port, "GET", f"{path}?cf_connect=%FF{secret}")
            assert garbled.status == 400
            garbled.close()

    run(scenario())
    wait_until(lambda: "403 GET /connection/sse " in gateway.log(), what="the access log line")
    log = gateway.log()
    assert "200 GET /connection/uni_sse " in log and "400 GET /connection/uni_sse " in log
    assert "400 GET /connection/uni_websocket " in log
    assert secret[:30] not in log and secret.split(".")[1] not in log and "cf_connect" not in log


# --- limits and the end of a node -----------------------------------------------------------------

def test_limits_apply_to_streams(start_gateway):
    gateway = start_gateway("--max-connections=2", "--max-user-connections=1")

    async def scenario():
        first = await uni_http_stream(gateway.port, {"token": token("lim")})
        assert "connect" in await first.line()
        second = await uni_http_stream(gateway.port, {"token": token("lim")})
        assert await second.line() == {"disconnect": {"code": 3504, "reason": "connection limit"}}
        assert await second.line() is None
        other = await HttpStreamClient.open(gateway.port, "POST", "/connection/http_stream",
                                            {"id": 1, "connect": {"token": token("other")}})
        assert "connect" in await other.line()
        refused = await uni_http_stream(gateway.port, {"token": token("third")})
        assert refused.status == 503 and refused.headers["retry-after"] == "1"
        for client in (first, other, refused):
            client.close()

    run(scenario())
    # Its log line names the limit, not only "503 POST /connection/uni_http_stream".
    line = wait_until(lambda: next((line for line in gateway.log().splitlines() if " 503 POST " in line), None),
                      what="the 503's log line")
    assert "503 POST /connection/uni_http_stream (127.0.0.1)" in line, line
    assert line.endswith(": refused: at capacity, 2 connections (--max-connections 2)"), line


def test_a_stream_that_stops_reading_is_cut_off_while_a_normal_one_keeps_receiving(start_gateway, nsqd):
    gateway = start_gateway("--max-queue-bytes=262144", "--max-message-bytes=32768")
    messages = 300
    body = json.dumps({"user": "firehose", "data": "x" * 30000}).encode()

    async def scenario():
        normal = await uni_http_stream(gateway.port, {"token": token("firehose")})
        await normal.line()
        stalled = socket.create_connection(("127.0.0.1", gateway.port))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        request = json.dumps({"token": token("firehose")}).encode()
        stalled.sendall(b"POST /connection/uni_http_stream HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(request), request))
        # Connected (a session for each stream); it never reads again.
        await wait_for(lambda: gateway.health()[1]["connections"] == 2, what="the stalled stream's session")
        received = 0

        async def read_all():
            nonlocal received
            while received < messages:
                message = await normal.line(timeout=10)
                if message and "pub" in message:
                    received += 1

        reader = asyncio.create_task(read_all())
        for start in range(0, messages, 20):
            nsqd.mpublish([body] * 20)
            await asyncio.sleep(0.08)
        await asyncio.wait_for(reader, 15)
        await wait_for(lambda: gateway.metric("pushgate_disconnects_total", reason="slow") == 1, timeout=10)
        normal.close()
        stalled.close()

    run(scenario())
    assert "send queue over 262144 bytes, disconnecting as slow" in gateway.log()


def test_sigterm_ends_every_stream_with_a_disconnect_push_and_exits_0(start_gateway):
    gateway = start_gateway("--drain-period=0.5")

    async def scenario():
        streams = [await uni_http_stream(gateway.port, {"token": token(f"d{i}")}) for i in range(3)]
        events = await uni_sse(gateway.port, {"token": token("dse")})
        emulated = await HttpStreamClient.open(gateway.port, "POST", "/connection/http_stream",
                                               {"id": 1, "connect": {"token": token("dhs")}})
        for client in streams:
            await client.line()
        await events.event()
        await emulated.line()
        gateway.send_signal(signal.SIGTERM)
        await wait_for(lambda: gateway.health()[1]["draining"], what="the node to start draining")
        late = await uni_http_stream(gateway.port, {"token": token("late")})
        assert late.status == 503  # new streams are refused while the node drains
        for client in streams:
            assert await skip_pings(client.line) == {"disconnect": {"code": 3001, "reason": "shutdown"}}
            assert await client.line() is None
        assert await skip_pings(events.event) == {"disconnect": {"code": 3001, "reason": "shutdown"}}
        assert await skip_pings(emulated.line) == {"push": {"disconnect": {"code": 3001, "reason": "shutdown"}}}
        assert await emulated.line() is None

    run(scenario())
    assert gateway.stop() == 0


def test_with_workers_an_emulation_request_reaches_its_session_from_either_worker(start_gateway):
    gateway = start_gateway("--workers=2")

    def forwarded() -> float:
        _, body = http("GET", f"{gateway.url}/metrics")
        for line in body.decode().splitlines():
            if line.startswith('pushgate_emulation_requests_total{result="forwarded"}'):
                return float(line.split()[-1])
        return 0.0

    async def scenario():
        client = await HttpStreamClient.open(gateway.port, "POST", "/connection/http_stream",
                                             {"id": 1, "connect": {"token": token("wkr")}})
        connect = (await client.line())["connect"]
        assert connect["node"].startswith(f"{gateway.name}-{gateway.port}-")
        # Each request on a new connection: the kernel spreads them over the
        # workers, so the other worker soon gets one and forwards it.
        for cmd_id in range(2, 60):
            data = json.dumps({"id": cmd_id, "history": {"channel": "#wkr", "limit": 0}})
            body = json.dumps({"session": connect["session"], "node": connect["node"], "data": data}).encode()
            status, _ = await asyncio.to_thread(http, "POST", f"{gateway.url}/emulation", body)
            assert status == 204
            reply = await skip_pings(client.line)
            assert reply["id"] == cmd_id and "history" in reply
            if cmd_id > 4 and await asyncio.to_thread(forwarded) >= 1:
                break
        assert await asyncio.to_thread(forwarded) >= 1
        client.close()

    run(scenario())
