"""The status page at /admin: refused without the secret, and in headless
Chromium (tests/browser/admin_page.mjs) it shows two real nodes with the
connections of real SDK clients on both, the busiest channel across them,
its presence, and it refreshes by itself; and its charts of the last hour
draw a line per node and the cluster's (connections, deliveries,
publications), a connect refused at capacity on one node only, and a
disconnect by the server API. The screenshot lands in the test's tmp_path;
docs/admin.png, which needs minutes of traffic to show anything, is taken
by tools/admin_screenshot.py."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading

from tests.clients import sdk_client
from tests.helpers import wait_for
from tests.stack import API_KEY, ROOT, http
from tests.test_browser_demo import chromium_path, node  # noqa: F401  (fixtures)

SECRET = "admin-secret-for-the-test"


def test_status_page_needs_its_secret_and_is_off_unless_configured(start_gateway):
    gateway = start_gateway(f"--admin-secret={SECRET}")
    assert http("GET", f"{gateway.url}/admin")[0] == 401
    assert http("GET", f"{gateway.url}/admin/status.json", headers={"Authorization": "Basic eDp3cm9uZw=="})[0] == 401
    import base64
    auth = {"Authorization": "Basic " + base64.b64encode(f"any:{SECRET}".encode()).decode()}
    status, body = http("GET", f"{gateway.url}/admin/status.json", headers=auth)
    assert status == 200 and json.loads(body)["nodes"][0]["name"] == f"{gateway.name}-{gateway.port}"
    assert http("GET", f"{gateway.url}/admin", headers=auth)[0] == 200
    off = start_gateway()
    assert http("GET", f"{off.url}/admin", headers=auth)[0] == 404


def test_status_page_in_chromium(chromium_path, node, start_gateway, nsqd, tmp_path):  # noqa: F811
    flags = (f"--admin-secret={SECRET}", "--public-channels=room", "--presence=room", "--presence-interval=1",
             "--presence-ttl=3")
    # b takes 3 connections, so a fourth is refused (capacity): the refused-connects chart has one.
    a, b = start_gateway(*flags), start_gateway(*flags, "--max-connections=3")
    ready = threading.Event()
    stop = threading.Event()

    def clients() -> None:
        async def run():
            users = [await sdk_client(a.ws_url, f"user{i}", channels=("room",)) for i in range(3)]
            users += [await sdk_client(b.ws_url, f"user{i}", channels=("room",)) for i in range(3, 5)]
            users += [await sdk_client(b.ws_url, "lurker")]
            # One more on a, whom the server API disconnects: the disconnects chart has one.
            victim, victim_events = await sdk_client(a.ws_url, "victim")
            assert http("POST", f"{a.url}/api/disconnect", json.dumps({"user": "victim"}).encode(),
                        {"X-API-Key": API_KEY})[0] == 200
            await wait_for(lambda: victim_events.disconnects, what="the victim disconnected")
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.1)
            for client, _ in [*users, (victim, None)]:
                await client.disconnect()
        asyncio.run(run())

    thread = threading.Thread(target=clients, daemon=True)
    thread.start()
    try:
        assert ready.wait(20)
        assert http("GET", f"{b.url}/connection/sse")[0] == 503  # b is full
        for n in range(20):  # publications, delivered to the room's 5 subscribers on both nodes
            nsqd.publish({"channel": "room", "data": {"n": n}})
        out = tmp_path / "admin.png"
        env = dict(os.environ, ADMIN_URL=f"{a.url}/admin", SECRET=SECRET, OUT=str(out), CHROMIUM=chromium_path,
                   EXPECT=json.dumps({"nodes": 2, "connections": 6, "channel": "room", "clients": 5,
                                      "names": [a.node_name, b.node_name], "refusedOn": b.node_name,
                                      "disconnected": "force_disconnect"}))
        run = subprocess.run([node, str(ROOT / "tests" / "browser" / "admin_page.mjs")], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=90)
        print(run.stdout)
        assert run.returncode == 0 and run.stdout.strip().endswith("PASS"), (
            f"{run.stdout}\n{run.stderr}\n--- gateway log ---\n{a.log()}")
        assert out.stat().st_size > 10_000
    finally:
        stop.set()
        thread.join(10)
