"""The envelope a backend publishes into NSQ, in its canonical bytes.

Keys in the order ``channel, channels, user, users, data, id, receipt``; compact
JSON with UTF-8 left as is. Every bridge produces exactly these bytes
(``bridges/testdata/envelopes.json``), and the gateway reads them.
"""
from __future__ import annotations

import json
from typing import Any

ORDER = ("channel", "channels", "user", "users", "data", "id", "receipt")
TARGETS = ("channel", "channels", "user", "users")


def encode(envelope: dict[str, Any]) -> bytes:
    """Check an envelope and return its canonical bytes; ValueError says what is wrong."""
    unknown = set(envelope) - set(ORDER)
    if unknown:
        raise ValueError(f"unknown envelope fields: {', '.join(sorted(unknown))}")
    if "data" not in envelope:
        raise ValueError('an envelope needs "data"')
    ordered: dict[str, Any] = {}
    for key in ORDER:
        if key not in envelope or (envelope[key] is None and key != "data"):
            continue
        value = envelope[key]
        if key == "channel":
            value = _channel(value)
        elif key == "channels":
            value = [_channel(v) for v in _list(value, key)]
        elif key == "user":
            value = _user(value)
        elif key == "users":
            value = [_user(v) for v in _list(value, key)]
        elif key == "id":
            value = _id(value)
        elif key == "receipt":
            if not isinstance(value, bool):
                raise ValueError('"receipt" must be true or false')
            if not value:
                continue
            if "id" not in ordered:
                raise ValueError('"receipt" needs an "id": receipts name the message by it')
        ordered[key] = value
    if not any(ordered.get(key) for key in TARGETS):
        raise ValueError('an envelope needs a target: "channel", "channels", "user" or "users"')
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()


def _list(value: Any, key: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f'"{key}" must be a list')
    return list(value)


def _channel(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 255 or not value.isprintable():
        raise ValueError(f"{value!r} is not a channel name (1-255 printable characters)")
    return value


def _user(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ValueError(f"{value!r} is not a user id (a non-empty string or an integer)")
    return str(value)


def _id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ValueError(f"{value!r} is not a message id (a non-empty string or an integer)")
    return str(value)
