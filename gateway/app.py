"""The Tornado application and the ``serve`` lifecycle."""
from __future__ import annotations

import asyncio
import logging
import signal

import tornado.web

from gateway.api import HealthHandler, MetricsHandler, PublishHandler
from gateway.config import Settings
from gateway.node import Node
from gateway.transports.websocket import MAX_CLIENT_FRAME, WebSocketTransport

log = logging.getLogger("pushgate")


def make_app(node: Node) -> tornado.web.Application:
    args = {"node": node}
    return tornado.web.Application(
        [
            (r"/connection/websocket", WebSocketTransport, args),
            (r"/api/publish", PublishHandler, args),
            (r"/health", HealthHandler, args),
            (r"/metrics", MetricsHandler, args),
        ],
        websocket_max_message_size=MAX_CLIENT_FRAME,
    )


async def serve(settings: Settings) -> None:
    node = Node(settings)
    server = make_app(node).listen(settings.port, settings.address, backlog=4096, xheaders=True)
    await node.start()
    log.info("pushgate %s listening on http://%s:%d (WebSocket /connection/websocket)",
             node.name, settings.address, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: closing %d connections", len(node.sessions))
    server.stop()
    node.stop()
    await asyncio.sleep(0.2)  # let the close frames go out
