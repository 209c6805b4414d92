"""Fixtures that run the real stack: one nsqlookupd and nsqd for the whole
session, gateway nodes per module or per test. Every process is stopped at
the end of the fixture that started it.

Which tests are in-process (`make test-fast`, `pytest -m inprocess`) is
decided here, not listed: every test that uses no stack fixture and is not
marked ``process``. A test marked in-process that starts a process anyway
fails, saying to mark it ``process``, so the selection stays true as tests
are added."""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.clients import RECOVERY_FLAGS
from tests.helpers import wait_until_time
from tests.stack import Gateway, Lookupd, Nsqd


@pytest.fixture(scope="session")
def lookupd(tmp_path_factory):
    proc = Lookupd(tmp_path_factory.mktemp("lookupd")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def nsqd(tmp_path_factory, lookupd):
    proc = Nsqd(tmp_path_factory.mktemp("nsqd"), lookupd).start()
    yield proc
    proc.stop()


@pytest.fixture
def start_gateway(tmp_path, nsqd, lookupd):
    """Start gateway nodes with extra flags; all are stopped after the test."""
    started: list[Gateway] = []

    def start(*args: str, nsqd_proc: Nsqd | None = None, lookupd_proc: Lookupd | None = lookupd,
              **kwargs) -> Gateway:
        gateway = Gateway(tmp_path / f"gw{len(started)}", nsqd_proc or nsqd, lookupd_proc, *args, **kwargs)
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def recovery_nodes(start_gateway):
    """Two nodes a client can recover on (tests/clients.py RECOVERY_FLAGS)."""
    a, b = start_gateway(*RECOVERY_FLAGS), start_gateway(*RECOVERY_FLAGS)
    wait_until_time(max(a.recovers_from(), b.recovers_from()))  # both vouch for the clients' positions
    return a, b


# --- in-process tests ----------------------------------------------------------------

# The fixtures every stack fixture (nodes, start_gateway, recovery_nodes, a
# module's own gateway) depends on.
STACK_FIXTURES = frozenset({"lookupd", "nsqd"})


def pytest_configure(config):
    config.addinivalue_line("markers", "inprocess: starts no process and uses no stack fixture (no nsqd, no "
                                       "gateway, no browser); set by tests/conftest.py, not by hand")
    config.addinivalue_line("markers", "process: starts a process itself (a subprocess, make, a browser) "
                                       "without the stack fixtures: not an in-process test")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        stack = STACK_FIXTURES.intersection(item.fixturenames)
        if stack and item.get_closest_marker("inprocess") is not None:
            raise pytest.UsageError(f"{item.nodeid} is marked inprocess but uses {', '.join(sorted(stack))}")
        if not stack and item.get_closest_marker("process") is None:
            item.add_marker(pytest.mark.inprocess)


@pytest.fixture(autouse=True)
def _inprocess_tests_start_no_process(request, monkeypatch):
    """An in-process test that starts a process is misclassified: it fails,
    whether it runs in `make test-fast` or in the whole suite."""
    if request.node.get_closest_marker("inprocess") is None:
        return

    def refuse(*args, **kwargs):
        raise RuntimeError(f"{request.node.nodeid} starts a process, so it is not an in-process test: "
                           "mark it @pytest.mark.process (or use the stack fixtures)")
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)  # subprocess.run, asyncio's subprocesses
    for name in ("fork", "system", "posix_spawn", "posix_spawnp"):
        monkeypatch.setattr(os, name, refuse)
