"""Helpers every kind of test uses: run a scenario, and wait for a condition
(never for a fixed time). Nothing here starts a process or imports the
stack, so in-process tests can use it too."""
from __future__ import annotations

import asyncio
import inspect
import time
import urllib.error
from typing import Any, Callable, Coroutine, TypeVar

T = TypeVar("T")

# A check that raises one of these (a process not listening yet, an HTTP
# request refused) is simply not true yet.
NOT_YET = (OSError, urllib.error.URLError)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run an async scenario to its end on a fresh event loop."""
    return asyncio.run(coro)


def wait_until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               what: str = "condition") -> Any:
    """Call ``check`` until it returns something true, and return that; raise
    TimeoutError naming ``what`` after ``timeout`` seconds. For code that is
    not on an event loop (it blocks the thread between checks)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except NOT_YET:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def wait_for(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
                   what: str = "condition") -> Any:
    """:func:`wait_until` for a coroutine: the event loop runs between checks,
    so clients on it keep reading. ``check`` may return an awaitable (an
    async call), which is awaited."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
        except NOT_YET:
            result = None
        if result:
            return result
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


# --- conditions only time makes true -------------------------------------------------
# A node vouches for a stream position only some time after it started, and a
# position only becomes old enough as time passes: nothing can be polled for
# those. Wait for the exact moment, computed from what it depends on (e.g.
# tests.stack.Gateway.recovers_from), never for a guessed number of seconds.

def wait_until_time(moment: float) -> None:
    """Block until the wall clock (Unix seconds) has passed ``moment``."""
    while (left := moment - time.time()) > 0:
        time.sleep(left)


async def wait_for_time(moment: float) -> None:
    """:func:`wait_until_time` for a coroutine."""
    while (left := moment - time.time()) > 0:
        await asyncio.sleep(left)
