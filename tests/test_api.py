"""POST /api/publish against a real gateway and nsqd."""
from __future__ import annotations

import asyncio
import json

from tests.clients import sdk_client
from tests.stack import API_KEY, free_port, http


def test_publish_api_success_and_each_error(start_gateway, nsqd, lookupd):
    gateway = start_gateway("--public-channels=news")
    url = f"{gateway.url}/api/publish"
    auth = {"Authorization": f"apikey {API_KEY}"}

    async def scenario():
        client, rec = await sdk_client(gateway.ws_url, "api-user", channels=("news",))
        status, body = http("POST", url, json.dumps({"channel": "news", "data": {"via": "api"}}).encode(), auth)
        assert (status, json.loads(body)) == (200, {})
        status, _ = http("POST", url, json.dumps({"user": "api-user", "data": 2}).encode(), auth)
        assert status == 200
        assert sorted(await rec.collect(2), key=str) == [("#api-user", 2), ("news", {"via": "api"})]
        await client.disconnect()
    asyncio.run(scenario())

    status, body = http("POST", url, b'{"channel": "news"}', auth)
    assert status == 400 and json.loads(body)["error"] == 'no "data"'
    status, body = http("POST", url, b"not json", auth)
    assert status == 400 and json.loads(body)["error"] == "body is not JSON"
    status, _ = http("POST", url, b'{"channel":"news","data":1}')
    assert status == 401
    status, _ = http("POST", url, b'{"channel":"news","data":1}', {"Authorization": "apikey wrong"})
    assert status == 401

    unreachable = start_gateway(f"--nsqd-http-address=127.0.0.1:{free_port()}")
    status, body = http("POST", f"{unreachable.url}/api/publish", b'{"channel":"news","data":1}', auth)
    assert status == 503 and json.loads(body) == {"error": "nsqd unreachable"}
    assert unreachable.metric("pushgate_api_publishes_total", status="503") == 1


def test_publish_api_disabled_without_a_key_and_too_big_bodies(start_gateway):
    gateway = start_gateway("--max-message-bytes=1024")
    auth = {"Authorization": f"apikey {API_KEY}"}
    big = json.dumps({"channel": "news", "data": "x" * 2000}).encode()
    status, body = http("POST", f"{gateway.url}/api/publish", big, auth)
    assert status == 413 and "--max-message-bytes" in json.loads(body)["error"]

    keyless = start_gateway(api_key=None)
    status, body = http("POST", f"{keyless.url}/api/publish", b'{"channel":"news","data":1}', auth)
    assert status == 403 and "no --api-key" in json.loads(body)["error"]
