"""The examples do what their comments say, against the real gateway."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
from http.server import ThreadingHTTPServer

from tests.clients import RawClient
from tests.stack import ROOT, SECRET, http


def load_token_server(monkeypatch):
    monkeypatch.setenv("PUSHGATE_JWT_SECRET", SECRET)
    spec = importlib.util.spec_from_file_location("token_server", ROOT / "examples" / "python" / "token_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_python_token_server_grants_from_its_allow_list_only(monkeypatch, start_gateway):
    module = load_token_server(monkeypatch)
    server = ThreadingHTTPServer(("127.0.0.1", 0), module.TokenHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    gateway = start_gateway()
    try:
        def token(path):
            status, body = http("GET", base + path)
            return status, json.loads(body).get("token")
        assert token("/subscription_token?user=42&channel=%2343")[0] == 403     # a personal channel
        assert token("/subscription_token?user=42&channel=%2342")[0] == 403     # even one's own
        assert token("/subscription_token?user=42&channel=private:team:8")[0] == 403
        assert token("/subscription_token?user=43&channel=private:billing")[0] == 403
        status, sub_token = token("/subscription_token?user=42&channel=private:team:7")
        assert status == 200
        _, conn_token = token("/token?user=42")

        async def subscribe():
            raw = await RawClient.open(gateway.ws_url)
            assert "connect" in await raw.connect(conn_token)
            await raw.send({"id": 2, "subscribe": {"channel": "private:team:7", "token": sub_token}})
            reply = await raw.recv()
            await raw.close()
            return reply
        assert "subscribe" in asyncio.run(subscribe())
    finally:
        server.shutdown()
