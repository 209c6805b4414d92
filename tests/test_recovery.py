"""Missed messages: history, positions and recovery, on the same node, on a
second node, and on a node that started too late. The stock centrifuge-python
SDK reconnects through a switchable proxy standing in for a load balancer."""
from __future__ import annotations

import pytest

from tests.clients import RECOVERY_FLAGS, publish_while_offline, sdk_client
from tests.helpers import run, wait_for, wait_for_time, wait_until_time
from tests.proxy import SwitchingProxy
from tests.stack import Reading


async def offline_client(proxy, node, user):
    """A client subscribed on ``node`` to its personal channel and (recoverably)
    to news, then cut off; returns it with its recorder."""
    client, rec = await sdk_client(proxy.ws_url, user, channels=("news",), min_reconnect_delay=0.05,
                                   max_reconnect_delay=0.3)
    assert rec.subscribed["news"].recoverable and rec.subscribed[f"#{user}"].recoverable
    await wait_for_time(node.margin_passed())  # its position must be older than the nodes' margin
    proxy.route(None)
    proxy.cut()
    await wait_for(lambda: len(rec.connecting) >= 2)
    return client, rec


async def back_online(proxy, rec, port, count_per_channel, user):
    rec.subscribed.clear()
    proxy.route(port)
    await wait_for(lambda: {"news", f"#{user}"} <= set(rec.subscribed), timeout=10)
    got = await rec.collect(2 * count_per_channel) if count_per_channel else []
    await rec.nothing_more(0.5)
    by_channel = {}
    for channel, data in got:
        by_channel.setdefault(channel, []).append(data["n"])
    return by_channel


@pytest.mark.parametrize("same_node", [True, False], ids=["same node", "second node"])
def test_twenty_missed_per_channel_are_recovered_exactly_once_in_order(recovery_nodes, nsqd, same_node):
    a, b = recovery_nodes

    async def scenario():
        proxy = await SwitchingProxy().start()
        proxy.route(a.port)
        client, rec = await offline_client(proxy, a, "rita")
        read = Reading(a, b)
        publish_while_offline(nsqd, "rita", 20)
        await wait_for(lambda: read.caught_up(40), what="both nodes to read the 40 messages")
        got = await back_online(proxy, rec, a.port if same_node else b.port, 20, "rita")
        assert got == {"#rita": list(range(20)), "news": list(range(20))}
        for channel in ("#rita", "news"):
            assert rec.subscribed[channel].was_recovering and rec.subscribed[channel].recovered
        # and live delivery carries on, with positions
        nsqd.publish({"user": "rita", "data": {"n": 20}})
        assert await rec.next() == ("#rita", {"n": 20})
        await client.disconnect()
        await proxy.close()
    run(scenario())
    assert b.metric("pushgate_recoveries_total", recovered="true") == (0 if same_node else 2)


def test_more_missed_than_history_holds_is_not_recovered(start_gateway, nsqd):
    node = start_gateway(*RECOVERY_FLAGS, "--history-size=100")
    wait_until_time(node.recovers_from())  # so that only the history's size can refuse

    async def scenario():
        proxy = await SwitchingProxy().start()
        proxy.route(node.port)
        client, rec = await offline_client(proxy, node, "sam")
        read = Reading(node)
        publish_while_offline(nsqd, "sam", 200)
        await wait_for(lambda: read.caught_up(400), what="the node to read the 400 messages")
        got = await back_online(proxy, rec, node.port, 0, "sam")
        assert got == {}  # nothing half-recovered
        for channel in ("#sam", "news"):
            assert rec.subscribed[channel].was_recovering and not rec.subscribed[channel].recovered
        await client.disconnect()
        await proxy.close()
    run(scenario())


def test_a_node_started_after_the_disconnect_cannot_recover(start_gateway, nsqd):
    first = start_gateway(*RECOVERY_FLAGS)
    wait_until_time(first.recovers_from())

    async def scenario():
        proxy = await SwitchingProxy().start()
        proxy.route(first.port)
        client, rec = await offline_client(proxy, first, "tia")
        late = start_gateway(*RECOVERY_FLAGS)  # starts while the client is away
        read = Reading(late)
        publish_while_offline(nsqd, "tia", 20)
        await wait_for(lambda: read.caught_up(40), what="the late node to read the 40 messages")
        got = await back_online(proxy, rec, late.port, 0, "tia")
        assert got == {}
        for channel in ("#tia", "news"):
            assert rec.subscribed[channel].was_recovering and not rec.subscribed[channel].recovered
        await client.disconnect()
        await proxy.close()
        return late
    late = run(scenario())
    assert late.metric("pushgate_recoveries_total", recovered="false") == 2


def test_history_command(start_gateway, nsqd):
    node = start_gateway(*RECOVERY_FLAGS)

    async def scenario():
        client, rec = await sdk_client(node.ws_url, "uma", channels=("news",))
        for n in range(5):
            nsqd.publish({"channel": "news", "data": n})
        await rec.collect(5)
        sub = client.get_subscription("news")
        result = await sub.history(limit=3)
        assert [p.data for p in result.publications] == [0, 1, 2]
        result = await sub.history(limit=-1, reverse=True)
        assert [p.data for p in result.publications] == [4, 3, 2, 1, 0]
        assert result.offset >= result.publications[0].offset  # the top: at least the newest
        await client.disconnect()
    run(scenario())
