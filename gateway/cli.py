"""The ``pushgate`` command: ``serve``, ``publish`` and ``token``."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import ujson

from gateway import __version__
from gateway.config import MIN_SECRET_BYTES, ConfigError, add_arguments, resolve

PUBLISH_OPTIONS = ("nsqd-http-address", "topic")
TOKEN_OPTIONS = ("jwt-secret",)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pushgate", description="Real-time push gateway: NSQ to WebSocket.")
    parser.add_argument("--version", action="version", version=f"pushgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="Run a gateway node.",
                                description="Run a gateway node. Every flag can also be set "
                                            "through the environment variable shown.")
    add_arguments(serve)

    publish = commands.add_parser("publish", help="Publish a message through nsqd's HTTP API.")
    target = publish.add_mutually_exclusive_group(required=True)
    target.add_argument("--channel", help="Deliver to this channel.")
    target.add_argument("--user", help="Deliver to every connection of this user.")
    publish.add_argument("--id", help="Publisher's unique id: repeats of it are delivered once.")
    publish.add_argument("data", help="The JSON data to deliver.")
    add_arguments(publish, PUBLISH_OPTIONS)

    token = commands.add_parser("token", help="Mint a connection token (HS256) for a user.")
    token.add_argument("--user", required=True, help="The user id (the sub claim).")
    token.add_argument("--ttl", default="3600", help="Seconds until it expires, at least 1 (default 3600).")
    token.add_argument("--channel", action="append", default=[], dest="channels",
                       help="A shared channel to subscribe server-side (repeatable).")
    add_arguments(token, TOKEN_OPTIONS)

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.serve_args = argv[argv.index("serve") + 1:] if "serve" in argv else []
    try:
        return {"serve": _serve, "publish": _publish, "token": _token}[args.command](args)
    except ConfigError as exc:
        print(f"pushgate: error: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    settings = resolve(args)
    from gateway.workers.supervisor import WORKER_INDEX_ENV
    worker = os.environ.get(WORKER_INDEX_ENV)  # set by the supervisor for each worker
    who = f"worker {worker} " if worker is not None else ("supervisor " if settings.workers > 1 else "")
    logging.basicConfig(level=settings.log_level,
                        format=f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s")
    if settings.log_level != "DEBUG":
        # One line per HTTP request, and pynsq's IDENTIFY dumps, are noise at INFO;
        # 4xx/5xx and pynsq's warnings still show. pushgate.nsq logs the connections.
        logging.getLogger("tornado.access").setLevel(logging.WARNING)
        logging.getLogger("nsq").setLevel(logging.WARNING)
    if settings.workers > 1:
        from gateway.workers.supervisor import serve_workers
        return serve_workers(settings, args.serve_args)
    from gateway.app import serve  # Tornado and pynsq load only for serve
    # The stock asyncio loop on purpose: under uvloop the write batcher stops
    # coalescing and fan-out costs 2.5x the CPU (bench/fanout.py, docs/benchmarks.md).
    asyncio.run(serve(settings))
    return 0


def _publish(args: argparse.Namespace) -> int:
    from gateway.nsq.publisher import NsqdUnavailable, PublishError, publish_sync
    settings = resolve(args, only=PUBLISH_OPTIONS)
    try:
        data = ujson.loads(args.data)
    except ValueError:
        raise ConfigError(f"data: not JSON: {args.data!r}") from None
    envelope = {"channel": args.channel} if args.channel else {"user": args.user}
    if args.id:
        envelope["id"] = args.id
    envelope["data"] = data
    try:
        publish_sync(settings.nsqd_http_address, settings.topic, ujson.dumps(envelope).encode())
    except (PublishError, NsqdUnavailable) as exc:
        print(f"pushgate: publish failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _token(args: argparse.Namespace) -> int:
    from auth.tokens import connection_token
    settings = resolve(args, only=TOKEN_OPTIONS)
    if not settings.jwt_secret:
        raise ConfigError("--jwt-secret: required to mint a token")
    if len(settings.jwt_secret.encode()) < MIN_SECRET_BYTES:
        # A token the gateway could never accept: it refuses such a secret.
        raise ConfigError(f"--jwt-secret: must be at least {MIN_SECRET_BYTES} bytes, like the gateway's")
    try:
        ttl = int(args.ttl)
    except ValueError:
        raise ConfigError(f"--ttl: {args.ttl!r} is not a whole number of seconds") from None
    if ttl < 1:
        raise ConfigError(f"--ttl: {ttl} must be at least 1 second")
    print(connection_token(settings.jwt_secret, args.user, ttl=ttl, channels=args.channels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
