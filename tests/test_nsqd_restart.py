"""nsqd goes away and comes back: delivery resumes, no WebSocket is closed."""
from __future__ import annotations

import asyncio

import pytest

from tests.clients import sdk_client
from tests.stack import Nsqd


@pytest.mark.parametrize("discovery", ["lookupd", "direct"])
def test_nsqd_restart_mid_test(tmp_path, lookupd, start_gateway, discovery):
    own_nsqd = Nsqd(tmp_path / "nsqd", lookupd, node_id=7).start()
    try:
        gateway = start_gateway(nsqd_proc=own_nsqd, direct=(discovery == "direct"))

        async def scenario():
            client, rec = await sdk_client(gateway.ws_url, "restart")
            own_nsqd.publish({"user": "restart", "data": "before"})
            assert await rec.next() == ("#restart", "before")

            own_nsqd.stop()
            own_nsqd.start()
            # Published while the gateway has not reconnected yet: nsqd keeps it in the
            # topic until the gateway's channel exists again, then delivers it.
            own_nsqd.publish({"user": "restart", "data": "after"})
            assert await rec.next(timeout=20) == ("#restart", "after")
            assert not rec.disconnects and len(rec.connecting) == 1
            await client.disconnect()
        asyncio.run(scenario())
        assert "lost nsqd" in gateway.log()
    finally:
        own_nsqd.stop()
