"""Real processes for integration tests: nsqlookupd, nsqd and gateway nodes.

Each runs on free loopback ports with its own temporary directory and log
file, and is stopped (then killed if it must be) by the fixture that made it.
"""
from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from gateway.config import Settings, ephemeral_channel
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]
SECRET = "test-secret-with-at-least-32-bytes!!"
API_KEY = "test-api-key"


def binary(name: str) -> str:
    local = ROOT / ".tools" / "bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: run `make test` (it builds NSQ into .tools/bin)")
    return found


def fresh_checkout(dest: Path) -> Path:
    """What a fresh clone of this working tree holds, copied to ``dest``: every
    file git tracks and every new one it would track (not ignored), as they
    are now, and nothing built (.venv, .tools, node_modules, egg-info)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # not one deleted from the working tree
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now, taken below the kernel's ephemeral range where one is
    left: a port from that range can be taken as the source port of any
    outgoing connection (a test's thousand clients, a benchmark beside the
    suite) between this check and the server's bind."""
    low, _ = _ephemeral_range()
    if low > 12000:
        for _attempt in range(50):
            port = random.randrange(10000, low)
            if port in _handed_out:  # free now, but maybe not yet bound by whoever got it
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                _handed_out.add(port)
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 5) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Process:
    name = "process"

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self.ready_at: float | None = None  # Unix time start() saw it ready

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict:
        return dict(os.environ)

    cwd: Path = ROOT  # where the process runs

    def start(self) -> "Process":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd,
                                     env=self.environment(), start_new_session=True,
                                     preexec_fn=self.prepare_child)
        log.close()
        try:
            self.wait_ready()
        except Exception:
            self.stop()
            raise RuntimeError(f"{self.name} did not start; its log:\n{self.log()}") from None
        self.ready_at = time.time()
        return self

    def wait_ready(self) -> None:
        raise NotImplementedError

    open_files: int | None = None  # RLIMIT_NOFILE for the child, when set

    def prepare_child(self) -> None:
        if self.open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    def rss(self) -> int:
        """The process's resident memory, bytes."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Lookupd(Process):
    name = "nsqlookupd"

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.tcp_port, self.http_port = free_port(), free_port()

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        return [binary("nsqlookupd"), f"--tcp-address=127.0.0.1:{self.tcp_port}",
                f"--http-address={self.http_address}", "--broadcast-address=127.0.0.1"]

    def wait_ready(self) -> None:
        wait_until(lambda: self.running() and http("GET", f"http://{self.http_address}/ping")[0] == 200,
                   what="nsqlookupd /ping")


class Nsqd(Process):
    name = "nsqd"

    def __init__(self, workdir: Path, lookupd: Lookupd | None = None, node_id: int = 1, *args: str):
        super().__init__(workdir)
        self.args = list(args)
        self.lookupd = lookupd
        self.node_id = node_id
        self.tcp_port, self.http_port = free_port(), free_port()
        (workdir / "data").mkdir(exist_ok=True)

    @property
    def tcp_address(self) -> str:
        return f"127.0.0.1:{self.tcp_port}"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        cmd = [binary("nsqd"), f"--tcp-address={self.tcp_address}", f"--http-address={self.http_address}",
               "--broadcast-address=127.0.0.1", f"--data-path={self.workdir / 'data'}",
               f"--node-id={self.node_id}"]
        if self.lookupd:
            cmd.append(f"--lookupd-tcp-address=127.0.0.1:{self.lookupd.tcp_port}")
        return cmd + self.args

    def wait_ready(self) -> None:
        wait_until(lambda: self.running() and http("GET", f"http://{self.http_address}/ping")[0] == 200,
                   what="nsqd /ping")

    def publish(self, body: bytes | str | dict, topic: str = "pushgate") -> None:
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        status, answer = http("POST", f"http://{self.http_address}/pub?topic={topic}", body)
        assert status == 200, (status, answer)

    def mpublish(self, bodies: list[bytes], topic: str = "pushgate") -> None:
        status, answer = http("POST", f"http://{self.http_address}/mpub?topic={topic}", b"\n".join(bodies))
        assert status == 200, (status, answer)

    def channel_messages(self, topic: str, channel: str) -> int:
        """How many messages nsqd has handed to ``channel`` of ``topic`` (its
        message_count: those an ephemeral channel had no room for count too)."""
        query = urllib.parse.urlencode({"format": "json", "topic": topic, "channel": channel})
        _, body = http("GET", f"http://{self.http_address}/stats?{query}")
        return sum(c["message_count"] for t in json.loads(body)["topics"] if t["topic_name"] == topic
                   for c in t["channels"] if c["channel_name"] == channel)


class Gateway(Process):
    name = "gateway"
    counter = 0

    def __init__(self, workdir: Path, nsqd: Nsqd, lookupd: Lookupd | None, *args: str,
                 env: dict | None = None, direct: bool = False, api_key: str | None = API_KEY,
                 open_files: int | None = None, program: list[str] | None = None, cwd: Path | None = None):
        Gateway.counter += 1
        self.name = f"gateway{Gateway.counter}"
        super().__init__(workdir)
        self.port = free_port()
        self.node_name = f"{self.name}-{self.port}"
        self.args = list(args)
        self.extra_env = env or {}
        self.open_files = open_files
        # The gateway of this checkout by default; or another `pushgate`, run elsewhere.
        self.program = program or [sys.executable, "-m", "gateway"]
        self.cwd = cwd or ROOT
        self.nsqd = nsqd
        source = ([f"--nsqd-tcp-address={nsqd.tcp_address}"] if direct or lookupd is None
                  else [f"--lookupd-http-address={lookupd.http_address}"])
        self.base_args = [
            f"--port={self.port}", "--address=127.0.0.1", *source,
            f"--nsqd-http-address={nsqd.http_address}", f"--node-name={self.node_name}",
            f"--jwt-secret={SECRET}", "--lookupd-poll-interval=1",
            # Stopping a node drains it over this; the drain tests give their own.
            "--drain-period=1",
        ] + ([f"--api-key={api_key}"] if api_key else [])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def nsq_channel(self) -> str:
        """The NSQ channel this node reads its topics on."""
        return ephemeral_channel(self.node_name)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    def command(self) -> list[str]:
        return [*self.program, "serve", *self.base_args, *self.args]

    def environment(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_") and k != "PORT"}
        env.update(self.extra_env)
        return env

    def wait_ready(self) -> None:
        wait_until(lambda: self.running() and self.health()[0] == 200, timeout=15,
                   what=f"{self.name} /health (connected to nsqd)")

    def health(self) -> tuple[int, dict]:
        status, body = http("GET", f"{self.url}/health")
        return status, json.loads(body or b"{}")

    @property
    def history_margin(self) -> float:
        """--history-margin as this node was started with it."""
        for arg in reversed(self.base_args + self.args):
            if arg.startswith("--history-margin="):
                return float(arg.split("=", 1)[1])
        return Settings().history_margin

    def recovers_from(self) -> float:
        """The Unix time from which a client subscribing here is handed positions
        this node will vouch for in recovery (wait for it with
        tests.helpers.wait_until_time). Its continuity starts a margin after it
        began reading every topic, which it did before /health said 200 (at
        ready_at); the position of a quiet channel is a margin behind now."""
        assert self.ready_at is not None, f"{self.name} was not started"
        return self.ready_at + 2 * self.history_margin

    def margin_passed(self) -> float:
        """The Unix time at which every position this node has handed out so far
        is older than its margin."""
        return time.time() + self.history_margin

    def messages_read(self, topic: str = "pushgate") -> float:
        """How many messages of ``topic`` this node has read from NSQ: each is in
        its history (or dropped) by the time this is counted."""
        return self.metric("pushgate_nsq_messages_total", topic=topic)

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample from /metrics (0 if absent)."""
        _, body = http("GET", f"{self.url}/metrics")
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
        for line in body.decode().splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return 0.0


class Reading:
    """What some nodes have read from NSQ since this was made, to wait until
    each of them has read what was published since:

        read = Reading(a, b)
        nsqd.mpublish(bodies)
        await wait_for(lambda: read.caught_up(len(bodies)), what="both nodes to read them")
    """

    def __init__(self, *nodes: Gateway, topic: str = "pushgate"):
        self.topic = topic
        self.marks = {node: node.messages_read(topic) for node in nodes}

    def caught_up(self, count: int) -> bool:
        """Whether every node has read at least ``count`` more messages."""
        return all(node.messages_read(self.topic) >= mark + count for node, mark in self.marks.items())
