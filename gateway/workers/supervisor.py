"""``pushgate serve --workers N``: all the cores of a box.

A node is one Python process, so one core. With ``--workers N`` the
``pushgate serve`` process becomes a supervisor that runs N worker
processes, each a whole node with its own name (``<node-name>-<i>``) and so
its own NSQ ephemeral channel: each reads every message. The workers listen
on the same port with ``SO_REUSEPORT``, and the kernel spreads new
connections over them.

The supervisor restarts a worker that dies (after 0.5 s, doubling to 30 s
while it keeps dying young), forwards SIGTERM and SIGINT to every worker so
each drains as a single node does, and exits 0 when all of them have exited
0. It serves nothing itself: each worker also answers on a UNIX socket in a
run directory the supervisor makes, so whichever worker a ``/metrics`` or
``/health`` request lands on can speak for the whole box (gateway/workers/box.py).

**A worker that hangs** (its event loop stuck, or the process stopped) still
holds its share of the port: the kernel keeps handing it new connections,
which wait there unanswered. So the supervisor asks every worker for its
``/health`` over that UNIX socket every second (``PROBE_EVERY``); any answer,
ready or not, means its loop runs. A worker that has not answered for
``--worker-timeout`` seconds (from its start: ``STARTUP_GRACE`` more) is
killed with SIGKILL and started again like one that died: the kernel closes
its connections and its listening socket, so new connections go to the
others, and its clients reconnect to them and recover from their history.

**Workers die with their supervisor.** The kernel tells a worker when its
parent dies (``PR_SET_PDEATHSIG``, Linux), and each worker checks every
second that the supervisor that started it is still its parent; once it is
not (the supervisor was killed with SIGKILL, or died), the worker stops
reading NSQ, closes its clients and exits, without a drain: a supervisor
started again runs workers under the same names, on the same NSQ channels,
and nsqd splits a channel's messages between its readers.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

from gateway.config import Settings, default_node_name, listen_error

log = logging.getLogger("pushgate.supervisor")

WORKER_INDEX_ENV = "PUSHGATE_WORKER_INDEX"   # set by the supervisor for each worker
WORKERS_ENV = "PUSHGATE_WORKER_COUNT"
RUN_DIR_ENV = "PUSHGATE_RUN_DIR"
SUPERVISOR_ENV = "PUSHGATE_SUPERVISOR_PID"
RESTART_MIN, RESTART_MAX = 0.5, 30.0
STABLE_AFTER = 30.0  # seconds a worker must live for its restart delay to start over
PROBE_EVERY = 1.0    # seconds between the supervisor's questions to each worker
PROBE_TIMEOUT = 1.0  # seconds a worker has to answer one
STARTUP_GRACE = 15.0  # seconds a new worker has, beyond --worker-timeout, to answer a first time
STARTING = max(2, os.cpu_count() or 1)   # workers starting at once (until each first answers)


def worker_socket(run_dir: str, index: int) -> str:
    return os.path.join(run_dir, f"worker-{index}.sock")


def check_port(settings: Settings) -> None:
    """Fail at once, with one line, if the workers could not listen."""
    family = socket.AF_INET6 if ":" in settings.address else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As the workers bind (tornado's bind_sockets): SO_REUSEADDR too, or
        # the TIME_WAIT sockets of a node that stopped on this port a moment
        # ago refuse the probe for a minute while the workers would listen.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind((settings.address, settings.port))
    except OSError as exc:
        raise listen_error(settings, exc) from None
    finally:
        probe.close()


async def ask_worker(run_dir: str, index: int, path: str, timeout: float) -> tuple[int, bytes] | None:
    """A worker's answer (status, body) to ``GET path`` over its UNIX socket,
    within ``timeout`` seconds in all, or None."""
    async def ask() -> tuple[int, bytes] | None:
        reader, writer = await asyncio.open_unix_connection(worker_socket(run_dir, index))
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: worker\r\n\r\n".encode())
            response = await reader.read()
        finally:
            writer.close()
        head, _, body = response.partition(b"\r\n\r\n")
        try:
            return int(head.split(b" ", 2)[1]), body
        except (IndexError, ValueError):
            return None
    try:
        return await asyncio.wait_for(ask(), timeout)
    except (OSError, asyncio.TimeoutError):
        return None


class Worker:
    def __init__(self, supervisor: "Supervisor", index: int):
        self.supervisor = supervisor
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.delay = RESTART_MIN
        self.exit_code: int | None = None

    async def run(self) -> None:
        supervisor = self.supervisor
        while True:
            # At most STARTING workers start at once: a worker's start-up is
            # a second or more of CPU, and fifty started together on two
            # cores each took longer than they have to answer a first time.
            await supervisor.starting.acquire()
            if supervisor.stopping:
                supervisor.starting.release()
                return
            started = time.monotonic()
            self.process = await asyncio.create_subprocess_exec(*supervisor.command(self.index),
                                                                env=supervisor.environment(self.index))
            log.info("worker %d started (pid %d)", self.index, self.process.pid)
            first_answer = asyncio.get_running_loop().create_future()
            first_answer.add_done_callback(lambda _: supervisor.starting.release())
            watch = asyncio.ensure_future(self._watch(self.process, started, first_answer))
            try:
                code = await self.process.wait()
            finally:
                watch.cancel()
                if not first_answer.done():
                    first_answer.set_result(False)
            self.exit_code = code
            if supervisor.stopping:
                return
            if time.monotonic() - started > STABLE_AFTER:
                self.delay = RESTART_MIN
            log.error("worker %d (pid %d) exited with %s; restarting it in %.1f s", self.index, self.process.pid,
                      f"signal {-code}" if code < 0 else f"code {code}", self.delay)
            await asyncio.sleep(self.delay)
            self.delay = min(self.delay * 2, RESTART_MAX)
            if supervisor.stopping:
                return

    async def _watch(self, process: asyncio.subprocess.Process, started: float, first_answer: asyncio.Future) -> None:
        """Kill ``process`` once it has not answered for --worker-timeout
        seconds; ``first_answer`` is set when it first answers."""
        supervisor = self.supervisor
        timeout = supervisor.settings.worker_timeout
        answered: float | None = None
        while process.returncode is None:
            await asyncio.sleep(PROBE_EVERY)
            since = answered if answered is not None else started + STARTUP_GRACE
            # A question waits for its answer until the worker would be killed
            # (PROBE_TIMEOUT at least): on a box with more busy processes
            # than cores an answer can take more than a second to come back
            # (the supervisor waits its turn too), which is slow, not hung.
            wait = max(PROBE_TIMEOUT, since + timeout - time.monotonic())
            if await ask_worker(supervisor.run_dir, self.index, "/health", wait) is not None:
                answered = time.monotonic()
                if not first_answer.done():
                    first_answer.set_result(True)
                    log.info("worker %d (pid %d) answers, %.1f s after its start", self.index, process.pid,
                             answered - started)
                continue
            silent = time.monotonic() - since
            if silent > timeout and process.returncode is None:
                log.error("worker %d (pid %d) has not answered for %.1f s (--worker-timeout %g): killing it",
                          self.index, process.pid, time.monotonic() - (answered or started), timeout)
                try:
                    process.kill()
                except ProcessLookupError:
                    pass
                return

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass


class Supervisor:
    def __init__(self, settings: Settings, serve_args: list[str]):
        self.settings = settings
        self.serve_args = serve_args
        self.base_name = settings.node_name or default_node_name(settings.port)
        self.run_dir = tempfile.mkdtemp(prefix="pushgate-")
        self.workers = [Worker(self, i) for i in range(settings.workers)]
        self.stopping = False
        self.starting = asyncio.Semaphore(STARTING)

    def command(self, index: int) -> list[str]:
        # The supervisor's own flags, then what makes this process one worker
        # (later flags win).
        return [sys.executable, "-m", "gateway", "serve", *self.serve_args, "--workers=1",
                f"--node-name={self.base_name}-{index}"]

    def environment(self, index: int) -> dict:
        env = dict(os.environ)
        env.update({WORKER_INDEX_ENV: str(index), WORKERS_ENV: str(len(self.workers)), RUN_DIR_ENV: self.run_dir,
                    SUPERVISOR_ENV: str(os.getpid())})
        return env

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop, sig)
        log.info("supervising %d workers of node %s on %s:%d", len(self.workers), self.base_name,
                 self.settings.address, self.settings.port)
        try:
            await asyncio.gather(*(w.run() for w in self.workers))
        finally:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        codes = [w.exit_code for w in self.workers]
        if all(code == 0 for code in codes):
            log.info("every worker drained, exiting")
            return 0
        log.error("workers exited with %s", codes)
        return 1

    def _stop(self, sig: int) -> None:
        if not self.stopping:
            log.info("%s: stopping every worker", signal.Signals(sig).name)
        self.stopping = True
        for worker in self.workers:
            worker.signal(sig)


def serve_workers(settings: Settings, serve_args: list[str]) -> int:
    check_port(settings)
    return asyncio.run(Supervisor(settings, serve_args).run())


def supervisor_gone() -> bool:
    """In a worker: whether the supervisor that started it is no longer its
    parent (it was killed, or died). Outside a box of workers: False."""
    pid = os.environ.get(SUPERVISOR_ENV)
    return pid is not None and os.getppid() != int(pid)


def worker_identity() -> tuple[int, int, str] | None:
    """(index, count, run directory) when this process is one of a box's workers."""
    index, count, run_dir = (os.environ.get(WORKER_INDEX_ENV), os.environ.get(WORKERS_ENV),
                             os.environ.get(RUN_DIR_ENV))
    if index is None or count is None or not run_dir:
        return None
    return int(index), int(count), run_dir

