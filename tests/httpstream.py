"""A bare HTTP client for the streaming endpoints, on a plain asyncio socket:
what ``curl -N`` does, and what a client with no SDK would write. It reads
the response head, then the body as it comes, line by line (newline-delimited
JSON) or event by event (SSE)."""
from __future__ import annotations

import asyncio
import json
import urllib.parse


class HttpStreamClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, headers: dict):
        self.reader = reader
        self.writer = writer
        self.status = status
        self.headers = headers

    @classmethod
    async def open(cls, port: int, method: str, path: str, body: bytes | str | dict | None = None,
                   headers: dict | None = None, query: dict | None = None) -> "HttpStreamClient":
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        if query:
            path += "?" + urllib.parse.urlencode(query)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status_line, *header_lines = head.decode().split("\r\n")
        found = {}
        for line in header_lines:
            if ":" in line:
                name, _, value = line.partition(":")
                found[name.strip().lower()] = value.strip()
        return cls(reader, writer, int(status_line.split()[1]), found)

    async def line(self, timeout: float = 5.0) -> dict | None:
        """The next JSON line, or None at the end of the stream."""
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
            if not raw:
                return None
            if raw.strip():
                return json.loads(raw)

    async def event(self, timeout: float = 5.0) -> dict | None:
        """The next SSE event's data as JSON, or None at the end of the stream."""
        data = []
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
            if not raw:
                return None
            text = raw.decode().rstrip("\r\n")
            if text.startswith("data:"):
                data.append(text[5:].lstrip(" "))
            elif not text and data:
                return json.loads("\n".join(data))

    async def body(self, timeout: float = 5.0) -> bytes:
        """The body of a plain (not streaming) answer."""
        length = int(self.headers.get("content-length", 0))
        return await asyncio.wait_for(self.reader.readexactly(length), timeout)

    def close(self) -> None:
        self.writer.transport.abort()
