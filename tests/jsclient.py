"""The stock centrifuge-js SDK in Node.js, for tests of the fallback
transports without a browser (tests/node/sdk_client.mjs): Node 20 has the
``fetch`` and ``ReadableStream`` that the SDK's http_stream transport needs."""
from __future__ import annotations

import asyncio
import json
import os
import shutil

from tests.stack import ROOT, SECRET

SCRIPT = ROOT / "tests" / "node" / "sdk_client.mjs"


class JsClient:
    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.events: list[dict] = []
        self._new = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, transports: list[dict], emulation: str, user: str, *, protocol: str = "json",
                    token_ttl: int = 3600, ping_delay: int = 10000) -> "JsClient":
        node = shutil.which("node")
        assert node, "node is not on PATH: install Node.js 20+"
        assert (ROOT / "node_modules" / "centrifuge").is_dir(), "node_modules is missing: run `make test`"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
        env.update(TRANSPORTS=json.dumps(transports), EMULATION=emulation, PROTOCOL=protocol, SECRET=SECRET,
                   USER=user, TOKEN_TTL=str(token_ttl), PING_DELAY=str(ping_delay))
        proc = await asyncio.create_subprocess_exec(node, str(SCRIPT), cwd=ROOT, env=env,
                                                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        client = cls(proc)
        await client.wait_for(lambda e: e["event"] == "ready")
        return client

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "output", "text": line.decode(errors="replace").rstrip()}
            self.events.append(event)
            self._new.set()

    async def wait_for(self, check, timeout: float = 10.0, start: int = 0) -> dict:
        """The first event from index ``start`` on for which ``check`` is true."""
        deadline = asyncio.get_running_loop().time() + timeout
        seen = start
        while True:
            while seen < len(self.events):
                if check(self.events[seen]):
                    return self.events[seen]
                seen += 1
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or self.proc.returncode is not None:
                raise TimeoutError(f"no such event; the client's events:\n" + "\n".join(map(str, self.events)))
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def publications(self, channel: str, start: int = 0) -> list:
        return [e["data"] for e in self.events[start:] if e["event"] == "publication" and e["channel"] == channel]

    def count(self, event: str, start: int = 0) -> int:
        return sum(1 for e in self.events[start:] if e["event"] == event)

    async def send(self, **command) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await self.proc.stdin.drain()

    async def close(self) -> None:
        if self.proc.returncode is None:
            try:
                await self.send(op="exit")
                await asyncio.wait_for(self.proc.wait(), 5)
            except (asyncio.TimeoutError, ConnectionError):
                self.proc.kill()
                await self.proc.wait()
        # Close our end of stdin here, in the loop: left to the garbage
        # collector, the pipe's transport is closed after the loop is, and that
        # finalizer can run in the middle of another test (once, inside ast.parse).
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self._reader, 5)   # stdout to its end
        except asyncio.TimeoutError:
            self._reader.cancel()
