"""The Python bridge as a backend gets it: `pip install ./bridges/python` into
a fresh virtualenv, nothing else. It must bring no other package (not the
gateway, not `auth`, not Tornado, pynsq, PyJWT or honcho), publish to a real
nsqd, and mint a token a real gateway accepts, received by the stock
centrifuge-python SDK.

pip builds the package with setuptools, which it takes from its cache or
from the package index, as it would on a backend's machine.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from tests.clients import sdk_client
from tests.stack import ROOT, SECRET

NOT_THERE = ("gateway", "auth", "tornado", "nsq", "jwt", "ujson", "honcho", "prometheus_client")

MINT = """
import importlib.util, sys
import pushgate_bridge
present = [m for m in {not_there!r} if importlib.util.find_spec(m) is not None]
assert not present, f"importable next to the bridge alone: {{present}}"
pushgate_bridge.configure(secret=sys.argv[1])
print(pushgate_bridge.connection_token("alone", ttl=60, channels=["team:alone"]))
"""

PUBLISH = """
import sys
import pushgate_bridge
pushgate_bridge.configure(nsqd_http_address=sys.argv[1])
pushgate_bridge.publish_to_user("alone", {"from": "the bridge alone"})
with pushgate_bridge.batch():
    pushgate_bridge.broadcast("team:alone", 1)
    pushgate_bridge.broadcast("team:alone", 2)
print("published")
"""


def run(python, code: str, *args: str, cwd) -> str:
    # Outside the repository and without PYTHONPATH, so nothing of the
    # checkout can be imported by accident.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PUSHGATE_", "VIRTUAL_ENV"))}
    done = subprocess.run([str(python), "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_bridge_installed_alone_publishes_and_mints_tokens_the_gateway_accepts(tmp_path, start_gateway, nsqd):
    home = tmp_path / "backend"
    home.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=120)
    python = tmp_path / "venv" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_REQUIRE", "VIRTUAL_ENV"))}
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           str(ROOT / "bridges" / "python")], cwd=home, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"pip install ./bridges/python failed:\n{done.stdout}\n{done.stderr}"
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                            capture_output=True, text=True, timeout=60, check=True)
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert installed - {"pip", "setuptools"} == {"pushgate-bridge"}, installed

    token = run(python, MINT.format(not_there=NOT_THERE), SECRET, cwd=home)
    gateway = start_gateway()

    async def scenario():
        client, rec = await sdk_client(gateway.ws_url, token=token)
        assert run(python, PUBLISH, nsqd.http_address, cwd=home) == "published"
        got = await rec.collect(3)
        assert sorted(got, key=str) == sorted([("#alone", {"from": "the bridge alone"}), ("team:alone", 1),
                                               ("team:alone", 2)], key=str)
        await client.disconnect()
    asyncio.run(scenario())
