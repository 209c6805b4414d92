"""The demo of `make run` in a real browser: Debian's headless Chromium, driven
by playwright-core from npm (tests/browser/demo_e2e.mjs), against real nsqd,
nsqlookupd and gateway processes and the demo backend (examples/demo).

Alice, Bob and Carol (on a phone-sized screen, through a second backend with
3-second tokens) log in from their own browser contexts. Bob finds Alice's
earlier message in the room on load (the channel's history); room messages
reach everyone; a notification for Bob reaches Bob only and Alice is told it
went out; each sees who is in the room (presence, then join and
leave). Then the stack stops as Ctrl-C in `make run` stops it (SIGTERM to
the gateway and the backend) and starts again on the same ports: every page
shows "reconnecting", then "connected" with no reload, the personal events
resume and the next room message arrives. Carol's page says so when her token
cannot be refreshed, recovers, and asks her to sign in again once her cookie
is gone. Nothing is wider than her screen, and her badge stays on one line.
Screenshots of the pages are left in the test's tmp_path.

Without Chromium (`make test` installs Debian's), the test is skipped and says
so; with it, it always runs.
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.stack import ROOT, SECRET, Nsqd, Process, free_port, http

SCRIPT = ROOT / "tests" / "browser" / "demo_e2e.mjs"
DEADLINE = 100  # seconds for the whole browser scenario


def find_chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class DemoBackend(Process):
    """examples/demo/server.py on a free port, publishing to ``nsqd`` and
    pointing the page at ``gateway_url``."""

    name = "demo"

    def __init__(self, workdir: Path, nsqd: Nsqd, gateway_url: str, port: int, *args: str):
        super().__init__(workdir)
        self.port = port
        self.nsqd = nsqd
        self.gateway_url = gateway_url
        self.args = list(args)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        return [sys.executable, str(ROOT / "examples" / "demo" / "server.py"), f"--port={self.port}",
                "--address=127.0.0.1", f"--gateway-url={self.gateway_url}",
                f"--nsqd-http-address={self.nsqd.http_address}", f"--jwt-secret={SECRET}", "--tick-interval=1",
                *self.args]

    def environment(self) -> dict:
        return {k: v for k, v in os.environ.items() if not k.startswith(("PUSHGATE_", "DEMO_"))}

    def wait_ready(self) -> None:
        wait_until(lambda: self.running() and http("GET", self.url)[0] == 200, what="the demo backend")


@pytest.fixture
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        reason = ("BROWSER TEST NOT RUN: Chromium was not found (/usr/bin/chromium, chromium on PATH, or "
                  "$CHROMIUM). `make test` installs Debian's chromium with apt-get; install it to run this test.")
        warnings.warn(reason)
        pytest.skip(reason)
    return path


@pytest.fixture
def node() -> str:
    path = shutil.which("node")
    assert path, "node is not on PATH: install Node.js 20+ (`make test` needs it too)"
    assert (ROOT / "node_modules" / "playwright-core").is_dir(), \
        "node_modules/playwright-core is missing: run `make test` (or `npm ci`)"
    return path


@pytest.fixture
def demo_backend(tmp_path):
    started: list[DemoBackend] = []

    def start(nsqd: Nsqd, gateway_url: str, port: int, *args: str) -> DemoBackend:
        backend = DemoBackend(tmp_path / f"demo{len(started)}", nsqd, gateway_url, port, *args)
        started.append(backend)
        return backend.start()

    yield start
    for backend in started:
        backend.stop()


class NodeScript:
    """The Node process, its transcript read line by line on a thread."""

    def __init__(self, node: str, env: dict):
        self.proc = subprocess.Popen([node, str(SCRIPT)], cwd=ROOT, env=env, text=True, bufsize=1,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.transcript: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, deadline: float) -> str | None:
        try:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"the browser scenario took more than {DEADLINE}s") from None
        if line is not None:
            self.transcript.append(line)
            print(line, flush=True)
        return line

    def reply(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self) -> int | None:
        """Ask Node to finish (Playwright closes Chromium on SIGTERM), then kill it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def test_demo_page_in_chromium(chromium_path, node, start_gateway, nsqd, demo_backend, tmp_path):
    demo_port, carol_port = free_port(), free_port()
    origins = ",".join(f"http://{host}:{port}" for port in (demo_port, carol_port) for host in ("127.0.0.1", "localhost"))
    # As in Procfile.dev: a one-second drain, so a restart is quick.
    gateway = start_gateway(f"--allowed-origins={origins}", "--public-channels=chat", "--presence=chat",
                            "--join-leave=chat", "--drain-period=1")
    backend = demo_backend(nsqd, gateway.ws_url, demo_port)
    carols = demo_backend(nsqd, gateway.ws_url, carol_port, "--token-ttl=3")
    out_dir = tmp_path / "screenshots"
    out_dir.mkdir()

    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
    env.update(DEMO_URL=backend.url, CAROL_URL=carols.url, OUT_DIR=str(out_dir), CHROMIUM=chromium_path)
    script = NodeScript(node, env)
    deadline = time.monotonic() + DEADLINE
    stopped = {}
    try:
        while (line := script.next_line(deadline)) is not None:
            if line == "STOP_STACK":
                stopped["gateway"] = gateway.stop(signal.SIGTERM)
                stopped["backend"] = backend.stop(signal.SIGTERM)
                script.reply("stopped")
            elif line == "START_STACK":
                backend.start()
                gateway.start()
                script.reply("started")
            elif line == "STOP_CAROLS_BACKEND":
                carols.stop(signal.SIGTERM)
                script.reply("stopped")
            elif line == "START_CAROLS_BACKEND":
                carols.start()
                script.reply("started")
        returncode = script.proc.wait(10)
    finally:
        script.stop()

    transcript = "\n".join(script.transcript)
    assert returncode == 0 and script.transcript[-1:] == ["PASS"], (
        f"the browser scenario failed (screenshots in {out_dir}):\n{transcript}\n\n"
        f"--- demo backend log ---\n{backend.log()}\n--- carol's backend log ---\n{carols.log()}\n"
        f"--- gateway log ---\n{gateway.log()}")
    assert stopped == {"gateway": 0, "backend": 0}, stopped
    for name in ("alice", "bob", "carol"):
        assert (out_dir / f"{name}.png").stat().st_size > 10_000
