"""An in-process node for fast tests of the session core: real Session, Hub,
History, Heartbeat and Expiry, with a transport that records what it is
given instead of a socket. Nothing is started: no NSQ, no timers, no port."""
from __future__ import annotations

import json

from gateway.config import Settings
from gateway.node import Node
from gateway.protocol import Disconnect
from tests.stack import SECRET


class FakeTransport:
    """Records every frame and the disconnect; frames are the payload as is."""

    frame = staticmethod(lambda payload: payload)

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed: Disconnect | None = None

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)

    def disconnect(self, disconnect: Disconnect) -> None:
        self.closed = disconnect

    def messages(self) -> list[dict]:
        """Everything sent so far, decoded, and forgotten."""
        out = [json.loads(line) for frame in self.sent for line in frame.split(b"\n") if line]
        self.sent.clear()
        return out


def make_node(**overrides) -> Node:
    options = dict(jwt_secret=SECRET, lookupd_http_address=["http://127.0.0.1:1"], node_name="unit",
                   public_channels="news,chat:*")
    options.update(overrides)
    return Node(Settings(**options))


def open_session(node: Node):
    transport = FakeTransport()
    return node.accept(transport), transport


def frame(*commands: dict) -> str:
    return "\n".join(json.dumps(c) for c in commands)
