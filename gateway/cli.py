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
COMMANDS = ("serve", "publish", "token")


def one_edit_apart(a: str, b: str) -> bool:
    """Whether ``a`` becomes ``b`` with one edit: a character added, removed or
    changed, or two neighbours swapped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long = sorted((a, b), key=len)
    i = next((i for i, (x, y) in enumerate(zip(short, long)) if x != y), len(short))
    return short[i:] == long[i + 1:]


def suggestion(word: str, known: list[str] | tuple[str, ...]) -> str:
    """': did you mean X?' for the known words one edit from ``word``, else ''."""
    close = [k for k in known if one_edit_apart(word, k)]
    return f": did you mean {' or '.join(close)}?" if close else ""


def unknown_flags(parser: argparse.ArgumentParser, args: list[str]) -> str | None:
    """The flags in ``args`` that ``parser`` does not know (nor as the unique
    start of one it does), each with the known flag one edit from it: one
    line, or None when every flag is known."""
    known = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
    unknown = []
    for arg in args:
        if arg == "--":
            break
        name = arg.split("=", 1)[0]
        if not arg.startswith("--") or name in known:
            continue
        starting = [k for k in known if k.startswith(name)]
        if len(starting) > 1:
            unknown.append(f"{name} (the start of {' and '.join(starting)})")
        elif not starting:
            unknown.append(f"{name}{suggestion(name, known)}")
    if not unknown:
        return None
    return (f"pushgate: error: {parser.prog.removeprefix('pushgate ')}: unknown "
            f"{'flag' if len(unknown) == 1 else 'flags'} {'; '.join(unknown)} ({parser.prog} --help lists them)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        print(f"pushgate: error: no command {argv[0]!r}{suggestion(argv[0], COMMANDS)} "
              f"(the commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
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

    if argv and argv[0] in COMMANDS:
        # Before argparse, which would stop at a required flag missing or print a
        # page of usage with no word of what was meant.
        problem = unknown_flags(commands.choices[argv[0]], argv[1:])
        if problem:
            print(problem, file=sys.stderr)
            return 2
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
    address = settings.nsqd_http_address
    try:
        publish_sync(address, settings.topic, ujson.dumps(envelope).encode())
    except NsqdUnavailable as exc:
        print(f"pushgate: publish failed: cannot reach nsqd at {address} ({exc}), {_address_source(args)}: "
              "start nsqd there, or give its HTTP address with --nsqd-http-address (or PUSHGATE_NSQD_HTTP_ADDRESS)",
              file=sys.stderr)
        return 1
    except PublishError as exc:
        print(f"pushgate: publish failed: nsqd at {address} refused the message: {exc}", file=sys.stderr)
        return 1
    return 0


def _address_source(args: argparse.Namespace) -> str:
    """Where --nsqd-http-address came from, for the error line."""
    if args.nsqd_http_address is not None:
        return "given by --nsqd-http-address"
    if os.environ.get("PUSHGATE_NSQD_HTTP_ADDRESS"):
        return "given by PUSHGATE_NSQD_HTTP_ADDRESS"
    return "the default address"


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
