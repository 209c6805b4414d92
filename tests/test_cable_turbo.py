"""Turbo Streams over /cable in a real browser: a Rails 6.1 app (Debian's
packages, the bridge's helpers and `adapter: nsq`, cable.yml with a
channel_prefix) renders a page with the meta tag and the
<turbo-cable-stream-source> that turbo_stream_from renders; Debian's headless
Chromium loads it with the stock @hotwired/turbo-rails bundle from npm; the
app broadcasts a Turbo Stream and the page's DOM changes. A centrifuge-python
client reads the same broadcast on the prefixed channel.

Without Chromium (`make test` installs Debian's) the test is skipped and says so.
"""
from __future__ import annotations

import asyncio

from tests.cable_clients import NodeClient
from tests.clients import sdk_client
from tests.stack import free_port
from tests.test_browser_demo import chromium_path  # noqa: F401 (the fixture: skips, loudly, without Chromium)
from tests.test_cable import TURBO_SECRET, rails


def test_a_turbo_page_changes_when_rails_broadcasts_a_turbo_stream(chromium_path, start_gateway, nsqd,  # noqa: F811
                                                                     tmp_path):
    page_port = free_port()
    gateway = start_gateway(f"--turbo-streams-secret={TURBO_SECRET}", "--cable-channel-prefix=myapp",
                            f"--allowed-origins=http://127.0.0.1:{page_port}")
    cable = f"ws://127.0.0.1:{gateway.port}/cable"
    page = tmp_path / "room.html"
    page.write_text(rails("page", "ana", "room", "1", cable_url=cable, prefix="myapp"))
    assert 'name="action-cable-url"' in page.read_text() and "<turbo-cable-stream-source" in page.read_text()

    async def scenario():
        sdk, rec = await sdk_client(gateway.ws_url, "carl", token_channels=("myapp:room:1",))
        browser = await NodeClient.start("turbo_page.mjs", "--page", str(page), "--port", str(page_port),
                                         "--chromium", chromium_path)
        try:
            await browser.event("subscribed", timeout=30)
            html = await asyncio.get_running_loop().run_in_executor(
                None, lambda: rails("append", "Hello from Rails 6.1", "room", "1", nsqd=nsqd, prefix="myapp"))
            dom = await browser.event("dom", timeout=15)
            assert dom["html"] == "<p>Hello from Rails 6.1</p>"
            assert await rec.next() == ("myapp:room:1", html)
            await browser.send({"screenshot": str(tmp_path / "turbo.png")})
            await browser.event("screenshot")
            assert not browser.of("pageerror"), browser.of("pageerror")
        finally:
            await browser.stop()
            await sdk.disconnect()
    asyncio.run(scenario())
    assert (tmp_path / "turbo.png").stat().st_size > 5000
