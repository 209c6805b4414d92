"""The stock Centrifugo SDKs in Protobuf mode against real gateway nodes:
centrifuge-java 0.4.1, centrifuge-go v0.12.1 (NewProtobufClient),
centrifuge-js 5.8.0's Protobuf build under Node and centrifuge-python 0.7.0
with use_protobuf=True, each as an unmodified application would use it
(tests/sdk/<lang>/, driven through tests/sdks.py).

Each SDK connects with a token through a switchable proxy (tests/proxy.py,
standing in for a load balancer), is subscribed server-side to its personal
channel and subscribes client-side to a public one, and receives one
publication on each with the data's JSON bytes intact. Then the network is
cut, messages are published while it is away, and it reconnects to the same
node or to a second one: it must report both subscriptions recovered and
receive exactly the missed messages, once each, in order, and then live ones.

An SDK whose toolchain could not be had (Java and Maven, Go) is skipped with
the reason, shown by `pytest -rs`; `make test` installs or builds the rest.
"""
from __future__ import annotations

import warnings

import pytest

from auth import connection_token
from tests.clients import publish_while_offline
from tests.helpers import run, wait_for, wait_for_time
from tests.proxy import SwitchingProxy
from tests.sdks import SDKS, HarnessProcess
from tests.stack import SECRET, Reading

MISSED = 10  # per channel, published while the SDK is cut off


@pytest.fixture(params=SDKS, ids=[sdk.name for sdk in SDKS])
def sdk(request):
    reason = request.param.unavailable()
    if reason:
        warnings.warn(reason)
        pytest.skip(reason)
    return request.param


def subscriptions(harness: HarnessProcess, since: int, user: str) -> dict[str, dict]:
    """The latest subscribed event per channel from event index ``since`` on."""
    return {e["channel"]: e for e in harness.seen("subscribed", since) if e["channel"] in ("news", f"#{user}")}


@pytest.mark.parametrize("same_node", [True, False], ids=["same node", "second node"])
def test_sdk_receives_personal_and_public_publications_and_recovers_after_a_cut(
        sdk, recovery_nodes, nsqd, tmp_path, same_node):
    a, b = recovery_nodes
    user = f"{sdk.name}-{'a' if same_node else 'b'}"
    personal = f"#{user}"

    async def scenario():
        proxy = await SwitchingProxy().start()
        proxy.route(a.port)
        harness = HarnessProcess(sdk, tmp_path / f"harness-{sdk.name}.stderr")
        try:
            await harness.start(proxy.ws_url, connection_token(SECRET, user), "news")
            await harness.wait_for(lambda: harness.seen("connected"), "connected", timeout=20)
            subs = await harness.wait_for(lambda: len(s := subscriptions(harness, 0, user)) == 2 and s,
                                          f"subscribed to {personal} and news")
            assert subs[personal]["server_side"] and not subs["news"]["server_side"]
            for channel in (personal, "news"):
                assert subs[channel]["recoverable"] and not subs[channel]["was_recovering"], subs[channel]

            # Live: one personal and one public publication, the data's JSON
            # bytes handed to the application unchanged.
            nsqd.publish({"user": user, "data": {"to": user, "text": "Grüße", "n": [1, 2.5, None]}})
            nsqd.publish({"channel": "news", "data": {"headline": "\u2603 snow", "big": 2 ** 53 - 1}})
            live = {channel: (data, offset) for channel, data, offset in await harness.collect(2)}
            assert live[personal][0] == {"to": user, "text": "Grüße", "n": [1, 2.5, None]}
            assert live["news"][0] == {"headline": "\u2603 snow", "big": 2 ** 53 - 1}
            await wait_for_time(a.margin_passed())  # its positions must be older than the nodes' margin

            # Cut off; messages are published while it is away.
            proxy.route(None)
            proxy.cut()
            cut_at = len(harness.events)
            await harness.wait_for(lambda: harness.seen("connecting", cut_at), "connecting after the cut")
            read = Reading(a, b)
            publish_while_offline(nsqd, user, MISSED)
            await wait_for(lambda: read.caught_up(2 * MISSED), what="both nodes to read what it missed")

            # Back, to the same node or to the other one.
            back_at = len(harness.events)
            proxy.route(a.port if same_node else b.port)
            subs = await harness.wait_for(lambda: len(s := subscriptions(harness, back_at, user)) == 2 and s,
                                          "subscribed again after the cut")
            resubscribed_at = len(harness.events)
            got = await harness.collect(2 * MISSED)
            await harness.nothing_more(0.5)
            by_channel: dict[str, list] = {}
            for channel, data, _ in got:
                by_channel.setdefault(channel, []).append(data["n"] if isinstance(data, dict) else data)
            assert by_channel == {personal: list(range(MISSED)), "news": list(range(MISSED))}
            for channel in (personal, "news"):
                assert subs[channel]["was_recovering"] and subs[channel]["recovered"], subs[channel]

            # Live delivery carries on.
            nsqd.publish({"user": user, "data": {"n": MISSED}})
            after = await harness.next()
            assert after[:2] == (personal, {"n": MISSED})

            # Positions only move forwards, on each channel.
            for channel in (personal, "news"):
                offsets = [live[channel][1]] + [o for c, _, o in got + [after] if c == channel]
                assert all(o > 0 for o in offsets) and offsets == sorted(set(offsets)), (channel, offsets)

            # Errors are expected only while it is cut off (its transport fails).
            assert not harness.seen("error", 0, cut_at) + harness.seen("error", resubscribed_at), harness.describe()
            assert not harness.seen("not json") + harness.seen("disconnected"), harness.describe()
            assert await harness.close() == 0, f"did not exit cleanly when stdin closed\n{harness.describe()}"
        finally:
            await harness.kill()
            await proxy.close()

    run(scenario())
    assert b.metric("pushgate_recoveries_total", recovered="true") == (0 if same_node else 2)
