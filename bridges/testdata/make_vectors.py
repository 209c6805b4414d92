"""Writes tokens.json and envelopes.json, the vectors every bridge must match.

The inputs are written here by hand; the outputs come from the reference
implementation (auth/tokens.py, bridges/python/pushgate_bridge/envelope.py);
the bridges' own token code must then reproduce them.
Run it only when the contract changes, and say so in the commit: the tests
do not trust these files blindly. PyJWT and the gateway's own envelope
parser check what each vector means, and every bridge reproduces the bytes.

    .venv/bin/python bridges/testdata/make_vectors.py
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

from auth.tokens import connection_token, subscription_token
from pushgate_bridge.envelope import encode

HERE = Path(__file__).resolve().parent
SECRET = "pushgate-test-vectors-secret-0123456789"
OTHER_SECRET = "another-secret-that-nobody-shares-0123456789"
NOW = 1700000000


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = claims_of(token)
    claims["sub"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def tokens() -> dict:
    connection_inputs = [
        {"name": "user only", "user": "42", "ttl": 3600},
        {"name": "integer user with channels and info", "user": 42, "ttl": 600,
         "channels": ["news", "team:7"], "info": {"name": "Zoë", "roles": ["admin"]}},
        {"name": "never expires", "user": "alice", "ttl": None},
    ]
    subscription_inputs = [
        {"name": "private channel", "user": "42", "channel": "private:billing", "ttl": 300},
        {"name": "integer user", "user": 7, "channel": "$secret-room", "ttl": 3600},
    ]
    connection = []
    for item in connection_inputs:
        token = connection_token(SECRET, item["user"], ttl=item["ttl"], channels=item.get("channels"),
                                 info=item.get("info"), now=NOW)
        connection.append({**item, "token": token, "claims": claims_of(token)})
    subscription = []
    for item in subscription_inputs:
        token = subscription_token(SECRET, item["user"], item["channel"], ttl=item["ttl"], now=NOW)
        subscription.append({**item, "token": token, "claims": claims_of(token)})
    good = connection[0]["token"]
    private = subscription[0]["token"]
    invalid = [
        {"name": "expired connection token", "kind": "connection", "error": "expired",
         "token": connection_token(SECRET, "42", ttl=3600, now=NOW - 7200)},
        {"name": "tampered connection token", "kind": "connection", "error": "invalid", "token": tampered(good)},
        {"name": "connection token signed with another secret", "kind": "connection", "error": "invalid",
         "token": connection_token(OTHER_SECRET, "42", ttl=3600, now=NOW)},
        {"name": "unsigned connection token (alg none)", "kind": "connection", "error": "invalid",
         "token": good.rsplit(".", 1)[0].replace(good.split(".")[0], "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0") + "."},
        {"name": "subscription token used to connect", "kind": "connection", "error": "invalid", "token": private},
        {"name": "expired subscription token", "kind": "subscription", "error": "expired",
         "user": "42", "channel": "private:billing",
         "token": subscription_token(SECRET, "42", "private:billing", ttl=300, now=NOW - 3600)},
        {"name": "subscription token for another channel", "kind": "subscription", "error": "mismatch",
         "user": "42", "channel": "private:payroll", "token": private},
        {"name": "subscription token for another user", "kind": "subscription", "error": "mismatch",
         "user": "43", "channel": "private:billing", "token": private},
        {"name": "tampered subscription token", "kind": "subscription", "error": "invalid",
         "user": "admin", "channel": "private:billing", "token": tampered(private)},
        {"name": "subscription token signed with another secret", "kind": "subscription", "error": "invalid",
         "user": "42", "channel": "private:billing",
         "token": subscription_token(OTHER_SECRET, "42", "private:billing", ttl=300, now=NOW)},
        {"name": "connection token used to subscribe", "kind": "subscription", "error": "invalid",
         "user": "42", "channel": "private:billing", "token": good},
    ]
    return {"secret": SECRET, "now": NOW, "connection": connection, "subscription": subscription,
            "invalid": invalid}


def envelopes() -> list[dict]:
    cases = [
        {"name": "to a user", "call": "publish_to_user",
         "args": {"user": "42", "data": {"event": "invoice.paid", "amount": 1250}, "id": "evt-1"}},
        {"name": "to an integer user id", "call": "publish_to_user",
         "args": {"user": 42, "data": "plain string", "id": "evt-2"}},
        {"name": "broadcast to a channel", "call": "broadcast",
         "args": {"channel": "news", "data": [1, "two", None, True, {"nested": {"deep": []}}], "id": "evt-3"}},
        {"name": "characters that need care", "call": "broadcast",
         "args": {"channel": "chat:room/1", "data": {"text": "Zoë said \"hi\"\n<b>a/b</b> \\ 🎉 \t end"},
                  "id": "evt-4"}},
        {"name": "several targets, keys in any order", "call": "publish",
         "args": {"envelope": {"id": 99, "data": None, "users": ["1", 2], "channels": ["a", "b"],
                               "channel": "c"}}},
        {"name": "a receipt asked for", "call": "publish",
         "args": {"envelope": {"receipt": True, "data": {"n": 1}, "id": "notification-7", "user": 7}}},
    ]
    for case in cases:
        args = case["args"]
        if case["call"] == "publish_to_user":
            envelope = {"user": args["user"], "data": args["data"], "id": args["id"]}
        elif case["call"] == "broadcast":
            envelope = {"channel": args["channel"], "data": args["data"], "id": args["id"]}
        else:
            envelope = args["envelope"]
        case["bytes"] = encode(envelope).decode()
    return cases


if __name__ == "__main__":
    for name, value in (("tokens.json", tokens()), ("envelopes.json", envelopes())):
        (HERE / name).write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {HERE / name}")
