"""Stock Action Cable clients for the /cable tests: @rails/actioncable and
@anycable/web (npm, unchanged) run by Node 20 (tests/cable/*.mjs), driven
from asyncio: they print one JSON event a line, and take commands on stdin."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from typing import Callable

from tests.stack import ROOT

HARNESSES = ROOT / "tests" / "cable"


def node_binary() -> str:
    path = shutil.which("node")
    assert path, "node is not on PATH: install Node.js 20+ (`make test` needs it too)"
    for package in ("@rails/actioncable", "@anycable/web", "ws"):
        assert (ROOT / "node_modules" / package).is_dir(), f"node_modules/{package} is missing: run `make test`"
    return path


class NodeClient:
    """One harness process; ``events`` is everything it reported so far."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str):
        self.proc = proc
        self.name = name
        self.events: list[dict] = []
        self.stderr = b""
        self._reader = asyncio.create_task(self._read())
        self._errors = asyncio.create_task(self._read_stderr())

    @classmethod
    async def start(cls, script: str, *args: str) -> "NodeClient":
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
        proc = await asyncio.create_subprocess_exec(
            node_binary(), str(HARNESSES / script), *args, cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        return cls(proc, script)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": "output", "line": line.decode(errors="replace")})

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = await self.proc.stderr.read()

    def of(self, event: str, **fields) -> list[dict]:
        return [e for e in self.events if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())]

    def received(self, identifier: str | None = None) -> list:
        return [e["data"] for e in self.of("received") if identifier is None or e["identifier"] == identifier]

    async def wait(self, check: Callable[[], object], timeout: float = 10.0, what: str = "a condition"):
        deadline = asyncio.get_running_loop().time() + timeout
        while not (result := check()):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{self.name}: timed out after {timeout}s waiting for {what}; events:\n"
                                     + "\n".join(json.dumps(e) for e in self.events[-40:])
                                     + f"\nstderr: {self.stderr.decode(errors='replace')[-2000:]}")
            await asyncio.sleep(0.02)
        return result

    async def event(self, event: str, timeout: float = 10.0, **fields) -> dict:
        found = await self.wait(lambda: self.of(event, **fields), timeout, f"{event} {fields}")
        return found[0]

    async def send(self, command: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self.proc.stdin.drain()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(self.proc.wait(), 5)
            except (ProcessLookupError, asyncio.TimeoutError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                await self.proc.wait()
        for task in (self._reader, self._errors):
            try:
                await asyncio.wait_for(task, 2)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                task.cancel()
