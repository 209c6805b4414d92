"""Prometheus metrics of one node (served at ``/metrics``).

Each node has its own registry so several nodes can live in one process
(tests) without clashing.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

# Counters' _created samples are a creation time per process: noise on a
# dashboard, and meaningless once a box's workers are summed.
disable_created_metrics()


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge("pushgate_connections", "Open client connections.", registry=r)
        self.connects = Counter("pushgate_connects", "Successful protocol connects.", registry=r)
        self.disconnects = Counter("pushgate_disconnects", "Connections the server ended, by reason "
                                   "(slow, no_pong, expired, shutdown, ...: gateway/core/vocabulary.py).",
                                   ["reason"], registry=r)
        self.token_errors = Counter("pushgate_token_errors", "Connects refused for their token.",
                                    ["reason"], registry=r)
        self.jwks_fetches = Counter("pushgate_jwks_fetches", "Fetches of --jwks-url's key set, by outcome "
                                    "(ok, failed).", ["outcome"], registry=r)
        self.bad_frames = Counter("pushgate_bad_frames", "Client frames the protocol refused.", registry=r)
        self.refused_subscriptions = Counter("pushgate_refused_subscriptions",
                                             "Subscribes refused with permission denied.", registry=r)
        self.ignored_commands = Counter("pushgate_unavailable_commands",
                                        "Commands answered as not available or ignored.", ["method"], registry=r)
        self.cable_whispers = Counter("pushgate_cable_whispers", "Action Cable whispers published (to the "
                                      "other subscribers of a stream, on every node).", registry=r)
        self.cable_rpc_disconnects = Counter("pushgate_cable_rpc_disconnects", "Disconnect calls to the Rails "
                                             "app owed by ended connections, by outcome (sent, retried, lost).",
                                             ["outcome"], registry=r)
        self.nsq_messages = Counter("pushgate_nsq_messages", "Messages read from NSQ, by topic.",
                                    ["topic"], registry=r)
        self.nsq_dropped = Counter("pushgate_nsq_dropped", "NSQ messages dropped, by reason.",
                                   ["reason"], registry=r)
        self.publications = Counter("pushgate_publications", "Publications fanned out to a channel.", registry=r)
        self.deliveries = Counter("pushgate_deliveries", "Publications queued to client connections.", registry=r)
        self.writes = Counter("pushgate_connection_writes", "Batched writes to client connections "
                              "(deliveries / writes = frames per write).", registry=r)
        self.recoveries = Counter("pushgate_recoveries", "Recovery answers, by recovered.", ["recovered"], registry=r)
        self.history_bytes = Gauge("pushgate_history_bytes", "Memory held by channel history.", registry=r)
        self.heap_free = Gauge("pushgate_heap_free_bytes", "Freed memory the C allocator holds (glibc's "
                               "mallinfo2 fordblks, read every 10 s; gateway/heap.py).", registry=r)
        self.heap_released = Counter("pushgate_heap_released_bytes", "Resident memory given back to the system "
                                     "by trimming the C heap after a burst was freed (gateway/heap.py).", registry=r)
        self.refused_connects = Counter("pushgate_refused_connects", "Connects refused by a limit, by limit.",
                                        ["limit"], registry=r)
        self.expirations = Counter("pushgate_expirations", "Connections closed and subscriptions ended "
                                   "because their token expired.", ["kind"], registry=r)
        self.refused_commands = Counter("pushgate_refused_commands", "Connections closed (3013) for sending "
                                        "commands over --client-command-rate.", registry=r)
        self.nsq_lost = Counter("pushgate_nsq_lost", "Messages nsqd dropped for this node's channel (its "
                                "in-memory queue overflowed), by topic.", ["topic"], registry=r)
        self.pong_checks_deferred = Counter("pushgate_pong_checks_deferred", "Connections not closed for "
                                            "a missing pong because this node was more than half the pong "
                                            "timeout behind (its pings went out, or its pongs were read, late); "
                                            "judged at their next ping.", registry=r)
        self.loop_lag = Gauge("pushgate_loop_lag_seconds", "How late the event loop runs timers (recent "
                              "maximum); new connections are shed above --shed-loop-lag.", registry=r)
        self.pending_sockets = Gauge("pushgate_pending_sockets", "Open TCP connections that are not (yet) "
                                     "client sessions: handshakes, API and health requests.", registry=r)
        self.accept_errors = Counter("pushgate_accept_errors", "Failed accept() calls, by errno name.",
                                     ["error"], registry=r)
        self.control_messages = Counter("pushgate_control_messages", "Control-topic messages between nodes, "
                                        "by what happened (sent, sent_failed, received, bad, unknown, foreign: another "
                                        "cluster's) and kind.",
                                        ["event", "kind"], registry=r)
        self.control_lag = Gauge("pushgate_control_lag_seconds", "Age of the last control message when it "
                                 "arrived (nsqd timestamp to handling).", registry=r)
        self.presence_entries = Gauge("pushgate_presence_entries", "Presence entries this node holds, its "
                                      "own subscribers' and every other node's.", registry=r)
        self.presence_refused = Counter("pushgate_presence_refused", "Subscribers left out of presence: the "
                                        "channel held --presence-max-clients entries.", registry=r)
        self.events = Counter("pushgate_events", "Events queued for --events-topic, by type.", ["type"],
                              registry=r)
        self.events_dropped = Counter("pushgate_events_dropped", "Events never published, by why (full: the "
                                      "queue held --events-queue; nsqd: nsqd refused them; untracked: "
                                      "more receipts waiting than a node keeps).", ["reason"], registry=r)
        self.events_owners = Gauge("pushgate_events_owners", "Nodes this node counts among the speakers for "
                                   "users and channels (ready, and live).", registry=r)
        self.events_queued = Gauge("pushgate_events_queued", "Events waiting for nsqd.", registry=r)
        self.api_calls = Counter("pushgate_api_calls", "Server API calls, by method and result (ok, an error "
                                 "code, or an HTTP status).", ["method", "result"], registry=r)
        self.api_publishes = Counter("pushgate_api_publishes", "POST /api/publish answers, by status.",
                                     ["status"], registry=r)
