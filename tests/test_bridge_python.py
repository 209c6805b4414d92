"""The Python bridge against a real nsqd and gateway, with the stock
centrifuge-python SDK as the receiving client."""
from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import threading

import pytest

import pushgate_bridge
from pushgate_bridge import AsyncPublisher, NsqdUnavailable, PublishError, Publisher
from pushgate_bridge import tokens as bridge_tokens
from tests.clients import sdk_client
from tests.stack import SECRET, Nsqd, binary, free_port


def read_back(nsqd: Nsqd, topic: str, count: int) -> list[dict]:
    """Consume ``count`` messages of ``topic`` with nsq_tail (a topic with no
    channel keeps its messages for the first channel created)."""
    done = subprocess.run([binary("nsq_tail"), f"--nsqd-tcp-address={nsqd.tcp_address}", f"--topic={topic}",
                           f"-n={count}"], capture_output=True, text=True, timeout=20)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_publishes_reach_clients_through_the_gateway(start_gateway, nsqd):
    gateway = start_gateway("--public-channels=news")
    publisher = Publisher(nsqd.http_address)

    async def scenario():
        client, rec = await sdk_client(gateway.ws_url, token=pushgate_bridge.connection_token(7, channels=["team:7"]),
                                       channels=("news",))
        publisher.publish_to_user(7, {"event": "personal"})
        publisher.broadcast("news", {"event": "news"})
        publisher.publish({"channels": ["team:7"], "data": "team"})
        got = await rec.collect(3)
        assert sorted(got, key=str) == sorted([("#7", {"event": "personal"}), ("news", {"event": "news"}),
                                               ("team:7", "team")], key=str)
        await client.disconnect()

    pushgate_bridge.configure(secret=SECRET)
    asyncio.run(scenario())


def test_keep_alive_one_connection_per_thread(nsqd):
    publisher = Publisher(nsqd.http_address, topic="keepalive")
    publisher.broadcast("c", 1)
    first = publisher._local.conn.sock
    publisher.broadcast("c", 2)
    assert publisher._local.conn.sock is first
    other = []
    thread = threading.Thread(target=lambda: (publisher.broadcast("c", 3), other.append(publisher._local.conn.sock)))
    thread.start()
    thread.join()
    assert other[0] is not first
    assert [m["data"] for m in read_back(nsqd, "keepalive", 3)] == [1, 2, 3]


def test_batch_sends_one_mpub_and_nothing_when_the_block_raises(nsqd):
    publisher = Publisher(nsqd.http_address, topic="batched")
    with pytest.raises(RuntimeError):
        with publisher.batch():
            publisher.broadcast("c", "lost on purpose")
            raise RuntimeError("rolled back")
    with publisher.batch():
        for n in range(5):
            publisher.broadcast("c", n)
            with publisher.batch():  # nested: joins the outer batch
                publisher.publish_to_user(n, n)
    messages = read_back(nsqd, "batched", 10)
    assert [m["data"] for m in messages] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert len({m["id"] for m in messages}) == 10  # every message has its own id


def test_nsqd_refusals_raise_with_nsqds_message(nsqd):
    with pytest.raises(PublishError) as exc:
        Publisher(nsqd.http_address, topic="bad topic!").broadcast("c", 1)
    assert exc.value.status == 400 and exc.value.message == "INVALID_TOPIC"
    with pytest.raises(PublishError, match="over the gateway's limit"):
        Publisher(nsqd.http_address, max_message_bytes=100).broadcast("c", "x" * 200)
    with pytest.raises(ValueError, match="target"):
        Publisher(nsqd.http_address).publish({"data": 1})


def test_nsqd_down_raises_after_retries(nsqd):
    publisher = Publisher(f"127.0.0.1:{free_port()}", retries=2, backoff=0.01)
    with pytest.raises(NsqdUnavailable, match="after 3 attempts"):
        publisher.broadcast("c", 1)


def test_a_stale_keep_alive_connection_is_retried(tmp_path, lookupd):
    own = Nsqd(tmp_path / "nsqd", None).start()
    try:
        publisher = Publisher(own.http_address, topic="stale")
        publisher.broadcast("c", "before")
        own.stop()
        own.start()  # the kept-alive socket is now dead
        publisher.broadcast("c", "after")
        # nsqd keeps "before" on disk over the restart; NSQ does not order the two.
        assert sorted(m["data"] for m in read_back(own, "stale", 2)) == ["after", "before"]
    finally:
        own.stop()


def test_async_publisher(nsqd):
    async def scenario():
        publisher = AsyncPublisher(nsqd_http_address=nsqd.http_address, topic="async")
        await publisher.broadcast("c", "one")
        async with publisher.batch():
            await publisher.publish_to_user("u", "two")
            await publisher.broadcast("c", "three")
    asyncio.run(scenario())
    assert [m["data"] for m in read_back(nsqd, "async", 3)] == ["one", "two", "three"]


@pytest.mark.parametrize("secret", ["", "short", "s" * 31, "é" * 15])
def test_secrets_the_gateway_would_refuse_are_refused(secret):
    with pytest.raises(ValueError, match="at least 32|no JWT secret"):
        bridge_tokens.connection_token(secret, 1)
    with pytest.raises(ValueError):
        bridge_tokens.subscription_token(secret, 1, "private:x")
    if secret:
        with pytest.raises(ValueError, match="at least 32"):
            pushgate_bridge.configure(secret=secret)
    assert bridge_tokens.connection_token("s" * 32, 1)  # 32 bytes is enough


@pytest.mark.parametrize("ttl", [0, -1, -3600, 0.5, True, "600", float("nan")])
def test_ttls_under_one_second_are_refused(ttl):
    with pytest.raises(ValueError, match="ttl must be at least 1 second"):
        bridge_tokens.connection_token(SECRET, 1, ttl=ttl)
    with pytest.raises(ValueError, match="ttl must be at least 1 second"):
        bridge_tokens.subscription_token(SECRET, 1, "private:x", ttl=ttl)


def test_ttl_none_never_expires_and_a_whole_ttl_is_exact():
    forever = bridge_tokens.connection_token(SECRET, 1, ttl=None, now=1000)
    assert "exp" not in json.loads(base64.urlsafe_b64decode(forever.split(".")[1] + "=="))
    claims = json.loads(base64.urlsafe_b64decode(bridge_tokens.connection_token(SECRET, 1, ttl=60, now=1000)
                                                 .split(".")[1] + "=="))
    assert (claims["iat"], claims["exp"]) == (1000, 1060)


def test_no_subscription_token_for_a_personal_channel():
    with pytest.raises(ValueError, match="personal channel"):
        bridge_tokens.subscription_token(SECRET, 42, "#42")
    assert bridge_tokens.subscription_token(SECRET, 42, "private:42")
