"""The status page at ``/admin``: plain HTML and a little JavaScript served
by the gateway (``gateway/ops/static/``), and the JSON it polls.

Off unless configured: ``--admin-secret`` (or ``--admin``, which uses
``--api-key``). Every path under /admin asks for HTTP basic authentication;
the password is that secret, the user name is not checked. Any node serves
the whole cluster's view: nodes from their heartbeats, the busiest channels
and the last hour's figures (the charts) from a survey of every node, a
channel's presence from this node's table.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import time
from pathlib import Path

import tornado.web

from gateway.core.trends import STEP, combine
from gateway.node import Node

STATIC = Path(__file__).resolve().parent / "static"
FILES = {"": ("index.html", "text/html; charset=utf-8"), "admin.js": ("admin.js", "text/javascript; charset=utf-8"),
         "charts.js": ("charts.js", "text/javascript; charset=utf-8"),
         "admin.css": ("admin.css", "text/css; charset=utf-8")}
BUSIEST = 20           # channels listed
PRESENCE_LISTED = 200  # clients listed for one channel


class AdminHandler(tornado.web.RequestHandler):
    def initialize(self, node: Node) -> None:
        self.node = node

    def prepare(self) -> None:
        settings = self.node.settings
        if not settings.admin_enabled:
            raise tornado.web.HTTPError(404)
        secret = settings.admin_secret or settings.api_key or ""
        scheme, _, value = self.request.headers.get("Authorization", "").partition(" ")
        password = ""
        if scheme.lower() == "basic":
            try:
                password = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                password = ""
        if not secret or not hmac.compare_digest(password.encode(), secret.encode()):
            self.set_status(401)
            self.set_header("WWW-Authenticate", 'Basic realm="pushgate status", charset="UTF-8"')
            self.finish("the status page needs the admin secret (any user name)")
            return
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'")


class AdminPageHandler(AdminHandler):
    def get(self, name: str = "") -> None:
        found = FILES.get(name)
        if found is None:
            raise tornado.web.HTTPError(404)
        filename, content_type = found
        self.set_header("Content-Type", content_type)
        self.finish((STATIC / filename).read_bytes())


class AdminStatusHandler(AdminHandler):
    """Every node, the busiest channels, and this node's name."""

    async def get(self) -> None:
        peering = self.node.peering
        counts, silent = await peering.channels(None)
        busiest = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:BUSIEST]
        self.finish({"node": self.node.name, "time": time.time(), "nodes": peering.nodes(),
                     "channels": [{"channel": c, "num_clients": n} for c, n in busiest],
                     "num_channels": len(counts), "unanswered": silent})


class AdminTrendsHandler(AdminHandler):
    """The last hour of every node's figures, and the cluster's
    (gateway/core/trends.py): what the charts draw."""

    async def get(self) -> None:
        nodes, silent = await self.node.peering.trends()
        self.finish({"node": self.node.name, "time": time.time(), "step": STEP, "nodes": nodes,
                     "cluster": combine(nodes), "unanswered": silent})


class AdminPresenceHandler(AdminHandler):
    def get(self) -> None:
        channel = self.get_query_argument("channel", "")
        presence = self.node.presence
        if not channel or not presence.enabled(channel):
            self.finish({"channel": channel, "enabled": False})
            return
        clients, users = presence.stats(channel)
        listed = []
        for client, info in list(presence.clients(channel).items())[:PRESENCE_LISTED]:
            entry = {"client": client, "user": info["user"]}
            if "conn_info" in info:
                entry["conn_info"] = info["conn_info"].decode(errors="replace")
            listed.append(entry)
        self.finish({"channel": channel, "enabled": True, "num_clients": clients, "num_users": users,
                     "clients": listed})
