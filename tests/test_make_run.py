"""`make run` as a new user runs it: the whole stack from Procfile.dev through
honcho, on ports moved by the variables Procfile.dev names. Everything
listens on 127.0.0.1 only; the demo page logs a user in and hands out a token
the gateway accepts; the demo publisher's events arrive; the README's
presence snippet runs as written; Ctrl-C stops every process cleanly, with no
ERROR from any, within 10 s, and `make` exits 0. The terminal stays quiet: no
setup lines once set up, no line per demo event, and the banner names the
status page. Nothing of this needs Ruby or Chromium: `make run` does not
install them (checked on make's own plan).

Setup on a fresh checkout says one line for each thing it installs and
nothing else (no setuptools warnings, no make chatter), then nothing at all;
`make help` lists the targets the README names."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

import pytest

from tests.clients import sdk_client
from tests.helpers import wait_until
from tests.stack import ROOT, free_port, fresh_checkout, http

pytestmark = pytest.mark.process  # make, and the stack it starts

PORTS = ("PUSHGATE_PORT", "DEMO_PORT", "NSQD_TCP_PORT", "NSQD_HTTP_PORT", "NSQLOOKUPD_TCP_PORT",
         "NSQLOOKUPD_HTTP_PORT", "NSQADMIN_PORT")


def listeners(ports: set[int]) -> list[tuple[str, int]]:
    """(local address, port) of every listening TCP socket on ``ports``."""
    found = []
    for table, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, port = local.rsplit(":", 1)
                if state == "0A" and int(port, 16) in ports:
                    host = ".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)) if family == 4 else address
                    found.append((host, int(port, 16)))
    return found


def test_make_run_plan_needs_no_ruby_nor_chromium():
    plan = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr
    assert not re.search(r"ruby|apt-get|chromium|sudo", plan.stdout, re.I), plan.stdout


def test_make_run_starts_the_stack_on_loopback_and_ctrl_c_stops_it(tmp_path):
    ports = {name: free_port() for name in PORTS}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSHGATE_", "DEMO_", "NSQ"))}
    env.update({name: str(port) for name, port in ports.items()}, NSQD_DATA_PATH=str(tmp_path / "nsqd"))
    out = open(tmp_path / "make-run.log", "w+")
    make = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, env=env, stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    gateway = f"http://127.0.0.1:{ports['PUSHGATE_PORT']}"
    demo = f"http://127.0.0.1:{ports['DEMO_PORT']}"

    def transcript() -> str:
        out.seek(0)
        return out.read()
    snippet = None
    try:
        wait_until(lambda: http("GET", f"{gateway}/health")[0] == 200 and http("GET", demo)[0] == 200,
                   timeout=90, what="the gateway and the demo page")
        wait_until(lambda: len({p for _, p in listeners(set(ports.values()))}) == len(ports), timeout=10,
                   what="every process listening")
        found = listeners(set(ports.values()))
        assert {host for host, _ in found} == {"127.0.0.1"}, found

        # Log in as the demo page does, and take the token it puts in the page.
        jar = CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        browser.open(demo, timeout=5).read()
        xsrf = next(c.value for c in jar if c.name == "_xsrf")
        page = browser.open(f"{demo}/login", data=urllib.parse.urlencode({"name": "carol", "_xsrf": xsrf}).encode(),
                            timeout=5).read().decode()
        config = json.loads(re.search(r'<script id="config" type="application/json">(.*?)</script>', page).group(1))
        assert config["user"] == "carol"
        assert config["gatewayUrl"] == f"ws://127.0.0.1:{ports['PUSHGATE_PORT']}/connection/websocket"

        async def scenario():
            client, rec = await sdk_client(config["gatewayUrl"], token=config["token"], channels=("demo",))
            # The demo publisher sends one every 3 s; the demo page's personal ticks to
            # #carol may come first.
            channel, data = await rec.next(timeout=10)
            while channel != "demo":
                channel, data = await rec.next(timeout=10)
            assert data["text"].startswith("demo event #")
            await client.disconnect()
        asyncio.run(scenario())

        # The status page the banner names, with the development key.
        admin = f"{gateway}/admin"
        assert f"    {admin}\n" in transcript()
        auth = {"Authorization": "Basic " + base64.b64encode(b"me:dev-api-key").decode()}
        assert http("GET", admin, headers=auth)[0] == 200

        # The README's presence snippet, as written, on room:1: it subscribes and
        # prints the room's presence, then "joined 43" when examples/watch.py
        # subscribes as user 43, as the README says. It stays connected through
        # Ctrl-C below, as an open page would.
        snippet = subprocess.Popen(["node", str(ROOT / "tests" / "node" / "readme_presence.mjs")], cwd=ROOT,
                                   env=dict(env, URL=config["gatewayUrl"], TOKEN=config["token"]),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
        snippet_lines: list[str] = []
        threading.Thread(target=lambda: snippet_lines.extend(snippet.stdout), daemon=True).start()
        wait_until(lambda: any("numClients: 1" in line for line in snippet_lines), timeout=15,
                   what=f"the snippet's presence stats (it printed {snippet_lines})")
        watcher = subprocess.Popen([sys.executable, "examples/watch.py", "--user", "43", "room:1"], cwd=ROOT,
                                   env=dict(env, PUSHGATE_PORT=str(ports["PUSHGATE_PORT"])),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_until(lambda: "joined 43\n" in snippet_lines, timeout=15,
                       what=f"the snippet's join event (it printed {snippet_lines})")
        finally:
            watcher.terminate()
            watcher.wait(10)
        assert not any("error" in line or "unsubscribed" in line for line in snippet_lines), snippet_lines
    finally:
        stopped_at = time.monotonic()
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
            try:
                make.wait(10)  # the bound: everything stopped within 10 s
            except subprocess.TimeoutExpired:
                os.killpg(make.pid, signal.SIGKILL)
                make.wait()
                pytest.fail(f"make run did not stop within 10 s of Ctrl-C:\n{transcript()}")
        took = time.monotonic() - stopped_at
        if snippet is not None:
            snippet.kill()
            snippet.wait()
        log = transcript()
        out.close()
    # make ends as Ctrl-C'd programs do (killed by SIGINT, which the shell does
    # not report), and with no "make: *** ... Error" line.
    assert make.returncode in (0, -signal.SIGINT), log
    assert "***" not in log, log
    for process in ("nsqlookupd", "nsqd", "nsqadmin", "gateway", "demo", "web"):
        assert f"{process}.1 stopped (rc=0)" in log, log
    # A quiet terminal: nothing before the banner (setup is done), no line per
    # demo event, and no ERROR from any process, even while stopping.
    assert log.split("pushgate is starting")[0].strip() == "", log
    assert "published demo event" not in log, log
    for noise in ("ERROR", "Traceback", "Errno", "is up to date", "Warning"):
        assert noise not in log, log
    print(f"stopped {took:.1f} s after Ctrl-C")
    wait_until(lambda: not listeners(set(ports.values())), timeout=5, what="every port released")


def test_setup_on_a_fresh_checkout_says_one_line_a_step_then_nothing(tmp_path):
    checkout = fresh_checkout(tmp_path / "pushgate")
    # As on a machine where this checkout is the only one: none of ours on PATH.
    ours = (str(ROOT / ".venv" / "bin"), str(ROOT / ".tools" / "bin"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSHGATE_", "VIRTUAL_ENV", "MAKE"))}
    env["PATH"] = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p not in ours)
    first = subprocess.run(["make", "setup"], cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    lines = (first.stdout + first.stderr).splitlines()
    assert [line.split(":")[0] for line in lines] == ["setup"] * 3, lines
    assert [line.split()[1] for line in lines] == ["a", "NSQ", "npm"], lines
    again = subprocess.run(["make", "setup"], cwd=checkout, env=env, capture_output=True, text=True, timeout=120)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")


def test_make_help_lists_the_targets_the_readme_names():
    shown = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    listed = {line.split()[0] for line in shown.stdout.splitlines()[1:]}
    readme = (ROOT / "README.md").read_text()
    working = readme[readme.index("## Working on pushgate"):]
    named = set(re.findall(r"^make ([a-z-]+)", working, re.M))
    assert {"help", "test-fast", "test-python", "test", "bench"} <= named <= listed, (named, listed)
    # Each listed target is a rule of the Makefile (its database, printed without running anything).
    database = subprocess.run(["make", "-pRrq", "--no-print-directory", ":"], cwd=ROOT, capture_output=True,
                              text=True, timeout=60).stdout
    rules = set(re.findall(r"^([a-z][a-z-]*):", database, re.M))
    assert listed <= rules, listed - rules
