"""Token lifetime on open connections: refresh, expiry, subscription tokens;
and admission limits. Real gateway, stock centrifuge-python SDK."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets

from auth import connection_token, subscription_token
from tests.clients import RawClient, sdk_client
from tests.helpers import run, wait_for, wait_until
from tests.stack import SECRET, http


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, nsqd, lookupd):
    from tests.stack import Gateway
    gw = Gateway(tmp_path_factory.mktemp("gw"), nsqd, lookupd, "--expired-close-delay=1",
                 "--public-channels=news").start()
    yield gw
    gw.stop()


def test_a_token_expiring_mid_connection_is_refreshed_without_reconnecting(gateway, nsqd):
    tokens = []

    async def get_token():
        tokens.append(connection_token(SECRET, "refresher", ttl=2))
        return tokens[-1]

    async def scenario():
        client, rec = await sdk_client(gateway.ws_url, token=connection_token(SECRET, "refresher", ttl=2),
                                       get_token=get_token)
        await asyncio.sleep(5.5)  # the thing under test: two expiries and close delays pass, still connected
        assert len(tokens) >= 2, "the SDK refreshed on the same socket"
        assert not rec.disconnects and len(rec.connecting) == 1
        nsqd.publish({"user": "refresher", "data": "still here"})
        assert await rec.next() == ("#refresher", "still here")
        await client.disconnect()
    run(scenario())


def test_a_token_not_refreshed_is_disconnected_with_3005(gateway):
    async def scenario():
        raw = await RawClient.open(gateway.ws_url)
        reply = await raw.connect(connection_token(SECRET, "lapsed", ttl=1))
        assert reply["connect"]["expires"] is True and reply["connect"]["ttl"] >= 1
        started = time.monotonic()
        # pings arrive meanwhile; answer none of them: only the expiry may close it
        assert await raw.closed(timeout=6) == (3005, "connection expired")
        assert time.monotonic() - started < 5
    run(scenario())
    assert gateway.metric("pushgate_disconnects_total", reason="expired") >= 1


def test_refresh_answers(gateway):
    async def scenario():
        raw = await RawClient.open(gateway.ws_url)
        await raw.connect(connection_token(SECRET, "r", ttl=60))
        await raw.send({"id": 2, "refresh": {"token": connection_token(SECRET, "r", ttl=120)}})
        reply = (await raw.recv())["refresh"]
        assert reply["expires"] is True and 110 <= reply["ttl"] <= 120 and reply["client"]
        await raw.send({"id": 3, "refresh": {"token": connection_token(SECRET, "someone-else", ttl=60)}})
        assert await raw.closed() == (3500, "invalid token")

        raw = await RawClient.open(gateway.ws_url)
        await raw.connect(connection_token(SECRET, "r", ttl=60))
        expired = connection_token(SECRET, "r", ttl=10, now=time.time() - 60)
        await raw.send({"id": 2, "refresh": {"token": expired}})
        assert await raw.closed() == (3005, "connection expired")
    run(scenario())


def test_subscription_tokens_expire_and_refresh(gateway, nsqd):
    sub_tokens = []

    async def get_sub_token(channel):
        sub_tokens.append(subscription_token(SECRET, "vip", channel, ttl=2))
        return sub_tokens[-1]

    async def scenario():
        client, rec = await sdk_client(gateway.ws_url, "vip")
        sub = client.new_subscription("private:vip", events=rec.channel("private:vip"), get_token=get_sub_token)
        await sub.subscribe()
        await wait_for(lambda: "private:vip" in rec.subscribed)
        await wait_for(lambda: len(sub_tokens) >= 2, timeout=6)  # the SDK refreshed its token in place
        assert "private:vip" not in rec.unsubscribed
        nsqd.publish({"channel": "private:vip", "data": "vip only"})
        assert await rec.next() == ("private:vip", "vip only")
        await client.disconnect()
        # Without sub_refresh the subscription ends with 2501: tests/test_core.py,
        # on a fake clock.
    run(scenario())


def test_connect_rate_limit_and_per_user_cap(start_gateway):
    gateway = start_gateway("--connect-rate=1", "--connect-burst=3", "--max-user-connections=2")

    async def scenario():
        opened, refused = [], []
        for _ in range(6):
            try:
                opened.append(await RawClient.open(gateway.ws_url))
            except websockets.InvalidStatus as exc:
                refused.append(exc.response)
        # Over the rate, the handshake itself is refused (before the upgrade, the
        # costly part), with 503 and Retry-After: the SDKs back off and retry.
        assert len(opened) == 3 and len(refused) == 3
        assert refused[0].status_code == 503 and refused[0].headers["Retry-After"] == "1"
        assert json.loads(refused[0].body) == {"error": "rate"}
        for raw in opened:
            await raw.close()
        await asyncio.sleep(3.2)  # the bucket refills (1/s, burst 3): time passing is what is tested
        same_user = []
        for _ in range(2):
            raw = await RawClient.open(gateway.ws_url)
            assert "connect" in await raw.connect(connection_token(SECRET, "tabs"))
            same_user.append(raw)
        third = await RawClient.open(gateway.ws_url)
        await third.send({"id": 1, "connect": {"token": connection_token(SECRET, "tabs")}})
        assert await third.closed() == (3504, "connection limit")
    run(scenario())
    assert gateway.metric("pushgate_refused_connects_total", limit="rate") == 3
    # The log line of each refusal names the limit and its setting.
    wait_until(lambda: gateway.log().count("503 GET /connection/websocket (127.0.0.1)") == 3, what="three 503 lines")
    assert gateway.log().count(": refused: over --connect-rate 1/s (--connect-burst 3)\n") == 3, gateway.log()


def test_node_capacity_refuses_the_handshake_with_503(start_gateway):
    gateway = start_gateway("--max-connections=2")

    async def scenario():
        held = [await RawClient.open(gateway.ws_url) for _ in range(2)]
        with pytest.raises(websockets.InvalidStatus) as refused:
            await RawClient.open(gateway.ws_url)
        assert refused.value.response.status_code == 503
        for raw in held:
            await raw.close()
    run(scenario())
    line = wait_until(lambda: next((line for line in gateway.log().splitlines() if " 503 GET " in line), None),
                      what="the 503's log line")
    assert line.endswith(": refused: at capacity, 2 connections (--max-connections 2)"), line
    assert json.loads(http("GET", f"{gateway.url}/health")[1])["draining"] is False
