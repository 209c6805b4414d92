"""The backend decides (Centrifugo's proxies), against a real gateway and a
real HTTP backend (tests/proxy_backend.py, a Tornado app on this test's
event loop): connect from a cookie on every transport, subscribe, RPC,
refresh, and the bounded, honest answers when the backend is down, slow,
failing or talking nonsense."""
from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from pathlib import Path

import pytest
import websockets

from auth import connection_token
from tests.clients import RawClient, sdk_client
from tests.helpers import run, wait_for, wait_for_time
from tests.httpstream import HttpStreamClient
from tests.proxy_backend import Backend, sign
from tests.stack import SECRET, Gateway, free_port, http

# Each request's fields as proxy.proto names them: nothing else is sent.
FIELDS = {kind: set(names) for kind, names in json.loads(
    (Path(__file__).parent / "data" / "centrifugo_proxy_examples.json").read_text())["fields"].items()}
ALICE = {"Cookie": f"session={sign('alice')}"}
BOB = {"Cookie": f"session={sign('bob')}"}


def proxy_flags(port: int, *extra: str) -> list[str]:
    base = f"http://127.0.0.1:{port}/centrifugo"
    return [f"--connect-proxy-url={base}/connect", f"--subscribe-proxy-url={base}/subscribe",
            "--subscribe-proxy=room:*", f"--rpc-proxy-url={base}/rpc", "--proxy-headers=cookie,x-request-id",
            *extra]


@pytest.fixture(scope="module")
def backend_port():
    return free_port()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, nsqd, lookupd, backend_port):
    gw = Gateway(tmp_path_factory.mktemp("gw"), nsqd, lookupd, *proxy_flags(backend_port),
                 "--proxy-timeout=1", "--history-size=10").start()
    yield gw
    gw.stop()


async def backend_on(port: int) -> Backend:
    return await Backend().start(port)


async def connect_raw(gateway: Gateway, headers: dict | None = None, **connect) -> tuple[RawClient, dict]:
    client = await RawClient.open(gateway.ws_url, additional_headers=headers or {})
    await client.send({"id": 1, "connect": connect})
    return client, await client.recv()


# --- connect -----------------------------------------------------------------------------


def test_connect_without_a_token_signs_in_through_the_backend(gateway, backend_port, nsqd):
    async def scenario():
        backend = await backend_on(backend_port)
        try:
            client, recorder = await sdk_client(gateway.ws_url, user=None, token="", data={"hi": 1},
                                                headers={**ALICE, "X-Request-Id": "r-1", "X-Other": "no"})
            # The personal channel of the user the backend named: publications reach it.
            assert "#alice" in recorder.subscribed
            nsqd.publish({"user": "alice", "data": {"n": 1}})
            assert await recorder.next() == ("#alice", {"n": 1})
            headers, body = backend.calls["connect"][0]
            assert body["transport"] == "websocket" and body["protocol"] == "json" and body["encoding"] == "json"
            assert body["name"] == "python" and body["data"] == {"hi": 1} and len(body["client"]) == 36
            assert headers["Cookie"] == ALICE["Cookie"]
            assert headers["X-Request-Id"] == "r-1"
            assert "X-Other" not in headers   # only the headers --proxy-headers names
            # meta stays on the server and rides along on later calls.
            answer = await client.rpc("whoami", {})
            assert answer.data == {"user": "alice", "meta": {"session": "s-alice"}}
            _, rpc_body = backend.calls["rpc"][0]
            assert rpc_body["user"] == "alice" and rpc_body["meta"] == {"session": "s-alice"}
            assert rpc_body["client"] == body["client"] and rpc_body["method"] == "whoami"
            assert set(body) <= FIELDS["connect"] and set(rpc_body) <= FIELDS["rpc"]
            await client.disconnect()
        finally:
            await backend.stop()
    run(scenario())


def test_the_connect_reply_carries_the_backends_data_and_no_cookie_is_refused(gateway, backend_port):
    async def scenario():
        backend = await backend_on(backend_port)
        try:
            client, reply = await connect_raw(gateway, ALICE, data={"x": 1})
            assert reply["connect"]["data"] == {"hello": "alice", "sent": {"x": 1}}
            assert "#alice" in reply["connect"]["subs"] and "expires" not in reply["connect"]
            await client.close()
            # No cookie: the backend's disconnect, code and reason as it said them.
            client = await RawClient.open(gateway.ws_url)
            await client.send({"id": 1, "connect": {}})
            assert await client.closed() == (4501, "unauthorized")
            # A token still works as before, without a call.
            calls = len(backend.calls["connect"])
            client, reply = await connect_raw(gateway, token=connection_token(SECRET, "carol"))
            assert "#carol" in reply["connect"]["subs"] and len(backend.calls["connect"]) == calls
            await client.close()
        finally:
            await backend.stop()
    run(scenario())


def test_commands_behind_a_proxied_connect_wait_their_turn(gateway, backend_port):
    async def scenario():
        backend = await backend_on(backend_port)
        backend.delay = 0.3
        try:
            client = await RawClient.open(gateway.ws_url, additional_headers=ALICE)
            # As centrifuge-js sends it: connect and a subscribe in one frame; then another frame at once.
            await client.send('{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"room:lobby"}}')
            await client.send({"id": 3, "rpc": {"method": "echo", "data": {"n": 3}}})
            replies = [await client.recv(timeout=5) for _ in range(3)]
            assert [r["id"] for r in replies] == [1, 2, 3]
            assert replies[1]["subscribe"]["data"] == {"welcome": "room:lobby", "user": "alice"}
            assert replies[2]["rpc"]["data"] == {"n": 3}
            await client.close()
        finally:
            await backend.stop()
    run(scenario())


def test_connect_proxy_on_protobuf_http_stream_sse_and_the_unidirectional_streams(gateway, backend_port):
    async def scenario():
        backend = await backend_on(backend_port)
        try:
            # Protobuf (centrifuge-python): data as b64data, encoding binary.
            client, recorder = await sdk_client(gateway.ws_url, user=None, token="", headers=ALICE,
                                                use_protobuf=True, data=b'{"pb":1}')
            assert "#alice" in recorder.subscribed
            _, body = backend.calls["connect"][-1]
            assert body["protocol"] == "protobuf" and body["encoding"] == "binary"
            assert base64.b64decode(body["b64data"]) == b'{"pb":1}' and "data" not in body
            await client.disconnect()
            # http_stream: the connect command is the body.
            stream = await HttpStreamClient.open(gateway.port, "POST", "/connection/http_stream",
                                                 {"id": 1, "connect": {}}, headers=ALICE)
            reply = await stream.line()
            assert reply["connect"]["data"]["hello"] == "alice" and "#alice" in reply["connect"]["subs"]
            assert backend.calls["connect"][-1][1]["transport"] == "http_stream"
            stream.close()
            # SSE: the connect command in cf_connect.
            stream = await HttpStreamClient.open(gateway.port, "GET", "/connection/sse", headers=ALICE,
                                                 query={"cf_connect": json.dumps({"id": 1, "connect": {}})})
            reply = await stream.event()
            assert reply["connect"]["data"]["hello"] == "alice"
            assert backend.calls["connect"][-1][1]["transport"] == "sse"
            stream.close()
            # uni_sse and uni_http_stream: the connect push.
            stream = await HttpStreamClient.open(gateway.port, "GET", "/connection/uni_sse", headers=ALICE)
            push = await stream.event()
            assert push["connect"]["data"]["hello"] == "alice"
            assert backend.calls["connect"][-1][1]["transport"] == "uni_sse"
            stream.close()
            stream = await HttpStreamClient.open(gateway.port, "POST", "/connection/uni_http_stream", {},
                                                 headers=ALICE)
            push = await stream.line()
            assert push["connect"]["data"]["hello"] == "alice"
            stream.close()
            # uni_websocket, without the cookie: the backend's disconnect closes it.
            ws = await websockets.connect(f"ws://127.0.0.1:{gateway.port}/connection/uni_websocket")
            await ws.send("{}")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4501
        finally:
            await backend.stop()
    run(scenario())


# --- subscribe and RPC ----------------------------------------------------------------------


def test_subscribe_proxy_admits_members_with_data_and_refuses_others_with_its_code(gateway, backend_port, nsqd):
    async def scenario():
        backend = await backend_on(backend_port)
        try:
            alice, reply = await connect_raw(gateway, ALICE)
            await alice.send({"id": 2, "subscribe": {"channel": "room:staff", "data": {"why": "work"}}})
            reply = await alice.recv()
            assert reply["subscribe"]["data"] == {"welcome": "room:staff", "user": "alice"}
            assert reply["subscribe"]["recoverable"] is True  # the rest of the result as ever
            _, body = backend.calls["subscribe"][-1]
            assert body["channel"] == "room:staff" and body["user"] == "alice" and body["data"] == {"why": "work"}
            assert set(body) <= FIELDS["subscribe"]
            bob, _ = await connect_raw(gateway, BOB)
            await bob.send({"id": 2, "subscribe": {"channel": "room:staff"}})
            assert (await bob.recv())["error"] == {"code": 403, "message": "not in this room"}
            # Outside the patterns nothing is asked: the usual rules (not public: 103).
            calls = len(backend.calls["subscribe"])
            await bob.send({"id": 3, "subscribe": {"channel": "elsewhere"}})
            assert (await bob.recv())["error"]["code"] == 103 and len(backend.calls["subscribe"]) == calls
            nsqd.publish({"channel": "room:staff", "data": {"memo": 1}})
            while True:
                push = await alice.recv()
                if "push" in push:
                    break
            assert push["push"]["channel"] == "room:staff" and push["push"]["pub"]["data"] == {"memo": 1}
            await alice.close()
            await bob.close()
        finally:
            await backend.stop()
    run(scenario())


def test_rpc_is_answered_by_the_backend_with_its_data_or_its_error(gateway, backend_port):
    async def scenario():
        backend = await backend_on(backend_port)
        try:
            client, _ = await connect_raw(gateway, ALICE)
            await client.send({"id": 2, "rpc": {"method": "echo", "data": [1, "two"]}})
            assert (await client.recv())["rpc"] == {"data": [1, "two"]}
            await client.send({"id": 3, "rpc": {"method": "nope"}})
            assert (await client.recv())["error"] == {"code": 1000, "message": "no method nope"}
            await client.close()
        finally:
            await backend.stop()
    run(scenario())


# --- a backend that is down, slow, failing, or talking nonsense -------------------------------


@pytest.mark.parametrize("mode", ["down", "slow", "500", "garbage", "bad-shape"])
def test_a_failed_call_is_error_100_for_the_client_and_never_a_hang(gateway, backend_port, mode):
    async def scenario():
        backend = await backend_on(backend_port)
        if mode == "down":
            await backend.stop()
        else:
            backend.mode = mode
        try:
            before = gateway.metric("pushgate_proxy_calls_total", proxy="connect",
                                    outcome={"down": "unavailable", "slow": "timeout", "500": "status",
                                             "garbage": "garbage", "bad-shape": "answer"}[mode])
            started = time.monotonic()
            client = await RawClient.open(gateway.ws_url, additional_headers=ALICE)
            # With a subscribe in the same frame, as centrifuge-js sends it: dropped with the refused connect.
            await client.send('{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"room:lobby"}}')
            reply = await client.recv()
            took = time.monotonic() - started
            assert reply == {"id": 1, "error": {"code": 100, "message": "internal server error", "temporary": True}}
            assert took < 2.5   # --proxy-timeout=1: the slow backend's 5 s are not waited for
            kind = {"down": "unavailable", "slow": "timeout", "500": "status", "garbage": "garbage",
                    "bad-shape": "answer"}[mode]
            assert gateway.metric("pushgate_proxy_calls_total", proxy="connect", outcome=kind) == before + 1
            if mode == "bad-shape":
                assert gateway.metric("pushgate_proxy_calls_total", proxy="connect", outcome="refused") >= 1
                await wait_for(lambda: "refused the backend's answer" in gateway.log(), what="the logged reason")
            # The connection is still there: a token connect on it works (the SDKs reconnect instead).
            await client.send({"id": 2, "connect": {"token": connection_token(SECRET, "dave")}})
            assert "#dave" in (await client.recv())["connect"]["subs"]
            await client.close()
        finally:
            await backend.stop()
    run(scenario())


def test_a_full_queue_answers_100_at_once(tmp_path, nsqd, lookupd, start_gateway):
    port = free_port()
    gw = start_gateway(*proxy_flags(port), "--proxy-concurrency=1", "--proxy-queue=1", "--proxy-timeout=3")
    # Each configured proxy's figures are there from the start, before any call.
    _, text = http("GET", f"{gw.url}/metrics")
    for name in ("connect", "subscribe", "rpc"):
        assert f'pushgate_proxy_queue_depth{{proxy="{name}"}} 0.0' in text.decode()
    assert 'proxy="publish"' not in text.decode()   # not configured: nothing

    async def scenario():
        backend = await backend_on(port)
        backend.delay = 1.0
        try:
            clients = [await RawClient.open(gw.ws_url, additional_headers=ALICE) for _ in range(3)]
            for client in clients:
                await client.send({"id": 1, "connect": {}})
            third = await clients[2].recv(timeout=0.8)    # refused before the first call has ended
            assert third["error"]["code"] == 100
            first, second = await clients[0].recv(), await clients[1].recv(timeout=3)
            assert "connect" in first and "connect" in second
            assert backend.max_in_flight == 1
            assert gw.metric("pushgate_proxy_calls_total", proxy="connect", outcome="overloaded") == 1
            for client in clients:
                await client.close()
        finally:
            await backend.stop()
    run(scenario())


def test_a_connection_that_leaves_while_queued_is_never_sent(tmp_path, nsqd, lookupd, start_gateway):
    port = free_port()
    gw = start_gateway(*proxy_flags(port), "--proxy-concurrency=1", "--proxy-timeout=3")

    async def scenario():
        backend = await backend_on(port)
        backend.delay = 0.5
        try:
            first = await RawClient.open(gw.ws_url, additional_headers=ALICE)
            await first.send({"id": 1, "connect": {}})
            await wait_for(lambda: backend.in_flight == 1, what="the first call at the backend")
            gone = await RawClient.open(gw.ws_url, additional_headers=BOB)
            await gone.send({"id": 1, "connect": {}})
            await wait_for(lambda: gw.metric("pushgate_proxy_queue_depth", proxy="connect") == 1,
                           what="the second call queued")
            await gone.close()
            assert "connect" in await first.recv()
            third = await RawClient.open(gw.ws_url, additional_headers=ALICE)
            await third.send({"id": 1, "connect": {}})
            assert "connect" in await third.recv()
            users = [signed for _, body in backend.calls["connect"] for signed in [body]]
            assert len(users) == 2   # alice and the third: bob's call was withdrawn, never sent
            await first.close()
            await third.close()
        finally:
            await backend.stop()
    run(scenario())


# --- refresh ---------------------------------------------------------------------------------


def test_refresh_proxy_extends_or_ends_a_connection_without_the_client(tmp_path, nsqd, lookupd, start_gateway):
    port = free_port()
    gw = start_gateway(*proxy_flags(port, f"--refresh-proxy-url=http://127.0.0.1:{port}/centrifugo/refresh"))

    async def scenario():
        backend = await backend_on(port)
        backend.expire_in = 2
        backend.extend = 2
        try:
            client, reply = await connect_raw(gw, ALICE)
            assert "expires" not in reply["connect"]   # the client is not asked to refresh
            await wait_for(lambda: len(backend.calls["refresh"]) >= 2, timeout=10, what="two refreshes")
            _, body = backend.calls["refresh"][0]
            assert body["user"] == "alice" and body["meta"] == {"session": "s-alice"}
            assert set(body) <= FIELDS["refresh"]
            backend.expired_users.add("alice")
            assert (await client.closed(timeout=10))[0] == 3005
        finally:
            await backend.stop()
    run(scenario())


def test_a_failed_refresh_gives_the_connection_a_minute(tmp_path, nsqd, lookupd, start_gateway):
    port = free_port()
    gw = start_gateway(*proxy_flags(port, f"--refresh-proxy-url=http://127.0.0.1:{port}/centrifugo/refresh"),
                       "--expired-close-delay=1")

    async def scenario():
        backend = await backend_on(port)
        backend.expire_in = 1
        try:
            started = time.time()
            client, _ = await connect_raw(gw, ALICE)
            backend.mode = "500"
            await wait_for(lambda: backend.calls["refresh"], timeout=10, what="the refresh call")
            # Past the expiry and the close delay (and a tick of the expiry timer), the
            # connection lives on: a minute more.
            await wait_for_time(started + backend.expire_in + 1 + 2)
            await client.send({"id": 2, "rpc": {"method": "x"}})   # answered 100: the backend still fails
            assert (await client.recv(timeout=5))["error"]["code"] == 100
            assert len(backend.calls["refresh"]) == 1   # not asked again before the minute is over
            await client.close()
        finally:
            await backend.stop()
    run(scenario())


def test_sub_refresh_proxy_extends_a_proxied_subscription(tmp_path, nsqd, lookupd, start_gateway):
    port = free_port()
    gw = start_gateway(*proxy_flags(port, f"--sub-refresh-proxy-url=http://127.0.0.1:{port}/centrifugo/sub_refresh"))

    async def scenario():
        backend = await backend_on(port)
        backend.sub_expire_in = 1
        backend.extend = 1
        try:
            client, _ = await connect_raw(gw, ALICE)
            await client.send({"id": 2, "subscribe": {"channel": "room:lobby"}})
            reply = await client.recv()
            assert "expires" not in reply["subscribe"]
            await wait_for(lambda: len(backend.calls["sub_refresh"]) >= 2, timeout=10, what="two sub refreshes")
            _, body = backend.calls["sub_refresh"][0]
            assert body["channel"] == "room:lobby" and body["user"] == "alice"
            assert set(body) <= FIELDS["sub_refresh"]
            backend.expired_users.add("alice")
            push = await client.recv(timeout=10)
            assert push["push"]["unsubscribe"]["code"] == 2501 and push["push"]["channel"] == "room:lobby"
            await client.close()
        finally:
            await backend.stop()
    run(scenario())


# --- many at once ----------------------------------------------------------------------------


def test_2000_clients_reconnecting_at_once_stay_within_the_concurrency_and_all_get_in(
        tmp_path, nsqd, lookupd, start_gateway):
    port = free_port()
    gw = start_gateway(*proxy_flags(port), "--proxy-concurrency=16", "--proxy-timeout=10", open_files=8192)
    count = 2000

    async def one(i: int) -> bool:
        # As an SDK reconnects: a refused or cut handshake (the door sheds past
        # --max-pending-connections) is tried again after a jittered backoff.
        delay = 0.1
        while True:
            try:
                async with websockets.connect(gw.ws_url, open_timeout=30,
                                              additional_headers={"Cookie": f"session={sign(f'u{i}')}"}) as ws:
                    await ws.send(json.dumps({"id": 1, "connect": {}}))
                    while True:
                        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                        if reply:
                            return "connect" in reply and f"#u{i}" in reply["connect"]["subs"]
            except (OSError, websockets.InvalidHandshake, websockets.InvalidMessage, EOFError):
                await asyncio.sleep(delay * random.random())
                delay = min(delay * 2, 2.0)

    async def scenario():
        backend = await backend_on(port)
        backend.delay = 0.005
        try:
            results = await asyncio.gather(*(one(i) for i in range(count)))
            assert all(results)
            assert len(backend.calls["connect"]) == count
            assert backend.max_in_flight == 16   # saturated, never past it
        finally:
            await backend.stop()
    run(scenario())


async def replies_and_pushes(client: RawClient, count: int) -> tuple[list[dict], list[dict]]:
    frames = [await client.recv() for _ in range(count)]
    return [f for f in frames if "id" in f], [f for f in frames if "push" in f]


# --- publish -------------------------------------------------------------------------------------


def test_publish_proxy_publishes_through_nsq_to_every_node_with_the_publishers_info(
        tmp_path, nsqd, lookupd, start_gateway):
    port = free_port()
    flags = proxy_flags(port, f"--publish-proxy-url=http://127.0.0.1:{port}/centrifugo/publish",
                        "--publish-proxy=room:*", "--history-size=10")
    a, b = start_gateway(*flags), start_gateway(*flags)

    async def scenario():
        backend = await backend_on(port)
        try:
            alice, reply = await connect_raw(a, ALICE)
            alice_id = reply["connect"]["client"]
            bob, _ = await connect_raw(b, BOB)
            for client in (alice, bob):
                await client.send({"id": 2, "subscribe": {"channel": "room:lobby"}})
                assert "subscribe" in await client.recv()
            await alice.send({"id": 3, "publish": {"channel": "room:lobby", "data": {"text": "hi"}}})
            # The reply (after nsqd took it) and the publisher's own copy (from NSQ) come in either order.
            replies, pushes = await replies_and_pushes(alice, 2)
            assert replies == [{"id": 3, "publish": {}}]
            _, body = backend.calls["publish"][-1]
            assert body["channel"] == "room:lobby" and body["data"] == {"text": "hi"} and body["user"] == "alice"
            assert set(body) <= FIELDS["publish"]
            push = await bob.recv()
            pub = push["push"]["pub"]
            assert push["push"]["channel"] == "room:lobby"
            assert pub["data"] == {"text": "hi", "by": "alice"}   # as the backend rewrote it
            assert pub["info"] == {"user": "alice", "client": alice_id, "conn_info": {"name": "Alice"},
                                   "chan_info": {"role": "member"}}   # her info in the room, from the subscribe proxy
            assert pub["offset"] >= 1
            assert pushes == [push]   # the publisher is a subscriber too
            # In history, on the other node too.
            await bob.send({"id": 4, "history": {"channel": "room:lobby", "limit": 10}})
            history = (await bob.recv())["history"]
            assert [p["data"] for p in history["publications"]] == [{"text": "hi", "by": "alice"}]
            assert history["publications"][0]["info"] == pub["info"]   # the publisher, kept with it
            # skip_history: delivered, not kept, no offset.
            await alice.send({"id": 5, "publish": {"channel": "room:lobby", "data": {"text": "!psst"}}})
            replies, pushes = await replies_and_pushes(alice, 2)
            assert replies == [{"id": 5, "publish": {}}]
            pub = (await bob.recv())["push"]["pub"]
            assert pub["data"] == {"text": "!psst", "by": "alice"} and "offset" not in pub
            assert pushes[0]["push"]["pub"] == pub
            await bob.send({"id": 6, "history": {"channel": "room:lobby", "limit": 10}})
            assert len((await bob.recv())["history"]["publications"]) == 1
            # The backend refuses with its code; outside the patterns it stays 103, unasked.
            await bob.send({"id": 7, "publish": {"channel": "room:staff", "data": {"text": "let me in"}}})
            assert (await bob.recv())["error"] == {"code": 403, "message": "not in this room"}
            calls = len(backend.calls["publish"])
            await bob.send({"id": 8, "publish": {"channel": "news", "data": {"text": "x"}}})
            assert (await bob.recv())["error"]["code"] == 103 and len(backend.calls["publish"]) == calls
            await alice.close()
            await bob.close()
        finally:
            await backend.stop()
    run(scenario())
