"""The Tornado application and the ``serve`` lifecycle."""
from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import signal
import sys

import tornado.web
from tornado.log import access_log
from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback
from tornado.netutil import bind_sockets, bind_unix_socket

from gateway.config import Settings, listen_error
from gateway.node import Node
from gateway.ops.admin import AdminPageHandler, AdminPresenceHandler, AdminStatusHandler, AdminTrendsHandler
from gateway.ops.handlers import ApiHandler, HealthHandler, MetricsHandler, OwnHealthHandler, OwnMetricsHandler
from gateway.ops.server_api import ServerApi
from gateway.protocols import ENDPOINTS
from gateway.core.limits import KeyedBuckets
from gateway.protocols.centrifugo.emulation import KEY_KIND as EMULATION_KEY
from gateway.protocols.centrifugo.emulation import KIND as EMULATION
from gateway.protocols.centrifugo.emulation import ControlReaders, EmulationEndpoint, EmulationSessions
from gateway.protocols.cable.rpc_session import rpc_client_of
from gateway.protocols.centrifugo.proxy import any_proxy, proxies_of
from gateway.transports.door import Listener, client_ip
from gateway.transports.endpoint import Kind
from gateway.transports.http import StreamEndpoint, StreamHandler
from gateway.transports.websocket import WebSocketDoor
from gateway.workers.box import Box
from gateway.workers.supervisor import supervisor_gone, worker_identity, worker_socket

log = logging.getLogger("pushgate")


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log, with levels that mean something: a 503 from
    /health (not ready yet, or draining) is an answer, not an error, and so is
    a WebSocket refused while draining or at capacity. The line names the path,
    never the query string (tokens travel there: ``cf_connect``, ``jid``)."""
    status = handler.get_status()
    if status < 400 or isinstance(handler, HealthHandler):
        level = logging.DEBUG
    elif status < 500 or isinstance(handler, StreamEndpoint):  # a stream refused while draining, at capacity
        level = logging.WARNING
    else:
        level = logging.ERROR
    request = handler.request
    if not access_log.isEnabledFor(level):
        return
    node = handler.application.settings.get("node")
    trusted = node.trusted_networks if node is not None else ()
    detail = getattr(handler, "log_detail", "")  # a stream refused: which limit (gateway/node.py)
    access_log.log(level, "%d %s %s (%s) %.2fms%s", status, request.method, request.path,
                   client_ip(request, trusted), 1000.0 * request.request_time(), f": {detail}" if detail else "")


def make_app(node: Node) -> tornado.web.Application:
    """The HTTP endpoints; WebSocket endpoints are in front of it (make_server)."""
    args = {"node": node}
    # Centrifugo's emulation: the commands of this node's http_stream and sse
    # sessions, and /emulation requests for other nodes forwarded to them
    # through the control bus (gateway/protocols/centrifugo/emulation.py).
    settings = node.settings
    readers = ControlReaders(settings.nsqd_http_address, settings.control_topic)
    sessions = EmulationSessions(node.name, node.bus.send, readers.there, node.metrics.registry,
                                 node.host.by_id, ids=node.session_ids,
                                 limits=KeyedBuckets(settings.client_command_rate, settings.client_command_burst))
    node.bus.on(EMULATION, sessions.forwarded)
    node.bus.on(EMULATION_KEY, sessions.key_received)
    if any_proxy(settings):
        proxies_of(node.host)   # built now, so their metrics are on /metrics from the start
    if settings.cable_rpc_url:
        rpc_client_of(node.host)   # the same for the Rails app's RPC (docs/cable-rpc.md)
    api_args = {"node": node, "api": ServerApi(node)}
    streams = [(endpoint.path, StreamHandler, {"host": node, "endpoint": endpoint})
               for endpoint in ENDPOINTS if endpoint.kind is Kind.STREAM]
    return tornado.web.Application(
        [
            *streams,
            (r"/emulation", EmulationEndpoint, {"host": node, "sessions": sessions}),
            (r"/api/([a-z_]+)", ApiHandler, api_args),
            (r"/api", ApiHandler, api_args),
            (r"/admin/status.json", AdminStatusHandler, args),
            (r"/admin/presence.json", AdminPresenceHandler, args),
            (r"/admin/trends.json", AdminTrendsHandler, args),
            (r"/admin/?([a-z.]*)", AdminPageHandler, args),
            (r"/health", HealthHandler, args),
            (r"/metrics", MetricsHandler, args),
        ],
        log_function=log_request,
        node=node,
    )


def make_server(node: Node, settings: Settings) -> Listener:
    """The listening server: WebSocket upgrades on the lean path
    (gateway/transports/websocket.py), every other request to the application."""
    app = make_app(node)
    node.loop = asyncio.get_running_loop()
    websockets = WebSocketDoor(node, ENDPOINTS)
    return Listener(app, pending=node.pending, metrics=node.metrics, upgrade=websockets.upgrade,
                    idle_connection_timeout=settings.handshake_timeout,
                    body_timeout=settings.handshake_timeout,
                    max_body_size=max(settings.max_message_bytes, 65536) + 4096)


QUICK_DRAIN = 1.0  # seconds, on SIGINT (Ctrl-C in `make run`)
PR_SET_PDEATHSIG = 1


def parent_death_signal(sig: signal.Signals) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies
    (Linux's prctl); False where that cannot be had."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def settle_memory() -> None:
    """Keep the garbage collector off the fan-out path.

    Everything made while starting (modules, the node, its tables) lives as
    long as the process: frozen, a full collection no longer walks it
    (gc.freeze). And young collections run every 50,000 allocations instead
    of every 700: a fan-out allocates little, and each young collection that
    runs between two publications is time a subscriber waits. Measured on
    10,000 subscribers at 10 msg/s: full collections took 18-42 ms each
    before (docs/benchmarks.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def worker_server(node: Node, path: str) -> HTTPServer:
    """A worker's own /metrics and /health, on a UNIX socket in the run
    directory: its siblings ask it when they answer for the box."""
    args = {"node": node}
    app = tornado.web.Application([(r"/metrics", OwnMetricsHandler, args), (r"/health", OwnHealthHandler, args)],
                                  log_function=lambda handler: None)
    server = HTTPServer(app)
    server.add_socket(bind_unix_socket(path, mode=0o600))
    return server


async def serve(settings: Settings) -> None:
    node = Node(settings)
    server = make_server(node, settings)
    worker = worker_identity()
    try:
        # Workers of one box share the port; the kernel spreads connections over them.
        server.add_sockets(bind_sockets(settings.port, settings.address, backlog=4096,
                                        reuse_port=worker is not None))
    except OSError as exc:
        raise listen_error(settings, exc) from None
    private = None
    if worker is not None:
        index, count, run_dir = worker
        node.box = Box(index, count, run_dir)
        private = worker_server(node, worker_socket(run_dir, index))
    await node.start()
    settle_memory()
    log.info("pushgate %s listening on http://%s:%d (WebSocket %s; HTTP streams %s; /emulation)",
             node.name, settings.address, settings.port,
             ", ".join(e.path for e in ENDPOINTS if e.kind is Kind.WEBSOCKET),
             ", ".join(e.path for e in ENDPOINTS if e.kind is Kind.STREAM))
    stop: asyncio.Future[signal.Signals] = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()

    def stop_on(sig: signal.Signals) -> None:
        if not stop.done():
            stop.set_result(sig)
    for each in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(each, stop_on, each)
    orphaned = None
    parent_gone = False
    if worker is not None:
        # A worker dies with its supervisor (killed with SIGKILL, say), at once:
        # a supervisor started again runs workers under the same names, which
        # read the same NSQ channels, and nsqd splits a channel's messages
        # between its readers: neither worker would see them all, and neither
        # could tell its clients (the lean soak lost a publication that way).
        # So the orphan stops reading before anything else, then closes its
        # clients (3001: they reconnect to the new box and recover, or are
        # told they cannot). The kernel says when the parent dies (Linux);
        # the check every second covers the rest.
        def check_parent() -> None:
            nonlocal parent_gone
            if supervisor_gone() and not stop.done():
                parent_gone = True
                log.warning("the supervisor is gone: this worker stops reading NSQ and closes its clients now")
                stop_on(signal.SIGTERM)
        orphaned = PeriodicCallback(check_parent, 1000)
        orphaned.start()
        if parent_death_signal(signal.SIGUSR1):
            loop.add_signal_handler(signal.SIGUSR1, check_parent)
        check_parent()
    sig = await stop
    if orphaned is not None:
        orphaned.stop()
    if parent_gone:
        node.draining = True
        await node.stop()   # NSQ first, then every client (gateway/node.py)
    else:
        # Drain: refuse new connections (WebSocket upgrades and /health answer 503;
        # the listener stays open so that clients and load balancers hear it), close
        # the open ones spread evenly over the drain period so they reconnect to other
        # nodes with jitter, recovering what they missed; then exit 0.
        period = settings.drain_period if sig == signal.SIGTERM else min(settings.drain_period, QUICK_DRAIN)
        await node.drain(period)
        await node.stop()
    await asyncio.sleep(0.2)  # let the last close frames go out
    server.stop()
    if private is not None:
        private.stop()
    log.info("drained, exiting")
