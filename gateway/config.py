"""Settings for ``pushgate serve``: one table gives every flag, its environment
variable (``PUSHGATE_<FLAG_IN_UPPER_SNAKE>``), its default and its check.

Precedence: command-line flag, then environment, then default. A bad value
stops start-up with one line naming the setting (:class:`ConfigError`).
"""
from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import re
import socket
import zlib
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

NSQ_NAME = re.compile(r"^[.a-zA-Z0-9_-]+$")
NSQ_NAME_MAX = 64
EPHEMERAL_SUFFIX = "#ephemeral"
MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key as long as the hash


class ConfigError(Exception):
    """A setting has a bad value; the message is one line that names it."""


# --- value parsers: each takes the raw string and returns the value or raises ValueError

def _int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not an integer") from None
        if value < lo or (hi is not None and value > hi):
            raise ValueError(f"{value} is out of range ({lo}..{hi if hi is not None else ''})")
        return value
    return parse


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number") from None
    if not value > 0:
        raise ValueError(f"{raw} must be greater than 0")
    return value


def _non_negative_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"{raw} must be a number of seconds, 0 or more")
    return value


def _host_port(raw: str) -> str:
    host, sep, port = raw.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{raw!r} is not host:port")
    return f"{host}:{port}"


def _http_address(raw: str) -> str:
    raw = raw.strip()
    if raw.startswith(("http://", "https://")):
        scheme, rest = raw.split("://", 1)
        return f"{scheme}://{_host_port(rest.rstrip('/'))}"
    return "http://" + _host_port(raw)


def nsq_name(raw: str) -> str:
    if not NSQ_NAME.match(raw) or len(raw) > NSQ_NAME_MAX:
        raise ValueError(f"{raw!r} is not an NSQ topic name (1-{NSQ_NAME_MAX} of [.a-zA-Z0-9_-])")
    return raw


def _topic_mapping(raw: str) -> tuple[str, str]:
    topic, _, channel = raw.partition("=")
    channel = channel or topic
    if not 0 < len(channel) <= 255 or not channel.isprintable() or channel.startswith("#"):
        raise ValueError(f"{channel!r} is not a shared channel name (1-255 printable characters, not #user)")
    return nsq_name(topic), channel


def _history_rule(raw: str) -> tuple[str, int, float | None]:
    pattern, sep, spec = raw.partition("=")
    pattern = pattern.strip()
    if not sep or not pattern or "*" in pattern[:-1]:
        raise ValueError(f"{raw!r} is not PATTERN=SIZE[/TTL] (a trailing * matches a prefix)")
    size, _, ttl = spec.partition("/")
    try:
        return pattern, int(size), (float(ttl) if ttl else None)
    except ValueError:
        raise ValueError(f"{raw!r}: SIZE is a number of publications, TTL seconds") from None


def _channel_pattern(raw: str) -> str:
    pattern = raw.strip()
    if not pattern or "*" in pattern[:-1] or len(pattern) > 255 or not pattern.isprintable():
        raise ValueError(f"{raw!r} is not a channel or a channel prefix with a trailing *")
    return pattern


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


NODE_NAME_MAX = 256   # clients name the node in /emulation requests, which take that much


def _node_name(raw: str) -> str:
    name = _text(raw)
    if len(name) > NODE_NAME_MAX or not name.isprintable():
        raise ValueError(f"{raw[:NODE_NAME_MAX + 10]!r} is not a node name (1-{NODE_NAME_MAX} printable characters)")
    return name


def _channel_prefix(raw: str) -> str:
    raw = raw.strip()
    if raw and (len(raw) > 200 or not raw.isprintable() or raw.startswith("#")):
        raise ValueError(f"{raw!r} is not a channel prefix (up to 200 printable characters, not starting with #)")
    return raw


def _claim_path(raw: str) -> str:
    name = _text(raw)
    if len(name) > 200 or not name.isprintable() or not all(name.split(".")):
        raise ValueError(f"{raw[:210]!r} is not a claim name or dotted path (e.g. user_id, user.id)")
    return name


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{raw!r} is not a boolean")


def _proxy_url(raw: str) -> str:
    raw = raw.strip()
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", raw):
        raise ValueError(f"{raw!r} is not an http:// or https:// URL")
    return raw


def _rpc_route(raw: str) -> tuple[str, str]:
    """PREFIX=URL: RPC methods starting with PREFIX go to URL (first match wins)."""
    prefix, sep, url = raw.partition("=")
    if not sep or not prefix.strip():
        raise ValueError(f"{raw!r} is not PREFIX=URL")
    return prefix.strip(), _proxy_url(url)


def _header_names(raw: str) -> str:
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    for name in names:
        if not re.match(r"^[a-z0-9!#$%&'*+.^_`|~-]+$", name):
            raise ValueError(f"{name!r} is not an HTTP header name")
    return ",".join(names)


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"{raw!r} is not one of debug, info, warning, error")
    return value


def _pem_file(raw: str) -> bytes:
    try:
        with open(raw, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ValueError(f"cannot read {raw}: {exc.strerror}") from None
    if b"-----BEGIN PUBLIC KEY-----" not in data:
        raise ValueError(f"{raw} is not a PEM public key")
    # Loaded here, so that a damaged key or one of the wrong kind stops
    # start-up with this one line rather than a traceback later on.
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    try:
        key = load_pem_public_key(data)
    except ValueError:
        raise ValueError(f"{raw}: the PEM public key cannot be loaded (damaged?)") from None
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise ValueError(f"{raw}: an RSA or EC public key is needed, not {type(key).__name__}")
    return data


@dataclass(frozen=True)
class Option:
    flag: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    repeatable: bool = False  # flag may repeat; the env var is comma-separated
    is_bool: bool = False

    @property
    def dest(self) -> str:
        return self.flag.replace("-", "_")

    @property
    def env(self) -> str:
        return "PUSHGATE_" + self.dest.upper()


def _workers(raw: str) -> int:
    """A number of worker processes, or auto: one per core."""
    if raw.strip().lower() == "auto":
        return max(1, os.cpu_count() or 1)
    return _int_range(1, 256)(raw)


OPTIONS: tuple[Option, ...] = (
    Option("port", _int_range(0, 65535), 8000, "HTTP/WebSocket port (also read from PORT)."),
    Option("workers", _workers, 1, "Worker processes, each a node on the same port (SO_REUSEPORT), or auto "
           "(one per core); more than one makes this process their supervisor."),
    Option("worker-timeout", _positive_float, 10.0, "With --workers: seconds a worker may go without "
           "answering its supervisor (asked every second) before it is killed and started again; its "
           "clients reconnect to the others."),
    Option("address", _text, "0.0.0.0", "Address to listen on."),
    Option("nsqd-tcp-address", _host_port, [], "nsqd TCP address to read from (repeatable).", repeatable=True),
    Option("lookupd-http-address", _http_address, [], "nsqlookupd HTTP address for discovery (repeatable).",
           repeatable=True),
    Option("nsqd-http-address", _http_address, "http://127.0.0.1:4151",
           "nsqd HTTP address the gateway and `pushgate publish` publish to."),
    Option("topic", nsq_name, "pushgate", "Envelope topic: JSON messages naming channels or users."),
    Option("control-topic", nsq_name, None, "Topic the nodes of one cluster talk through (every node reads it "
           "on its own ephemeral channel): forwarded requests, cluster-wide actions, presence; default "
           "<topic>-control, from --topic (pushgate-control for pushgate)."),
    Option("map-topic", _topic_mapping, [],
           "Expose an NSQ topic as a channel: TOPIC or TOPIC=CHANNEL; the body is the data (repeatable).",
           repeatable=True),
    Option("node-name", _node_name, None, "This node's name; its NSQ channel is <node-name>#ephemeral "
           "(default: hostname-port)."),
    Option("jwt-secret", _text, None, "HMAC secret for HS256/384/512 connection tokens (at least 32 bytes)."),
    Option("jwt-public-key", _pem_file, None, "PEM file with an RSA or EC public key (RS*/PS*/ES* tokens)."),
    Option("jwt-previous-secret", _text, None, "The HMAC secret before --jwt-secret, still accepted while "
           "tokens signed with it are out there (rotation); at least 32 bytes."),
    Option("jwks-url", _proxy_url, None, "JWKS endpoint (Keycloak, Auth0, Cognito...) whose keys verify "
           "RS*/PS*/ES*/EdDSA tokens by their kid; fetched at start, hourly, and on an unknown kid "
           "(see --jwks-refetch-interval). Alone or beside --jwt-secret / --jwt-public-key."),
    Option("jwks-refetch-interval", _positive_float, 5.0, "Seconds between fetches of --jwks-url for tokens "
           "whose kid is unknown (and after a failed fetch): a flood of made-up kids costs the endpoint one "
           "request per interval; meanwhile an unknown kid is refused (3500)."),
    Option("jwt-user-claim", _claim_path, None, "Claim holding the user id instead of `sub`: a name, or a "
           "dotted path into nested claims (user.id); with --cable-jwt-ext, the identifier in `ext`."),
    Option("cable-jwt-ext", _bool, False, "Accept AnyCable's JWTs at /cable: the `ext` claim's identifiers "
           "(as anycable-rails mints them) name the user.", is_bool=True),
    Option("jwt-audience", _text, None, "Required `aud` claim of connection tokens."),
    Option("jwt-issuer", _text, None, "Required `iss` claim of connection tokens."),
    Option("allow-anonymous", _bool, False, "Accept connections without a token (user \"\").", is_bool=True),
    Option("api-key", _text, None, "Key for the server API at /api (`X-API-Key: KEY` or `Authorization: apikey "
           "KEY`); unset disables it."),
    Option("public-channels", _text, "", "Channels any client may subscribe to, comma-separated; "
           "a trailing * matches a prefix (e.g. news,chat:*)."),
    Option("turbo-streams-secret", _text, None, "Key that verifies signed stream names on /cable "
           "(Turbo::StreamsChannel and $pubsub signed_stream_name); Rails sets "
           "config.turbo.signed_stream_verifier_key to the same value (at least 32 bytes)."),
    Option("cable-channel-prefix", _channel_prefix, "", "cable.yml's channel_prefix: a /cable stream S is the "
           "channel PREFIX:S (personal #user streams excepted), as the Ruby adapter publishes it."),
    Option("allowed-origins", _text, "", "Browser origins allowed to connect, comma-separated, or * "
           "(default: same host only; clients without Origin are always allowed)."),
    Option("presence", _channel_pattern, [], "Keep presence (who is subscribed, on every node) for channels "
           "matching this pattern; a trailing * matches a prefix (repeatable).", repeatable=True),
    Option("join-leave", _channel_pattern, [], "Push join and leave events to the subscribers of channels "
           "matching this pattern, from every node (repeatable).", repeatable=True),
    Option("presence-max-clients", _int_range(1), 20000, "Presence entries kept per channel (all nodes "
           "together); subscribers past it are left out of presence, its counts and join/leave."),
    Option("presence-interval", _positive_float, 5.0, "Seconds between the presence snapshots each node "
           "sends its peers (also its heartbeat for `info` and /admin)."),
    Option("presence-ttl", _positive_float, 15.0, "Seconds without a word from a node before its clients "
           "leave presence and it leaves `info` (at least twice --presence-interval)."),
    Option("events-topic", nsq_name, None, "NSQ topic this node publishes connection events, users online "
           "and offline, channels occupied and vacated, and delivery receipts to (docs/events.md); unset: off."),
    Option("events-channels", _channel_pattern, [], "Publish subscribe and unsubscribe events for channels "
           "matching this pattern; a trailing * matches a prefix (repeatable; needs --events-topic).",
           repeatable=True),
    Option("offline-grace", _non_negative_float, 3.0, "Seconds a user's last connection must stay gone before "
           "user_offline (and a channel empty before channel_vacated): a page reload is no transition."),
    Option("receipt-timeout", _positive_float, 5.0, "Seconds the cluster waits for some node to report a "
           "receipted message delivered to a user before it says undelivered."),
    Option("events-queue", _int_range(1), 20000, "Events a node keeps waiting for nsqd; past it new events "
           "are dropped and counted (pushgate_events_dropped_total)."),
    Option("admin", _bool, False, "Serve the status page at /admin, behind --admin-secret or else --api-key.",
           is_bool=True),
    Option("admin-secret", _text, None, "Password of the status page (HTTP basic auth, any user name); "
           "setting it turns /admin on."),
    Option("max-queue-bytes", _int_range(4096), 1 << 20, "Per-connection send queue; a client that "
           "falls further behind is disconnected (3008 slow)."),
    Option("max-message-bytes", _int_range(64), 65536, "Largest NSQ message body delivered; larger ones "
           "are dropped."),
    Option("max-message-age", _positive_float, 30.0, "Seconds after which an NSQ message is stale "
           "and dropped (from the nsqd timestamp)."),
    Option("dedupe-window", _int_range(1), 10000, "How many recent message ids are remembered to "
           "deliver a repeated id once."),
    Option("history-size", _int_range(0), 100, "Publications kept per channel for recovery (0: no history)."),
    Option("history-ttl", _positive_float, 300.0, "Seconds a publication stays in history."),
    Option("history", _history_rule, [], "Per-channel history: PATTERN=SIZE[/TTL], first match wins, "
           "a trailing * matches a prefix, SIZE 0 turns it off (repeatable).", repeatable=True),
    Option("cache", _channel_pattern, [], "Latest value on subscribe (Centrifugo's cache recovery mode) for "
           "channels matching this pattern: a subscribe, and a connect's server-side channels, get the channel's "
           "last publication at once (repeatable; the channels must keep history).", repeatable=True),
    Option("history-memory-bytes", _int_range(0), 64 << 20, "Memory for all channels' history together "
           "(publications and each channel's own state); the oldest go first."),
    Option("history-margin", _positive_float, 1.0, "Seconds behind now a stream position must be before "
           "this node vouches for it (clock skew between nsqd hosts, messages in flight)."),
    Option("expired-close-delay", _positive_float, 25.0, "Seconds after a token's exp before an "
           "unrefreshed connection is closed (3005) or subscription ended (2501)."),
    Option("drain-period", _positive_float, 10.0, "On SIGTERM, seconds over which clients are "
           "disconnected (3001) so they reconnect elsewhere with jitter; SIGINT takes 1 s."),
    Option("connect-rate", _positive_float, 2000.0, "New connections accepted per second, on average; more "
           "are refused before the WebSocket upgrade with HTTP 503 and the SDKs back off."),
    Option("connect-burst", _int_range(1), 2000, "Connections accepted at once before --connect-rate applies."),
    Option("shed-loop-lag", _positive_float, 0.1, "Seconds the event loop may run late before new connections "
           "are refused (HTTP 503), so those already connected keep being served on time."),
    Option("client-command-rate", _positive_float, 50.0, "Commands a connection may send per second, on "
           "average (pongs count); more close it with 3013 too many requests."),
    Option("client-command-burst", _int_range(2), 200, "Commands a connection may send at once (a connect "
           "and all its subscribes come in one frame)."),
    Option("handshake-timeout", _positive_float, 5.0, "Seconds a TCP connection may take to send its HTTP "
           "request, and stay idle between requests; then it is closed."),
    Option("max-pending-connections", _int_range(16), 1024, "TCP connections that are not (yet) client "
           "sessions (handshakes, API, health); past it the oldest is closed to make room."),
    Option("trusted-proxies", _text, "", "Addresses or networks (comma-separated, e.g. 10.0.0.0/8) of proxies "
           "whose X-Forwarded-For / X-Real-Ip is believed; from anyone else it is ignored."),
    Option("max-connections", _int_range(0), 0, "Connections per node; more are refused with HTTP 503 "
           "(0: the open-file limit less 256)."),
    Option("max-channels-per-connection", _int_range(1, 100000), 128, "Channels one connection may be "
           "subscribed to, its personal channel included (Centrifugo's client_channel_limit); a subscribe past "
           "it is refused with 106, a connect whose token or proxy grants more is closed with 3505."),
    Option("max-user-connections", _int_range(0), 0, "Connections per user on this node; more are "
           "closed with 3504 (0: no limit)."),
    Option("connect-timeout", _positive_float, 10.0, "Seconds a new connection has to send its connect "
           "command (else 3502 stale)."),
    Option("ping-interval", _int_range(2, 3600), 25, "Seconds between server pings."),
    Option("pong-timeout", _int_range(1, 3600), 8, "Seconds to wait for a pong before disconnecting (3012)."),
    Option("lookupd-poll-interval", _int_range(1, 3600), 5, "Seconds between nsqlookupd polls."),
    Option("max-in-flight", _int_range(1, 2500), 200, "NSQ max_in_flight per topic reader."),
    Option("log-level", _log_level, "INFO", "debug, info, warning or error."),
    # The backend in the loop: Centrifugo's HTTP proxies (docs/proxy.md). Each is off unless its URL is set.
    Option("connect-proxy-url", _proxy_url, None, "Ask this URL about every connect without a token "
           "(Centrifugo's connect proxy): its result's user, expire_at, info, data, channels, subs, meta apply."),
    Option("refresh-proxy-url", _proxy_url, None, "Ask this URL, not the client, when a connection's expiry "
           "comes (Centrifugo's refresh proxy)."),
    Option("subscribe-proxy-url", _proxy_url, None, "Ask this URL about client subscribes to channels "
           "matching --subscribe-proxy."),
    Option("subscribe-proxy", _channel_pattern, [], "Channels whose subscribes go to --subscribe-proxy-url; "
           "a trailing * matches a prefix (repeatable).", repeatable=True),
    Option("sub-refresh-proxy-url", _proxy_url, None, "Ask this URL when a proxied subscription's expire_at "
           "comes (Centrifugo's sub refresh proxy)."),
    Option("publish-proxy-url", _proxy_url, None, "Ask this URL about client publishes to channels matching "
           "--publish-proxy; allowed ones go through NSQ like a backend's."),
    Option("publish-proxy", _channel_pattern, [], "Channels clients may publish to through "
           "--publish-proxy-url; a trailing * matches a prefix (repeatable).", repeatable=True),
    Option("rpc-proxy-url", _proxy_url, None, "Answer client rpc calls with this URL's answer."),
    Option("rpc-proxy", _rpc_route, [], "PREFIX=URL: rpc methods starting with PREFIX go to URL instead "
           "(repeatable; first match wins).", repeatable=True),
    Option("proxy-headers", _header_names, "", "Request headers of the client's connection passed to the "
           "proxies, comma-separated (none unless named, as in Centrifugo), e.g. cookie,authorization."),
    Option("proxy-emulated-headers", _header_names, "", "Headers a client sends inside its connect command "
           "(centrifuge-js's headers option, for browsers, which cannot set a WebSocket's) passed to the "
           "proxies, comma-separated; client input, none unless named (Centrifugo's emulated_headers)."),
    Option("proxy-timeout", _positive_float, 1.0, "Seconds a proxy call may take, waiting in the queue "
           "included; then the client gets error 100."),
    Option("proxy-concurrency", _int_range(1, 10000), 64, "Calls in flight per proxy on this node."),
    Option("proxy-queue", _int_range(0, 1000000), 4096, "Calls waiting per proxy past --proxy-concurrency; "
           "past it the client gets error 100 at once."),
    # Rails channels through AnyCable's RPC over HTTP (docs/cable-rpc.md): off unless the URL is set.
    Option("cable-rpc-url", _proxy_url, None, "AnyCable RPC over HTTP base URL (e.g. "
           "http://127.0.0.1:3000/_anycable): /cable connections without a JWT are decided by the app's "
           "Action Cable connection and channel classes (POST <url>/connect, /command, /disconnect)."),
    Option("cable-rpc-secret", _text, None, "Sent as Authorization: Bearer <secret> on every RPC call."),
    Option("cable-rpc-headers", _header_names, "cookie", "Request headers of the /cable upgrade passed to the "
           "RPC connect call, comma-separated (AnyCable's --headers)."),
    Option("cable-rpc-concurrency", _int_range(1, 10000), 28, "RPC calls in flight on this node (AnyCable's "
           "rpc_concurrency); more wait in a queue of --cable-rpc-queue."),
    Option("cable-rpc-queue", _int_range(0, 1000000), 2048, "RPC calls waiting past --cable-rpc-concurrency; "
           "past it a new connect gets HTTP 503 before the upgrade."),
    Option("cable-rpc-timeout", _positive_float, 3.0, "Seconds an RPC call may take, waiting in the queue "
           "included; then a connect is refused (reconnect true) and a command goes unanswered with a log line."),
    Option("cable-whisper", _bool, False, "Serve AnyCable's whisper command on /cable: to the other subscribers "
           "of the stream the app named (istate $w), on every node, never back to the sender.", is_bool=True),
)


_OPTION_BY_DEST = {opt.dest: opt for opt in OPTIONS}


def _default(dest: str) -> Any:
    """The default of the Settings field ``dest``: its option's, from OPTIONS,
    the one place defaults are written (a list is copied for each Settings)."""
    default = _OPTION_BY_DEST[dest].default
    if isinstance(default, list):
        return field(default_factory=lambda: list(default))
    return field(default=default)


@dataclass(frozen=True)
class Settings:
    """Every option's value, one field per entry of OPTIONS (same name, in snake
    case), with its default from there."""

    port: int = _default("port")
    workers: int = _default("workers")
    worker_timeout: float = _default("worker_timeout")
    address: str = _default("address")
    nsqd_tcp_address: list = _default("nsqd_tcp_address")
    lookupd_http_address: list = _default("lookupd_http_address")
    nsqd_http_address: str = _default("nsqd_http_address")
    topic: str = _default("topic")
    # None: derived from --topic (control_topic_for); __post_init__ fills it in.
    control_topic: str = _default("control_topic")
    map_topic: list = _default("map_topic")
    node_name: str | None = _default("node_name")
    jwt_secret: str | None = _default("jwt_secret")
    jwt_public_key: bytes | None = _default("jwt_public_key")
    jwt_previous_secret: str | None = _default("jwt_previous_secret")
    jwks_url: str | None = _default("jwks_url")
    jwks_refetch_interval: float = _default("jwks_refetch_interval")
    jwt_user_claim: str | None = _default("jwt_user_claim")
    cable_jwt_ext: bool = _default("cable_jwt_ext")
    jwt_audience: str | None = _default("jwt_audience")
    jwt_issuer: str | None = _default("jwt_issuer")
    allow_anonymous: bool = _default("allow_anonymous")
    api_key: str | None = _default("api_key")
    presence: list = _default("presence")
    join_leave: list = _default("join_leave")
    presence_max_clients: int = _default("presence_max_clients")
    presence_interval: float = _default("presence_interval")
    presence_ttl: float = _default("presence_ttl")
    events_topic: str | None = _default("events_topic")
    events_channels: list = _default("events_channels")
    offline_grace: float = _default("offline_grace")
    receipt_timeout: float = _default("receipt_timeout")
    events_queue: int = _default("events_queue")
    admin: bool = _default("admin")
    admin_secret: str | None = _default("admin_secret")
    public_channels: str = _default("public_channels")
    turbo_streams_secret: str | None = _default("turbo_streams_secret")
    cable_channel_prefix: str = _default("cable_channel_prefix")
    allowed_origins: str = _default("allowed_origins")
    max_queue_bytes: int = _default("max_queue_bytes")
    max_message_bytes: int = _default("max_message_bytes")
    max_message_age: float = _default("max_message_age")
    dedupe_window: int = _default("dedupe_window")
    history_size: int = _default("history_size")
    history_ttl: float = _default("history_ttl")
    history: list = _default("history")
    cache: list = _default("cache")
    history_memory_bytes: int = _default("history_memory_bytes")
    history_margin: float = _default("history_margin")
    expired_close_delay: float = _default("expired_close_delay")
    drain_period: float = _default("drain_period")
    connect_rate: float = _default("connect_rate")
    connect_burst: int = _default("connect_burst")
    shed_loop_lag: float = _default("shed_loop_lag")
    client_command_rate: float = _default("client_command_rate")
    client_command_burst: int = _default("client_command_burst")
    handshake_timeout: float = _default("handshake_timeout")
    max_pending_connections: int = _default("max_pending_connections")
    trusted_proxies: str = _default("trusted_proxies")
    max_connections: int = _default("max_connections")
    max_channels_per_connection: int = _default("max_channels_per_connection")
    max_user_connections: int = _default("max_user_connections")
    connect_timeout: float = _default("connect_timeout")
    ping_interval: int = _default("ping_interval")
    pong_timeout: int = _default("pong_timeout")
    lookupd_poll_interval: int = _default("lookupd_poll_interval")
    max_in_flight: int = _default("max_in_flight")
    log_level: str = _default("log_level")
    connect_proxy_url: str | None = _default("connect_proxy_url")
    refresh_proxy_url: str | None = _default("refresh_proxy_url")
    subscribe_proxy_url: str | None = _default("subscribe_proxy_url")
    subscribe_proxy: list = _default("subscribe_proxy")
    sub_refresh_proxy_url: str | None = _default("sub_refresh_proxy_url")
    publish_proxy_url: str | None = _default("publish_proxy_url")
    publish_proxy: list = _default("publish_proxy")
    rpc_proxy_url: str | None = _default("rpc_proxy_url")
    rpc_proxy: list = _default("rpc_proxy")
    proxy_headers: str = _default("proxy_headers")
    proxy_emulated_headers: str = _default("proxy_emulated_headers")
    proxy_timeout: float = _default("proxy_timeout")
    proxy_concurrency: int = _default("proxy_concurrency")
    proxy_queue: int = _default("proxy_queue")
    cable_rpc_url: str | None = _default("cable_rpc_url")
    cable_rpc_secret: str | None = _default("cable_rpc_secret")
    cable_rpc_headers: str = _default("cable_rpc_headers")
    cable_rpc_concurrency: int = _default("cable_rpc_concurrency")
    cable_rpc_queue: int = _default("cable_rpc_queue")
    cable_rpc_timeout: float = _default("cable_rpc_timeout")
    cable_whisper: bool = _default("cable_whisper")

    def __post_init__(self) -> None:
        if self.control_topic is None:
            object.__setattr__(self, "control_topic", control_topic_for(self.topic))

    @property
    def nsq_channel(self) -> str:
        """This node's own ephemeral channel: every node gets every message."""
        return ephemeral_channel(self.node_name or default_node_name(self.port))

    @property
    def public_channel_patterns(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.public_channels.split(",") if p.strip())

    @property
    def trusted_networks(self) -> tuple:
        """--trusted-proxies as ip_network objects (raises ValueError for a bad one)."""
        return tuple(ipaddress.ip_network(p.strip(), strict=False)
                     for p in self.trusted_proxies.split(",") if p.strip())

    @property
    def admin_enabled(self) -> bool:
        return bool(self.admin or self.admin_secret)

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(o.strip().rstrip("/").lower() for o in self.allowed_origins.split(",") if o.strip())


# Each option is a field of Settings and each field an option: a mismatch is a
# mistake to stop at import, not a TypeError at the first resolve().
if {f.name for f in fields(Settings)} != set(_OPTION_BY_DEST):
    raise RuntimeError("gateway.config: Settings and OPTIONS differ in "
                       + ", ".join(sorted({f.name for f in fields(Settings)} ^ set(_OPTION_BY_DEST))))

def default_node_name(port: int) -> str:
    return f"{socket.gethostname()}-{port}"


CONTROL_SUFFIX = "-control"


def control_topic_for(topic: str) -> str:
    """The control topic of the cluster whose envelope topic is ``topic``:
    ``<topic>-control``, so that deployments sharing nsqd with their own
    ``--topic`` each get their own (``pushgate`` gives ``pushgate-control``,
    the fixed default of earlier versions). Within NSQ's 64 characters: a
    long topic keeps its start plus a hash of the whole."""
    name = topic + CONTROL_SUFFIX
    if len(name) > NSQ_NAME_MAX:
        room = NSQ_NAME_MAX - len(CONTROL_SUFFIX) - 9
        name = f"{topic[:room]}-{zlib.crc32(topic.encode()):08x}{CONTROL_SUFFIX}"
    return name


def ephemeral_channel(node_name: str) -> str:
    """``<node>#ephemeral`` within NSQ's 64 characters (the suffix counts).

    Characters NSQ refuses become ``-``; a name too long keeps its start plus a
    hash of the whole, so two long names stay distinct.
    """
    name = re.sub(r"[^.a-zA-Z0-9_-]", "-", node_name)
    room = NSQ_NAME_MAX - len(EPHEMERAL_SUFFIX)
    if len(name) > room:
        name = f"{name[:room - 9]}-{zlib.crc32(node_name.encode()):08x}"
    return name + EPHEMERAL_SUFFIX


def add_arguments(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    for opt in OPTIONS:
        if only is not None and opt.flag not in only:
            continue
        default = opt.default if not isinstance(opt.default, bytes) else None
        help_text = f"{opt.help} [env {opt.env}" + (f"; default {default}" if default not in (None, "", []) else "") + "]"
        if opt.is_bool:
            parser.add_argument(f"--{opt.flag}", dest=opt.dest, action="store_const", const="true",
                                default=None, help=help_text)
        else:
            parser.add_argument(f"--{opt.flag}", dest=opt.dest, action="append" if opt.repeatable else "store",
                                default=None, metavar=opt.dest.upper(), help=help_text)


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None,
            only: tuple[str, ...] | None = None) -> Settings:
    """Settings from parsed flags, then the environment, then defaults."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        if only is not None and opt.flag not in only:
            continue
        raw = getattr(args, opt.dest, None)
        source = f"--{opt.flag}"
        if raw is None:
            env_raw = env.get(opt.env)
            if env_raw is None and opt.flag == "port":
                env_raw, env_name = env.get("PORT"), "PORT"
            else:
                env_name = opt.env
            if env_raw is None or (env_raw == "" and not opt.is_bool):
                continue
            source = f"--{opt.flag} (from {env_name})"
            raw = [v for v in env_raw.split(",") if v.strip()] if opt.repeatable else env_raw
        try:
            if opt.repeatable:
                values[opt.dest] = [opt.parse(v) for v in raw]
            else:
                assert isinstance(raw, str)
                values[opt.dest] = opt.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    settings = Settings(**values)
    if only is None:
        check(settings)
    return settings


def check(s: Settings) -> None:
    """Rules that involve more than one setting."""
    if s.jwt_secret and len(s.jwt_secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"--jwt-secret: must be at least {MIN_SECRET_BYTES} bytes "
                          "(RFC 7518 3.2: HS256 keys as long as the hash)")
    if s.jwt_previous_secret and not s.jwt_secret:
        raise ConfigError("--jwt-previous-secret: needs --jwt-secret (the current secret)")
    if s.jwt_previous_secret and len(s.jwt_previous_secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"--jwt-previous-secret: must be at least {MIN_SECRET_BYTES} bytes")
    if s.turbo_streams_secret and len(s.turbo_streams_secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"--turbo-streams-secret: must be at least {MIN_SECRET_BYTES} bytes (an HMAC-SHA256 key)")
    if not s.jwt_secret and not s.jwt_public_key and not s.jwks_url and not s.allow_anonymous \
            and not s.connect_proxy_url and not s.cable_rpc_url:
        raise ConfigError("--jwt-secret: a JWT secret, --jwt-public-key or --jwks-url is required "
                          "(or --allow-anonymous, --connect-proxy-url or --cable-rpc-url)")
    if not s.nsqd_tcp_address and not s.lookupd_http_address:
        raise ConfigError("--lookupd-http-address: give nsqlookupd or --nsqd-tcp-address to read from")
    if s.pong_timeout >= s.ping_interval:
        raise ConfigError(f"--pong-timeout: {s.pong_timeout} must be less than --ping-interval ({s.ping_interval})")
    if s.max_message_bytes * 2 > s.max_queue_bytes:
        raise ConfigError(f"--max-queue-bytes: {s.max_queue_bytes} must be at least twice "
                          f"--max-message-bytes ({s.max_message_bytes})")
    for pattern in s.public_channel_patterns:
        if "*" in pattern[:-1]:
            raise ConfigError(f"--public-channels: {pattern!r}: * is only allowed at the end")
    for origin in s.origins:
        if origin != "*" and not re.match(r"^https?://[^/]+$", origin):
            raise ConfigError(f"--allowed-origins: {origin!r} is not scheme://host[:port] or *")
    try:
        s.trusted_networks
    except ValueError as exc:
        raise ConfigError(f"--trusted-proxies: {exc}") from None
    mapped = [t for t, _ in s.map_topic]
    if s.topic in mapped or len(set(mapped)) != len(mapped):
        raise ConfigError("--map-topic: each topic may be read once (and not the envelope --topic)")
    if s.workers > 1 and s.port == 0:
        raise ConfigError("--workers: workers share one port; give --port (not 0)")
    if s.workers > 1 and s.node_name and len(f"{s.node_name}-{s.workers - 1}") > NODE_NAME_MAX:
        raise ConfigError(f"--node-name: with --workers each worker is <node-name>-<index>, which must fit in "
                          f"{NODE_NAME_MAX} characters")
    if s.presence_ttl < 2 * s.presence_interval:
        raise ConfigError(f"--presence-ttl: {s.presence_ttl} must be at least twice --presence-interval "
                          f"({s.presence_interval}), or live nodes would expire between snapshots")
    for pattern in s.cache:
        probe = pattern[:-1] if pattern.endswith("*") else pattern
        size = next((size for rule, size, _ in s.history
                     if rule in (pattern, probe) or (rule.endswith("*") and probe.startswith(rule[:-1]))),
                    s.history_size)
        if not size:
            raise ConfigError(f"--cache: {pattern!r} keeps no history (--history-size, --history): the latest "
                              "value has nowhere to come from")
    if s.admin and not (s.admin_secret or s.api_key):
        raise ConfigError("--admin: the status page needs --admin-secret or --api-key")
    if s.cable_rpc_url and s.cable_rpc_timeout >= s.connect_timeout:
        raise ConfigError(f"--cable-rpc-timeout: {s.cable_rpc_timeout:g} must be less than --connect-timeout "
                          f"({s.connect_timeout:g}), or a connect the app is slow to decide would be closed as stale")
    if s.subscribe_proxy and not s.subscribe_proxy_url:
        raise ConfigError("--subscribe-proxy: needs --subscribe-proxy-url")
    if s.publish_proxy and not s.publish_proxy_url:
        raise ConfigError("--publish-proxy: needs --publish-proxy-url")
    if s.events_topic is not None and s.events_topic in (s.topic, s.control_topic, *mapped):
        raise ConfigError("--events-topic: must differ from --topic, --control-topic and every --map-topic")
    if s.events_channels and s.events_topic is None:
        raise ConfigError("--events-channels: needs --events-topic")
    if s.control_topic in (s.topic, *mapped):
        raise ConfigError("--control-topic: must differ from --topic and every --map-topic")


def listen_error(settings: Settings, exc: OSError) -> ConfigError:
    """Why the listening socket could not be had, as one line naming the setting."""
    where = f"{settings.address}:{settings.port}"
    if isinstance(exc, socket.gaierror):
        return ConfigError(f"--address: {settings.address!r} is not an address of this host ({exc.strerror})")
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(f"--port: {where} is already in use; stop what holds it or choose another port "
                           "(--port, PUSHGATE_PORT or PORT)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"--address: {settings.address} is not an address of this host "
                           "(127.0.0.1 for this machine only, 0.0.0.0 for every interface)")
    if exc.errno == errno.EACCES:
        return ConfigError(f"--port: {where}: permission denied (ports below 1024 need privileges)")
    return ConfigError(f"--address/--port: cannot listen on {where}: {exc.strerror or exc}")
