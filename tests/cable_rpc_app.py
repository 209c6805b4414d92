"""A stand-alone AnyCable RPC-over-HTTP server, written to AnyCable's JSON
shapes (``etc/rpc.proto`` as Go's encoding/json writes it), so the gateway's
side of the wire is checked apart from the Rails bridge.

It plays a small chat app, the way anycable-rails would answer for it:

* ``connect``: the ``user`` cookie, ``<name>--<hex HMAC-SHA256(SECRET, name)>``,
  signs the user in (``identifiers`` ``{"current_user":"<name>"}``, a
  ``welcome`` with the session id of ``X-AnyCable-Meta-Sid``); anything else
  is ``reject_unauthorized_connection``: FAILURE and the unauthorized
  ``disconnect``;
* ``ChatChannel`` (``room``): ``forbidden`` is rejected; otherwise
  ``stream_for`` ``chat_<room>``, ``transmit`` a hello, whispers and
  presence on that stream (istate ``$w``, ``$p``);
* ``perform``: ``speak`` broadcasts ``{"user","text"}`` to ``chat_<room>``
  through nsqd (as ``adapter: nsq`` does; ``exclude_socket`` when asked),
  ``follow`` / ``unfollow`` / ``stop`` change the streams, ``kick``
  disconnects, ``here`` joins presence, ``fail`` answers an error,
  ``garbage`` an answer of the wrong shape, ``hoard`` more state than a
  connection may keep, ``echo`` transmits the data back, ``count`` keeps a
  number in istate;
* ``unsubscribe`` and ``disconnect`` are recorded.

Every call (path, headers, body) is appended to ``--record`` as a JSON line,
so a test reads them even across a restart of this server (RPC down). With
``--delay S`` every answer waits S seconds first.

    python tests/cable_rpc_app.py --port P --nsqd-http http://127.0.0.1:4151 --record calls.jsonl
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import urllib.request

import tornado.httpserver
import tornado.web

SECRET = b"rpc-app-cookie-secret"
RPC_SECRET = "rpc-secret-for-tests"


def signed_cookie(user: str) -> str:
    return f"user={user}--{hmac.new(SECRET, user.encode(), hashlib.sha256).hexdigest()}"


def user_of(cookie_header: str) -> str | None:
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "user":
            user, sep, mac = value.rpartition("--")
            if sep and hmac.compare_digest(mac, hmac.new(SECRET, user.encode(), hashlib.sha256).hexdigest()):
                return user
    return None


class App:
    def __init__(self, nsqd_http: str, record: str, delay: float, topic: str):
        self.nsqd_http = nsqd_http
        self.record = record
        self.delay = delay
        self.topic = topic

    def log(self, path: str, headers: dict, body: dict) -> None:
        with open(self.record, "a") as f:
            f.write(json.dumps({"path": path, "headers": headers, "body": body}) + "\n")

    def broadcast(self, envelope: dict) -> None:
        request = urllib.request.Request(f"{self.nsqd_http}/pub?topic={self.topic}",
                                         data=json.dumps(envelope).encode(), method="POST")
        urllib.request.urlopen(request, timeout=3).read()


def confirm(identifier: str) -> str:
    return json.dumps({"identifier": identifier, "type": "confirm_subscription"})


def reject(identifier: str) -> str:
    return json.dumps({"identifier": identifier, "type": "reject_subscription"})


def message(identifier: str, value: object) -> str:
    return json.dumps({"identifier": identifier, "message": value})


class Call(tornado.web.RequestHandler):
    def initialize(self, app: App) -> None:
        self.app = app

    async def post(self, name: str) -> None:
        headers = {k.lower(): v for k, v in self.request.headers.items()}
        body = json.loads(self.request.body)
        self.app.log(name, headers, body)
        if self.app.delay:
            await asyncio.sleep(self.app.delay)
        if headers.get("authorization") != f"Bearer {RPC_SECRET}":
            self.set_status(401)
            return
        answer = getattr(self, f"do_{name}")(body, headers)
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(answer))

    def do_connect(self, body: dict, headers: dict) -> dict:
        env = body.get("env", {})
        user = user_of(env.get("headers", {}).get("cookie", ""))
        if user is None:
            return {"status": 2, "transmissions": [json.dumps({"type": "disconnect", "reason": "unauthorized",
                                                               "reconnect": False})]}
        return {"status": 1, "identifiers": json.dumps({"current_user": user}),
                "transmissions": [json.dumps({"type": "welcome", "sid": headers.get("x-anycable-meta-sid", "")})],
                "env": {"cstate": {"signed_in_at": "now"}}}

    def do_command(self, body: dict, headers: dict) -> dict:
        identifier = body["identifier"]
        params = json.loads(identifier)
        user = json.loads(body.get("connection_identifiers") or "{}").get("current_user")
        istate = body.get("env", {}).get("istate", {})
        room = str(params.get("room"))
        stream = f"chat_{room}"
        if params.get("channel") != "ChatChannel":
            return {"status": 2, "transmissions": [reject(identifier)]}
        command = body["command"]
        if command == "subscribe":
            if room == "forbidden":
                return {"status": 2, "transmissions": [reject(identifier)]}
            return {"status": 1, "streams": [stream],
                    "transmissions": [confirm(identifier), message(identifier, {"hello": user})],
                    "env": {"istate": {"$w": stream, "$p": stream, "room": room}}}
        if command == "unsubscribe":
            return {"status": 1}
        data = json.loads(body.get("data") or "{}")
        action = data.get("action")
        if action == "speak":
            envelope = {"channel": stream, "data": {"user": user, "text": data.get("text")}}
            if data.get("exclude"):
                envelope["exclude"] = headers.get("x-anycable-meta-sid")
            self.app.broadcast(envelope)
            return {"status": 1}
        if action == "follow":
            return {"status": 1, "streams": [data["stream"]]}
        if action == "unfollow":
            return {"status": 1, "stopped_streams": [data["stream"]]}
        if action == "stop":
            return {"status": 1, "stop_streams": True}
        if action == "kick":
            return {"status": 1, "disconnect": True}
        if action == "here":
            return {"status": 1, "presence": {"type": "join", "id": user, "info": json.dumps({"name": user})}}
        if action == "fail":
            return {"status": 0, "error_msg": "boom"}
        if action == "garbage":
            return {"status": "SUCCESS", "transmissions": [{"not": "a JSON string"}]}
        if action == "hoard":
            return {"status": 1, "env": {"istate": {"big": "x" * 70000}}}
        if action == "echo":
            return {"status": 1, "transmissions": [message(identifier, data)]}
        if action == "count":
            count = int(istate.get("count", "0")) + 1
            return {"status": 1, "transmissions": [message(identifier, {"count": count})],
                    "env": {"istate": {"count": str(count)}, "cstate": {"last": str(count)}}}
        return {"status": 2}

    def do_disconnect(self, body: dict, headers: dict) -> dict:
        return {"status": 1}


def make_app(app: App) -> tornado.web.Application:
    return tornado.web.Application([(r"/_anycable/(connect|command|disconnect)", Call, {"app": app})])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nsqd-http", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--topic", default="pushgate")
    args = parser.parse_args()
    server = tornado.httpserver.HTTPServer(make_app(App(args.nsqd_http, args.record, args.delay, args.topic)))
    server.listen(args.port, "127.0.0.1")
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
