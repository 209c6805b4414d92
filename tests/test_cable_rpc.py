"""/cable with the Rails app in the loop, over AnyCable's RPC over HTTP,
against a stand-alone RPC server written to AnyCable's JSON shapes
(tests/cable_rpc_app.py): the wire format checked apart from the bridge,
then raw and stock clients (@anycable/web under Node) through two nodes."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import websockets

from auth import connection_token
from tests.cable_clients import NodeClient
from tests.cable_rpc_app import RPC_SECRET, signed_cookie
from tests.helpers import run, wait_for, wait_until, wait_until_time
from tests.stack import ROOT, SECRET, free_port

V1, EXT = "actioncable-v1-json", "actioncable-v1-ext-json"


class RpcApp:
    """The stand-alone RPC server, as a process; ``calls()`` are what it got."""

    def __init__(self, workdir: Path, nsqd, delay: float = 0.0):
        self.port = free_port()
        self.record = workdir / f"rpc-calls-{self.port}.jsonl"
        self.nsqd = nsqd
        self.delay = delay
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/_anycable"

    def start(self) -> "RpcApp":
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "cable_rpc_app.py"), f"--port={self.port}",
             f"--nsqd-http=http://{self.nsqd.http_address}", f"--record={self.record}", f"--delay={self.delay}"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == b"ready", self.proc.stderr.read() if self.proc.stderr else ""
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None

    def calls(self, path: str | None = None) -> list[dict]:
        if not self.record.exists():
            return []
        found = [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]
        return [c for c in found if path is None or c["path"] == path]


@pytest.fixture
def rpc_app(tmp_path, nsqd):
    apps: list[RpcApp] = []

    def start(delay: float = 0.0) -> RpcApp:
        app = RpcApp(tmp_path, nsqd, delay).start()
        apps.append(app)
        return app
    yield start
    for app in apps:
        app.stop()


@pytest.fixture
def rpc_gateway(start_gateway):
    def start(app: RpcApp, *extra: str, **kwargs):
        return start_gateway(f"--cable-rpc-url={app.url}", f"--cable-rpc-secret={RPC_SECRET}",
                             "--public-channels=news", *extra, **kwargs)
    return start


def chat(room: object = 1) -> str:
    return json.dumps({"channel": "ChatChannel", "room": room}, separators=(",", ":"))


async def open_ws(gateway, user: str | None, subprotocol: str = V1, query: str = "", cookie: str = ""):
    cookie = cookie or (signed_cookie(user) if user else "")
    return await websockets.connect(f"ws://127.0.0.1:{gateway.port}/cable{query}", subprotocols=[subprotocol],
                                    additional_headers={"Cookie": cookie} if cookie else {})


async def recv(ws, timeout: float = 5.0) -> dict:
    while (message := json.loads(await asyncio.wait_for(ws.recv(), timeout))).get("type") == "ping":
        pass
    return message


async def send(ws, command: str, identifier: str, **fields) -> None:
    await ws.send(json.dumps({"command": command, "identifier": identifier, **fields}))


def perform(action: str, **data) -> str:
    return json.dumps({"action": action, **data})


# --- the wire, checked against AnyCable's shapes ----------------------------------------------------

def test_connect_command_and_disconnect_bodies_and_headers_are_anycables(rpc_app, rpc_gateway):
    app = rpc_app()
    gateway = rpc_gateway(app)

    async def scenario():
        ws = await open_ws(gateway, "alice", query="?room=1&x=%20y")
        assert await recv(ws) == {"type": "welcome", "sid": app.calls("connect")[0]["headers"]["x-anycable-meta-sid"]}
        await send(ws, "subscribe", chat(1))
        assert await recv(ws) == {"identifier": chat(1), "type": "confirm_subscription"}
        assert await recv(ws) == {"identifier": chat(1), "message": {"hello": "alice"}}
        for expected in (1, 2):
            await send(ws, "message", chat(1), data=perform("count"))
            assert await recv(ws) == {"identifier": chat(1), "message": {"count": expected}}
        await ws.close()
        await wait_for(lambda: app.calls("disconnect"), what="the disconnect call")

    run(scenario())
    connect, = app.calls("connect")
    sid = connect["headers"]["x-anycable-meta-sid"]
    assert sid and connect["headers"]["x-anycable-meta-protov"] == "v1"
    assert connect["headers"]["authorization"] == f"Bearer {RPC_SECRET}"
    assert connect["headers"]["content-type"] == "application/json"
    assert connect["body"] == {"env": {
        "url": f"http://127.0.0.1:{gateway.port}/cable?room=1&x=%20y",
        "headers": {"cookie": signed_cookie("alice"), "REMOTE_ADDR": "127.0.0.1"}}}
    subscribe, first, second = app.calls("command")
    identifiers = json.dumps({"current_user": "alice"})
    env = {"url": connect["body"]["env"]["url"], "headers": connect["body"]["env"]["headers"],
           "cstate": {"signed_in_at": "now"}}
    assert subscribe["body"] == {"command": "subscribe", "identifier": chat(1), "connection_identifiers": identifiers,
                                 "env": env}
    istate = {"$w": "chat_1", "$p": "chat_1", "room": "1"}
    assert first["body"] == {"command": "message", "identifier": chat(1), "connection_identifiers": identifiers,
                             "data": perform("count"), "env": {**env, "istate": istate}}
    # The app's istate and cstate changes come back on the next call, byte for byte.
    assert second["body"]["env"]["istate"] == {**istate, "count": "1"}
    assert second["body"]["env"]["cstate"] == {"signed_in_at": "now", "last": "1"}
    assert all(c["headers"]["x-anycable-meta-sid"] == sid for c in app.calls())
    disconnect, = app.calls("disconnect")
    assert disconnect["body"] == {
        "identifiers": identifiers, "subscriptions": [chat(1)],
        "env": {**env, "cstate": {"signed_in_at": "now", "last": "2"},
                "istate": {chat(1): json.dumps({**istate, "count": "2"}, separators=(",", ":"))}}}


def test_a_forged_cookie_gets_the_apps_refusal_and_a_jwt_connection_no_call_at_all(rpc_app, rpc_gateway, nsqd):
    app = rpc_app()
    gateway = rpc_gateway(app)

    async def scenario():
        ws = await open_ws(gateway, None, cookie="user=mallory--" + "0" * 64)
        assert await recv(ws) == {"type": "disconnect", "reason": "unauthorized", "reconnect": False}
        with pytest.raises(websockets.ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1000
        # A JWT connection is served as before: pushgate's own welcome, $pubsub, no call.
        token = connection_token(SECRET, "bob")
        jwt = await websockets.connect(f"ws://127.0.0.1:{gateway.port}/cable?jid={token}", subprotocols=[V1])
        assert await recv(jwt) == {"type": "welcome"}
        news = json.dumps({"channel": "$pubsub", "stream_name": "news"})
        await send(jwt, "subscribe", news)
        assert await recv(jwt) == {"identifier": news, "type": "confirm_subscription"}
        nsqd.publish({"channel": "news", "data": {"n": 1}})
        assert await recv(jwt) == {"identifier": news, "message": {"n": 1}}
        await send(jwt, "message", news, data=perform("speak"))   # no channel code: logged, not sent anywhere
        await jwt.close()

    run(scenario())
    assert len(app.calls()) == 1 and app.calls("connect")   # the forged one's connect only: no disconnect owed
    wait_until(lambda: "message on" in gateway.log() and "not served" in gateway.log(), what="the log line")


# --- through two nodes ------------------------------------------------------------------------------

def test_subscribe_perform_and_stream_changes_reach_every_node_and_the_echo_can_be_excluded(rpc_app, rpc_gateway):
    app = rpc_app()
    a = rpc_gateway(app)
    b = rpc_gateway(app)

    async def scenario():
        alice = await open_ws(a, "alice")
        bob = await open_ws(b, "bob")
        for ws in (alice, bob):
            await recv(ws)   # welcome
            await send(ws, "subscribe", chat(1))
            await recv(ws)
            await recv(ws)   # confirm, hello
        await send(alice, "subscribe", chat("forbidden"))
        assert await recv(alice) == {"identifier": chat("forbidden"), "type": "reject_subscription"}
        await send(alice, "message", chat(1), data=perform("speak", text="hi"))
        said = {"identifier": chat(1), "message": {"user": "alice", "text": "hi"}}
        assert await recv(bob) == said and await recv(alice) == said
        # exclude_socket: the sender's own connection skips its echo, everyone else has it.
        await send(alice, "message", chat(1), data=perform("speak", text="no echo", exclude=True))
        assert await recv(bob) == {"identifier": chat(1), "message": {"user": "alice", "text": "no echo"}}
        await send(alice, "message", chat(1), data=perform("echo"))
        assert (await recv(alice))["message"] == {"action": "echo"}   # the excluded one never came
        # The app changes what a subscription reads: stream_from, stop_stream_from, stop_all_streams.
        await send(bob, "message", chat(1), data=perform("follow", stream="extra"))
        await send(bob, "message", chat(1), data=perform("echo"))
        await recv(bob)
        a.nsqd.publish({"channel": "extra", "data": {"e": 1}})
        assert await recv(bob) == {"identifier": chat(1), "message": {"e": 1}}
        await send(bob, "message", chat(1), data=perform("unfollow", stream="extra"))
        await send(bob, "message", chat(1), data=perform("stop"))
        await send(bob, "message", chat(1), data=perform("echo"))
        await recv(bob)
        a.nsqd.publish({"channel": "extra", "data": {"e": 2}})
        await send(alice, "message", chat(1), data=perform("speak", text="unheard by bob"))
        await recv(alice)
        await send(bob, "message", chat(1), data=perform("echo"))
        assert (await recv(bob))["message"] == {"action": "echo"}   # neither extra nor chat_1 came
        # disconnect: true closes; unsubscribe runs the app's unsubscribed.
        await send(alice, "unsubscribe", chat(1))
        await send(bob, "message", chat(1), data=perform("kick"))
        with pytest.raises(websockets.ConnectionClosed):
            await recv(bob)
        await wait_for(lambda: len(app.calls("disconnect")) == 1, what="bob's disconnect")
        await alice.close()
        await wait_for(lambda: len(app.calls("disconnect")) == 2, what="alice's disconnect")

    run(scenario())
    unsubscribe = [c for c in app.calls("command") if c["body"]["command"] == "unsubscribe"]
    assert [c["body"]["identifier"] for c in unsubscribe] == [chat(1)]
    disconnects = {json.loads(c["body"]["identifiers"])["current_user"]: c["body"] for c in app.calls("disconnect")}
    assert disconnects["bob"]["subscriptions"] == [chat(1)]
    assert "subscriptions" not in disconnects["alice"]   # it had unsubscribed


def test_whisper_reaches_the_other_tab_and_node_never_the_sender_and_presence_info_counts_every_node(
        rpc_app, rpc_gateway):
    app = rpc_app()
    a = rpc_gateway(app, "--cable-whisper")
    b = rpc_gateway(app, "--cable-whisper")

    async def scenario():
        url = lambda node: f"ws://127.0.0.1:{node.port}/cable"  # noqa: E731
        alice = await NodeClient.start("anycable_rpc_client.mjs", "--url", url(a), "--cookie", signed_cookie("alice"))
        tab = await NodeClient.start("anycable_rpc_client.mjs", "--url", url(a), "--cookie", signed_cookie("alice"))
        bob = await NodeClient.start("anycable_rpc_client.mjs", "--url", url(b), "--cookie", signed_cookie("bob"))
        clients = (alice, tab, bob)
        try:
            for client in clients:
                await client.event("channel", state="connect")
            await alice.send({"whisper": {"typing": "alice"}})
            for client in (tab, bob):
                await client.wait(lambda c=client: {"typing": "alice"} in [e["data"] for e in c.of("received")],
                                  what="the whisper")
            await alice.send({"perform": "echo"})
            await alice.wait(lambda: any(e["data"].get("action") == "echo" for e in alice.of("received")))
            assert {"typing": "alice"} not in [e["data"] for e in alice.of("received")]
            # Presence: alice joins from the client, bob through the app's answer (join_presence).
            await alice.send({"join": {"id": "alice", "info": {"name": "Alice"}}})
            await tab.send({"join": {"id": "alice", "info": {"name": "Alice"}}})
            await bob.send({"perform": "here"})
            both = {"alice": {"name": "Alice"}, "bob": {"name": "bob"}}
            for client in (alice, bob):
                async def seen(c=client):
                    await c.send({"info": True})
                    await c.event("info", timeout=5)
                    state = c.of("info")[-1]["state"]
                    c.events[:] = [e for e in c.events if e.get("event") != "info"]
                    return state == both
                await wait_for(seen, timeout=10, what="presence.info() with both users")
            assert bob.of("presence", message={"type": "join", "id": "alice", "info": {"name": "Alice"}})
            await tab.send({"exit": True})
            await alice.send({"leave": True})
            await bob.wait(lambda: bob.of("presence", message={"type": "leave", "id": "alice"}), what="alice's leave")
        finally:
            for client in clients:
                await client.stop()

    run(scenario())


def test_whispers_are_off_by_default_and_presence_failures_are_answered(rpc_app, rpc_gateway):
    app = rpc_app()
    gateway = rpc_gateway(app)

    async def scenario():
        ws = await open_ws(gateway, "alice", EXT)
        other = await open_ws(gateway, "bob", EXT)
        for each in (ws, other):
            await recv(each)
            await send(each, "subscribe", chat(1))
            await recv(each)
            await recv(each)
        await send(ws, "whisper", chat(1), data={"typing": True})
        await send(ws, "presence", chat(2))   # no such subscription: an error answer, never silence
        assert await recv(ws) == {"type": "presence", "identifier": chat(2), "message": {"type": "error", "total": 0}}
        await send(other, "message", chat(1), data=perform("echo"))
        assert (await recv(other))["message"] == {"action": "echo"}   # the whisper never came
        await ws.close()
        await other.close()

    run(scenario())
    wait_until(lambda: "whispers are off (--cable-whisper)" in gateway.log(), what="the log line")


# --- when the app is down -------------------------------------------------------------------------

def test_rpc_down_refuses_connects_with_a_reconnect_and_a_log_line(rpc_app, rpc_gateway):
    app = rpc_app()
    gateway = rpc_gateway(app, "--cable-rpc-timeout=0.5")
    app.stop()

    async def scenario():
        ws = await open_ws(gateway, "alice")
        assert await recv(ws) == {"type": "disconnect", "reason": "rpc_unavailable", "reconnect": True}
        with pytest.raises(websockets.ConnectionClosed):
            await recv(ws)

    run(scenario())
    assert gateway.metric("pushgate_proxy_calls_total", proxy="cable_rpc", outcome="unavailable") >= 1
    wait_until(lambda: "cable_rpc proxy" in gateway.log() and "unavailable" in gateway.log(), what="the log line")


def test_a_drained_node_calls_disconnect_once_per_connection(rpc_app, rpc_gateway):
    app = rpc_app()
    gateway = rpc_gateway(app)

    async def scenario():
        sockets = []
        for user in ("u1", "u2", "u3"):
            ws = await open_ws(gateway, user)
            await recv(ws)
            await send(ws, "subscribe", chat(1))
            await recv(ws)
            await recv(ws)
            sockets.append(ws)
        await asyncio.get_running_loop().run_in_executor(None, gateway.stop)
        for ws in sockets:
            assert await recv(ws) == {"type": "disconnect", "reason": "server_restart", "reconnect": True}

    run(scenario())
    users = sorted(json.loads(c["body"]["identifiers"])["current_user"] for c in app.calls("disconnect"))
    assert users == ["u1", "u2", "u3"]
    assert all(c["body"]["subscriptions"] == [chat(1)] for c in app.calls("disconnect"))


def test_past_the_queue_a_connect_gets_503_and_a_slow_app_a_refusal_not_a_hang(rpc_app, rpc_gateway):
    app = rpc_app(delay=1.5)
    gateway = rpc_gateway(app, "--cable-rpc-concurrency=1", "--cable-rpc-queue=1", "--cable-rpc-timeout=2")

    async def scenario():
        first = await open_ws(gateway, "u1")
        second = await open_ws(gateway, "u2")
        await wait_for(lambda: gateway.metric("pushgate_proxy_queue_depth", proxy="cable_rpc") == 1,
                       what="one call in flight and one queued")
        with pytest.raises(websockets.InvalidStatus) as refused:
            await open_ws(gateway, "u3")
        assert refused.value.response.status_code == 503
        # The first is answered in time; the second waited 1.5 s of its 2 and is
        # refused with a reconnect when its time runs out, never left hanging.
        assert (await recv(first))["type"] == "welcome"
        assert await recv(second) == {"type": "disconnect", "reason": "rpc_unavailable", "reconnect": True}
        await first.close()

    run(scenario())
    assert gateway.metric("pushgate_proxy_calls_total", proxy="cable_rpc", outcome="overloaded") >= 1
    assert gateway.metric("pushgate_proxy_calls_total", proxy="cable_rpc", outcome="timeout") >= 1


def test_stock_actioncable_clients_on_two_nodes_talk_through_a_ruby_style_channel(rpc_app, rpc_gateway):
    app = rpc_app()
    a = rpc_gateway(app)
    b = rpc_gateway(app)
    room = {"channel": "ChatChannel", "room": 1}

    async def scenario():
        def start(node, user):
            return NodeClient.start("actioncable_client.mjs", "--url", f"ws://127.0.0.1:{node.port}/cable",
                                    "--header", f"Cookie={signed_cookie(user)}", "--subscribe", json.dumps(room))
        alice, bob = await start(a, "alice"), await start(b, "bob")
        try:
            for client in (alice, bob):
                await client.event("connected", reconnected=False)
            assert {"hello": "alice"} in alice.received()   # transmit in subscribed
            await alice.send({"subscribe": {"channel": "ChatChannel", "room": "forbidden"}})
            await alice.event("rejected")
            await alice.send({"perform": {"params": room, "action": "speak", "data": {"text": "hi bob"}}})
            for client in (alice, bob):
                await client.wait(lambda c=client: {"user": "alice", "text": "hi bob"} in c.received(),
                                  what="alice's message")
            # The app closes bob's connection (disconnect: true): the stock client comes back by itself.
            await bob.send({"perform": {"params": room, "action": "kick"}})
            await bob.event("connected", reconnected=True, timeout=15)
            await bob.send({"perform": {"params": room, "action": "speak", "data": {"text": "back"}}})
            await alice.wait(lambda: {"user": "bob", "text": "back"} in alice.received(), what="bob back")
            await bob.send({"exit": True})
            await wait_for(lambda: len(app.calls("disconnect")) == 2, what="bob's two disconnects")
        finally:
            for client in (alice, bob):
                await client.stop()

    run(scenario())
    wait_until(lambda: len(app.calls("disconnect")) == 3, what="alice's disconnect")
    users = sorted(json.loads(c["body"]["identifiers"])["current_user"] for c in app.calls("disconnect"))
    assert users == ["alice", "bob", "bob"]


def test_an_ext_client_recovers_what_it_missed_of_a_channel_the_app_streams(rpc_app, rpc_gateway, nsqd):
    app = rpc_app()
    gateway = rpc_gateway(app)
    wait_until_time(gateway.recovers_from())

    async def scenario():
        ws = await open_ws(gateway, "alice", EXT)
        await recv(ws)
        await send(ws, "subscribe", chat(1))
        await recv(ws)
        await recv(ws)
        nsqd.publish({"channel": "chat_1", "data": {"n": 1}})
        first = await recv(ws)
        assert first["message"] == {"n": 1} and first["stream_id"] == "chat_1"
        await ws.close()
        nsqd.publish({"channel": "chat_1", "data": {"n": 2}})
        nsqd.publish({"channel": "chat_1", "data": {"n": 3}})
        await wait_for(lambda: gateway.messages_read() >= 3, what="the node read both")
        again = await open_ws(gateway, "alice", EXT)
        await recv(again)
        position = {"epoch": first["epoch"], "offset": first["offset"]}
        await send(again, "subscribe", chat(1), history={"streams": {"chat_1": position}})
        assert (await recv(again))["type"] == "confirm_subscription"
        assert (await recv(again))["message"] == {"hello": "alice"}
        assert [(await recv(again))["message"] for _ in range(2)] == [{"n": 2}, {"n": 3}]
        assert await recv(again) == {"identifier": chat(1), "type": "confirm_history"}
        await again.close()

    run(scenario())


def test_an_app_error_garbage_or_a_hoard_is_logged_and_the_connection_goes_on(rpc_app, rpc_gateway):
    app = rpc_app()
    gateway = rpc_gateway(app)

    async def scenario():
        ws = await open_ws(gateway, "alice")
        await recv(ws)
        await send(ws, "subscribe", chat(1))
        await recv(ws)
        await recv(ws)
        for action in ("fail", "garbage", "hoard"):
            await send(ws, "message", chat(1), data=perform(action))
        await send(ws, "message", chat(1), data=perform("count"))
        assert await recv(ws) == {"identifier": chat(1), "message": {"count": 1}}   # nothing else came
        await ws.close()

    run(scenario())
    log = gateway.log()
    assert "the app's perform on" in log and "boom" in log
    assert "status must be 0, 1 or 2" in log and "perform on" in log and "lost" in log
    count = [c for c in app.calls("command") if '"count"' in c["body"].get("data", "")]
    assert "big" not in count[0]["body"]["env"]["istate"]
    # The garbage and the hoard, counted both (the log says one line of a kind a second).
    assert gateway.metric("pushgate_proxy_calls_total", proxy="cable_rpc", outcome="refused") == 2


def test_a_connection_that_closes_while_the_app_decides_gets_the_disconnect_its_answer_calls_for(rpc_app, rpc_gateway):
    app = rpc_app(delay=0.4)
    gateway = rpc_gateway(app)

    async def scenario():
        # Closed while its connect is decided: the app's connect ran, so its disconnect runs too.
        early = await open_ws(gateway, "early")
        await wait_for(lambda: app.calls("connect"), what="the connect call")
        await early.close()
        # Closed while a subscribe is decided: subscribed ran, so disconnect lists it (unsubscribed runs).
        joiner = await open_ws(gateway, "joiner")
        await recv(joiner)
        await send(joiner, "subscribe", chat(1))
        await wait_for(lambda: app.calls("command"), what="the subscribe call")
        await joiner.close()
        # Closed while an unsubscribe is decided: unsubscribed ran, so disconnect does not list it again.
        leaver = await open_ws(gateway, "leaver")
        await recv(leaver)
        await send(leaver, "subscribe", chat(1))
        await recv(leaver)
        await send(leaver, "unsubscribe", chat(1))
        await wait_for(lambda: any(c["body"]["command"] == "unsubscribe" for c in app.calls("command")),
                       what="the unsubscribe call")
        await leaver.close()
        await wait_for(lambda: len(app.calls("disconnect")) == 3, what="three disconnects")

    run(scenario())
    told = {json.loads(c["body"]["identifiers"])["current_user"]: c["body"].get("subscriptions")
            for c in app.calls("disconnect")}
    assert told == {"early": None, "joiner": [chat(1)], "leaver": None}


def test_an_anycable_jwt_with_cable_jwt_ext_brings_its_identifiers_to_the_apps_channels(rpc_app, rpc_gateway):
    """As anycable-go's JWT identification: no connect call, the token's ext
    identifiers are the connection's identifiers in every command and in the
    disconnect call."""
    import jwt as pyjwt
    app = rpc_app()
    gateway = rpc_gateway(app, "--cable-jwt-ext")
    room = {"channel": "ChatChannel", "room": 1}
    token = pyjwt.encode({"ext": json.dumps({"current_user": "alice"})}, SECRET)

    async def scenario():
        client = await NodeClient.start("actioncable_client.mjs", "--url",
                                        f"ws://127.0.0.1:{gateway.port}/cable?jid={token}", "--subscribe",
                                        json.dumps(room))
        try:
            await client.event("connected", reconnected=False)
            await client.wait(lambda: {"hello": "alice"} in client.received(), what="the channel's greeting")
            await client.send({"exit": True})
            await wait_for(lambda: app.calls("disconnect"), what="the disconnect call")
        finally:
            await client.stop()

    run(scenario())
    assert not app.calls("connect")
    (subscribe,) = [c for c in app.calls("command") if c["body"]["command"] == "subscribe"]
    assert json.loads(subscribe["body"]["connection_identifiers"]) == {"current_user": "alice"}
    assert json.loads(app.calls("disconnect")[0]["body"]["identifiers"]) == {"current_user": "alice"}
