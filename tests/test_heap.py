"""gateway/heap.py: what a burst left freed in the C heap goes back to the
system, on the real allocator (glibc), in process."""
from __future__ import annotations

import os

import pytest

from gateway.core.history import History, Retention
from gateway.heap import HeapTrim

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


trim = HeapTrim()
needs_glibc = pytest.mark.skipif(not trim.available, reason="malloc_trim and mallinfo2 are glibc's (2.33+)")


@needs_glibc
def test_history_a_burst_filled_is_given_back_once_its_ttl_emptied_it():
    # Issue 23: a worker stayed 8.5 MiB larger for good after history held
    # 8 MiB of 4 KB publications for their TTL: freed by Python, kept by glibc.
    heap = HeapTrim(check_every=0)
    heap.trim()                                    # what earlier tests left freed is not resident now
    heap.tick(0)                                   # the level before the burst
    keep = []                                      # what lives on above the burst in the heap
    history = History(default=Retention(size=1000, ttl=1), memory_budget=16 * 2**20)
    before = resident()
    for i in range(2100):
        history.add(f"junk:big:{i % 32}", 10**9 + i, os.urandom(4000), 10**9 + i)
        if i % 50 == 0:
            keep.append(os.urandom(1000))
    assert history.memory > 8 * 2**20
    full = resident()
    history.sweep(10**10)                          # past the TTL: every entry and channel goes
    assert history.memory == 0
    assert resident() > before + (full - before) // 2   # freed, but still resident
    assert heap.tick(1)
    assert resident() < before + 2 * 2**20 and heap.released > 4 * 2**20, (before, full, resident())
    assert not heap.tick(2)                        # nothing new was freed: no trim
    del keep


@needs_glibc
def test_steady_traffic_never_trims():
    heap = HeapTrim(check_every=0)
    heap.tick(0)
    for t in range(1, 50):
        blobs = [os.urandom(4000) for _ in range(100)]   # 400 KB freed and reused each round
        del blobs
        assert not heap.tick(t)
