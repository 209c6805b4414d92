"""nsqd goes away and comes back: delivery resumes, and the subscribers are
told what they may have lost (recovered: false). And a node whose channel
nsqd made anew (after a stall past its heartbeat timeout) tells its
subscribers what they lost."""
from __future__ import annotations

import asyncio
import urllib.parse

import pytest

from tests.clients import sdk_client
from tests.helpers import wait_for, wait_for_time
from tests.stack import Nsqd, http


@pytest.mark.parametrize("discovery", ["lookupd", "direct"])
def test_nsqd_restart_is_a_loss_every_subscriber_is_told_of(tmp_path, lookupd, start_gateway, discovery):
    # Issue 23: a publication made while nsqd restarts reaches only the
    # channels the new nsqd has when it takes it (another node's, or the first
    # node back), and what the old nsqd held for this node died with it. The
    # gateway said nothing: its subscribers lost publications in silence.
    own_nsqd = Nsqd(tmp_path / "nsqd", lookupd, node_id=7).start()
    try:
        gateway = start_gateway("--public-channels=news", "--history-margin=0.2", nsqd_proc=own_nsqd,
                                direct=(discovery == "direct"))
        base = f"http://{own_nsqd.http_address}"

        async def scenario():
            await wait_for_time(gateway.recovers_from())
            client, rec = await sdk_client(gateway.ws_url, "restart", channels=("news",))
            own_nsqd.publish({"user": "restart", "data": "before"})
            own_nsqd.publish({"channel": "news", "data": "before"})
            assert sorted(await rec.collect(2)) == [("#restart", "before"), ("news", "before")]
            rec.subscribed.clear()

            own_nsqd.stop()
            own_nsqd.start()
            # Another node is back first: what is published now goes to its
            # channel alone (unless this gateway was quicker still).
            assert http("POST", f"{base}/channel/create?topic=pushgate&channel=other-node", b"")[0] == 200
            own_nsqd.publish({"user": "restart", "data": "meanwhile"})
            own_nsqd.publish({"channel": "news", "data": "meanwhile"})
            # Told: 3010 for the personal channel (the SDK reconnects), 2500 for
            # news (it resubscribes); both ask to recover and learn they cannot.
            await wait_for(lambda: {"#restart", "news"} <= set(rec.subscribed), timeout=20,
                           what="the subscriber to be told and back")
            # Reconnected: for 3010, or, when the 2500 for news went out just before
            # the close, now and then as "transport closed" (the SDK's resubscribe
            # crossed the close). Either way the answers below are what tell it.
            assert rec.connecting[-1] in ((3010, "insufficient state"), (1, "transport closed")), rec.connecting
            for channel in ("#restart", "news"):
                assert rec.subscribed[channel].was_recovering and not rec.subscribed[channel].recovered, channel
            own_nsqd.publish({"user": "restart", "data": "after"})
            own_nsqd.publish({"channel": "news", "data": "after"})
            got: list = []
            while not {("#restart", "after"), ("news", "after")} <= set(got):
                got.append(await rec.next(timeout=10))
            for channel in ("#restart", "news"):   # "meanwhile" too, where this gateway was back first
                assert [data for c, data in got if c == channel] in (["after"], ["meanwhile", "after"]), got
            await client.disconnect()
        asyncio.run(scenario())
        log = gateway.log()
        # The loss is logged; its reason reads "nsqd restarted" only when the watch had
        # read the old instance's start_time before the drop (on a slow machine its first
        # reading may come after), else "its connection dropped". Both tell the clients.
        assert "lost nsqd" in log and "messages are lost" in log
    finally:
        own_nsqd.stop()


def test_a_channel_nsqd_made_anew_is_a_gap_and_its_subscribers_are_told(tmp_path, lookupd, start_gateway):
    # Issue 23, finding 1: a node stalled past nsqd's heartbeat timeout (twice
    # 30 s) loses its connection, nsqd deletes its ephemeral channel with what
    # it held, and what is published until the node reads again goes to the
    # other nodes' channels only. Its subscribers lost it without a word.
    # Deleting the channel does to the node what nsqd does then.
    own_nsqd = Nsqd(tmp_path / "nsqd", lookupd, node_id=8).start()
    try:
        gateway = start_gateway("--public-channels=news", "--history-margin=0.2", nsqd_proc=own_nsqd, direct=True)
        base = f"http://{own_nsqd.http_address}"
        assert http("POST", f"{base}/channel/create?topic=pushgate&channel=other-node", b"")[0] == 200

        async def scenario():
            await wait_for_time(gateway.recovers_from())
            client, rec = await sdk_client(gateway.ws_url, "gil", channels=("news",))
            own_nsqd.publish({"channel": "news", "data": 0})
            assert await rec.next() == ("news", 0)
            rec.subscribed.clear()
            channel = urllib.parse.quote(gateway.nsq_channel)
            assert http("POST", f"{base}/channel/delete?topic=pushgate&channel={channel}", b"")[0] == 200
            own_nsqd.publish({"channel": "news", "data": 1})   # goes to the other node's channel alone
            # Told (unsubscribe 2500): the SDK resubscribes, recovering, and
            # learns that the gap cannot be filled.
            await wait_for(lambda: "news" in rec.subscribed, timeout=15, what="the subscriber to be told")
            assert rec.subscribed["news"].was_recovering and not rec.subscribed["news"].recovered
            own_nsqd.publish({"channel": "news", "data": 2})
            got = [await rec.next(timeout=10)]
            if got[0] != ("news", 2):   # publication 1, if the node read again before it was published
                got.append(await rec.next(timeout=10))
            assert got[-1] == ("news", 2)
            await client.disconnect()
        asyncio.run(scenario())
        assert "anew" in gateway.log()
    finally:
        own_nsqd.stop()
