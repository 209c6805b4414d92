"""What the log tells someone running a gateway for the first time: a refused
browser origin names the origin and the setting that would allow it; a
missing nsqd is a WARNING naming the address, repeated while it lasts; and a
gateway started before nsqd reads within seconds of nsqd coming up, whatever
the order."""
from __future__ import annotations

import asyncio
import logging
import time

import pytest
import websockets

from gateway.nsq.source import NsqSource
from tests.clients import RawClient, sdk_client
from tests.helpers import wait_until
from tests.stack import Gateway, Lookupd, Nsqd, free_port


def test_a_refused_origin_is_logged_with_the_origin_and_the_setting(start_gateway):
    gateway = start_gateway("--allowed-origins=http://127.0.0.1:8080")

    async def scenario():
        with pytest.raises(websockets.InvalidStatus) as refused:
            await RawClient.open(gateway.ws_url, origin="http://localhost:5173")
        assert refused.value.response.status_code == 403
    asyncio.run(scenario())
    line = wait_until(lambda: next((l for l in gateway.log().splitlines() if "refused a browser" in l), None),
                      what="the refusal in the log")
    assert "WARNING" in line and "'http://localhost:5173'" in line
    assert "--allowed-origins (PUSHGATE_ALLOWED_ORIGINS), e.g. --allowed-origins=http://localhost:5173" in line


def test_an_unreachable_nsqd_is_a_warning_with_its_address_until_it_comes(tmp_path, lookupd):
    nsqd = Nsqd(tmp_path / "nsqd")  # not started yet: its ports are free
    gateway = Gateway(tmp_path / "gw", nsqd, None, direct=True)
    gateway.wait_ready = lambda: wait_until(lambda: gateway.health()[0] == 503, what="gateway /health")
    gateway.start()
    try:
        line = wait_until(lambda: next((l for l in gateway.log().splitlines() if "no nsqd" in l), None),
                          timeout=10, what="a warning about nsqd")
        assert "WARNING" in line and f"cannot connect to nsqd {nsqd.tcp_address}" in line
        assert "--nsqd-tcp-address" in line
        nsqd.start()
        wait_until(lambda: gateway.health()[0] == 200, timeout=20, what="the gateway reading the new nsqd")
    finally:
        gateway.stop()
        nsqd.stop()


def test_the_warning_comes_again_while_nsqd_stays_away(caplog):
    address = f"127.0.0.1:{free_port()}"

    async def scenario():
        source = NsqSource(topics=["t"], channel="c#ephemeral", handler=lambda *args: None,
                           nsqd_tcp_addresses=[address], lookupd_http_addresses=[],
                           warn_after=0.3, warn_every=0.575)
        source.start()
        # The node's clock is given in steps, not read: a late turn of the
        # loop on a busy machine cannot skip a warning. Real time passes too,
        # so the reader's connection attempts fail and say why.
        started = time.monotonic()
        for step in range(34):   # 0 to 1.65 s in steps of 0.05
            source.report(started + step * 0.05)
            await asyncio.sleep(0.05)
        await source.close()
    with caplog.at_level(logging.WARNING, logger="pushgate.nsq"):
        asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if "no nsqd" in r.getMessage()]
    assert len(lines) == 3, lines  # at 0.3, 0.9 and 1.5 s
    assert all(f"cannot connect to nsqd {address}" in line for line in lines)


@pytest.mark.process  # its own nsqlookupd, nsqd and gateway
def test_a_gateway_started_before_nsqd_reads_within_seconds_of_it(tmp_path):
    """With nsqlookupd and its default 5 s poll, and nobody publishing: the
    gateway creates its topic on nsqd once nsqd is up, and polls nsqlookupd
    every second while it has no nsqd."""
    lookupd = Lookupd(tmp_path / "lookupd").start()  # its own: no other nsqd has the topic there
    nsqd = Nsqd(tmp_path / "nsqd", lookupd)
    gateway = Gateway(tmp_path / "gw", nsqd, lookupd)
    gateway.base_args.remove("--lookupd-poll-interval=1")
    gateway.wait_ready = lambda: wait_until(lambda: gateway.health()[0] == 503, what="gateway /health")
    gateway.start()
    try:
        time.sleep(2)  # the thing under test: the gateway runs a while with no nsqd, then finds it
        nsqd.start()
        up = time.monotonic()
        wait_until(lambda: gateway.health()[0] == 200, timeout=15, what="the gateway reading nsqd")
        # Not a speed test: before, it took until someone published, or a poll 5 s later.
        assert time.monotonic() - up < 4.5, gateway.log()

        async def scenario():
            client, rec = await sdk_client(gateway.ws_url, "early")
            nsqd.publish({"user": "early", "data": 1})
            assert await rec.next() == ("#early", 1)
            await client.disconnect()
        asyncio.run(scenario())
    finally:
        gateway.stop()
        nsqd.stop()
        lookupd.stop()
