"""Fixtures that run the real stack: one nsqlookupd and nsqd for the whole
session, gateway nodes per module or per test. Every process is stopped at
the end of the fixture that started it."""
from __future__ import annotations

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
