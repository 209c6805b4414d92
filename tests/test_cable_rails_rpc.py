"""A Rails app switches unchanged: its own Action Cable connection and channel
classes decide, through the bridge's RPC endpoint, for browsers on pushgate.

The Rails 6.1 app (Debian's packages, tests/ruby/rails_app `serve`, under
WEBrick) signs users in with an encrypted cookie and has a ChatChannel; no
JWT anywhere. Two users in headless Chromium, each with the stock
@rails/actioncable, talk through two pushgate nodes that call the app with
--cable-rpc-url. A forged cookie is refused by the app's own `connect`;
`unsubscribed` and `disconnect` run when a tab closes and when a node drains.

Without Chromium (`make test` installs Debian's) the test is skipped and says so.
"""
from __future__ import annotations

import asyncio
import http.client as httpclient
import json
import os
import warnings
from pathlib import Path

import pytest

from gateway.config import OPTIONS

from tests.cable_clients import NodeClient
from tests.helpers import wait_for, wait_until
from tests.stack import ROOT, Process, free_port, http
from tests.test_browser_demo import chromium_path  # noqa: F401 (the fixture: skips, loudly, without Chromium)

RAILS_APP = ROOT / "tests" / "ruby" / "rails_app" / "app.rb"
RPC_SECRET = "rpc-secret-for-the-rails-tests"


class RailsChatApp(Process):
    """`ruby app.rb serve PORT`: the chat app under WEBrick, its RPC at /_pushgate."""

    name = "rails"

    def __init__(self, workdir: Path, nsqd_http: str):
        super().__init__(workdir)
        self.port = free_port()
        self.nsqd_http = nsqd_http
        self.events_path = workdir / "chat-events.jsonl"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return ["ruby", str(RAILS_APP), "serve", str(self.port)]

    def environment(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
        env.update(PUSHGATE_NSQD_HTTP_ADDRESS=self.nsqd_http, PUSHGATE_TOPIC="pushgate",
                   PUSHGATE_CABLE_RPC_SECRET=RPC_SECRET, CHAT_EVENTS=str(self.events_path))
        return env

    def wait_ready(self) -> None:
        wait_until(lambda: self.running() and http("GET", f"{self.url}/login?name=nobody")[0] == 200, timeout=60,
                   what="the Rails app under WEBrick")

    def events(self) -> list[dict]:
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines() if line.strip()]

    def count(self, **fields) -> int:
        return sum(all(e.get(k) == v for k, v in fields.items()) for e in self.events())


@pytest.fixture
def rails_app(tmp_path, nsqd):
    app = RailsChatApp(tmp_path / "rails", nsqd.http_address).start()
    yield app
    app.stop()


@pytest.fixture
def gateway_calls_rails():
    if "cable-rpc-url" not in {option.flag for option in OPTIONS}:
        reason = "RAILS RPC END-TO-END NOT RUN: this gateway has no --cable-rpc-url (the gateway side of issue 18)"
        warnings.warn(reason)
        pytest.skip(reason)


def test_two_users_chat_through_two_nodes_with_the_apps_own_channel_classes(
        gateway_calls_rails, chromium_path, start_gateway, rails_app):  # noqa: F811
    rpc = (f"--cable-rpc-url={rails_app.url}/_pushgate", f"--cable-rpc-secret={RPC_SECRET}",
           f"--allowed-origins={rails_app.url}")
    node_a, node_b = start_gateway(*rpc), start_gateway(*rpc)

    def room(node, number: int) -> str:
        return f"{rails_app.url}/rooms/{number}?cable=ws://127.0.0.1:{node.port}/cable"

    def login(name: str) -> str:
        return f"{rails_app.url}/login?name={name}"

    async def app_recorded(timeout: float = 15, **fields) -> None:
        await wait_for(lambda: rails_app.count(**fields), timeout=timeout,
                       what=f"the app to record {fields}; it recorded {rails_app.events()}")

    async def scenario():
        browser = await NodeClient.start("rails_chat.mjs", "--chromium", chromium_path)
        try:
            await browser.send({"open": {"name": "alice", "login": login("alice"), "url": room(node_a, 1)}})
            await browser.send({"open": {"name": "bob", "login": login("bob"), "url": room(node_b, 1)}})
            for name in ("alice", "bob"):
                await browser.event("connected", name=name, timeout=30)
                greeting = (await browser.event("received", name=name))["data"]
                assert greeting == {"greeting": f"welcome to lobby, {name}"}  # transmit in subscribed

            # perform("speak") runs ChatChannel#speak, whose broadcast_to goes through NSQ to both nodes.
            await browser.send({"speak": {"name": "alice", "text": "hello bob"}})
            said = {"from": "alice", "text": "hello bob"}
            for name in ("alice", "bob"):
                await browser.wait(lambda n=name: said in [e["data"] for e in browser.of("received", name=n)],
                                   timeout=15, what=f"{name} to get alice's message")

            # to_others: the app names the speaker's connection, which does not get its own echo.
            await browser.send({"speak": {"name": "bob", "text": "only for you", "others": True}})
            await browser.send({"speak": {"name": "bob", "text": "for everyone"}})
            for name in ("alice", "bob"):
                await browser.wait(lambda n=name: {"from": "bob", "text": "for everyone"} in
                                   [e["data"] for e in browser.of("received", name=n)], timeout=15,
                                   what=f"{name} to get bob's message")
            await browser.wait(lambda: {"from": "bob", "text": "only for you"} in
                               [e["data"] for e in browser.of("received", name="alice")], what="alice: only for you")
            assert {"from": "bob", "text": "only for you"} not in [e["data"] for e in browser.of("received", name="bob")]

            # A room the app's channel rejects.
            await browser.send({"open": {"name": "alice-staff", "login": login("alice"), "url": room(node_a, 2)}})
            await browser.event("rejected", name="alice-staff", timeout=30)
            await app_recorded(event="rejected", user="alice", room=2)

            # A forged cookie: the app's connect refuses, the stock client stops.
            forged = [{"name": "user_id", "value": "Zm9yZ2Vk--0123456789abcdef", "url": rails_app.url}]
            await browser.send({"open": {"name": "mallory", "cookies": forged, "url": room(node_b, 1)}})
            closed = await browser.event("disconnected", name="mallory", timeout=30)
            assert closed["willAttemptReconnect"] is False
            assert not browser.of("connected", name="mallory")
            await app_recorded(event="refused")

            # The tab closes: unsubscribed, then disconnect, once.
            await browser.send({"close": "alice"})
            await app_recorded(event="disconnect", user="alice")
            assert rails_app.count(event="unsubscribed", user="alice", room=1) == 1

            # Node B drains: bob's connection ends there, and the app hears of it.
            node_b.stop()
            await app_recorded(event="disconnect", user="bob")
            assert rails_app.count(event="unsubscribed", user="bob", room=1) == 1
            assert not browser.of("pageerror"), browser.of("pageerror")
        finally:
            await browser.stop()
    asyncio.run(scenario())
    # Each ended connection was told to the app exactly once: alice's staff tab
    # (its subscription rejected, its connection open) ended with the browser.
    wait_until(lambda: rails_app.count(event="disconnect", user="alice") >= 2, timeout=15,
               what="the app to hear of alice's second tab closing")
    node_a.stop()
    assert rails_app.count(event="disconnect", user="alice") == 2
    assert rails_app.count(event="disconnect", user="bob") == 1
    assert rails_app.count(event="unsubscribed", user="alice", room=2) == 1  # the rejection ran it, only then


def signed_in_cookie(app: RailsChatApp, name: str) -> str:
    """The Cookie header a browser sends after the app's sign-in."""
    conn = httpclient.HTTPConnection("127.0.0.1", app.port, timeout=10)
    conn.request("GET", f"/login?name={name}")
    response = conn.getresponse()
    response.read()
    conn.close()
    return next(c.split(";")[0] for c in response.headers.get_all("Set-Cookie") or [] if c.startswith("user_id="))


def test_whispers_and_presence_of_the_apps_channel_with_anycable_web(gateway_calls_rails, start_gateway, rails_app):
    """@anycable/web (npm) on the same channel: the whisper stream and the
    presence the app's `subscribed` named, served by the gateways across nodes."""
    rpc = (f"--cable-rpc-url={rails_app.url}/_pushgate", f"--cable-rpc-secret={RPC_SECRET}", "--cable-whisper")
    node_a, node_b = start_gateway(*rpc), start_gateway(*rpc)

    async def scenario():
        alice = await NodeClient.start("anycable_rpc_client.mjs", "--url", f"ws://127.0.0.1:{node_a.port}/cable",
                                       "--cookie", signed_in_cookie(rails_app, "alice"))
        bob = await NodeClient.start("anycable_rpc_client.mjs", "--url", f"ws://127.0.0.1:{node_b.port}/cable",
                                     "--cookie", signed_in_cookie(rails_app, "bob"))
        try:
            for client in (alice, bob):
                await client.event("channel", state="connect", timeout=20)
            for client in (alice, bob):  # join_presence in the app's subscribed, asked on either node
                async def both(c=client):
                    await c.send({"info": True})
                    await c.wait(lambda: c.of("info") or c.of("info-failed"), timeout=10, what="presence.info()")
                    found = c.of("info")[-1]["state"] if c.of("info") else {}
                    c.events[:] = [e for e in c.events if e.get("event") not in ("info", "info-failed")]
                    return set(found) == {"1", "2"} and found
                state = await wait_for(both, timeout=20, what=f"{client.name}: presence.info() with both users")
                assert state == {"1": {"name": "alice"}, "2": {"name": "bob"}}
            await alice.send({"whisper": {"typing": "alice"}})
            await bob.wait(lambda: {"typing": "alice"} in [e["data"] for e in bob.of("received")], timeout=15,
                           what="alice's whisper on the other node")
            await alice.send({"perform": "speak", "data": {"text": "after the whisper"}})
            await alice.wait(lambda: {"from": "alice", "text": "after the whisper"} in
                             [e["data"] for e in alice.of("received")], timeout=15, what="alice's own message")
            assert {"typing": "alice"} not in [e["data"] for e in alice.of("received")]  # never back to the sender
        finally:
            await alice.stop()
            await bob.stop()
    asyncio.run(scenario())
