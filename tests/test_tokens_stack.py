"""Tokens from every issuer, with stock clients against real gateway nodes:
centrifuge-python 0.7.0, centrifuge-js 5.8.0 and centrifuge-go (their
Protobuf modes, run by tests/sdk/<lang>/ harnesses, tests/sdks.py) and @anycable/web
(tests/cable/anycable_client.mjs).

* ``--jwks-url``: a local JWKS endpoint (tests/jwks_server.py, real RSA and
  EC keys) rotates its keys mid-test, then goes down;
* ``--jwt-previous-secret``: tokens of the old and the new secret connect;
* the ``subs``, ``expire_at`` and ``meta`` claims, ``--jwt-user-claim``;
* AnyCable's tokens (identifiers in ``ext``) at /cable with ``--cable-jwt-ext``;
* hostile tokens: each answered 3500 (invalid token), never a traceback.
"""
from __future__ import annotations

import asyncio
import base64
import json
import time

import jwt
import pytest

from tests.cable_clients import NodeClient
from tests.helpers import run, wait_for, wait_for_time
from tests.jwks_server import JwksServer
from tests.proxy_backend import Backend
from tests.sdks import SDKS, HarnessProcess
from tests.stack import SECRET, Gateway

SDK = {sdk.name: sdk for sdk in SDKS}
NEW_SECRET = "the-new-secret-after-rotation-32-bytes!"
REFETCH = 0.5   # --jwks-refetch-interval in these tests


def sdk(name: str):
    reason = SDK[name].unavailable()
    if reason:
        pytest.skip(reason)
    return SDK[name]


async def start(start_gateway, *args: str):
    """A gateway started off the event loop, so that servers of this test
    (the JWKS endpoint) answer it while it starts."""
    return await asyncio.get_running_loop().run_in_executor(None, lambda: start_gateway(*args))


class Clients:
    """Harnesses started by one test, each killed at its end."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path = tmp_path
        self.started: list[HarnessProcess] = []

    async def connect(self, name: str, gateway, token: str, channel: str | None = None) -> HarnessProcess:
        harness = HarnessProcess(sdk(name), self.tmp_path / f"{name}-{len(self.started)}.stderr")
        self.started.append(harness)
        return await harness.start(gateway.ws_url, token, channel)

    async def close(self) -> None:
        for harness in self.started:
            await harness.kill()


async def connected(harness: HarnessProcess) -> None:
    await harness.wait_for(lambda: harness.seen("connected"), "connected", timeout=15)


async def refused(harness: HarnessProcess, code: int = 3500) -> None:
    await harness.wait_for(lambda: harness.seen("disconnected", code=code), f"disconnected {code}", timeout=15)
    assert not harness.seen("connected"), harness.describe()


async def refetch_allowed(gateway, fetches: int) -> None:
    """Once ``gateway`` has ended ``fetches`` fetches of its key set, wait
    --jwks-refetch-interval: an unknown kid may then be fetched again."""
    await wait_for(lambda: gateway.metric("pushgate_jwks_fetches_total", outcome="ok")
                   + gateway.metric("pushgate_jwks_fetches_total", outcome="failed") >= fetches,
                   what=f"{fetches} fetches of the key set")
    await wait_for_time(time.time() + REFETCH)


def no_traceback(gateway) -> None:
    assert "Traceback" not in gateway.log(), gateway.log()[-3000:]


@pytest.fixture
def start_without_secret(tmp_path, nsqd, lookupd):
    """Start gateway nodes with no --jwt-secret (tests/stack.py gives every node one)."""
    started: list[Gateway] = []

    def start_one(*args: str) -> Gateway:
        gateway = Gateway(tmp_path / f"alone{len(started)}", nsqd, lookupd, *args)
        gateway.base_args = [a for a in gateway.base_args if not a.startswith("--jwt-secret=")]
        started.append(gateway)
        return gateway.start()

    yield start_one
    for gateway in started:
        gateway.stop()


def test_jwks_keys_rotate_mid_test_and_survive_the_endpoint_going_down(start_without_secret, tmp_path):
    async def scenario():
        jwks = await JwksServer().start()
        jwks.add("rsa-1", "RSA")
        clients = Clients(tmp_path)
        try:
            # --jwks-url alone: no --jwt-secret, no --jwt-public-key.
            gateway = await start(start_without_secret, f"--jwks-url={jwks.url}",
                                  f"--jwks-refetch-interval={REFETCH}")
            await connected(await clients.connect("python", gateway, jwks.token("rsa-1", {"sub": "ann"})))
            fetched = jwks.hits

            # Rotation: a new EC key is published and the RSA one withdrawn. The
            # first token with the new kid makes the gateway fetch the set again.
            jwks.add("ec-2", "EC")
            jwks.withdraw("rsa-1")
            await refetch_allowed(gateway, 1)
            await connected(await clients.connect("js", gateway, jwks.token("ec-2", {"sub": "bob"})))
            assert jwks.hits == fetched + 1
            await refused(await clients.connect("python", gateway, jwks.token("rsa-1", {"sub": "ann"})))

            # The endpoint goes down: the known kid keeps working, an unknown one is refused.
            await jwks.stop()
            jwks.add("ec-3", "EC")
            await refetch_allowed(gateway, 2)
            await connected(await clients.connect("python", gateway, jwks.token("ec-2", {"sub": "cy"})))
            await refused(await clients.connect("js", gateway, jwks.token("ec-3", {"sub": "dee"})))
            assert gateway.metric("pushgate_jwks_fetches_total", outcome="failed") >= 1
            # No HMAC secret configured: an HS256 token is refused.
            await refused(await clients.connect("js", gateway, jwt.encode({"sub": "eve"}, SECRET)))
            no_traceback(gateway)
        finally:
            await clients.close()
            await jwks.stop()
    run(scenario())


def test_a_previous_hmac_secret_is_accepted_while_tokens_signed_with_it_live(start_gateway, tmp_path):
    gateway = start_gateway(f"--jwt-secret={NEW_SECRET}", f"--jwt-previous-secret={SECRET}")

    async def scenario():
        clients = Clients(tmp_path)
        try:
            await connected(await clients.connect("js", gateway, jwt.encode({"sub": "old"}, SECRET)))
            await connected(await clients.connect("js", gateway, jwt.encode({"sub": "new"}, NEW_SECRET)))
            await refused(await clients.connect("js", gateway, jwt.encode({"sub": "x"}, "z" * 40)))
        finally:
            await clients.close()
    run(scenario())


def test_the_subs_claim_subscribes_server_side_with_its_data(start_gateway, nsqd, tmp_path):
    gateway = start_gateway()
    token = jwt.encode({"sub": "sam", "channels": ["ignored"],
                        "subs": {"news": {"data": {"welcome": "to news"}}, "room:1": {}}}, SECRET)

    async def scenario():
        clients = Clients(tmp_path)
        try:
            harness = await clients.connect("js", gateway, token)
            await harness.wait_for(lambda: {e["channel"] for e in harness.seen("subscribed")} >= {"#sam", "news",
                                                                                                 "room:1"},
                                   "server-side subscriptions")
            subscribed = {e["channel"]: e for e in harness.seen("subscribed")}
            assert set(subscribed) == {"#sam", "news", "room:1"} and all(e["server_side"] for e in subscribed.values())
            assert json.loads(base64.b64decode(subscribed["news"]["data_b64"])) == {"welcome": "to news"}
            nsqd.publish({"channel": "news", "data": {"n": 1}})
            assert (await harness.next())[:2] == ("news", {"n": 1})
        finally:
            await clients.close()
    run(scenario())


def test_expire_at_ends_a_connection_before_its_tokens_exp(start_gateway, tmp_path):
    gateway = start_gateway("--expired-close-delay=1")
    now = int(time.time())

    async def scenario():
        clients = Clients(tmp_path)
        try:
            harness = await clients.connect("python", gateway, jwt.encode(
                {"sub": "tia", "exp": now + 3600, "expire_at": now + 2}, SECRET))
            await connected(harness)
            # Nothing to refresh with (the harness has no get_token): the connection ends.
            await harness.wait_for(lambda: harness.seen("disconnected") or harness.seen("connecting", 1),
                                   "the connection to end at expire_at", timeout=15)
            assert gateway.metric("pushgate_disconnects_total", reason="expired") + \
                gateway.metric("pushgate_token_errors_total", reason="expired") >= 1
        finally:
            await clients.close()
    run(scenario())


def test_the_meta_claim_rides_on_proxy_calls_and_the_user_claim_names_the_user(start_gateway, nsqd, tmp_path):
    async def scenario():
        backend = await Backend().start()
        clients = Clients(tmp_path)
        try:
            gateway = await start(start_gateway, f"--subscribe-proxy-url={backend.url('subscribe')}",
                                  "--subscribe-proxy=room:*", "--jwt-user-claim=user.id")
            token = jwt.encode({"user": {"id": 42}, "meta": {"plan": "pro"}}, SECRET)
            harness = await clients.connect("js", gateway, token, "room:lobby")
            await harness.wait_for(lambda: len(harness.seen("subscribed")) == 2, "#42 and room:lobby")
            assert {e["channel"] for e in harness.seen("subscribed")} == {"#42", "room:lobby"}
            (headers, body), = backend.calls["subscribe"]
            assert body["meta"] == {"plan": "pro"} and body["user"] == "42"
            nsqd.publish({"user": "42", "data": {"to": 42}})
            assert (await harness.next())[:2] == ("#42", {"to": 42})
            await refused(await clients.connect("js", gateway, jwt.encode({"sub": "42"}, SECRET)))
        finally:
            await clients.close()
            await backend.stop()
    run(scenario())


def test_anycable_tokens_with_identifiers_in_ext_are_accepted_at_cable(start_gateway, nsqd):
    gateway = start_gateway("--cable-jwt-ext")
    gid = base64.urlsafe_b64encode(b"gid://shop/User/7").rstrip(b"=").decode()   # User.find(7).to_gid_param
    # As anycable-rails' AnyCable::JWT.encode({current_user: user}) mints it.
    token = jwt.encode({"ext": json.dumps({"current_user": gid}), "exp": int(time.time()) + 300}, SECRET)
    mine = json.dumps({"channel": "$pubsub", "stream_name": "#7"}, separators=(",", ":"))

    async def scenario():
        client = await NodeClient.start("anycable_client.mjs", "--url", f"ws://127.0.0.1:{gateway.port}/cable?jid={token}",
                                        "--stream", "#7")
        try:
            await client.event("channel", identifier=mine, state="connect")
            nsqd.publish({"user": "7", "data": {"hello": "seven"}})
            await client.wait(lambda: client.received(mine), what="the publication to user 7")
            assert client.received(mine) == [{"hello": "seven"}]
        finally:
            await client.stop()
        ext = json.dumps({"current_user": gid})
        for bad, reason in ((jwt.encode({"ext": ext, "exp": int(time.time()) - 5}, SECRET), "token_expired"),
                              (jwt.encode({"ext": ext}, "a-secret-the-gateway-does-not-have-32b"), "unauthorized"),
                              (jwt.encode({"ext": "{not json"}, SECRET), "unauthorized")):
            client = await NodeClient.start("anycable_client.mjs", "--url",
                                            f"ws://127.0.0.1:{gateway.port}/cable?jid={bad}")
            try:
                await client.wait(lambda: [e for e in client.of("cable") if e["state"] != "connect"
                                           and reason in str(e.get("reason"))], what=reason)
                assert not client.of("cable", state="connect"), client.events
            finally:
                await client.stop()
        no_traceback(gateway)
    run(scenario())


def test_hostile_tokens_are_each_an_invalid_token_never_a_traceback(start_gateway, tmp_path):
    async def scenario():
        jwks = await JwksServer().start()
        jwks.add("k", "RSA")
        clients = Clients(tmp_path)
        try:
            gateway = await start(start_gateway, f"--jwks-url={jwks.url}", f"--jwks-refetch-interval={REFETCH}")
            await connected(await clients.connect("js", gateway, jwks.token("k", {"sub": "ok"})))
            # Beside the key set, tokens of --jwt-secret connect too.
            await connected(await clients.connect("js", gateway, jwt.encode({"sub": "hmac"}, SECRET)))
            header = lambda fields: jwt.utils.base64url_encode(json.dumps(fields).encode()).decode()  # noqa: E731
            forged = jwks.token("k", {"sub": "ok"}).rsplit(".", 1)[0] + "." + jwks.token("k", {"sub": "x"}).rsplit(".", 1)[1]
            hostile = {
                "forged": forged,
                "none": jwt.encode({"sub": "u"}, None, algorithm="none", headers={"kid": "k"}),
                "wrong alg": header({"alg": "HS256", "kid": "k"}) + "." + jwks.token("k", {"sub": "u"}).split(".", 1)[1],
                "kid an object": header({"alg": "RS256", "kid": {"x": 1}}) + ".e30.c2ln",
                "huge": jwt.encode({"sub": "u", "pad": "x" * 44000}, "z" * 40),   # just fits a frame
                "deep": header({"alg": "HS256"}) + "." + jwt.utils.base64url_encode(b"[" * 5000).decode() + ".c2ln",
                "not a jwt": "\u2603 snow",
            }
            # centrifuge-go where it was built (it starts in a few ms), else centrifuge-js.
            fast = "go" if SDK["go"].unavailable() is None else "js"
            harnesses = {name: await clients.connect(fast, gateway, token) for name, token in hostile.items()}
            # Past the largest frame (64 KiB) the WebSocket is closed 1009 before any token check
            # (centrifuge-js: "message size limit exceeded").
            too_big = await clients.connect("js", gateway, jwt.encode({"sub": "u", "pad": "x" * 70000}, SECRET))
            for name, harness in harnesses.items():
                await refused(harness)
            await refused(too_big, code=3)
            no_traceback(gateway)
        finally:
            await clients.close()
            await jwks.stop()
    run(scenario())
