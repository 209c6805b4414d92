"""Connection lifetime against a real gateway: tokens, malformed frames,
pings, stale handshakes, origins, slow clients, shutdown."""
from __future__ import annotations

import asyncio
import json
import signal
import socket
import time

import jwt
import pytest
import websockets

from auth import connection_token
from tests.clients import RawClient, sdk_client
from tests.helpers import run, wait_for, wait_until
from tests.keys import ec_pair, rsa_pair, write_public_pem
from tests.stack import SECRET, Gateway

RSA_KEY = rsa_pair()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, nsqd, lookupd):
    workdir = tmp_path_factory.mktemp("gw")
    pem = write_public_pem(RSA_KEY, workdir / "rsa.pem")
    gw = Gateway(workdir, nsqd, lookupd, f"--jwt-public-key={pem}", "--public-channels=news",
                 "--jwt-audience=pushgate-tests", "--allowed-origins=https://app.example.com",
                 "--ping-interval=2", "--pong-timeout=1", "--connect-timeout=2").start()
    yield gw
    gw.stop()


def claims(user: str, **extra) -> dict:
    now = int(time.time())
    return {"sub": user, "iat": now, "exp": now + 600, "aud": "pushgate-tests", **extra}


def test_hs256_rs256_tokens_connect_and_get_the_personal_channel(gateway, nsqd):
    async def scenario():
        hs = jwt.encode(claims("hs-user"), SECRET, algorithm="HS256")
        rs = jwt.encode(claims("rs-user"), RSA_KEY, algorithm="RS256")
        c1, r1 = await sdk_client(gateway.ws_url, token=hs)
        c2, r2 = await sdk_client(gateway.ws_url, token=rs)
        assert "#hs-user" in r1.subscribed and "#rs-user" in r2.subscribed
        nsqd.publish({"users": ["hs-user", "rs-user"], "data": "hi"})
        assert await r1.next() == ("#hs-user", "hi")
        assert await r2.next() == ("#rs-user", "hi")
        await c1.disconnect()
        await c2.disconnect()
    run(scenario())


def test_es256_token(start_gateway, tmp_path, nsqd):
    key = ec_pair()
    gateway = start_gateway(f"--jwt-public-key={write_public_pem(key, tmp_path / 'ec.pem')}")

    async def scenario():
        client, rec = await sdk_client(gateway.ws_url, token=jwt.encode({"sub": "es"}, key, algorithm="ES256"))
        nsqd.publish({"user": "es", "data": 1})
        assert await rec.next() == ("#es", 1)
        await client.disconnect()
    run(scenario())


BAD_TOKENS = {
    "garbage": "not.a.token",
    "wrong key": jwt.encode(claims("u"), "another-secret-of-at-least-32-bytes!!", algorithm="HS256"),
    "none alg": jwt.encode(claims("u"), None, algorithm="none"),
    "wrong audience": jwt.encode(claims("u", aud="someone-else"), SECRET, algorithm="HS256"),
    "channel claim": jwt.encode(claims("u", channel="news"), SECRET, algorithm="HS256"),
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_invalid_tokens_are_disconnected_with_3500(gateway, kind):
    async def scenario():
        raw = await RawClient.open(gateway.ws_url)
        await raw.send({"id": 1, "connect": {"token": BAD_TOKENS[kind]}})
        assert await raw.closed() == (3500, "invalid token")
    run(scenario())


def test_algorithm_confusion_is_refused(gateway, tmp_path):
    # HS256 "signed" with the RSA public key as the secret must not pass as RS256.
    from tests.keys import public_pem
    header = {"alg": "HS256", "typ": "JWT"}
    import base64
    import hashlib
    import hmac as hmac_mod

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")
    signing_input = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(claims("mallory")).encode())
    sig = hmac_mod.new(public_pem(RSA_KEY), signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + b64(sig)).decode()

    async def scenario():
        raw = await RawClient.open(gateway.ws_url)
        await raw.send({"id": 1, "connect": {"token": forged}})
        assert (await raw.closed())[0] == 3500
    run(scenario())


def test_expired_token_gets_error_109_and_the_sdk_fetches_a_new_one(gateway, nsqd):
    expired = jwt.encode({**claims("late"), "exp": int(time.time()) - 5}, SECRET, algorithm="HS256")

    async def scenario():
        raw = await RawClient.open(gateway.ws_url)
        answer = await raw.connect(expired)
        assert answer == {"id": 1, "error": {"code": 109, "message": "token expired"}}
        await raw.close()

        fresh_tokens = []

        async def get_token():
            fresh_tokens.append(jwt.encode(claims("late"), SECRET, algorithm="HS256"))
            return fresh_tokens[-1]
        client, rec = await sdk_client(gateway.ws_url, token=expired, get_token=get_token)
        assert fresh_tokens, "the SDK should have asked for a new token after 109"
        nsqd.publish({"user": "late", "data": "ok"})
        assert await rec.next() == ("#late", "ok")
        await client.disconnect()
    run(scenario())


def test_connect_reply_has_what_the_sdks_need(gateway):
    async def scenario():
        raw = await RawClient.open(gateway.ws_url)
        # centrifuge-js sends connect and subscribes in one frame
        await raw.send(json.dumps({"id": 1, "connect": {"token": connection_token(SECRET, "z", extra={"aud": "pushgate-tests"}),
                                                        "name": "js"}}) + "\n" +
                       json.dumps({"id": 2, "subscribe": {"channel": "news", "recoverable": True, "flag": 1}}))
        connect = await raw.recv()
        assert connect["id"] == 1
        result = connect["connect"]
        assert result["client"] and result["ping"] == 2 and result["pong"] is True
        position = result["subs"]["#z"]
        assert position["recoverable"] and position["positioned"]
        assert 0 < position["offset"] < 2**53 and position["epoch"]  # exact in JavaScript numbers
        subscribe = await raw.recv()
        assert subscribe["id"] == 2 and subscribe["subscribe"]["epoch"] == position["epoch"]
        await raw.send({"id": 3, "unsubscribe": {"channel": "never-subscribed"}})
        assert await raw.recv() == {"id": 3, "unsubscribe": {}}
        for n, method in enumerate(("presence", "presence_stats", "rpc", "ping"), start=4):
            await raw.send({"id": n, method: {"channel": "news"}})
            assert await raw.recv() == {"id": n, "error": {"code": 108, "message": "not available"}}
        await raw.send({"id": 9, "publish": {"channel": "news", "data": 1}})
        assert await raw.recv() == {"id": 9, "error": {"code": 103, "message": "permission denied"}}
        await raw.send({"id": 10, "subscribe": {"channel": "news"}})
        assert await raw.recv() == {"id": 10, "error": {"code": 105, "message": "already subscribed"}}
        await raw.close()
    run(scenario())


MALFORMED = {
    "not json": "this is not json",
    "not an object": "[1,2]",
    "unknown command": '{"id":1,"frobnicate":{}}',
    "subscribe before connect": '{"id":1,"subscribe":{"channel":"news"}}',
    "command without id": '{"connect":{}}',
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_frames_get_bad_request_and_others_are_unaffected(gateway, nsqd, kind):
    async def scenario():
        client, rec = await sdk_client(gateway.ws_url, "bystander", token=jwt.encode(claims("bystander"), SECRET))
        raw = await RawClient.open(gateway.ws_url)
        await raw.send(MALFORMED[kind])
        assert await raw.closed() == (3501, "bad request")
        nsqd.publish({"user": "bystander", "data": kind})
        assert await rec.next() == ("#bystander", kind)
        assert not rec.disconnects
        await client.disconnect()
    run(scenario())


def test_binary_frame_and_oversized_frame(gateway):
    async def scenario():
        raw = await RawClient.open(gateway.ws_url)
        await raw.connect(jwt.encode(claims("bin"), SECRET))
        await raw.send(b"\x00\x01binary")
        assert (await raw.closed())[0] == 3506
        raw = await RawClient.open(gateway.ws_url, max_size=None)
        await raw.send("x" * 70000)
        assert (await raw.closed())[0] == 1009
    run(scenario())


def test_pings_keep_an_sdk_client_connected_and_a_silent_client_is_cut_with_3012(gateway):
    async def scenario():
        client, rec = await sdk_client(gateway.ws_url, token=jwt.encode(claims("pinger"), SECRET),
                                       max_server_ping_delay=1.0)
        raw = await RawClient.open(gateway.ws_url)
        await raw.connect(jwt.encode(claims("silent"), SECRET))
        # The raw client receives pings ({}) but never answers.
        assert await raw.recv(timeout=4, pings=True) == {}
        assert await raw.closed(timeout=4) == (3012, "no pong")
        await asyncio.sleep(2)  # the thing under test: the SDK client, which answers, stays connected
        assert not rec.disconnects and len(rec.connecting) == 1
        await client.disconnect()
    run(scenario())


def test_browser_origins(gateway):
    async def scenario():
        ok = await RawClient.open(gateway.ws_url, origin="https://app.example.com")
        await ok.close()
        with pytest.raises(websockets.InvalidStatus) as refused:
            await RawClient.open(gateway.ws_url, origin="https://evil.example.net")
        assert refused.value.response.status_code == 403
    run(scenario())


def test_a_client_that_stops_reading_is_cut_off_while_a_normal_one_keeps_receiving(start_gateway, nsqd):
    gateway = start_gateway("--max-queue-bytes=262144", "--max-message-bytes=32768", "--public-channels=firehose")
    messages = 300
    body = json.dumps({"channel": "firehose", "data": "x" * 30000}).encode()

    async def scenario():
        normal, rec = await sdk_client(gateway.ws_url, "reader", channels=("firehose",))
        # The stalled client: a tiny receive buffer, subscribes, then never reads again.
        stalled = socket.create_connection(("127.0.0.1", gateway.port))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw = await RawClient.open(gateway.ws_url, sock=stalled)
        await raw.connect(connection_token(SECRET, "stalled"))
        await raw.send({"id": 2, "subscribe": {"channel": "firehose"}})
        assert (await raw.recv())["id"] == 2
        raw.ws.transport.pause_reading()
        # A pace a healthy client follows (~7 MB/s); the publishing call blocks,
        # so yield between batches to let the SDK client, on this loop, read.
        for start in range(0, messages, 20):
            nsqd.mpublish([body] * 20)
            await asyncio.sleep(0.08)
        got = await rec.collect(messages, timeout=10)
        assert len(got) == messages
        await wait_for(lambda: gateway.metric("pushgate_disconnects_total", reason="slow") == 1, timeout=10)
        assert not rec.disconnects
        await normal.disconnect()
        raw.ws.transport.abort()
    run(scenario())
    assert "send queue over 262144 bytes, disconnecting as slow" in gateway.log()


def test_sigterm_closes_clients_with_a_reconnect_code_and_exits_0(start_gateway):
    gateway = start_gateway("--drain-period=1")  # the closes are spread over it

    async def scenario():
        raws = []
        for n in range(3):
            raw = await RawClient.open(gateway.ws_url)
            await raw.connect(connection_token(SECRET, f"s{n}"))
            raws.append(raw)
        gateway.proc.send_signal(signal.SIGTERM)
        for raw in raws:
            assert await raw.closed() == (3001, "shutdown")
    run(scenario())
    wait_until(lambda: not gateway.running(), what="gateway exit")
    assert gateway.stop() == 0
    assert "Traceback" not in gateway.log()


WRONG_TYPES = [
    ({"subscribe": {"channel": ["a"]}}, "close", 3501),
    ({"subscribe": {"channel": {"x": 1}}}, "close", 3501),
    ({"subscribe": {"channel": "x" * 300}}, "error", 107),
    ({"subscribe": {"channel": "bad\u0000name"}}, "error", 107),
    ({"unsubscribe": {"channel": ["a"]}}, "close", 3501),
    ({"unsubscribe": {}}, "close", 3501),
    ({"unsubscribe": {"channel": "never-subscribed"}}, "reply", None),
    ({"history": {"channel": 5}}, "error", 103),
    ({"refresh": {}}, "close", 3501),
    ({"sub_refresh": {"channel": "news"}}, "close", 3501),
    ({"connect": {"token": 5}}, "close", 3501),
]


@pytest.mark.parametrize("command,answer,code", WRONG_TYPES, ids=[json.dumps(c[0]) for c in WRONG_TYPES])
def test_wrongly_typed_params_get_a_protocol_answer(gateway, command, answer, code):
    async def scenario():
        raw = await RawClient.open(gateway.ws_url)
        await raw.connect(jwt.encode(claims("typed"), SECRET))
        await raw.send({"id": 2, **command})
        if answer == "close":
            assert (await raw.closed())[0] == code
            return
        reply = await raw.recv()
        if answer == "error":
            assert reply["error"]["code"] == code
        else:
            assert reply == {"id": 2, next(iter(command)): {}}
        await raw.send({"id": 3, "subscribe": {"channel": "news"}})
        assert "offset" in (await raw.recv())["subscribe"]  # still serving
        await raw.close()
    run(scenario())


def test_private_channels_need_a_subscription_token(gateway, nsqd):
    from auth import subscription_token

    def sub_token(user, channel, ttl=600):
        return subscription_token(SECRET, user, channel, ttl=ttl, extra={"aud": "pushgate-tests"})

    async def scenario():
        client, rec = await sdk_client(gateway.ws_url, token=jwt.encode(claims("payer"), SECRET))
        sub = client.new_subscription("private:billing", events=rec.channel("private:billing"),
                                      token=sub_token("payer", "private:billing"))
        await sub.subscribe()
        await wait_for(lambda: "private:billing" in rec.subscribed)
        nsqd.publish({"channel": "private:billing", "data": "invoice"})
        assert await rec.next() == ("private:billing", "invoice")
        await client.disconnect()

        raw = await RawClient.open(gateway.ws_url)
        await raw.connect(jwt.encode(claims("payer"), SECRET))
        expired = subscription_token(SECRET, "payer", "private:billing", ttl=10, now=time.time() - 60,
                                     extra={"aud": "pushgate-tests"})
        await raw.send({"id": 2, "subscribe": {"channel": "private:billing", "token": expired}})
        assert (await raw.recv())["error"]["code"] == 109
        await raw.send({"id": 3, "subscribe": {"channel": "private:billing", "token": "forged.token.x"}})
        assert (await raw.recv())["error"]["code"] == 103
        await raw.send({"id": 4, "subscribe": {"channel": "private:billing", "token": sub_token("other", "private:billing")}})
        assert await raw.closed() == (3500, "invalid token")
    run(scenario())
