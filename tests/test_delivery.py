"""From NSQ to clients: personal channels, shared topics, dedupe, bad bodies,
mapped topics, stale messages and several nodes. Real nsqd + nsqlookupd, the
stock centrifuge-python SDK as client."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.clients import sdk_client
from tests.helpers import run, wait_for, wait_until
from tests.stack import ROOT, Gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, nsqd, lookupd):
    gw = Gateway(tmp_path_factory.mktemp("gw"), nsqd, lookupd, "--public-channels=news,pub:*",
                 "--map-topic=prices", "--map-topic=tickers=market:tickers", "--max-message-bytes=4096").start()
    yield gw
    gw.stop()


def test_personal_message_reaches_every_connection_of_that_user_and_nobody_else(gateway, nsqd):
    async def scenario():
        a1, r1 = await sdk_client(gateway.ws_url, "alice")
        a2, r2 = await sdk_client(gateway.ws_url, "alice")
        b, rb = await sdk_client(gateway.ws_url, "bob")
        nsqd.publish({"user": "alice", "data": {"for": "alice"}})
        assert await r1.next() == ("#alice", {"for": "alice"})
        assert await r2.next() == ("#alice", {"for": "alice"})
        nsqd.publish({"users": ["bob"], "data": {"for": "bob"}})
        assert await rb.next() == ("#bob", {"for": "bob"})
        await r1.nothing_more(0.3)
        await r2.nothing_more(0.1)
        await rb.nothing_more(0.1)
        for c in (a1, a2, b):
            await c.disconnect()
    run(scenario())


def test_shared_topic_through_the_channels_claim_and_through_a_client_subscribe(gateway, nsqd):
    async def scenario():
        claim, r_claim = await sdk_client(gateway.ws_url, "carol", token_channels=("team:7",))
        public, r_public = await sdk_client(gateway.ws_url, "dave", channels=("news", "pub:sports"))
        nsqd.publish({"channels": ["team:7", "news"], "data": "both"})
        nsqd.publish({"channel": "pub:sports", "id": 1, "data": {"goal": 1}})
        assert await r_claim.next() == ("team:7", "both")
        assert sorted(await r_public.collect(2)) == [("news", "both"), ("pub:sports", {"goal": 1})]
        await claim.disconnect()
        await public.disconnect()
    run(scenario())


def test_refused_channels_get_permission_denied_and_the_connection_stays_up(gateway, nsqd):
    async def scenario():
        client, rec = await sdk_client(gateway.ws_url, "erin", channels=("secret", "#frank", "team:7"))
        for channel in ("secret", "#frank", "team:7"):
            assert channel not in rec.subscribed
            assert rec.unsubscribed[channel].code == 103  # permission denied, terminal for the sub
        nsqd.publish({"user": "erin", "data": "still here"})
        assert await rec.next() == ("#erin", "still here")
        assert not rec.disconnects and len(rec.connecting) == 1  # only the initial connecting
        await client.disconnect()
    run(scenario())


def test_repeated_publisher_id_is_delivered_once(gateway, nsqd):
    async def scenario():
        client, rec = await sdk_client(gateway.ws_url, "gina")
        for _ in range(3):
            nsqd.publish({"user": "gina", "id": "evt-1", "data": 1})
        nsqd.publish({"user": "gina", "id": "evt-2", "data": 2})
        assert await rec.collect(2) == [("#gina", 1), ("#gina", 2)]
        await rec.nothing_more(0.5)
        await client.disconnect()
    run(scenario())


BAD_BODIES = [
    b"not json at all",
    b"[1, 2, 3]",
    b'{"data": {"no": "target"}}',
    b'{"channel": "news"}',
    b'{"channel": 42, "data": 1}',
    b'{"users": "not-a-list", "data": 1}',
    b'{"user": "x", "id": [1], "data": 1}',
    json.dumps({"channel": "news", "data": "x" * 5000}).encode(),  # over --max-message-bytes
]


def test_malformed_nsq_bodies_are_dropped_with_a_warning_and_service_goes_on(gateway, nsqd):
    reasons = ("not_json", "bad_envelope", "no_target", "too_big")

    async def scenario():
        client, rec = await sdk_client(gateway.ws_url, "hank", channels=("news",))
        dropped_before = sum(gateway.metric("pushgate_nsq_dropped_total", reason=r) for r in reasons)
        rec.subscribed.clear()
        nsqd.mpublish(BAD_BODIES)
        wait_until(lambda: sum(gateway.metric("pushgate_nsq_dropped_total", reason=r) for r in reasons)
                   - dropped_before == len(BAD_BODIES), what="drop counters")
        # Two of them named "news": a message for it was lost, and its subscriber
        # is told (unsubscribe 2500), recovers, and learns it cannot be filled.
        await wait_for(lambda: "news" in rec.subscribed)
        assert rec.subscribed["news"].was_recovering and not rec.subscribed["news"].recovered
        nsqd.publish({"channel": "news", "data": "good"})
        assert await rec.next() == ("news", "good")
        await rec.nothing_more(0.3)
        assert gateway.metric("pushgate_nsq_dropped_total", reason="too_big") >= 1
        await client.disconnect()
    run(scenario())
    log = gateway.log()
    assert "dropped message from topic pushgate (not_json)" in log
    assert "dropped message from topic pushgate (too_big)" in log
    assert gateway.running()


def test_mapped_topic_body_is_the_publication_data(gateway, nsqd):
    async def scenario():
        client, rec = await sdk_client(gateway.ws_url, "ivy", token_channels=("prices", "market:tickers"))
        nsqd.publish(b'{"EURUSD": 1.08}', topic="prices")
        assert await rec.next() == ("prices", {"EURUSD": 1.08})
        nsqd.publish(b"plain text tick", topic="tickers")
        assert await rec.next() == ("market:tickers", "plain text tick")
        await client.disconnect()
    run(scenario())


def test_cli_publish_to_a_channel_and_to_a_user(gateway, nsqd):
    async def scenario():
        client, rec = await sdk_client(gateway.ws_url, "42", channels=("news",))
        env = {"PUSHGATE_NSQD_HTTP_ADDRESS": nsqd.http_address, "PATH": "/usr/bin:/bin"}
        for target in (["--channel", "news", '{"a":1}'], ["--user", "42", '{"b":2}']):
            done = subprocess.run([sys.executable, "-m", "gateway", "publish", *target], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, done.stderr
        assert sorted(await rec.collect(2)) == [("#42", {"b": 2}), ("news", {"a": 1})]
        await client.disconnect()
    run(scenario())


def test_stale_messages_are_dropped(start_gateway, nsqd):
    gateway = start_gateway("--max-message-age=1")

    async def scenario():
        client, rec = await sdk_client(gateway.ws_url, "jack")
        # nsqd stamps a message when it is published; deferring it 2.5 s makes it
        # arrive older than --max-message-age, like a backlog after an outage.
        from tests.stack import http
        status, _ = http("POST", f"http://{nsqd.http_address}/pub?topic=pushgate&defer=2500",
                         json.dumps({"user": "jack", "data": "old"}).encode())
        assert status == 200
        nsqd.publish({"user": "jack", "data": "fresh"})
        assert await rec.next() == ("#jack", "fresh")
        # nsqd releases deferred messages from a periodic scan, a few seconds late.
        await wait_for(lambda: gateway.metric("pushgate_nsq_dropped_total", reason="stale") == 1, timeout=10)
        await rec.nothing_more(0.2)
        await client.disconnect()
    run(scenario())


def test_one_publish_reaches_subscribers_on_two_nodes(start_gateway, nsqd):
    first, second = start_gateway(), start_gateway()

    async def scenario():
        c1, r1 = await sdk_client(first.ws_url, "kim")
        c2, r2 = await sdk_client(second.ws_url, "kim")
        nsqd.publish({"user": "kim", "data": "everywhere"})
        assert await r1.next() == ("#kim", "everywhere")
        assert await r2.next() == ("#kim", "everywhere")
        await c1.disconnect()
        await c2.disconnect()
    run(scenario())
