"""``make soak``: the gateway under steady honest load, with faults injected
at random, and an invariant checker over everything every honest client saw.

The stack, all on 127.0.0.1: nsqlookupd, nsqd, and two gateway nodes ("boxes"
A and B), each ``pushgate serve --workers 2`` (so four nodes to NSQ and
presence), behind a TCP relay (bench/soak_relay.py, a process of its own)
that the harness controls, so that a network cut is a real cut.

The honest clients, stock SDKs each in a process of its own, all through the
relay, each subscribed to its personal channel ``#<user>`` (server-side) and
to shared channels (client-side, recoverable):

* centrifuge-js (npm ``centrifuge``) under Node: WebSocket JSON, WebSocket
  Protobuf, and the fallbacks with ``/emulation``: http_stream (JSON and
  Protobuf) and SSE (JSON, EventSource from npm ``eventsource``)
  (bench/soak_js.mjs);
* centrifuge-python: JSON and Protobuf (bench/soak_py.py);
* @anycable/web on ``/cable`` (Action Cable protocol, ext-json, with history)
  (tests/cable/anycable_client.mjs, as the /cable tests run it).

Five of them are subscribed to ``room:1``, which keeps presence and join/leave.
A publisher numbers a stream per channel (``{"n": N, "ch": channel}``) and
publishes it through nsqd's ``/mpub``, retrying until nsqd takes it (the
envelope ``id`` lets the gateway drop a retry nsqd had already taken).

The faults, one at a time, drawn from a seeded RNG (``--seed`` repeats a
run; every kind comes once, in random order, before any repeats), each
logged with its time: ``worker-kill`` (SIGKILL one worker), ``worker-stop``
(SIGSTOP one worker for 3-20 s), ``node-kill`` (SIGKILL a box's supervisor,
as ``kill -9 PID`` does, then start the box again as a service manager
would), ``node-stop`` (SIGSTOP a box's whole process group, supervisor and
workers, for 3-20 s: a frozen VM), ``nsqd-restart`` (SIGTERM, then nsqd again
with the same data path and ports), ``nsqd-kill`` (the same after SIGKILL:
what nsqd held in memory is lost for every node), ``net-cut`` (every relayed connection
aborted, new ones refused for 0-5 s), ``connect-storm`` (500-1500 WebSocket
connects with valid tokens, straight to one box, held 2-5 s),
``pong-flood`` (bench/flood.py's pong attackers for 3-8 s, straight to one
box), ``history-burst`` (large publications on 32 channels, 1.5 times
``--history-memory-bytes``), ``channel-explosion`` (tiny publications to
``--explosion`` distinct new channels and users, 100 to an envelope).

The invariants (bench/soak_check.py says exactly what each checks), one line
each, PASS or FAIL with figures; the exit code is 1 on any breach (2 when
the harness itself could not run):

* delivery: each client received every publication of its channels in
  order, or was told (recovered: false, 2500, 3010, reject_history); never
  silence;
* rss: every pushgate process back within 10 % of its level before the
  first fault, after the settle period, that level being taken after the
  *priming* (a history burst and a channel explosion before the clients
  start, expired by then), and the priming's high-water within 10 % plus
  ``--history-memory-bytes`` of the level before it (docs/recovery.md,
  "Memory after a burst", says why);
* agreement: ``info`` and ``presence`` from every node identical, and true,
  within ``--presence-ttl`` + interval + 5 s after the last fault;
* logs: no "Traceback" in any gateway log (supervisors and workers).

The report goes to ``bench/results/soak-<date>.md`` (``--report``): the
faults, counts, an RSS table and, with matplotlib (``make soak`` installs
it), an RSS curve as a PNG beside it. Logs and every client's events stay
in the work directory, which the report names.

    make soak                          # 30 minutes
    make soak MINUTES=5 SOAK_ARGS='--seed 42'
    .venv/bin/python bench/soak.py --minutes 3
    .venv/bin/python bench/soak.py --lean           # every kind once, about 2 minutes: make test's
    .venv/bin/python bench/soak.py --report-from WORKDIR [REPORT]   # the verdict again, from a run's records

``--minutes`` is the whole run, about: the priming and warm-up (``--warmup``,
at least 20 s, until the priming has expired) and the settle period
(``--settle``, 60 s) come out of it, faults fill the rest. ``--lean``: every
kind once, short, against timings scaled down to match (``LEAN_TIMINGS``).
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
import datetime
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from auth import connection_token  # noqa: E402
from soak_check import (Client, agreement, check_delivery, check_high_water, check_rss, tail_complete,  # noqa: E402
                        tracebacks)
from tests.stack import API_KEY, SECRET, Gateway, Lookupd, Nsqd, free_port, http  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")
PRESENCE_CHANNEL = "room:1"

# The gateway's flags for the soak, beyond tests.stack.Gateway's own (secret,
# API key, nsqlookupd, --drain-period=1). History: a 30 s TTL, so that what a
# burst leaves expires within the settle period; 1000 publications a channel,
# so the TTL is what bounds it; a budget small enough that a burst and an
# explosion can pass it in seconds on 2 cores.
GATEWAY_FLAGS = ["--workers=2", "--public-channels=soak:*,room:*,junk:*", f"--presence={PRESENCE_CHANNEL}",
                 f"--join-leave={PRESENCE_CHANNEL}", "--history-size=1000"]
# The timings the faults are measured against. The lean soak (--lean, the one
# in make test) scales them down with the faults' durations, so that each
# fault still crosses the same line: a stopped worker outlives
# --worker-timeout (its supervisor kills it), a stopped node outlives
# --presence-ttl (its peers forget it, then must take it back), and what a
# burst leaves expires within the settle period.
TIMINGS = {"history-ttl": 30, "presence-interval": 5, "presence-ttl": 15, "worker-timeout": 10}
LEAN_TIMINGS = {"history-ttl": 5, "presence-interval": 2, "presence-ttl": 6, "worker-timeout": 4}

DETAILED = 10   # fault groups of breaches the report details (all are in breaches.txt)
FAULTS = ["worker-kill", "worker-stop", "node-kill", "node-stop", "nsqd-restart", "nsqd-kill", "net-cut",
          "connect-storm", "pong-flood", "history-burst", "channel-explosion"]
MEMORY_FAULTS = ("history-burst", "channel-explosion")   # the priming's, and the lean soak's first
PRIMING_BASELINE = 6   # seconds of RSS samples before the priming
# What each fault lasts, drawn uniformly from (low, high) seconds (counts for
# the storm), for the long soak and for the lean one.
SPANS = {
    "worker-stop": ((3, 20), (5, 6)),        # lean: past --worker-timeout 4
    "node-stop": ((3, 20), (7, 8)),          # lean: past --presence-ttl 6
    "node-kill": ((1, 3), (0.5, 1)),         # until the box is started again
    "nsqd-down": ((0, 3), (0, 1)),
    "net-cut": ((0, 5), (0, 1.5)),
    "storm-count": ((500, 1500), (300, 600)),
    "storm-hold": ((2, 5), (1, 2)),
    "pong": ((3, 8), (2, 3)),
    "pause": ((2, 6), (0.5, 1)),             # between faults
}


@dataclass(frozen=True)
class Honest:
    name: str
    kind: str          # js | py | cable
    user: str
    channels: tuple    # client-side (for cable: every stream, the personal one included)
    env: tuple = ()    # (key, value) for js; (protocol,) for py


ROSTER = [
    Honest("js-ws-json-1", "js", "jw1", ("soak:a", PRESENCE_CHANNEL), (("TRANSPORT", "websocket"), ("PROTOCOL", "json"))),
    Honest("js-ws-json-2", "js", "jw2", ("soak:b", PRESENCE_CHANNEL), (("TRANSPORT", "websocket"), ("PROTOCOL", "json"))),
    Honest("js-ws-protobuf", "js", "jp1", ("soak:a", "soak:b", PRESENCE_CHANNEL),
           (("TRANSPORT", "websocket"), ("PROTOCOL", "protobuf"))),
    Honest("js-http-stream", "js", "jh1", ("soak:a", PRESENCE_CHANNEL),
           (("TRANSPORT", "http_stream"), ("PROTOCOL", "json"))),
    Honest("js-http-stream-protobuf", "js", "jh2", ("soak:b",),
           (("TRANSPORT", "http_stream"), ("PROTOCOL", "protobuf"))),
    Honest("js-sse", "js", "js1", ("soak:a", "soak:b"), (("TRANSPORT", "sse"), ("PROTOCOL", "json"))),
    Honest("py-json", "py", "pj1", ("soak:a", PRESENCE_CHANNEL), ("json",)),
    Honest("py-protobuf", "py", "pp1", ("soak:b",), ("protobuf",)),
    Honest("cable-ext-1", "cable", "ca1", ("#ca1", "soak:a")),
    Honest("cable-ext-2", "cable", "ca2", ("#ca2", "soak:b")),
]
RATES = {"soak:a": 5.0, "soak:b": 5.0, PRESENCE_CHANNEL: 2.0}   # publications a second; personal channels 1/s


def now() -> float:
    return time.time()


class Log:
    """What the harness says, on stdout and in the work directory, stamped with
    seconds since the start."""

    def __init__(self, path: Path) -> None:
        self.start = now()
        self.file = open(path, "a")

    def __call__(self, text: str) -> None:
        line = f"[{now() - self.start:7.1f}s] {text}"
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


# --- the stack -------------------------------------------------------------------------------------

class Box(Gateway):
    """One gateway node of the soak: ``pushgate serve --workers 2`` on a fixed
    port, started again (same flags, same log) after a node-kill."""

    def __init__(self, label: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.label = label
        self.pgids: list[int] = []   # every process group it ever had (orphans stay in theirs)

    def launch(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=ROOT,
                                                    env=self.environment(), start_new_session=True)
        log.close()
        self.pgids.append(self.proc.pid)

    def start(self) -> "Box":
        self.launch()
        if not self.wait_healthy(30):
            raise RuntimeError(f"box {self.label} did not start; its log:\n{self.log()[-3000:]}")
        self.ready_at = now()
        return self

    def healthy(self) -> bool:
        try:
            status, body = http("GET", f"{self.url}/health", timeout=2)
            workers = json.loads(body).get("workers", [])
            return status == 200 and len(workers) == 2 and all(w.get("ready") for w in workers)
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running() and self.healthy():
                return True
            time.sleep(0.25)
        return False

    def workers(self) -> dict[int, int]:
        """Worker index -> pid, for the workers of the running supervisor."""
        out = {}
        if not self.running():
            return out
        for pid in children(self.proc.pid):
            index = environ(pid).get("PUSHGATE_WORKER_INDEX")
            if index is not None:
                out[int(index)] = pid
        return out

    def worker_names(self) -> set[str]:
        return {f"{self.node_name}-{i}" for i in range(2)}

    def orphans(self) -> list[int]:
        """Live processes of this box's earlier process groups: workers whose supervisor was killed."""
        old = set(self.pgids) - ({self.proc.pid} if self.running() else set())
        return [pid for pid in all_pids() if pgid(pid) in old]

    def stop_all(self) -> None:
        for group in self.pgids:
            try:
                os.killpg(group, signal.SIGCONT)
            except OSError:
                pass
        self.stop(timeout=15)
        for group in self.pgids:
            try:
                os.killpg(group, signal.SIGKILL)
            except OSError:
                pass


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def pgid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def rss_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return None


# --- honest clients -----------------------------------------------------------------------------------

class ClientProcess:
    """One honest client's process; every line it prints becomes an event
    stamped with its arrival time, kept in memory and in <name>.jsonl."""

    def __init__(self, spec: Honest, workdir: Path) -> None:
        self.spec = spec
        server = {} if spec.kind == "cable" else {f"#{spec.user}": True}
        channels = {**server, **{c: c.startswith("#") for c in spec.channels}}
        self.record = Client(spec.name, spec.kind, channels)
        self.out = open(workdir / f"client-{spec.name}.jsonl", "a")
        self.stderr_path = workdir / f"client-{spec.name}.stderr"
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task | None = None

    def command(self, relay: int) -> tuple[list[str], dict]:
        spec = self.spec
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
        env["SECRET"] = SECRET
        if spec.kind == "js":
            env.update(dict(spec.env), USER=spec.user, CHANNELS=",".join(spec.channels),
                       EMULATION=f"http://127.0.0.1:{relay}/emulation")
            transport = env["TRANSPORT"]
            env["URL"] = (f"ws://127.0.0.1:{relay}/connection/websocket" if transport == "websocket"
                          else f"http://127.0.0.1:{relay}/connection/{transport}")
            return ["node", str(ROOT / "bench" / "soak_js.mjs")], env
        if spec.kind == "py":
            return [sys.executable, str(ROOT / "bench" / "soak_py.py"), f"ws://127.0.0.1:{relay}/connection/websocket",
                    spec.user, ",".join(spec.channels), spec.env[0]], env
        token = connection_token(SECRET, spec.user, ttl=4 * 3600)
        args = ["node", str(ROOT / "tests" / "cable" / "anycable_client.mjs"),
                "--url", f"ws://127.0.0.1:{relay}/cable?jid={token}"]
        for channel in spec.channels:
            args += ["--stream", channel]
        return args, env

    async def start(self, relay: int) -> None:
        cmd, env = self.command(relay)
        with open(self.stderr_path, "ab") as err:
            self.proc = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE,
                                                             stdout=asyncio.subprocess.PIPE, stderr=err,
                                                             limit=2**22)
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc and self.proc.stdout
        while line := await self.proc.stdout.readline():
            t = now()
            try:
                raw = json.loads(line)
            except ValueError:
                raw = {"ev": "output", "line": line.decode(errors="replace").rstrip()}
            event = normalise(raw) if self.spec.kind == "cable" else raw
            self.record.events.append((t, event))
            self.out.write(json.dumps({"at": round(t, 4), **event}) + "\n")
        self.out.flush()

    def subscribed_everywhere(self) -> bool:
        done = {e.get("ch") for _, e in self.record.events if e.get("ev") in ("subscribed", "channel_connect")}
        return set(self.record.channels) <= done

    def presence_id(self) -> str | None:
        """Its client id while it is connected and subscribed to the presence
        channel (as its own events tell), else None."""
        if PRESENCE_CHANNEL not in self.record.channels or self.spec.kind == "cable":
            return None
        subscribed = None   # the newest word on the channel since the newest connect, read backwards
        for _, e in reversed(self.record.events):
            ev = e.get("ev")
            if ev in ("connecting", "disconnected"):
                return None
            if ev == "connected":
                return e.get("client") if subscribed else None
            if subscribed is None and e.get("ch") == PRESENCE_CHANNEL and ev in ("subscribed", "subscribing",
                                                                                  "unsubscribed"):
                subscribed = ev == "subscribed"
        return None

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            try:
                self.proc.stdin.close()
                await asyncio.wait_for(self.proc.wait(), 5)
            except (asyncio.TimeoutError, OSError):
                try:
                    self.proc.kill()
                except ProcessLookupError:
                    pass
                await self.proc.wait()
        if self.reader:
            try:
                await asyncio.wait_for(self.reader, 5)
            except asyncio.TimeoutError:
                self.reader.cancel()
        self.out.close()


def normalise(raw: dict) -> dict:
    """@anycable/web's events (tests/cable/anycable_client.mjs) in the soak's vocabulary."""
    event = raw.get("event")
    channel = None
    if "identifier" in raw:
        try:
            channel = json.loads(raw["identifier"]).get("stream_name")
        except (ValueError, AttributeError):
            channel = None
    if event == "received":
        return {"ev": "pub", "ch": channel, "data": raw.get("data"), "offset": raw.get("offset")}
    if event == "info" and raw.get("type") == "history_not_found":
        return {"ev": "reject_history", "ch": channel}
    if event == "info":
        return {"ev": "history", "ch": channel, "type": raw.get("type")}
    if event == "channel":
        return {"ev": f"channel_{raw.get('state')}", "ch": channel, "restored": raw.get("restored"),
                "reason": raw.get("reason")}
    if event == "cable":
        return {"ev": f"cable_{raw.get('state')}", "reason": raw.get("reason"), "restored": raw.get("restored")}
    return {"ev": str(event), **{k: v for k, v in raw.items() if k not in ("event", "t")}}


# --- the publisher -------------------------------------------------------------------------------------

class Publisher(threading.Thread):
    """Numbered publications on every honest channel, at RATES (1/s for the
    personal ones), through nsqd's /mpub; a batch nsqd did not take is sent
    again, with the same ids, until it does."""

    def __init__(self, nsqd: Nsqd, channels: list[str], run_id: str) -> None:
        super().__init__(daemon=True)
        self.nsqd = nsqd
        self.run_id = run_id
        self.rates = {c: RATES.get(c, 1.0) for c in channels}
        self.last = {c: 0 for c in channels}          # the last number nsqd took, per channel
        self.accepted: dict[tuple[str, int], float] = {}   # (channel, n) -> when nsqd took it
        self.stopping = threading.Event()
        self.retries = 0
        self.failures: list[tuple[float, str]] = []

    def body(self, channel: str, n: int) -> bytes:
        target = {"user": channel[1:]} if channel.startswith("#") else {"channel": channel}
        return json.dumps({**target, "data": {"n": n, "ch": channel}, "id": f"{self.run_id}:{channel}:{n}"}).encode()

    def run(self) -> None:
        due = {c: time.monotonic() + random.random() / r for c, r in self.rates.items()}
        counter = dict(self.last)
        pending: list[tuple[str, int]] = []
        while not self.stopping.is_set():
            t = time.monotonic()
            for c, rate in self.rates.items():
                if t - due[c] > 1:   # behind (nsqd was down): no catch-up burst
                    due[c] = t
                while due[c] <= t:
                    counter[c] += 1
                    pending.append((c, counter[c]))
                    due[c] += 1 / rate
            if pending:
                try:
                    status, answer = http("POST", f"http://{self.nsqd.http_address}/mpub?topic=pushgate",
                                          b"\n".join(self.body(c, n) for c, n in pending), timeout=5)
                    ok = status == 200
                    if not ok:
                        self.failures.append((now(), f"{status} {answer[:100]!r}"))
                except (OSError, urllib.error.URLError) as exc:
                    ok = False
                    if not self.failures or now() - self.failures[-1][0] > 1:
                        self.failures.append((now(), repr(exc)[:100]))
                if ok:
                    taken = now()
                    for c, n in pending:
                        self.last[c] = n
                        self.accepted[(c, n)] = taken
                    pending = []
                else:
                    self.retries += 1
            self.stopping.wait(0.05)


# --- the soak -------------------------------------------------------------------------------------------

@dataclass
class Fault:
    index: int
    kind: str
    start: float
    end: float = 0.0
    target: str = ""
    notes: list[str] = field(default_factory=list)


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.timings = LEAN_TIMINGS if args.lean else TIMINGS
        self.seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
        self.rng = random.Random(self.seed)
        self.workdir = Path(args.workdir or tempfile.mkdtemp(prefix="pushgate-soak-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = Log(self.workdir / "soak.log")
        self.run_id = f"{int(now())}"
        self.lookupd: Lookupd | None = None
        self.nsqd: Nsqd | None = None
        self.boxes: list[Box] = []
        self.relay: asyncio.subprocess.Process | None = None
        self.relay_port = 0
        self.clients: list[ClientProcess] = []
        self.publisher: Publisher | None = None
        self.faults: list[Fault] = []
        self.samples: list[tuple[float, str, int, int]] = []   # (time, role, pid, rss)
        self.lags: list[tuple[float, str, float | None]] = []   # (time, box/worker, loop lag or None)
        self.history: list[tuple[float, str, float]] = []        # (time, box/worker, pushgate_history_bytes)
        self.attackers: list[asyncio.subprocess.Process] = []
        self.explosions = 0
        self.marks: dict[str, float] = {}
        self.views: dict[str, dict] = {}
        self.agreed_at: float | None = None
        self.agreement_problems: list[str] = []
        self.shared_at_end: dict[str, int] = {}
        self.commit = "?"

    # --- stack ---

    def start_stack(self) -> None:
        self.lookupd = Lookupd(self.workdir / "nsqlookupd").start()
        self.nsqd = Nsqd(self.workdir / "nsqd", self.lookupd).start()
        flags = [*GATEWAY_FLAGS, *(f"--{k}={v:g}" for k, v in self.timings.items()),
                 f"--history-memory-bytes={self.args.history_bytes}", "--log-level=info"]
        for label in "AB":
            box = Box(label, self.workdir / f"box-{label}", self.nsqd, self.lookupd, *flags)
            self.boxes.append(box)
            box.start()
            self.log(f"box {label}: supervisor pid {box.proc.pid}, port {box.port}, workers {box.workers()}")

    async def start_relay(self) -> None:
        with open(self.workdir / "relay.log", "ab") as err:
            self.relay = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "bench" / "soak_relay.py"), *(str(b.port) for b in self.boxes),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err)
        self.relay_port = json.loads(await self.relay.stdout.readline())["port"]
        self.log(f"relay on port {self.relay_port} -> boxes {[b.port for b in self.boxes]}")

    async def relay_command(self, line: str) -> dict:
        self.relay.stdin.write(line.encode() + b"\n")
        await self.relay.stdin.drain()
        return json.loads(await asyncio.wait_for(self.relay.stdout.readline(), 10))

    async def start_clients(self) -> None:
        for spec in ROSTER:
            client = ClientProcess(spec, self.workdir)
            await client.start(self.relay_port)
            self.clients.append(client)
        deadline = time.monotonic() + 60
        while not all(c.subscribed_everywhere() for c in self.clients):
            if time.monotonic() > deadline:
                late = [c.spec.name for c in self.clients if not c.subscribed_everywhere()]
                raise RuntimeError(f"clients not subscribed within 60 s: {late}; see {self.workdir}/client-*")
            await asyncio.sleep(0.2)
        self.log(f"{len(self.clients)} honest clients subscribed: "
                 + ", ".join(f"{c.spec.name} {sorted(c.record.channels)}" for c in self.clients))

    # --- RSS ---

    def roles(self) -> dict[str, int]:
        """Role -> pid of every process of the stack now (not the clients, not the relay)."""
        out = {}
        if self.lookupd and self.lookupd.running():
            out["nsqlookupd"] = self.lookupd.proc.pid
        if self.nsqd and self.nsqd.running():
            out["nsqd"] = self.nsqd.proc.pid
        for box in self.boxes:
            if box.running():
                out[f"{box.label}/supervisor"] = box.proc.pid
            for index, pid in box.workers().items():
                out[f"{box.label}/worker-{index}"] = pid
        return out

    def extras(self) -> dict[str, int]:
        """Processes of the stack that have no role: orphaned workers."""
        return {f"{box.label}/orphan pid {pid}": pid for box in self.boxes for pid in box.orphans()}

    async def sample_rss(self) -> None:
        while True:
            t = now()
            for role, pid in {**self.roles(), **self.extras()}.items():
                rss = rss_of(pid)
                if rss is not None:
                    self.samples.append((t, role, pid, rss))
            if self.relay and self.relay.returncode is None:
                rss = rss_of(self.relay.pid)
                if rss is not None:
                    self.samples.append((t, "relay (harness, not checked)", self.relay.pid, rss))
            await asyncio.sleep(2)

    async def sample_lag(self) -> None:
        """Every 5 s, each box's /metrics: its workers' event-loop lag (how late
        their timers run), or no answer within 3 s. Shown in the report, not checked."""
        while True:
            for box in self.boxes:
                t = now()
                try:
                    _, body = await asyncio.wait_for(
                        asyncio.to_thread(http, "GET", f"{box.url}/metrics", None, None, 3), 3.5)
                    for line in body.decode(errors="replace").splitlines():
                        if line.startswith('pushgate_loop_lag_seconds{worker="'):
                            self.lags.append((t, f"{box.label}/worker-{line.split(chr(34))[1]}",
                                              float(line.split()[-1])))
                        elif line.startswith('pushgate_history_bytes{worker="'):
                            self.history.append((t, f"{box.label}/worker-{line.split(chr(34))[1]}",
                                                 float(line.split()[-1])))
                except (OSError, ValueError, urllib.error.URLError, asyncio.TimeoutError):
                    self.lags.append((t, f"{box.label} (no answer)", None))
            await asyncio.sleep(5)

    def rss_level(self, start: float, end: float) -> dict[str, float]:
        """Per role, the median RSS of the samples taken in [start, end)."""
        by_role: dict[str, list[int]] = {}
        for t, role, _pid, rss in self.samples:
            if start <= t < end and not role.startswith("relay") and "orphan" not in role:
                by_role.setdefault(role, []).append(rss)
        return {role: statistics.median(v) for role, v in by_role.items()}

    # --- faults ---

    def pick_box(self) -> Box:
        return self.rng.choice(self.boxes)

    def span(self, what: str) -> float:
        low, high = SPANS[what][1 if self.args.lean else 0]
        return self.rng.uniform(low, high)

    async def wait_healthy(self, fault: Fault, boxes: list[Box] | None = None, timeout: float = 40) -> None:
        for box in boxes or self.boxes:
            ok = await asyncio.to_thread(box.wait_healthy, timeout)
            if not ok:
                fault.notes.append(f"box {box.label} not healthy (both workers ready) within {timeout:.0f} s")

    async def inject(self, fault: Fault) -> None:
        kind, rng = fault.kind, self.rng
        if kind in ("worker-kill", "worker-stop"):
            box = self.pick_box()
            index = rng.randrange(2)
            pid = box.workers().get(index)
            duration = self.span("worker-stop")
            if pid is None:
                fault.notes.append(f"box {box.label} worker {index} not running: skipped")
                return
            fault.target = f"box {box.label} worker {index} (pid {pid})"
            if kind == "worker-kill":
                os.kill(pid, signal.SIGKILL)
            else:
                fault.target += f" for {duration:.1f} s"
                os.kill(pid, signal.SIGSTOP)
                await asyncio.sleep(duration)
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:   # its supervisor found it hung and killed it
                    fault.notes.append("gone before SIGCONT (its supervisor killed it)")
            await self.wait_healthy(fault, [box])
        elif kind == "node-kill":
            box = self.pick_box()
            delay = self.span("node-kill")
            fault.target = f"box {box.label} supervisor (pid {box.proc.pid}), started again after {delay:.1f} s"
            os.kill(box.proc.pid, signal.SIGKILL)
            box.proc.wait()
            await asyncio.sleep(delay)
            orphans = box.orphans()
            if orphans:
                fault.notes.append(f"still running after the supervisor died: pids {orphans}")
            box.launch()
            fault.notes.append(f"new supervisor pid {box.proc.pid}")
            await self.wait_healthy(fault, [box])
            left = box.orphans()
            fault.notes.append(f"old workers still running once the box was healthy again: pids {left}" if left
                               else "the old workers had exited by the time the box was healthy again")
            shared = await asyncio.to_thread(self.shared_channels)
            if shared:
                fault.notes.append("NSQ channels read by more than one connection: "
                                   + ", ".join(f"{c} ({n})" for c, n in sorted(shared.items())))
        elif kind == "node-stop":
            box = self.pick_box()
            duration = self.span("node-stop")
            group = box.proc.pid
            fault.target = f"box {box.label} process group {group} (supervisor and workers) for {duration:.1f} s"
            os.killpg(group, signal.SIGSTOP)
            await asyncio.sleep(duration)
            try:
                os.killpg(group, signal.SIGCONT)
            except ProcessLookupError:
                fault.notes.append("the process group was gone before SIGCONT")
            await self.wait_healthy(fault, [box])
        elif kind in ("nsqd-restart", "nsqd-kill"):
            # SIGTERM: nsqd closes its connections and writes what its topics
            # hold to disk (the new instance hands it to the first channel
            # made). SIGKILL: what it held in memory, for every node, is gone.
            down = self.span("nsqd-down")
            fault.target = f"nsqd (pid {self.nsqd.proc.pid}), down {down:.1f} s"
            if kind == "nsqd-kill":
                self.nsqd.proc.kill()
                code = await asyncio.to_thread(self.nsqd.proc.wait)
            else:
                code = await asyncio.to_thread(self.nsqd.stop)
            await asyncio.sleep(down)
            await asyncio.to_thread(self.nsqd.start)
            fault.notes.append(f"nsqd exited {code}; new pid {self.nsqd.proc.pid}")
            await self.wait_healthy(fault)
        elif kind == "net-cut":
            down = self.span("net-cut")
            answer = await self.relay_command(f"cut {down:.2f}")
            fault.target = f"relay: {answer['cut']} connections cut, new ones refused for {down:.1f} s"
            await asyncio.sleep(down)
        elif kind in ("connect-storm", "pong-flood"):
            box = self.pick_box()
            if kind == "connect-storm":
                count, hold = int(self.span("storm-count")), self.span("storm-hold")
                argv = ["connect", str(box.port), str(count), f"{hold:.1f}"]
                fault.target = f"box {box.label}: {count} connects, held {hold:.1f} s"
                limit = 90
            else:
                seconds = self.span("pong")
                argv = ["pong", str(box.port), "4", f"{seconds:.1f}"]
                fault.target = f"box {box.label}: 4 pong flooders for {seconds:.1f} s"
                limit = seconds + 30
            refused_before = await asyncio.to_thread(self.refused_connects, box)
            proc = await asyncio.create_subprocess_exec(sys.executable, str(ROOT / "bench" / "flood.py"), "--attacker",
                                                        *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
            self.attackers.append(proc)
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), limit)
                fault.notes.append("attacker: " + out.decode(errors="replace").strip()[-300:])
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
                fault.notes.append(f"attacker still running after {limit:.0f} s: killed")
            refused_after = await asyncio.to_thread(self.refused_connects, box)
            refused = {k: v - refused_before.get(k, 0) for k, v in refused_after.items()
                       if v - refused_before.get(k, 0) > 0}
            if refused:
                fault.notes.append("box refused connects by limit: "
                                   + ", ".join(f"{k} {v:.0f}" for k, v in sorted(refused.items())))
        elif kind == "history-burst":
            total = int(self.args.history_bytes * 1.5)
            size = 4000
            count = total // size
            fault.target = f"{count} publications of {size} bytes on 32 channels ({total / 2**20:.1f} MiB)"
            bodies = [json.dumps({"channel": f"junk:big:{i % 32}", "data": {"pad": "x" * size, "i": i}}).encode()
                      for i in range(count)]
            await asyncio.to_thread(self.mpub_all, bodies, 100, fault)
        elif kind == "channel-explosion":
            self.explosions += 1
            count = self.args.explosion
            fault.target = f"{count} new channels and users, 100 to an envelope"
            bodies = []
            for start in range(0, count, 100):
                names = [f"x{self.explosions}-{k}" for k in range(start, min(start + 100, count))]
                if (start // 100) % 2:
                    bodies.append(json.dumps({"users": names, "data": {"e": self.explosions}}).encode())
                else:
                    bodies.append(json.dumps({"channels": [f"junk:{n}" for n in names],
                                              "data": {"e": self.explosions}}).encode())
            await asyncio.to_thread(self.mpub_all, bodies, 50, fault)

    def shared_channels(self) -> dict[str, int]:
        """NSQ channels of the envelope topic that more than one connection reads
        (each node reads its own channel on one connection): {channel: readers}."""
        try:
            _, body = http("GET", f"http://{self.nsqd.http_address}/stats?format=json&topic=pushgate", timeout=3)
            topics = json.loads(body).get("topics") or []
        except (OSError, ValueError, urllib.error.URLError, AttributeError):
            return {}
        return {c["channel_name"]: len(c.get("clients") or []) for t in topics if t.get("topic_name") == "pushgate"
                for c in t.get("channels") or [] if len(c.get("clients") or []) > 1}

    @staticmethod
    def refused_connects(box: Box) -> dict[str, float]:
        """The box's ``pushgate_refused_connects_total`` by limit (all workers), or {} without an answer."""
        try:
            _, body = http("GET", f"{box.url}/metrics", timeout=3)
        except (OSError, urllib.error.URLError):
            return {}
        out = {}
        for line in body.decode(errors="replace").splitlines():
            if line.startswith("pushgate_refused_connects_total{") and "worker=" not in line:
                out[line.split('limit="', 1)[1].split('"', 1)[0]] = float(line.split()[-1])
        return out

    def mpub_all(self, bodies: list[bytes], per: int, fault: Fault) -> None:
        refused = 0
        for start in range(0, len(bodies), per):
            for _attempt in range(50):
                try:
                    status, _ = http("POST", f"http://{self.nsqd.http_address}/mpub?topic=pushgate",
                                     b"\n".join(bodies[start:start + per]), timeout=10)
                    if status == 200:
                        break
                except (OSError, urllib.error.URLError):
                    pass
                refused += 1
                time.sleep(0.2)
        if refused:
            fault.notes.append(f"{refused} /mpub attempts refused")

    async def run_faults(self, until: float) -> None:
        """Faults until ``until``, every kind once in random order before any
        repeats; with --lean, every kind exactly once, whatever the time."""
        order: list[str] = list(self.args.faults)
        self.rng.shuffle(order)
        if self.args.lean:
            # What the memory faults leave expires meanwhile, so the settle
            # period need not wait for history's TTL after the last fault.
            order.sort(key=lambda kind: kind not in MEMORY_FAULTS)
            while order:
                await self.one_fault(order.pop(0))
                if order:
                    await asyncio.sleep(self.span("pause"))
            return
        while now() < until:
            if not order:
                order = list(self.args.faults)
                self.rng.shuffle(order)
            await self.one_fault(order.pop(0))
            if now() < until:
                await asyncio.sleep(min(self.span("pause"), max(0.0, until - now())))

    async def one_fault(self, kind: str, note: str = "") -> None:
        index = len(self.faults) + 1
        fault = Fault(index, kind, now())
        if note:
            fault.notes.append(note)
        self.faults.append(fault)
        self.log(f"fault {index}: {fault.kind} ...")
        try:
            await self.inject(fault)
        except Exception as exc:   # noqa: BLE001 - the soak goes on; the report says what happened
            fault.notes.append(f"harness error: {exc!r}")
            self.log(traceback.format_exc())
        fault.end = now()
        self.log(f"fault {index}: {fault.kind} {fault.target} -- {fault.end - fault.start:.1f} s"
                 + (f"; {'; '.join(fault.notes)}" if fault.notes else ""))

    async def prime(self) -> None:
        """A history burst and a channel explosion before the RSS baseline, and
        time for what they leave to expire (docs/recovery.md, "Memory after a
        burst"): they take the allocators to the high-water mark that history's
        budget bounds, so that the 10 % rule measures what the faults after
        them retain rather than where pymalloc's arenas stand."""
        self.marks["priming"] = now()
        for kind in MEMORY_FAULTS:
            if kind in self.args.faults:
                await self.one_fault(kind, "priming: before the RSS baseline")

    def prime_wait(self) -> float:
        """Until what a burst left is gone: history's TTL, a full sweep (10 s),
        a heap trim check (10 s), and the 10 s the baseline is measured over."""
        return self.timings["history-ttl"] + 30

    # --- presence and info ---

    def ask_every_node(self) -> dict[str, dict]:
        """Each worker's info and presence, in one batch per request (the first
        node ``info`` lists is the one that answered); fresh connections to each
        box's port until the kernel has handed one to each of its workers."""
        views: dict[str, dict] = {}
        body = json.dumps({"commands": [{"info": {}}, {"presence": {"channel": PRESENCE_CHANNEL}}]}).encode()
        for box in self.boxes:
            for _attempt in range(24):
                if box.worker_names() <= set(views):
                    break
                try:
                    status, answer = http("POST", f"{box.url}/api/batch", body,
                                          {"X-API-Key": API_KEY, "Content-Type": "application/json"}, timeout=2)
                    result = json.loads(answer)
                    replies = result.get("result", result)["replies"]
                    nodes = replies[0]["info"]["nodes"]
                    presence = replies[1]["presence"]["presence"]
                except (OSError, ValueError, KeyError, IndexError, TypeError, urllib.error.URLError):
                    continue
                views[nodes[0]["name"]] = {"nodes": {(n["name"], n["uid"]) for n in nodes},
                                           "presence": {PRESENCE_CHANNEL: set(presence)}}
        return views

    def presence_truth(self) -> tuple[dict[str, set[str]], list[str]]:
        """The honest subscribers of the presence channel by client id, as their
        own events tell, and the names of those that are not (yet) back."""
        ids, away = set(), []
        for c in self.clients:
            if PRESENCE_CHANNEL in c.record.channels and c.spec.kind != "cable":
                cid = c.presence_id()
                if cid:
                    ids.add(cid)
                else:
                    away.append(c.spec.name)
        return {PRESENCE_CHANNEL: ids}, away

    def agree_now(self) -> tuple[bool, list[str], dict]:
        expected = set().union(*(b.worker_names() for b in self.boxes))
        views = self.ask_every_node()
        truth, away = self.presence_truth()
        ok, problems = agreement(views, expected, truth)
        if away:
            ok = False
            problems.append(f"honest clients not connected and subscribed to {PRESENCE_CHANNEL}: {away}")
        return ok, problems, views

    async def watch_agreement(self, deadline: float) -> None:
        """Ask every node until all agree (every honest presence client back, and
        listed), or the deadline passes."""
        while True:
            ok, problems, views = await asyncio.to_thread(self.agree_now)
            self.views, self.agreement_problems = views, problems
            if ok:
                self.agreed_at = now()
                return
            if now() > deadline:
                return
            await asyncio.sleep(1)

    # --- the run ---

    async def run(self) -> int:
        args = self.args
        total = args.minutes * 60
        started = now()
        self.commit = git_head()
        self.log(f"soak: seed {self.seed}, {args.minutes:g} min, commit {self.commit}, work directory {self.workdir}")
        await asyncio.to_thread(self.start_stack)
        sampler = asyncio.create_task(self.sample_rss())
        lag_sampler = asyncio.create_task(self.sample_lag())
        await asyncio.sleep(PRIMING_BASELINE)     # the level before the priming, measured over this
        await self.prime()                        # its memory expires while the clients start and warm up
        await self.start_relay()
        await self.start_clients()
        channels = sorted({c for client in self.clients for c in client.record.channels})
        self.publisher = Publisher(self.nsqd, channels, self.run_id)
        self.publisher.start()
        self.marks["publishing"] = now()
        warmup = max(args.warmup, self.marks["priming"] + self.prime_wait() - now())
        self.log(f"publishing on {len(channels)} channels; warm-up {warmup:.0f} s")
        await asyncio.sleep(warmup)
        fault_until = started + total - args.settle - 10
        self.marks["first fault"] = now()
        await self.run_faults(fault_until)
        last = self.marks["last fault end"] = now()
        self.log(f"faults over ({len(self.faults)} injected); settling {args.settle:g} s")
        presence_deadline = last + self.agreement_limit()
        await self.watch_agreement(presence_deadline)
        self.log("presence and info: " + ("agree" if self.agreed_at else "still disagree") +
                 f" ({(self.agreed_at or now()) - last:.1f} s after the last fault)")
        await asyncio.sleep(max(0.0, last + args.settle - now()))
        self.marks["settled"] = now()
        self.shared_at_end = await asyncio.to_thread(self.shared_channels)
        if self.agreed_at is not None:   # and they still agree at the end
            ok, problems, views = await asyncio.to_thread(self.agree_now)
            if not ok:
                self.agreed_at = None
                self.views, self.agreement_problems = views, ["agreed after the last fault, then at the end of the "
                                                               "settle period no longer: ", *problems]
        self.publisher.stopping.set()
        self.publisher.join(10)
        self.marks["publishing stopped"] = now()
        await self.wait_tails(90)
        sampler.cancel()
        lag_sampler.cancel()
        return 0

    async def wait_tails(self, timeout: float) -> None:
        """Until every client has the last publication of each of its channels
        (or was told and is back), or ``timeout``: long enough for a stock
        client's own backoff (@anycable/web's grows without bound: 3 s x 2^n)."""
        last = dict(self.publisher.last)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(tail_complete(c.record, last) for c in self.clients):
                return
            await asyncio.sleep(2)
        self.log(f"clients still without their last publications after {timeout:.0f} s: "
                 + ", ".join(c.spec.name for c in self.clients if not tail_complete(c.record, last)))

    async def teardown(self) -> None:
        if self.publisher:
            self.publisher.stopping.set()
        for proc in self.attackers:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        for client in self.clients:
            await client.stop()
        if self.relay and self.relay.returncode is None:
            self.relay.stdin.close()
            try:
                await asyncio.wait_for(self.relay.wait(), 5)
            except asyncio.TimeoutError:
                self.relay.kill()
                await self.relay.wait()
        for box in self.boxes:
            await asyncio.to_thread(box.stop_all)
        for proc in (self.nsqd, self.lookupd):
            if proc is not None:
                await asyncio.to_thread(proc.stop)

    def agreement_limit(self) -> float:
        """Seconds after the last fault by which every node must agree."""
        return self.timings["presence-ttl"] + self.timings["presence-interval"] + 5

    # --- the verdict ---

    def verdict(self) -> tuple[bool, list[str], dict]:
        lines, details = [], {}
        # delivery
        published = dict(self.publisher.last)
        figures, violations = check_delivery([c.record for c in self.clients], published)
        received = sum(f.received for per in figures.values() for f in per.values())
        gaps = sum(f.gaps for per in figures.values() for f in per.values())
        covered = sum(f.covered for per in figures.values() for f in per.values())
        told = sum(f.told for per in figures.values() for f in per.values())
        kinds: dict[str, int] = {}
        for v in violations:
            kinds[v.what] = kinds.get(v.what, 0) + 1
        ok_delivery = not violations
        lines.append(f"{'PASS' if ok_delivery else 'FAIL'} delivery: {sum(published.values())} publications on "
                     f"{len(published)} channels, {received} received by {len(self.clients)} clients; "
                     f"{gaps} gaps, {covered} of them told; {told} told events"
                     + ("" if ok_delivery else f"; breaches: {', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}"))
        details["delivery"] = (figures, violations, published)
        # rss
        first = self.marks["first fault"]
        before = self.rss_level(first - 10, first)
        after = self.rss_level(self.marks["settled"] - 10, self.marks["settled"] + 1)
        extra = {}
        for t, role, _pid, rss in self.samples:
            if "orphan" in role and t >= self.marks["settled"] - 10:
                extra[role] = rss
        # Checked: every pushgate process (each box's supervisor and workers; an
        # orphaned worker is a breach). nsqd and nsqlookupd are shown, not checked.
        mine = {r: v for r, v in before.items() if "/" in r}
        ok_rss, rss_lines = check_rss(mine, after, extra)
        if "priming" in self.marks:
            # The high-water the priming set, against the ceiling history's budget sets for it.
            unprimed = self.rss_level(self.marks["priming"] - 10, self.marks["priming"])
            ok_ceiling, ceiling_lines = check_high_water(
                {r: v for r, v in unprimed.items() if "/" in r}, mine, self.args.history_bytes)
            ok_rss &= ok_ceiling
            rss_lines += ["", "High-water of the priming (a history burst and a channel explosion), against "
                          f"the level before it plus 10 % plus --history-memory-bytes ({self.args.history_bytes / 2**20:g} MiB):",
                          *ceiling_lines]
        worst = max(((after.get(r, 0) / b - 1, r) for r, b in mine.items() if after.get(r)), default=(0, "-"))
        lines.append(f"{'PASS' if ok_rss else 'FAIL'} rss: {len(mine)} gateway processes, the most grown {worst[1]} "
                     f"{worst[0]:+.1%} (limit +10 % of the level after the priming)"
                     + ("" if "priming" not in self.marks else
                        f"; priming high-water within its ceiling: {'yes' if ok_ceiling else 'NO'}")
                     + (f"; {len(extra)} orphaned" if extra else ""))
        for role in sorted(set(before) - set(mine)):
            if role in after:
                rss_lines.append(f"{role}: {before[role] / 2**20:.1f} -> {after[role] / 2**20:.1f} MiB "
                                 f"({after[role] / before[role] - 1:+.1%}) (not checked)")
        details["rss"] = rss_lines
        # agreement
        ok_agree = self.agreed_at is not None
        since = (self.agreed_at or 0) - self.marks["last fault end"]
        lines.append(f"{'PASS' if ok_agree else 'FAIL'} agreement: " +
                     (f"info and presence identical and true on all {len(self.views)} nodes {since:.1f} s after the "
                      f"last fault (limit {self.agreement_limit():g} s)" if ok_agree
                      else "; ".join(self.agreement_problems)[:600] or "never asked (the run ended before)"))
        # logs
        logs = [b.log_path for b in self.boxes] or sorted(self.workdir.glob("box-*/*.log"))
        found = tracebacks(logs)
        ok_logs = not found
        lines.append(f"{'PASS' if ok_logs else 'FAIL'} logs: {len(found)} tracebacks in {len(logs)} gateway logs")
        details["tracebacks"] = found
        return ok_delivery and ok_rss and ok_agree and ok_logs, lines, details

    def delays(self) -> dict[str, list[float]]:
        """Delivery delays, by the stretch of the run in which they arrived:
        the warm-up, after each fault (until the next), the settle period."""
        start = self.marks.get("publishing", 0)
        bounds = [(f.start, f"after fault {f.index} ({f.kind}, at {f.start - start:.1f} s)") for f in self.faults]
        if "last fault end" in self.marks:
            bounds.append((self.marks["last fault end"], "settle period"))
        out: dict[str, list[float]] = {"warm-up": []}
        out.update({name: [] for _, name in bounds})
        accepted = self.publisher.accepted
        starts = [b for b, _ in bounds]
        for client in self.clients:
            for t, e in client.record.events:
                if e.get("ev") != "pub" or not isinstance(e.get("data"), dict):
                    continue
                taken = accepted.get((e.get("ch"), e["data"].get("n")))
                if taken is None:
                    continue
                i = bisect.bisect_right(starts, t) - 1
                out[bounds[i][1] if i >= 0 else "warm-up"].append(max(0.0, t - taken))
        return out

    def save_state(self, lines: list[str]) -> None:
        """Everything the verdict was drawn from but the clients' events (which
        are in client-*.jsonl), as soak-state.json in the work directory."""
        state = {"seed": self.seed, "args": {k: (v if isinstance(v, (int, float, str, list, type(None))) else str(v))
                                              for k, v in vars(self.args).items()},
                 "verdict": lines, "marks": self.marks, "published": dict(self.publisher.last),
                 "faults": [vars(f) for f in self.faults], "rss": self.samples, "loop_lag": self.lags,
                 "history_bytes": self.history, "agreed_at": self.agreed_at, "shared_at_end": self.shared_at_end,
                 "log_start": self.log.start, "commit": self.commit,
                 "accepted": [[c, n, t] for (c, n), t in self.publisher.accepted.items()],
                 "agreement_problems": self.agreement_problems,
                 "views": {name: {"nodes": sorted(v["nodes"]), "presence": {c: sorted(ids) for c, ids in
                                                                            v["presence"].items()}}
                           for name, v in self.views.items()},
                 "clients": {c.spec.name: {"kind": c.spec.kind, "channels": c.record.channels} for c in self.clients}}
        (self.workdir / "soak-state.json").write_text(json.dumps(state))

    def attribute(self, since: float, seen: float) -> tuple[str, "Fault | None"]:
        """The fault a breach most likely follows from, as words: the last that
        began while it formed (between ``since``, the last good publication, and
        ``seen``), naming the others that began meanwhile; else the last that
        began before it."""
        during = [f for f in self.faults if since <= f.start <= seen]
        before = [f for f in self.faults if f.start <= since]
        f = during[-1] if during else before[-1] if before else None
        if f is None:
            return "no fault (warm-up)", None
        words = f"fault {f.index} ({f.kind}, at {f.start - self.marks['publishing']:.1f} s)"
        if len(during) > 1:
            words += " after " + ", ".join(f"{g.index} ({g.kind})" for g in during[:-1])
        return words, f

    def report(self, ok: bool, lines: list[str], details: dict, path: Path) -> None:
        start = self.marks.get("publishing", self.log.start)
        figures, violations, published = details["delivery"]
        out = [f"# Soak {datetime.datetime.fromtimestamp(self.log.start, datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
               "", f"`bench/soak.py {'--lean' if self.args.lean else f'--minutes {self.args.minutes:g}'} --seed {self.seed}`"
               + (f" `--faults {','.join(self.args.faults)}`" if self.args.faults != FAULTS else "")
               + f" on {os.cpu_count()} cores; commit `{self.commit}`; work directory `{self.workdir}`.",
               "", "**" + ("Every invariant holds." if ok else "Invariants breached.") + "**", "", "```",
               *lines, "```", "",
               "Stack: nsqlookupd, nsqd, boxes A and B (`pushgate serve " + " ".join(GATEWAY_FLAGS)
               + "".join(f" --{k}={v:g}" for k, v in self.timings.items())
               + f" --history-memory-bytes={self.args.history_bytes}`), a TCP relay in front of both. "
               f"Honest clients: {len(self.clients)}. Times are seconds since publishing started.", "",
               "## Faults", "", "| # | at | took | fault | target | notes |", "|---|---|---|---|---|---|"]
        for f in self.faults:
            out.append(f"| {f.index} | {f.start - start:.1f} | {f.end - f.start:.1f} | {f.kind} | {f.target} | "
                       + "; ".join(n.replace("|", "/").replace("\n", " ") for n in f.notes)[:400] + " |")
        counts: dict[str, int] = {}
        for f in self.faults:
            counts[f.kind] = counts.get(f.kind, 0) + 1
        out += ["", "Injected: " + ", ".join(f"{k} x{n}" for k, n in sorted(counts.items())), "",
                "## Clients", "", "| client | channel | received | gaps | missed | told events | gaps told |",
                "|---|---|---|---|---|---|---|"]
        for client in self.clients:
            for ch, f in figures[client.spec.name].items():
                out.append(f"| {client.spec.name} | {ch} | {f.received} / {published.get(ch, 0)} | {f.gaps} | "
                           f"{f.missed} | {f.told} | {f.covered} |")
            reconnects = sum(1 for _, e in client.record.events if e.get("ev") in ("connected", "cable_connect"))
            out.append(f"| {client.spec.name} | (connects) | {reconnects} | | | | |")
        if violations:
            by_fault: dict[str, list] = {}
            kind_of: dict[str, str] = {}
            for v in sorted(violations, key=lambda v: v.since or v.at):
                where, fault = self.attribute(v.since or v.at, v.at)
                by_fault.setdefault(where, []).append(v)
                kind_of[where] = fault.kind if fault else "none"
            with open(self.workdir / "breaches.txt", "w") as f:
                for where, vs in by_fault.items():
                    for v in vs:
                        f.write(f"{where}\t{v.client}\t{v.channel}\t{v.what}\tseen at {v.at - start:.1f}\t{v.detail}\n")
            out += ["", f"## Delivery breaches ({len(violations)})", "",
                    "Each breach is put under the fault it most likely follows from: the last fault that began "
                    "while it formed (a gap forms between the last publication received before it and the one "
                    "after it; the others that began meanwhile are named after it), else the last that began "
                    f"before. Every breach, one a line: `{self.workdir / 'breaches.txt'}`.", "",
                    "| fault kind | injected | followed by breaches | breaches |", "|---|---|---|---|"]
            for kind in sorted({f.kind for f in self.faults}):
                groups_of_kind = [w for w, k in kind_of.items() if k == kind]
                out.append(f"| {kind} | {sum(1 for f in self.faults if f.kind == kind)} | {len(groups_of_kind)} | "
                           f"{sum(len(by_fault[w]) for w in groups_of_kind)} |")
            out += ["", "| after | breaches | clients and channels |", "|---|---|---|"]
            for where, vs in by_fault.items():
                pairs = sorted({f"{v.client} `{v.channel}` {v.what}" for v in vs})
                out.append(f"| {where} | {len(vs)} | {', '.join(pairs[:6])}{' ...' if len(pairs) > 6 else ''} |")
            out += ["", f"The first {min(DETAILED, len(by_fault))} of these in detail, for each client and channel "
                    "the first two breaches and the last (seen at: seconds since publishing started; the detail's "
                    "clock is Unix time):", ""]
            for where, vs in list(by_fault.items())[:DETAILED]:
                out += [f"### After {where}", ""]
                groups: dict[tuple, list] = {}
                for v in vs:
                    groups.setdefault((v.client, v.channel, v.what), []).append(v)
                for (client, channel, what), gvs in list(groups.items())[:12]:
                    out.append(f"- **{client} `{channel}` {what}** x{len(gvs)}:")
                    for v in (gvs[:2] + gvs[-1:] if len(gvs) > 2 else gvs):
                        out.append(f"  - seen at {v.at - start:.1f}: {v.detail}")
                if len(groups) > 12:
                    out.append(f"- ... and {len(groups) - 12} more clients and channels")
                out.append("")
        out += ["", "## Delivery delay", "", "Not an invariant: how long after nsqd took each publication a "
                "client got it (every client, every channel; a recovered publication counts from when it was "
                "published), per stretch of the run, in seconds. A stall shows here.", "",
                "| stretch | received | p50 | p99 | max |", "|---|---|---|---|---|"]
        for name, values in self.delays().items():
            values.sort()
            if values:
                out.append(f"| {name} | {len(values)} | {values[len(values) // 2]:.3f} | "
                           f"{values[min(len(values) - 1, int(len(values) * 0.99))]:.3f} | {values[-1]:.3f} |")
        if self.shared_at_end:
            out += ["", "NSQ channels of the envelope topic read by more than one connection at the end (one "
                    "node's channel should have one reader): "
                    + ", ".join(f"`{c}` ({n})" for c, n in sorted(self.shared_at_end.items()))]
        out += ["", "## RSS", "", "Compared: per process, the median of the samples (every 2 s) in the 10 s before "
                "the first fault (after the priming: a history burst and a channel explosion, expired by then), "
                "and in the last 10 s of the settle period; a restarted process is compared by "
                "its role (box, supervisor or worker index). Checked: every pushgate process, each at most 10 % "
                "above its level before, and the priming's high-water at most 10 % plus --history-memory-bytes "
                "above the level before the priming (docs/recovery.md, \"Memory after a burst\": the allocators "
                "keep what the first explosion spread over, and reuse it); a process of a box that is not its supervisor or one of its workers "
                "(an orphaned worker) is a breach. Not checked: the clients, the relay (the harness's), and "
                "nsqd and nsqlookupd (third-party Go processes: their RSS climbs towards the Go collector's "
                "target for minutes under steady load with no fault at all, and nsqd restarts).", "", "```", *details["rss"], "```", ""]
        shown = orphans_summed(self.samples)
        out += rss_table(shown, start)
        png = plot_rss(shown, start, path.with_name(path.stem + "-rss.png"), self.faults)
        if png:
            out += ["", f"![RSS]({png.name})"]
        out += ["", "## Event-loop lag", "", "Each box's `/metrics` every 5 s: the largest "
                "`pushgate_loop_lag_seconds` of each worker in each period (how late its timers ran; new "
                "connections are shed above `--shed-loop-lag`, 0.1 s), or how many times the box did not answer "
                "within 3 s. Not an invariant: it shows a stall.", ""]
        out += lag_table(self.lags, start)
        out += ["", "What each worker's history says it holds (`pushgate_history_bytes`, MiB), from the same "
                "`/metrics`: beside the RSS, it tells memory the gateway still accounts for from memory it "
                "no longer does.", ""]
        out += lag_table([(t, w, v / 2**20) for t, w, v in self.history], start, digits=2)
        out += ["", "## Presence and info", ""]
        out += [f"- {p}" for p in self.agreement_problems] or ["Agreed."]
        out += ["", f"Nodes that answered: {sorted(self.views)}"]
        if details["tracebacks"]:
            out += ["", "## Tracebacks", ""]
            for log_path, text in details["tracebacks"][:10]:
                out += [f"`{log_path}`:", "```", text, "```"]
        if self.publisher.failures:
            out += ["", f"Publisher: {self.publisher.retries} batches sent again; first failures: "
                    + "; ".join(f"{t - start:.1f}: {w}" for t, w in self.publisher.failures[:5])]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(out) + "\n")


def orphans_summed(samples):
    """The samples with each box's orphaned workers as one series, their sum and count."""
    out, orphans = [], {}
    for t, role, pid, rss in samples:
        if "/orphan pid " in role:
            box = role.split("/", 1)[0]
            total, count = orphans.get((t, box), (0, 0))
            orphans[(t, box)] = (total + rss, count + 1)
        else:
            out.append((t, role, pid, rss))
    out += [(t, f"{box}/orphans (sum)", count, total) for (t, box), (total, count) in orphans.items()]
    out.sort(key=lambda x: x[0])
    return out


def rss_table(samples, start: float) -> list[str]:
    """One row a minute (one every 10 s for a short run): each role's RSS in MiB."""
    if not samples:
        return []
    roles = sorted({r for _, r, _, _ in samples})
    end = max(t for t, *_ in samples)
    step = 60 if end - start > 600 else 10
    out = ["| s | " + " | ".join(roles) + " |", "|---" * (len(roles) + 1) + "|"]
    t = start
    while t <= end + step:
        row = []
        for role in roles:
            near = [rss for ts, r, _, rss in samples if r == role and t - step / 2 <= ts < t + step / 2]
            row.append(f"{near[-1] / 2**20:.1f}" if near else "")
        if any(row):
            out.append(f"| {t - start:.0f} | " + " | ".join(row) + " |")
        t += step
    return out


def lag_table(lags, start: float, digits: int = 3) -> list[str]:
    if not lags:
        return []
    columns = sorted({w for _, w, _ in lags})
    end = max(t for t, _, _ in lags)
    step = 60 if end - start > 600 else 10
    out = ["| s | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    t = start
    while t <= end + step:
        row = []
        for col in columns:
            near = [lag for ts, w, lag in lags if w == col and t - step / 2 <= ts < t + step / 2]
            if "no answer" in col:
                row.append(str(len(near)) if near else "")
            else:
                row.append(f"{max(near):.{digits}f}" if near else "")
        if any(row):
            out.append(f"| {t - start:.0f} | " + " | ".join(row) + " |")
        t += step
    return out


def plot_rss(samples, start: float, path: Path, faults: list[Fault]) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(11, 5))
    for role in sorted({r for _, r, _, _ in samples}):
        pts = [(t - start, rss / 2**20) for t, r, _, rss in samples if r == role]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=role, linewidth=1)
    for f in faults:
        ax.axvspan(f.start - start, max(f.end, f.start + 0.5) - start, color="red", alpha=0.04, linewidth=0)
    ax.set_xlabel("seconds since publishing started (faults shaded)")
    ax.set_ylabel("RSS, MiB")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def git_head() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5).stdout.strip()
    except OSError:
        return "?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30, help="the whole run, about (default 30)")
    parser.add_argument("--seed", type=int, help="the faults' RNG seed (default: a random one, printed)")
    parser.add_argument("--faults", type=lambda s: s.split(","), default=FAULTS,
                        help=f"comma-separated kinds to inject (default all: {','.join(FAULTS)})")
    parser.add_argument("--warmup", type=float, default=20, help="seconds of honest load before the first fault")
    parser.add_argument("--settle", type=float, default=60,
                        help="seconds after the last fault before RSS is compared (history's TTL, a full sweep, a "
                             "heap trim check and the 10 s it is measured over)")
    parser.add_argument("--history-bytes", type=int, default=8 * 2**20, help="the gateway's --history-memory-bytes")
    parser.add_argument("--explosion", type=int, default=30000, help="new channels per channel-explosion")
    parser.add_argument("--report", type=Path, help="the report's path (default bench/results/soak-<date>.md)")
    parser.add_argument("--workdir", help="where logs and client events go (default: a new temporary directory)")
    parser.add_argument("--lean", action="store_true",
                        help="the lean soak of make test: every fault kind once, short, against timings scaled "
                             "down to match (TIMINGS, LEAN_TIMINGS); a 10 s warm-up and a 30 s settle period; "
                             "--minutes is then only the watchdog's")
    args = parser.parse_args(argv)
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        parser.error(f"--faults: unknown {sorted(unknown)}; the kinds are {','.join(FAULTS)}")
    if args.lean:
        args.warmup = min(args.warmup, 10)
        args.settle = min(args.settle, 25)
    if args.minutes * 60 < args.warmup + args.settle + 40:
        parser.error(f"--minutes: at least {(args.warmup + args.settle + 40) / 60:.1f} with this warm-up and settle")
    return args


async def amain(args: argparse.Namespace) -> int:
    soak = Soak(args)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    # The run stops by itself: past its length and 5 minutes more, whatever happens.
    watchdog = loop.call_later(args.minutes * 60 + 300, task.cancel)
    try:
        await soak.run()
    except asyncio.CancelledError:
        soak.log("soak: stopped before its end (signal or watchdog); no verdict")
        return 2
    except Exception:   # noqa: BLE001
        soak.log("soak: the harness failed:\n" + traceback.format_exc())
        return 2
    finally:
        watchdog.cancel()
        try:
            await asyncio.shield(soak.teardown())
        except Exception:   # noqa: BLE001
            soak.log("teardown failed:\n" + traceback.format_exc())
    ok, lines, details = soak.verdict()
    for line in lines:
        print(line, flush=True)
        soak.log.file.write(line + "\n")
    stamp = datetime.datetime.fromtimestamp(soak.log.start, datetime.timezone.utc).strftime("%Y-%m-%d-%H%M")
    path = args.report or RESULTS / f"soak-{stamp}.md"
    soak.report(ok, lines, details, path)
    soak.save_state(lines)
    print(f"report: {path}; logs and client events: {soak.workdir}", flush=True)
    return 0 if ok else 1


def replay(workdir: Path, report: Path | None) -> int:
    """The verdict and the report again, from a run's work directory
    (soak-state.json and client-*.jsonl), with this checker."""
    state = json.loads((workdir / "soak-state.json").read_text())
    a = state["args"]
    args = parse_args(["--minutes", str(a["minutes"]), "--seed", str(state["seed"]), "--workdir", str(workdir),
                       "--faults", ",".join(a["faults"]), "--history-bytes", str(a["history_bytes"]),
                       "--warmup", str(a["warmup"]), "--settle", str(a["settle"]), *(["--lean"] if a.get("lean") else [])])
    soak = Soak(args)
    soak.log.start = state.get("log_start", state["marks"]["publishing"])
    soak.commit = state.get("commit", "?")
    soak.marks = state["marks"]
    soak.faults = [Fault(**f) for f in state["faults"]]
    soak.samples = [tuple(x) for x in state["rss"]]
    soak.lags = [tuple(x) for x in state["loop_lag"]]
    soak.history = [tuple(x) for x in state["history_bytes"]]
    soak.agreed_at, soak.agreement_problems = state["agreed_at"], state["agreement_problems"]
    soak.views = {name: {"nodes": {tuple(n) for n in v["nodes"]},
                         "presence": {c: set(ids) for c, ids in v["presence"].items()}}
                  for name, v in state["views"].items()}
    soak.shared_at_end = state.get("shared_at_end", {})
    soak.publisher = Publisher(None, list(state["published"]), "replay")
    soak.publisher.last = state["published"]
    soak.publisher.accepted = {(c, n): t for c, n, t in state.get("accepted", [])}
    for spec in ROSTER:
        if spec.name not in state["clients"]:
            continue
        client = ClientProcess(spec, workdir)
        client.out.close()
        with open(workdir / f"client-{spec.name}.jsonl") as f:
            for line in f:
                event = json.loads(line)
                client.record.events.append((event.pop("at"), event))
        soak.clients.append(client)
    ok, lines, details = soak.verdict()
    for line in lines:
        print(line, flush=True)
    path = report or workdir / "report.md"
    soak.report(ok, lines, details, path)
    print(f"report: {path}", flush=True)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--report-from"]:
        # bench/soak.py --report-from WORKDIR [REPORT]: the verdict again, from what a run recorded.
        return replay(Path(argv[1]), Path(argv[2]) if len(argv) > 2 else None)
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
