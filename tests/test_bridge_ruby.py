"""The Rails bridge end to end: Ruby mints the token and publishes through the
real nsqd, the gateway delivers, the stock centrifuge-python SDK receives."""
from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from tests.clients import sdk_client
from tests.stack import ROOT, SECRET, free_port


def ruby(*args: str, nsqd_http: str) -> str:
    env = {**os.environ, "PUSHGATE_JWT_SECRET": SECRET, "PUSHGATE_NSQD_HTTP_ADDRESS": nsqd_http,
           "PUSHGATE_TOPIC": "pushgate"}
    done = subprocess.run(["ruby", str(ROOT / "tests" / "ruby" / "e2e.rb"), *args], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_rails_bridge_end_to_end(start_gateway, nsqd):
    gateway = start_gateway()
    token = ruby("token", "ruby-user", "rails:news", "chat_room_1", nsqd_http=nsqd.http_address)

    async def scenario():
        client, rec = await sdk_client(gateway.ws_url, token=token)
        assert {"#ruby-user", "rails:news", "chat_room_1"} <= set(rec.subscribed)
        assert ruby("publish", "ruby-user", nsqd_http=nsqd.http_address) == "published"
        got = await rec.collect(4)
        assert sorted(got, key=str) == sorted([
            ("#ruby-user", {"event": "personal", "from": "ruby"}),
            ("rails:news", {"event": "topic"}),
            ("chat_room_1", {"message": "from ActionCable"}),
            ("#ruby-user", {"event": "committed"}),
        ], key=str)
        await rec.nothing_more(0.5)  # the rolled-back transaction published nothing
        await client.disconnect()
    asyncio.run(scenario())


@pytest.mark.process  # ruby
def test_rails_bridge_raises_when_nsqd_is_down():
    env = {**os.environ, "PUSHGATE_NSQD_HTTP_ADDRESS": f"127.0.0.1:{free_port()}"}
    script = ('$LOAD_PATH.unshift "bridges/rails/lib"; require "pushgate"; Pushgate.config.backoff = 0.01\n'
              'begin; Pushgate.broadcast("news", 1); rescue Pushgate::PublishError => e; puts e.class, e.message; end')
    done = subprocess.run(["ruby", "-e", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[0] == "Pushgate::NsqdUnavailable"
    assert "after 4 attempts" in done.stdout
