"""The stock Centrifugo SDKs in Protobuf mode, each run by a small harness
program under tests/sdk/<lang>/ as a process of its own.

Every harness takes ``URL TOKEN [CHANNEL]``, subscribes CHANNEL client-side
(recoverable), prints one JSON object per SDK event on stdout and exits when
its stdin closes. The events:

    {"event": "connecting", "code": N, "reason": "..."}
    {"event": "connected", "client": "..."}
    {"event": "disconnected", "code": N, "reason": "..."}
    {"event": "subscribing", "channel": "...", "code": N, "reason": "..."}
    {"event": "subscribed", "channel": "...", "server_side": bool,
     "recoverable": bool, "was_recovering": bool, "recovered": bool, ...}
    {"event": "unsubscribed", "channel": "...", ...}
    {"event": "publication", "channel": "...", "server_side": bool,
     "offset": N, "data_b64": "<the bytes the SDK handed the app>"}
    {"event": "error", "error": "...", ...}

`make test` builds what needs building (the Java jar with Maven, the Go
binary) into .tools/sdk/ and installs the npm packages; where a toolchain or
its downloads could not be had it writes the reason into
.tools/sdk/<name>.unavailable, and the test says so when it skips.
"""
from __future__ import annotations

import asyncio
import base64
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tests.stack import ROOT

SDK_DIR = ROOT / "tests" / "sdk"
BUILD_DIR = ROOT / ".tools" / "sdk"


@dataclass(frozen=True)
class Sdk:
    name: str  # the test id and the name of its folders
    title: str  # the SDK and version, for messages
    command: Callable[[], list[str]]  # the harness, without its arguments
    needs: tuple[tuple[str, Path | None], ...]  # (program on PATH, file) pairs it cannot run without

    def unavailable(self) -> str | None:
        """Why this SDK's harness cannot run here, or None."""
        missing = [f"`{program}` is not on PATH" for program, _ in self.needs
                   if program and shutil.which(program) is None]
        missing += [f"{path.relative_to(ROOT)} is missing" for _, path in self.needs
                    if path is not None and not path.exists()]
        if not missing:
            return None
        note = BUILD_DIR / f"{self.name}.unavailable"
        why = note.read_text().strip() if note.exists() else "run `make test`: it builds the SDK harnesses"
        return f"{self.title} TEST NOT RUN: {'; '.join(missing)}. {why}"


JAVA_JAR = BUILD_DIR / "java" / "harness.jar"
GO_BINARY = BUILD_DIR / "go" / "harness"

SDKS = [
    Sdk("java", "centrifuge-java 0.4.1 (Protobuf)", lambda: ["java", "-jar", str(JAVA_JAR)],
        (("java", JAVA_JAR),)),
    Sdk("go", "centrifuge-go v0.12.1 (NewProtobufClient)", lambda: [str(GO_BINARY)], ((None, GO_BINARY),)),
    Sdk("js", "centrifuge-js 5.8.0 (build/protobuf, Node)", lambda: ["node", str(SDK_DIR / "node" / "harness.mjs")],
        (("node", ROOT / "node_modules" / "centrifuge" / "build" / "protobuf" / "index.mjs"),
         (None, ROOT / "node_modules" / "ws" / "package.json"))),
    Sdk("python", "centrifuge-python 0.7.0 (use_protobuf=True)",
        lambda: [sys.executable, str(SDK_DIR / "python" / "harness.py")], ()),
]


class HarnessProcess:
    """One running harness: its events in order, its publications as a queue
    of (channel, data, offset) with the data decoded from JSON, and its
    stderr in a log file for when something goes wrong."""

    def __init__(self, sdk: Sdk, log_path: Path) -> None:
        self.sdk = sdk
        self.log_path = log_path
        self.events: list[dict] = []
        self.publications: asyncio.Queue = asyncio.Queue()
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None

    async def start(self, url: str, token: str, channel: str | None = None) -> "HarnessProcess":
        with open(self.log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.sdk.command(), url, token, *([channel] if channel else []), cwd=ROOT,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc and self.proc.stdout
        while line := await self.proc.stdout.readline():
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "not json", "line": line.decode(errors="replace")}
            self.events.append(event)
            if event.get("event") == "publication":
                data = base64.b64decode(event["data_b64"])
                try:
                    data = json.loads(data)
                except ValueError:
                    pass  # left as bytes: the test's comparison shows them
                await self.publications.put((event["channel"], data, event["offset"]))

    def seen(self, kind: str, since: int = 0, until: int | None = None, **fields) -> list[dict]:
        """Events of ``kind`` with an index in [since, until) whose fields match."""
        return [e for e in self.events[since:until]
                if e.get("event") == kind and all(e.get(k) == v for k, v in fields.items())]

    def describe(self) -> str:
        lines = [json.dumps(e) for e in self.events[-40:]]
        stderr = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
        return f"{self.sdk.title}: last events:\n  " + "\n  ".join(lines) + f"\nstderr:\n{stderr}"

    async def wait_for(self, check: Callable[[], object], what: str, timeout: float = 10.0):
        deadline = asyncio.get_running_loop().time() + timeout
        while not (result := check()):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.describe()}")
            if self.proc and self.proc.returncode is not None:
                raise AssertionError(f"the harness exited ({self.proc.returncode}) while waiting for "
                                     f"{what}\n{self.describe()}")
            await asyncio.sleep(0.02)
        return result

    async def next(self, timeout: float = 5.0) -> tuple[str, object, int]:
        try:
            return await asyncio.wait_for(self.publications.get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no publication within {timeout}s\n{self.describe()}") from None

    async def collect(self, count: int, timeout: float = 5.0) -> list[tuple[str, object, int]]:
        return [await self.next(timeout) for _ in range(count)]

    async def nothing_more(self, wait: float = 0.5) -> None:
        try:
            got = await asyncio.wait_for(self.publications.get(), wait)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"unexpected publication {got}\n{self.describe()}")

    async def close(self, timeout: float = 10.0) -> int | None:
        """Close its stdin (the harness disconnects and exits) and return its
        exit code; kill it if it does not exit in time (then None)."""
        if self.proc is None:
            return None
        if self.proc.stdin and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            await self.kill()
            code = None
        if self._reader:
            await asyncio.wait_for(self._reader, 5)
        return code

    async def kill(self) -> None:
        """Kill it if it still runs (a test's ``finally``), and reap it."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        if self._reader and not self._reader.done():
            self._reader.cancel()
