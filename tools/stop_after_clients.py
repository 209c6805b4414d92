"""Run a server, and when asked to stop, let its clients leave first.

    python tools/stop_after_clients.py 4150 -- nsqd --tcp-address=127.0.0.1:4150 ...
    python tools/stop_after_clients.py 4160 --quiet-at-stop ' - EOF$' -- nsqlookupd ...

On SIGTERM or SIGINT this waits until no TCP connection to PORT is open any
more (the clients have gone), at most WAIT seconds, then sends the server
SIGTERM and exits as it does. With ``--quiet-at-stop REGEX``, the server's
output lines that match REGEX are left out once the stop has begun: what it
is known to say when its clients leave (nsqlookupd 1.3.0 logs every client
that disconnects, even cleanly, as ``ERROR: client(...) - EOF``).

Procfile.dev runs nsqd and nsqlookupd this way. On Ctrl-C honcho signals
every process at once: nsqd then closes the gateway's connections under it
and logs ``ERROR ... use of closed network connection`` (and the gateway
warns that it lost nsqd), and nsqlookupd does the same to nsqd. Stopped in
order, the gateway first, then nsqd (once the gateway has closed its
connections on 4150), then nsqlookupd (once nsqd has closed its connection
on 4160), each stops quietly. --wait bounds it, within the 5 s honcho gives
before SIGKILL: nsqlookupd's a little longer than nsqd's, so that it still
outlives an nsqd that waited its whole time.

The server runs in a process group of its own, since honcho signals this
process's group and that would reach the server at once; and it is told to
stop if this process dies (PR_SET_PDEATHSIG), so a SIGKILL here leaves no
server behind. Open connections are the server's sockets (/proc/PID/fd) that
/proc/net/tcp lists as established on PORT (Linux); where there is no /proc,
the server is stopped at once, as before.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import IO

WAIT = 3.0              # seconds, at most, for the clients to leave (--wait)
POLL = 0.05             # seconds between looks at the open connections
PR_SET_PDEATHSIG = 1
ESTABLISHED = "01"


def sockets_of(pid: int) -> set[str]:
    """The inodes of the sockets process ``pid`` holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def clients(port: int, pid: int) -> int | None:
    """Established TCP connections on ``port`` that the server (``pid``)
    accepted, or None when this system cannot tell. The server's own sockets
    only: on a busy machine another program's client socket may have the same
    port as its local end."""
    try:
        mine = sockets_of(pid)
    except OSError:
        return None
    count, readable = 0, False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            if (fields[3] == ESTABLISHED and int(fields[1].rsplit(":", 1)[1], 16) == port
                    and fields[9] in mine):
                count += 1
    return count if readable else None


def stop_with_parent() -> None:
    """In the child, before exec: SIGTERM when this wrapper dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the wrapper still forwards every stop it is asked for


class Stop(Exception):
    """SIGTERM or SIGINT arrived."""


def asked_to_stop(signum: int, frame: object) -> None:
    raise Stop


def forward(output: IO[bytes], quiet: re.Pattern[bytes] | None, stopping: threading.Event) -> None:
    """Copy the server's output to ours, line by line, leaving out what
    ``quiet`` matches once ``stopping`` is set."""
    for line in iter(output.readline, b""):
        if quiet is not None and stopping.is_set() and quiet.search(line.rstrip(b"\n")):
            continue
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stop_after_clients.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int, help="the server's TCP port: it stops once nobody is connected to it")
    parser.add_argument("--quiet-at-stop", metavar="REGEX", help="output lines left out once the stop has begun")
    parser.add_argument("--wait", type=float, default=WAIT, metavar="SECONDS",
                        help=f"for the clients to leave, at most (default {WAIT:g})")
    parser.usage = "%(prog)s PORT [--wait SECONDS] [--quiet-at-stop REGEX] -- COMMAND [ARG...]"
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("give the command after --")
    split = argv.index("--")
    args, command = parser.parse_args(argv[:split]), argv[split + 1:]
    quiet = re.compile(args.quiet_at_stop.encode()) if args.quiet_at_stop else None
    stopping = threading.Event()
    server = subprocess.Popen(command, start_new_session=True, preexec_fn=stop_with_parent,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert server.stdout is not None
    output = threading.Thread(target=forward, args=(server.stdout, quiet, stopping), daemon=True)
    output.start()
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, asked_to_stop)
        code = server.wait()
    except Stop:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # asked once is enough; honcho's SIGKILL still ends it all
        stopping.set()
        deadline = time.monotonic() + args.wait
        while (clients(args.port, server.pid) or 0) > 0 and time.monotonic() < deadline and server.poll() is None:
            time.sleep(POLL)
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        code = server.wait()
    output.join(1.0)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
