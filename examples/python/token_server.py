"""Tokens for browsers from a Python backend, with the standard library only.

    PUSHGATE_JWT_SECRET=... python examples/python/token_server.py --port 8090

``GET /token?user=42`` answers the connection token of user 42 (in a real
app the user comes from your session, never from the query string), and
``GET /subscription_token?user=42&channel=private:team:7`` a subscription
token, granted only from the explicit allow-list below: a channel the
browser names is never signed as it comes, and a personal channel
("#...") never, since it belongs to its user alone.
"""
from __future__ import annotations

import argparse
import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pushgate_bridge as pushgate

# Your users and their teams; stands in for your database.
TEAMS = {"42": 7, "43": 8}
ADMINS = {"42"}

# Private channels, each with the rule that decides who may read it.
SUBSCRIBABLE = [
    (re.compile(r"private:billing"), lambda user, match: user in ADMINS),
    (re.compile(r"private:team:(\d+)"), lambda user, match: TEAMS.get(user) == int(match.group(1))),
]


def subscribable(user: str, channel: str) -> bool:
    if channel.startswith("#"):
        return False
    for pattern, allowed in SUBSCRIBABLE:
        match = pattern.fullmatch(channel)
        if match and allowed(user, match):
            return True
    return False


class TokenHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        user = query.get("user", "")  # a real app: the signed-in user from its session
        if user not in TEAMS:
            return self.answer(401, {"error": "not signed in"})
        if url.path == "/token":
            return self.answer(200, {"token": pushgate.connection_token(user, ttl=600, channels=["news"])})
        if url.path == "/subscription_token":
            channel = query.get("channel", "")
            if not subscribable(user, channel):
                return self.answer(403, {"error": f"no access to {channel!r}"})
            return self.answer(200, {"token": pushgate.subscription_token(user, channel, ttl=600)})
        self.answer(404, {"error": "not found"})

    def answer(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the http.server name
        pass  # request lines carry no secrets here, but keep examples quiet


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), TokenHandler)
    print(f"tokens on http://127.0.0.1:{args.port}/token?user=42")
    server.serve_forever()


if __name__ == "__main__":
    main()
