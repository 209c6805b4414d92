"""Wait until a URL answers 200, then become the given command (exec), so
that signals reach it directly.

    python tools/wait_for.py http://127.0.0.1:4161/ping -- nsqd --lookupd-tcp-address=127.0.0.1:4160 ...

    python tools/wait_for.py --containing '"tcp_port":4150' http://127.0.0.1:4161/nodes -- pushgate serve ...

Procfile.dev starts nsqd this way, after nsqlookupd: an nsqd that starts
first registers with nsqlookupd only at its next ping, 15 s later, and
until then the gateway finds no nsqd. It starts what publishes or reads
(the gateway, the demo) once nsqlookupd lists nsqd (--containing: the
answer must hold that text): a topic created before nsqd has reached
nsqlookupd makes nsqd log "ERROR: no available nsqlookupd to query for
channels to pre-create". After TIMEOUT seconds it says so and starts the
command anyway.
"""
from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request

TIMEOUT = 30.0


def answers(url: str, containing: str | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            body = response.read()
            return response.status == 200 and (containing is None or containing.encode() in body)
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str]) -> None:
    containing = None
    if argv[:1] == ["--containing"] and len(argv) > 1:
        containing, argv = argv[1], argv[2:]
    if len(argv) < 3 or argv[1] != "--":
        sys.exit("usage: wait_for.py [--containing TEXT] URL -- COMMAND [ARG...]")
    url, command = argv[0], argv[2:]
    deadline = time.monotonic() + TIMEOUT
    while not answers(url, containing):
        if time.monotonic() > deadline:
            print(f"wait_for: {url} did not answer in {TIMEOUT:g} s; starting {command[0]} anyway",
                  file=sys.stderr, flush=True)
            break
        time.sleep(0.1)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
