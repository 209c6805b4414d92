"""What the benchmarks share: the real stack, the C load client, CPU and
memory of a gateway and all its workers, and percentiles."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from auth import connection_token  # noqa: E402
from tests.stack import SECRET, Gateway, Nsqd, http  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
BUILD = ROOT / ".tools" / "bench"
PER_CLIENT_PROCESS = 19000   # connections per load process: 20,000 open files each
SOURCES = ",".join(f"127.0.0.{i}" for i in range(1, 11))  # source addresses: ports enough for 250,000


def build(name: str) -> Path:
    """Compile bench/<name>.c into .tools/bench/<name> when the source is newer."""
    source = ROOT / "bench" / f"{name}.c"
    binary = BUILD / name
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        BUILD.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (a supervisor's workers)."""
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        out.extend(process_tree(int(child)))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its live children."""
    total = 0.0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its children."""
    total = 0
    for p in process_tree(pid):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def tokens_file(work: Path, count: int, prefix: str = "user") -> Path:
    """One token per line, distinct users (HS256, the test secret)."""
    path = work / f"tokens-{prefix}-{count}.txt"
    if not path.exists():
        path.write_text("\n".join(connection_token(SECRET, f"{prefix}-{i}", ttl=86400) for i in range(count)))
    return path


class LoadClients:
    """Load processes (bench/loadgen.c) spread over ``count`` connections."""

    def __init__(self, port: int, count: int, tokens: Path, *, channel: str = "bench", concurrency: int = 200,
                 sample: int = 10, per_process: int = PER_CLIENT_PROCESS, path: str = "/connection/websocket",
                 sources: str = SOURCES, shared: int = 0, shared_prefix: str = "shared:", buffer: int = 4096):
        binary = build("loadgen")
        processes = max(1, -(-count // per_process))
        self._received = 0
        self.children = []
        offset = 0   # each process its own slice of the tokens: distinct users
        for n in range(processes):
            share = count // processes + (1 if n < count % processes else 0)
            self.children.append(subprocess.Popen(
                [str(binary), "--port", str(port), "--connections", str(share), "--tokens", str(tokens),
                 "--channel", channel, "--concurrency", str(max(1, concurrency // processes)),
                 "--sample", str(sample), "--sources", sources, "--path", path, "--offset", str(offset),
                 "--shared", str(shared), "--shared-prefix", shared_prefix, "--buffer", str(buffer)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            offset += share

    def ready(self) -> dict:
        """Wait until every connection has tried; sums of the processes' lines."""
        lines = [json.loads(child.stdout.readline()) for child in self.children]
        why: dict[str, int] = {}
        for line in lines:
            for reason, count in line.get("why", {}).items():
                why[reason] = why.get(reason, 0) + count
        return {"ready": sum(x["ready"] for x in lines), "errors": sum(x["errors"] for x in lines),
                "retried": sum(x.get("retried", 0) for x in lines),
                "seconds": max(x["seconds"] for x in lines), "why": why}

    def report(self) -> dict:
        """Publications received and latency samples since the last report."""
        for child in self.children:
            child.stdin.write("report\n")
            child.stdin.flush()
        lines = [json.loads(child.stdout.readline()) for child in self.children]
        total = sum(x["received"] for x in lines)
        received, self._received = total - self._received, total
        return {"received": received, "closed": sum(x["closed"] for x in lines),
                "personal": sum(x.get("personal", 0) for x in lines),            # so far, in all
                "misdelivered": sum(x.get("misdelivered", 0) for x in lines),    # so far, in all
                "pongs": sum(x.get("pongs", 0) for x in lines),                  # so far, in all
                "resubscribed": sum(x.get("resubscribed", 0) for x in lines),   # so far, in all
                "latencies_ms": [v for x in lines for v in x["latencies_ms"]]}

    def stop(self) -> None:
        for child in self.children:
            child.kill()
            child.wait()


def reasons(why: dict[str, int] | None, retried: int = 0) -> str:
    """What ended the connections that failed, most first, and how many
    handshakes were refused with 503 and tried again: " (eof in handshake 12;
    503s retried as the SDKs do: 40)", or nothing."""
    parts = [", ".join(f"{reason} {count:,}" for reason, count in sorted((why or {}).items(), key=lambda x: -x[1]))]
    if retried:
        parts.append(f"503s retried as the SDKs do: {retried:,}")
    parts = [p for p in parts if p]
    return f" ({'; '.join(parts)})" if parts else ""


class BenchGateway(Gateway):
    """A gateway given ``ready_timeout`` seconds to say it is ready (a box of
    fifty workers on two cores takes longer than the tests' 15 s)."""

    ready_timeout = 15.0

    def wait_ready(self) -> None:
        from tests.helpers import wait_until
        wait_until(lambda: self.running() and self.health()[0] == 200, timeout=self.ready_timeout,
                   what=f"{self.name} /health (every worker connected to nsqd)")


def start_stack(workers: int = 1, *args: str, env: dict | None = None, program: list[str] | None = None,
                ready_timeout: float = 15.0) -> tuple[Path, Nsqd, Gateway]:
    work = Path(tempfile.mkdtemp(prefix="pushgate-bench-"))
    nsqd = Nsqd(work / "nsqd").start()
    BenchGateway.ready_timeout = ready_timeout
    gateway = BenchGateway(work / "gw", nsqd, None, "--public-channels=bench", "--log-level=warning",
                      "--connect-rate=1000000", "--connect-burst=1000000", "--shed-loop-lag=1000",
                      f"--workers={workers}", *args, env=env, program=program).start()
    return work, nsqd, gateway


def publish(nsqd: Nsqd, bodies: list[bytes]) -> None:
    status, answer = http("POST", f"http://{nsqd.http_address}/mpub?topic=pushgate", b"\n".join(bodies))
    if status != 200:
        raise RuntimeError(f"mpub failed: {status} {answer!r}")


def publication(extra: dict | None = None, payload: int = 64) -> bytes:
    return json.dumps({"channel": "bench", "data": {"f": "x" * payload, **(extra or {}), "ts": time.time()}}).encode()


class Baseline:
    """The physical limit (bench/baseline.c): same clients, same frames, no logic."""

    def __init__(self):
        self.proc = subprocess.Popen([str(build("baseline")), "--port", "0"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.port = json.loads(self.proc.stdout.readline())["port"]

    def publish(self, data: dict) -> None:
        self.proc.stdin.write("publish " + json.dumps(data, separators=(",", ":")) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class RefGateway(Gateway):
    """The gateway of another commit, run from its git worktree (a baseline)."""

    def __init__(self, tree: Path, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tree = tree

    def start(self):
        import tests.stack as stack
        saved, stack.ROOT = stack.ROOT, self.tree
        try:
            return super().start()
        finally:
            stack.ROOT = saved

    def environment(self) -> dict:
        env = super().environment()
        env["PYTHONPATH"] = str(self.tree)
        return env


def measure_trees(script: str, ref: str | None, *args: str) -> list[tuple[str, dict]]:
    """``bench/<script> --json <args>`` (one measurement, printed as JSON) run
    against this tree's pushgate and, with ``ref``, that commit's (checked out
    in a worktree: the baseline, in the same run); (label, its JSON) each."""
    def run(tree: Path) -> dict:
        out = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--json", *args],
                             env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree,
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)
    results = [("this tree", run(ROOT))]
    if ref:
        with worktree(ref) as tree:
            results.append((f"pushgate {ref} (baseline)", run(tree)))
    return results


class worktree:
    """``with worktree(ref) as tree``: that commit checked out in a temporary
    git worktree, removed afterwards."""

    def __init__(self, ref: str):
        self.ref = ref
        self.tree = Path(tempfile.mkdtemp(prefix="pushgate-ref-")) / "tree"

    def __enter__(self) -> Path:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(self.tree), self.ref],
                       check=True, capture_output=True)
        return self.tree

    def __exit__(self, *exc) -> None:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(self.tree)], capture_output=True)
