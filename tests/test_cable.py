"""/cable against the real stack: the stock @rails/actioncable client (npm,
under Node), Ruby broadcasting through the bridge's `adapter: nsq` in a Rails
6.1 app (Debian's packages), the stock centrifuge-python SDK on the same
channels, and raw WebSockets for what no client library sends."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import pytest
import websockets

from auth import connection_token
from tests.cable_clients import NodeClient
from tests.clients import sdk_client
from tests.helpers import run
from tests.stack import API_KEY, ROOT, SECRET, http

TURBO_SECRET = "turbo-streams-secret-for-the-tests-0123456789"
OTHER_SECRET = "not-the-turbo-streams-secret-of-this-gateway!!"
V1, EXT = "actioncable-v1-json", "actioncable-v1-ext-json"
RAILS_APP = ROOT / "tests" / "ruby" / "rails_app" / "app.rb"


def rails(*args: str, nsqd=None, cable_url: str = "ws://127.0.0.1:1/cable", prefix: str = "",
          secret: str = TURBO_SECRET) -> str:
    """The Rails 6.1 app of tests/ruby/rails_app, as its users run it: what it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
    env.update(PUSHGATE_JWT_SECRET=SECRET, PUSHGATE_TURBO_STREAMS_SECRET=secret, PUSHGATE_CABLE_URL=cable_url,
               CABLE_CHANNEL_PREFIX=prefix, PUSHGATE_NSQD_HTTP_ADDRESS=nsqd.http_address if nsqd else "127.0.0.1:1")
    done = subprocess.run(["ruby", str(RAILS_APP), *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout if args[0] == "append" else done.stdout.strip()


def cable_url(gateway, user: str | None, **token_options) -> str:
    base = f"ws://127.0.0.1:{gateway.port}/cable"
    return base if user is None else f"{base}?jid={connection_token(SECRET, user, **token_options)}"


def ident(**params) -> dict:
    return params


def turbo_params(signed: str) -> dict:
    return {"channel": "Turbo::StreamsChannel", "signed_stream_name": signed}


def identifier(params: dict) -> str:
    """What the stock client sends: JSON.stringify of the params."""
    return json.dumps(params, separators=(",", ":"), ensure_ascii=False)


@pytest.fixture
def cable_gateway(start_gateway):
    def start(*extra: str, **kwargs):
        return start_gateway(f"--turbo-streams-secret={TURBO_SECRET}", "--public-channels=news,chat:*", *extra,
                             **kwargs)
    return start


# --- the stock client ---------------------------------------------------------------------

def test_stock_actioncable_client_gets_ruby_broadcasts_and_is_refused_what_it_may_not_read(cable_gateway, nsqd):
    gateway = cable_gateway()
    room = rails("sign", "room", "1")           # what turbo_stream_from(@room-ish "room", 1) renders
    bobs = rails("sign", "#bob")                # validly signed, but bob's personal stream
    forged = rails("sign", "room", "1", secret=OTHER_SECRET)
    accepted = [turbo_params(room), ident(channel="$pubsub", stream_name="news"),
                ident(channel="$pubsub", stream_name="#ana"),
                ident(channel="$pubsub", signed_stream_name=rails("sign", "gid://app/Order/7"))]
    refused = [turbo_params(forged), ident(channel="$pubsub", stream_name="#bob"), turbo_params(bobs),
               ident(channel="$pubsub", stream_name="secret"), ident(channel="ChatChannel", room="1")]

    async def scenario():
        client = await NodeClient.start("actioncable_client.mjs", "--url", cable_url(gateway, "ana"),
                                        *[a for p in accepted + refused for a in ("--subscribe", json.dumps(p))])
        # A Centrifugo-protocol client on the same channels, through the same hub.
        sdk, rec = await sdk_client(gateway.ws_url, "carl", channels=("news",), token_channels=("room:1",))
        try:
            for params in accepted:
                await client.event("connected", identifier=identifier(params))
            for params in refused:
                await client.event("rejected", identifier=identifier(params))
            assert (await client.event("socket", state="open"))["protocol"] == V1

            # Ruby, through adapter: nsq (ActionCable.server.broadcast and a Turbo Stream).
            rails("broadcast", "news", '{"text":"hi from Rails"}', nsqd=nsqd)
            html = rails("append", "Hello", "room", "1", nsqd=nsqd)
            rails("broadcast", "#ana", '{"for":"ana"}', nsqd=nsqd)
            rails("broadcast", "#bob", '{"for":"bob"}', nsqd=nsqd)
            rails("broadcast", "gid://app/Order/7", '{"order":"paid"}', nsqd=nsqd)
            await client.wait(lambda: len(client.of("received")) >= 4, what="four broadcasts")
            # A publication from the Centrifugo side of the gateway (its HTTP API).
            status, _ = http("POST", f"{gateway.url}/api/publish", json.dumps(
                {"channel": "news", "data": {"from": "api"}}).encode(), {"Authorization": f"apikey {API_KEY}"})
            assert status == 200
            await client.wait(lambda: len(client.of("received")) >= 5, what="the API publication")
            await asyncio.sleep(0.5)  # silence: nothing more may come (bob's, a duplicate); only waiting shows it
            assert client.received(identifier(accepted[1])) == [{"text": "hi from Rails"}, {"from": "api"}]
            assert client.received(identifier(accepted[0])) == [html]
            assert html.startswith('<turbo-stream action="append" target="messages">')
            assert client.received(identifier(accepted[2])) == [{"for": "ana"}]
            assert client.received(identifier(accepted[3])) == [{"order": "paid"}]
            assert len(client.of("received")) == 5   # nothing of bob's, nothing twice
            got = await rec.collect(3)
            assert sorted(got, key=str) == sorted([("news", {"text": "hi from Rails"}), ("room:1", html),
                                                   ("news", {"from": "api"})], key=str)
        finally:
            await client.stop()
            await sdk.disconnect()
    run(scenario())
    assert gateway.metric("pushgate_refused_subscriptions_total") == len(refused)


def test_stock_client_survives_a_gateway_restart_and_resubscribes_by_itself(cable_gateway, nsqd):
    gateway = cable_gateway("--drain-period=0.2")
    params = ident(channel="$pubsub", stream_name="news")

    async def scenario():
        client = await NodeClient.start("actioncable_client.mjs", "--url", cable_url(gateway, "ana"), "--raw",
                                        "--subscribe", json.dumps(params))
        try:
            await client.event("connected", identifier=identifier(params), reconnected=False)
            await asyncio.get_running_loop().run_in_executor(None, gateway.stop)   # SIGTERM: drain
            await client.event("disconnected", willAttemptReconnect=True)
            drained = [json.loads(f["data"]) for f in client.of("frame", dir="in") if "disconnect" in f["data"]]
            assert drained == [{"type": "disconnect", "reason": "server_restart", "reconnect": True}]
            await asyncio.get_running_loop().run_in_executor(None, gateway.start)  # same port
            # The stock client reopens when its monitor finds the connection stale
            # (6-18 s here), then resubscribes after the welcome.
            await client.event("connected", timeout=40, identifier=identifier(params), reconnected=True)
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: rails("broadcast", "news", '{"after":"restart"}', nsqd=nsqd))
            await client.wait(lambda: client.received(), what="a broadcast after the restart")
            assert client.received() == [{"after": "restart"}]
        finally:
            await client.stop()
    run(scenario())


# --- the protocol, by hand ---------------------------------------------------------------------

async def open_raw(url: str, subprotocols=(V1,), **kwargs):
    ws = await websockets.connect(url, subprotocols=list(subprotocols), **kwargs)
    return ws


async def recv(ws, timeout: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_not_ping(ws, timeout: float = 5.0) -> dict:
    while (message := await recv(ws, timeout)).get("type") == "ping":
        pass
    return message


def test_subprotocols_tokens_and_refusals(cable_gateway):
    gateway = cable_gateway()

    async def scenario():
        for offered in ((), ("foo",), ("centrifuge-json",)):
            with pytest.raises(websockets.InvalidStatus) as refusal:
                await open_raw(cable_url(gateway, "ana"), offered)
            assert refusal.value.response.status_code == 400
            assert b"actioncable-v1-json" in refusal.value.response.body
        # The client's first supported choice; a token subprotocol is read, never selected.
        token = connection_token(SECRET, "ana")
        for offered, selected in (((V1, "actioncable-unsupported"), V1), ((EXT,), EXT),
                                  ((f"anycable-token.{token}", EXT), EXT)):
            url = cable_url(gateway, "ana" if not offered[0].startswith("anycable-token") else None)
            async with await open_raw(url, offered) as ws:
                assert ws.subprotocol == selected
                welcome = await recv(ws)
                assert welcome["type"] == "welcome" and (("sid" in welcome) == (selected == EXT))
        async with await open_raw(cable_url(gateway, None), additional_headers={"X-JID": token}) as ws:
            assert await recv(ws) == {"type": "welcome"}
        # Refused connections: a disconnect message, then close 1000.
        for url, reason, reconnect in [
            (cable_url(gateway, None), "unauthorized", False),
            (cable_url(gateway, None) + "?jid=garbage", "unauthorized", False),
            (cable_url(gateway, "ana", now=time.time() - 700, ttl=600), "token_expired", True),
        ]:
            async with await open_raw(url) as ws:
                assert await recv(ws) == {"type": "disconnect", "reason": reason, "reconnect": reconnect}
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await recv(ws)
                assert closed.value.rcvd.code == 1000
    run(scenario())


def test_rails_conventions_on_the_wire(cable_gateway, nsqd):
    gateway = cable_gateway("--expired-close-delay=0.5")

    async def scenario():
        async with await open_raw(cable_url(gateway, "ana")) as ws:
            assert await recv(ws) == {"type": "welcome"}
            # The identifier comes back as the very string sent (spaces, escapes, non-ASCII).
            sent = '{"channel": "$pubsub",  "stream_name": "chat:é/\\u00e9", "n": "\\"q\\""}'
            for _ in range(3):   # what the stock client's guarantor does until confirmed
                await ws.send(json.dumps({"command": "subscribe", "identifier": sent}))
            confirm = await recv_not_ping(ws)
            assert confirm == {"identifier": sent, "type": "confirm_subscription"}
            nsqd.publish({"channel": "chat:é/é", "data": {"n": 1}})
            assert await recv_not_ping(ws) == {"identifier": sent, "message": {"n": 1}}  # confirmed once
            await ws.send(json.dumps({"command": "unsubscribe", "identifier": sent}))
            await ws.send(json.dumps({"command": "message", "identifier": sent, "data": '{"action":"speak"}'}))
            nsqd.publish({"channel": "chat:é/é", "data": {"n": 2}})
            # Nothing but pings for a while: unsubscribe is never answered, and a
            # ping comes every 3 s with the Unix time. (The first comes at any
            # moment: each connection has a random phase, so 7 s hold 2 or 3.)
            pings = []
            deadline = time.monotonic() + 7
            while time.monotonic() < deadline:
                try:
                    message = await recv(ws, deadline - time.monotonic())
                except asyncio.TimeoutError:
                    break
                assert message["type"] == "ping", message
                pings.append((time.monotonic(), time.time(), message["message"]))
            gaps = [later[0] - earlier[0] for earlier, later in zip(pings, pings[1:])]
            assert 2 <= len(pings) <= 3 and all(2 < gap < 4 for gap in gaps), gaps
            assert all(isinstance(unix, int) and abs(unix - now) < 2 for _, now, unix in pings), pings
        # A token that expires while the connection is open.
        async with await open_raw(cable_url(gateway, "ana", ttl=2)) as ws:
            assert await recv(ws) == {"type": "welcome"}
            assert await recv_not_ping(ws, 8) == {"type": "disconnect", "reason": "token_expired", "reconnect": True}
        # Malformed frames: a clear reason, and the connection ends.
        async with await open_raw(cable_url(gateway, "ana")) as ws:
            await recv(ws)
            await ws.send("this is not JSON")
            assert await recv_not_ping(ws) == {"type": "disconnect", "reason": "invalid_request",
                                               "reconnect": False}
    run(scenario())


# --- what the server API can and cannot do to a /cable connection ----------------------------------

def api(gateway, method: str, body: dict) -> dict:
    status, answer = http("POST", f"{gateway.url}/api/{method}", json.dumps(body).encode(), {"X-API-Key": API_KEY})
    assert status == 200, (status, answer)
    return json.loads(answer)


def test_server_api_unsubscribe_ends_one_stock_client_subscription_for_good(cable_gateway, nsqd):
    """The stock client forgets a subscription on reject_subscription: no
    reconnect, no resubscribe, the other subscription goes on; a server-side
    subscribe, which Action Cable cannot express, is refused with the reason."""
    gateway = cable_gateway()
    news, chat = ident(channel="$pubsub", stream_name="news"), ident(channel="$pubsub", stream_name="chat:1")

    async def scenario():
        client = await NodeClient.start("actioncable_client.mjs", "--url", cable_url(gateway, "ana"), "--raw",
                                        "--subscribe", identifier(news), "--subscribe", identifier(chat))
        witness = await NodeClient.start("actioncable_client.mjs", "--url", cable_url(gateway, "bob"),
                                         "--subscribe", identifier(news))
        try:
            for params in (news, chat):
                await client.event("connected", identifier=identifier(params))
            await witness.event("connected", identifier=identifier(news))
            assert api(gateway, "unsubscribe", {"user": "ana", "channel": "news"}) == {"result": {}}
            await client.event("rejected", identifier=identifier(news))
            # One fan-out serves both connections: once bob has the news
            # broadcast, any frame of it for ana was written before the chat:1
            # broadcast published after it.
            nsqd.publish({"channel": "news", "data": {"n": 1}})
            await witness.wait(lambda: witness.received(identifier(news)), what="the news broadcast")
            nsqd.publish({"channel": "chat:1", "data": {"n": 2}})
            await client.wait(lambda: client.received(identifier(chat)), what="the chat:1 broadcast")
            assert client.received(identifier(news)) == []
            assert len(client.of("socket", state="open")) == 1 and not client.of("disconnected")
            rejected_at = next(i for i, e in enumerate(client.events) if e.get("event") == "rejected")
            asked = [i for i, e in enumerate(client.events) if e.get("event") == "frame" and e.get("dir") == "out"
                     and json.loads(e["data"]) == {"command": "subscribe", "identifier": identifier(news)}]
            assert asked and max(asked) < rejected_at   # subscribed once, never asked for again

            status, answer = http("POST", f"{gateway.url}/api/subscribe",
                                  json.dumps({"user": "ana", "channel": "chat:2"}).encode(), {"X-API-Key": API_KEY})
            error = json.loads(answer)["error"]
            assert status == 200 and error["code"] == 108 and "Action Cable" in error["message"], answer
        finally:
            await client.stop()
            await witness.stop()

    run(scenario())
