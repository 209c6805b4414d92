"""Centrifugo's server API, driven by the stock `cent` client from PyPI
against two real gateway nodes on one nsqd, with stock centrifuge-python
clients connected to both; and presence across the nodes, including a node
killed with SIGKILL.

The reply shapes are those of Centrifugo's server API documentation (v5/v6,
what cent 5.x speaks): `{"result": {...}}` or `{"error": {"code", "message"}}`
with HTTP 200; the raw bodies are checked too, not only what cent makes of
them.
"""
from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
from cent import (AsyncClient, BatchRequest, BroadcastRequest, CentApiResponseError, CentTransportError,
                  CentUnauthorizedError, ChannelsRequest, Disconnect, DisconnectRequest, HistoryRemoveRequest,
                  HistoryRequest, InfoRequest, PresenceRequest, PresenceStatsRequest, PublishRequest,
                  RefreshRequest, SubscribeRequest, UnsubscribeRequest)

from auth import connection_token
from centrifuge import Client

from tests.clients import ChannelRecorder, Recorder
from tests.helpers import wait_for, wait_until
from tests.stack import API_KEY, SECRET, http

CLUSTER = ("--public-channels=room:*,news", "--presence=room:*", "--join-leave=room:*", "--presence-interval=1",
           "--presence-ttl=3")


class Events(ChannelRecorder):
    async def on_join(self, ctx) -> None:
        self.parent.joins.append((self.channel, ctx.info.user, ctx.info.client))

    async def on_leave(self, ctx) -> None:
        self.parent.leaves.append((self.channel, ctx.info.user, ctx.info.client))


class Watcher(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.joins: list = []
        self.leaves: list = []
        self.server_subscribed: list = []

    def channel(self, name: str) -> Events:
        return Events(self, name)

    async def on_subscribed(self, ctx) -> None:   # server-side subscriptions
        self.server_subscribed.append(ctx.channel)
        await super().on_subscribed(ctx)


async def client(gateway, user: str, *channels: str, info=None):
    """A connected centrifuge-python client, subscribed to ``channels``, whose
    watcher records joins, leaves and server-side subscriptions too."""
    watcher = Watcher()
    sdk = Client(gateway.ws_url, token=connection_token(SECRET, user, info=info), events=watcher)
    for channel in channels:
        await sdk.new_subscription(channel, events=watcher.channel(channel)).subscribe()
    await sdk.connect()
    await wait_for(lambda: all(c in watcher.subscribed for c in channels))
    return sdk, watcher


def raw(gateway, method: str, body: dict, key: str = API_KEY) -> tuple[int, dict]:
    status, answer = http("POST", f"{gateway.url}/api/{method}", json.dumps(body).encode(), {"X-API-Key": key})
    return status, json.loads(answer) if answer else {}


def cluster_ready(*gateways) -> None:
    """Every node has heard every other's heartbeat."""
    for gateway in gateways:
        wait_until(lambda g=gateway: len(raw(g, "info", {})[1]["result"]["nodes"]) == len(gateways),
                   what=f"{gateway.name} to hear every node")


def test_cent_drives_every_method_against_two_nodes(start_gateway):
    a = start_gateway(*CLUSTER, "--history-size=10")
    b = start_gateway(*CLUSTER, "--history-size=10")
    cluster_ready(a, b)

    async def scenario():
        api_a, api_b = AsyncClient(f"{a.url}/api", API_KEY), AsyncClient(f"{b.url}/api", API_KEY)
        alice, alice_w = await client(a, "alice", "room:1", info={"name": "Alice"})
        bob_a, bob_a_w = await client(a, "bob", "room:1")
        bob_b, bob_b_w = await client(b, "bob", "room:1")
        carol_a, carol_a_w = await client(a, "carol")
        carol_b, carol_b_w = await client(b, "carol")

        # presence and presence_stats: every client of the channel, on either node.
        await wait_for(lambda: equals(stats_of(api_a), (3, 2)), what="stats_of(api_a) == (3, 2)")
        await wait_for(lambda: equals(stats_of(api_b), (3, 2)), what="stats_of(api_b) == (3, 2)")
        for api in (api_a, api_b):
            presence = (await api.presence(PresenceRequest(channel="room:1"))).presence
            assert {c: (i.user, i.conn_info) for c, i in presence.items()} == {
                alice.client_id: ("alice", {"name": "Alice"}), bob_a.client_id: ("bob", None),
                bob_b.client_id: ("bob", None)}
            assert all(i.client == c for c, i in presence.items())
        status, body = raw(b, "presence_stats", {"channel": "room:1"})
        assert (status, body) == (200, {"result": {"num_clients": 3, "num_users": 2}})
        status, body = raw(a, "presence", {"channel": "room:1"})
        assert body["result"]["presence"][alice.client_id] == {
            "user": "alice", "client": alice.client_id, "conn_info": {"name": "Alice"}}

        # Join and leave reach subscribers on both nodes.
        dave, _ = await client(a, "dave", "room:1")
        for watcher in (alice_w, bob_b_w):
            await wait_for(lambda w=watcher: ("room:1", "dave", dave.client_id) in w.joins)
        await dave.disconnect()
        for watcher in (alice_w, bob_b_w):
            await wait_for(lambda w=watcher: ("room:1", "dave", dave.client_id) in w.leaves)

        # publish (and pushgate's user extension), broadcast: everyone on both nodes gets them.
        assert (await api_b.publish(PublishRequest(channel="room:1", data={"n": 1}))).model_dump() == \
            {"offset": 0, "epoch": ""}
        status, body = raw(a, "publish", {"user": "carol", "data": {"to": "carol"}})
        assert (status, body) == (200, {"result": {}})
        for watcher in (alice_w, bob_a_w, bob_b_w):
            assert await watcher.next() == ("room:1", {"n": 1})
        for watcher in (carol_a_w, carol_b_w):
            assert await watcher.next() == ("#carol", {"to": "carol"})
        result = await api_a.broadcast(BroadcastRequest(channels=["room:1", "", "#carol"], data={"n": 2}))
        assert [(r.error.code if r.error else None) for r in result.responses] == [None, 107, None]
        for watcher in (alice_w, bob_a_w, bob_b_w):
            assert await watcher.next() == ("room:1", {"n": 2})
        for watcher in (carol_a_w, carol_b_w):
            assert await watcher.next() == ("#carol", {"n": 2})
        status, body = raw(a, "broadcast", {"channels": ["room:1", ""], "data": 3})
        assert body == {"result": {"responses": [{"result": {}}, {"error": {"code": 107, "message": "bad request"}}]}}
        for watcher in (alice_w, bob_a_w, bob_b_w):
            assert await watcher.next() == ("room:1", 3)

        # history and history_remove (on every node: each keeps its own copy).
        for api in (api_a, api_b):
            history = await api.history(HistoryRequest(channel="room:1", limit=10))
            assert [p.data for p in history.publications] == [{"n": 1}, {"n": 2}, 3] and history.epoch
            assert history.offset == history.publications[-1].offset
        top = (await api_a.history(HistoryRequest(channel="room:1"))).offset
        assert top and (await api_a.history(HistoryRequest(channel="room:1"))).publications == []
        await api_a.history_remove(HistoryRemoveRequest(channel="room:1"))
        for api in (api_a, api_b):
            await wait_for(lambda api=api: equals(history_len(api), 0), what="history_len(api) == 0")
            assert (await api.history(HistoryRequest(channel="room:1"))).offset == top

        # channels: subscriber counts across the nodes; info: every node.
        channels = (await api_b.channels(ChannelsRequest(pattern="room:*"))).channels
        assert {c: i.num_clients for c, i in channels.items()} == {"room:1": 3}
        status, body = raw(a, "channels", {})
        assert body["result"]["channels"]["#carol"] == {"num_clients": 2}
        # Another node's figures are those of its last heartbeat (every --presence-interval).
        async def clients_per_node() -> dict:
            return {n.name: n.num_clients for n in (await api_a.info(InfoRequest())).nodes}
        await wait_for(lambda: equals(clients_per_node(), {f"{a.name}-{a.port}": 3, f"{b.name}-{b.port}": 2}),
                       what="info: 3 clients on A and 2 on B")
        nodes = (await api_a.info(InfoRequest())).nodes
        assert all(n.uid and n.version.startswith("pushgate") and n.uptime >= 0 for n in nodes)

        # subscribe (server-side, for a user on every node) and unsubscribe.
        await api_a.subscribe(SubscribeRequest(user="carol", channel="news"))
        for watcher in (carol_a_w, carol_b_w):
            await wait_for(lambda w=watcher: "news" in w.server_subscribed)
        await api_a.publish(PublishRequest(channel="news", data="hello"))
        for watcher in (carol_a_w, carol_b_w):
            assert await watcher.next() == ("news", "hello")
        await api_b.unsubscribe(UnsubscribeRequest(user="bob", channel="room:1"))
        for watcher in (bob_a_w, bob_b_w):
            await wait_for(lambda w=watcher: "room:1" in w.unsubscribed)
            assert watcher.unsubscribed["room:1"].code == 2000
        await wait_for(lambda: equals(stats_of(api_a), (1, 1)), what="stats_of(api_a) == (1, 1)")

        # refresh: a new expiry, or expired now (3005: the SDK reconnects).
        await api_a.refresh(RefreshRequest(user="alice", expire_at=int(time.time()) + 3600))
        await api_b.refresh(RefreshRequest(user="alice", expired=True))
        await wait_for(lambda: (3005, "connection expired") in alice_w.connecting)
        await wait_for(lambda: equals(stats_of(api_a), (1, 1)), what="stats_of(api_a) == (1, 1)")   # she is back

        # disconnect: every connection of the user, on both nodes, with the code given.
        await api_b.disconnect(DisconnectRequest(user="carol", disconnect=Disconnect(code=4501, reason="banned")))
        for watcher in (carol_a_w, carol_b_w):
            await wait_for(lambda w=watcher: (4501, "banned") in w.disconnects)
        # A code the SDKs do not act on (1000, a WebSocket's own) is refused, saying
        # what would do; so is a reason too long for a close frame.
        status, body = raw(a, "disconnect", {"user": "carol", "disconnect": {"code": 1000, "reason": "bye"}})
        assert (status, body["error"]["code"]) == (200, 107)
        assert body["error"]["message"] == (
            "bad request: disconnect.code 1000 is not one the SDKs act on: give 3000-4999 (3000-3499 and "
            "4000-4499: the client reconnects; 3500-3999 and 4500-4999: it does not), e.g. 4501")
        status, body = raw(a, "disconnect", {"user": "carol", "disconnect": {"code": 4501, "reason": "x" * 124}})
        assert body["error"] == {"code": 107, "message": "bad request: disconnect.reason is 124 bytes, over the "
                                                         "123 a close frame can carry"}

        # batch, and errors as Centrifugo gives them.
        replies = (await api_a.batch(BatchRequest(requests=[
            PresenceStatsRequest(channel="room:1"), PublishRequest(channel="news", data=1)]))).replies
        assert replies[0].num_clients == 1 and replies[1].model_dump() == {"offset": 0, "epoch": ""}
        with pytest.raises(CentApiResponseError) as error:
            await api_a.presence(PresenceRequest(channel="news"))
        assert (error.value.code, error.value.message) == (108, "not available")
        with pytest.raises(CentApiResponseError) as error:
            await api_a.publish(PublishRequest(channel="", data=1))
        assert error.value.code == 107
        wrong = AsyncClient(f"{a.url}/api", "wrong")
        with pytest.raises(CentUnauthorizedError):
            await wrong.info(InfoRequest())
        await wrong.close()
        with pytest.raises(CentTransportError) as error:
            await api_a._send(_Unknown())
        assert error.value.status_code == 404

        for sdk in (alice, bob_a, bob_b, carol_a, carol_b):
            await sdk.disconnect()
        for api in (api_a, api_b):
            await api.close()

    asyncio.run(scenario())

    # Centrifugo v4's format on /api: method in the body, the key in Authorization.
    lines = b"\n".join(json.dumps(c).encode() for c in (
        {"id": 1, "method": "presence_stats", "params": {"channel": "room:1"}},
        {"id": 2, "method": "nope", "params": {}}, {"method": 9}))
    status, body = http("POST", f"{a.url}/api", lines, {"Authorization": f"apikey {API_KEY}"})
    replies = [json.loads(line) for line in body.splitlines()]
    assert status == 200 and replies[0] == {"id": 1, "result": {"num_clients": 0, "num_users": 0}}
    assert replies[1] == {"id": 2, "error": {"code": 104, "message": "method not found"}}
    assert len(replies[2]["result"]["nodes"]) == 2
    # Bodies that are not JSON objects: 400, as Centrifugo answers.
    assert http("POST", f"{a.url}/api/info", b"[1]", {"X-API-Key": API_KEY})[0] == 400
    assert http("POST", f"{a.url}/api/presence", b'{"channel": 5}', {"X-API-Key": API_KEY})[0] == 400
    assert a.metric("pushgate_api_calls_total", method="presence", result="ok") >= 2


class _Unknown(InfoRequest):
    __api_method__ = "no_such_method"


async def stats_of(api) -> tuple[int, int]:
    stats = await api.presence_stats(PresenceStatsRequest(channel="room:1"))
    return stats.num_clients, stats.num_users


async def history_len(api) -> int:
    return len((await api.history(HistoryRequest(channel="room:1", limit=10))).publications)


async def equals(answer, expected) -> bool:
    """For wait_for: whether an API call's ``answer`` (awaited) is ``expected``."""
    return await answer == expected


def test_a_killed_nodes_clients_leave_presence_within_the_ttl(start_gateway):
    a = start_gateway(*CLUSTER)
    b = start_gateway(*CLUSTER)
    c = start_gateway(*CLUSTER)
    cluster_ready(a, b, c)
    # A node that stops cleanly says goodbye: the others forget it at once,
    # not --presence-ttl (3 s) after its last snapshot (sent every second, so
    # at least 2 s after it exits). Timed from its exit, not from SIGTERM, so
    # a slow drain on a busy machine does not count.
    assert c.stop() == 0
    exited = time.monotonic()
    wait_until(lambda: len(raw(a, "info", {})[1]["result"]["nodes"]) == 2, what="A to forget the stopped node")
    assert time.monotonic() - exited < 1.5

    async def scenario():
        alice, alice_w = await client(a, "alice", "room:1")
        bob, _ = await client(b, "bob", "room:1")
        await wait_for(lambda: any(j[1] == "bob" for j in alice_w.joins) or stats_sync(a) == (2, 2), timeout=5)
        assert stats_sync(a) == (2, 2) and stats_sync(b) == (2, 2)
        killed = time.monotonic()
        b.stop(signal.SIGKILL)
        await wait_for(lambda: stats_sync(a) == (1, 1), timeout=10, what="node B's clients to leave presence")
        gone_after = time.monotonic() - killed
        await wait_for(lambda: ("room:1", "bob", bob.client_id) in alice_w.leaves)
        # The bound (docs/presence.md): --presence-ttl (3 s) after B's last word,
        # checked every 0.25 s; plus 0.5 s for a shared, busy test machine.
        print(f"node B's clients left presence {gone_after:.2f} s after SIGKILL (bound 3.25 s)")
        assert gone_after <= 3.0 + 0.25 + 0.5
        await alice.disconnect()
        await bob.disconnect()

    asyncio.run(scenario())
    assert len(raw(a, "info", {})[1]["result"]["nodes"]) == 1


def stats_sync(gateway) -> tuple[int, int]:
    status, answer = raw(gateway, "presence_stats", {"channel": "room:1"})
    # Once (CI, a shared machine) an answer came without a result: say what it was.
    assert status == 200 and "result" in answer, f"presence_stats on {gateway.url}: {status} {answer}"
    return answer["result"]["num_clients"], answer["result"]["num_users"]


def test_a_node_paused_past_the_ttl_is_taken_back_and_takes_its_peers_back(start_gateway):
    # Issue 23, finding 2: after a SIGSTOP longer than --presence-ttl, its peers
    # retired the node for good and it expired them all before reading them:
    # presence, info and join/leave stayed wrong indefinitely.
    a = start_gateway(*CLUSTER)
    b = start_gateway(*CLUSTER)
    cluster_ready(a, b)

    async def scenario():
        alice, alice_w = await client(a, "alice", "room:1")
        bob, _ = await client(b, "bob", "room:1")
        await wait_for(lambda: stats_sync(a) == (2, 2) and stats_sync(b) == (2, 2), what="both nodes to see both")
        beats = a.metric("pushgate_control_messages_total", event="sent", kind="node")
        b.send_signal(signal.SIGSTOP)
        try:
            await wait_for(lambda: stats_sync(a) == (1, 1), timeout=10, what="A to drop the paused node's clients")
            # B stays stopped until A has gone on talking for longer than the TTL
            # (heartbeats every second, TTL 3 s): on resuming, every word B heard
            # from A is older than the TTL.
            await wait_for(lambda: a.metric("pushgate_control_messages_total", event="sent", kind="node")
                           >= beats + 5, timeout=15, what="A's heartbeats while B is stopped")
        finally:
            b.send_signal(signal.SIGCONT)
        # (A node that resumes sheds new connections with 503 for a moment: its loop ran late.)
        await wait_for(lambda: served_stats(a) == (2, 2) and served_stats(b) == (2, 2), timeout=10,
                       what="both nodes to see both clients again")
        await wait_for(lambda: all(len(raw(g, "info", {})[1]["result"]["nodes"]) == 2 for g in (a, b)),
                       what="both nodes to list both in info")
        await wait_for(lambda: [j[1] for j in alice_w.joins].count("bob") == 2, what="bob's join again")
        assert ("room:1", "bob", bob.client_id) in alice_w.leaves
        await alice.disconnect()
        await bob.disconnect()

    asyncio.run(scenario())
    assert "speaks again after" in a.log()


def served_stats(gateway) -> tuple[int, int] | None:
    """:func:`stats_sync`, or None while the node sheds new connections (503)."""
    status, answer = raw(gateway, "presence_stats", {"channel": "room:1"})
    return (answer["result"]["num_clients"], answer["result"]["num_users"]) if status == 200 else None
