"""One view of a box's workers (``--workers N``): ``/metrics`` and ``/health``
answered for all of them, by whichever worker the request lands on.

Each worker also serves its own ``/metrics`` and ``/health`` on a UNIX
socket in the supervisor's run directory (never on the network). The worker
that gets a public request asks its siblings over those sockets, at once and
in parallel, and merges the answers:

* every sample appears once per worker with a ``worker="<i>"`` label, and
  once without it, the box's total: the sum over the workers, except for the
  lag gauges, whose total is the maximum (a box is as late as its latest
  worker); ``pushgate_worker_up{worker}`` says which workers answered;
* ``/health`` is 200 when every worker is up and ready, and lists them.

The siblings have ``HEALTH_TIMEOUT`` in all to answer ``/health`` (and
``METRICS_TIMEOUT`` for ``/metrics``), together: one that is hung or
stopped is reported down (and the box 503) rather than holding the answer
back, so ``/health`` answers within that, whatever one worker does
(unless the request landed on the hung worker itself, which the supervisor
kills after ``--worker-timeout``: gateway/workers/supervisor.py).

``/metrics`` is unauthenticated and asking every sibling and merging their
text costs far more than the request itself, so the box's answer is kept
for :data:`METRICS_FRESH` (one second, less than any scrape interval) and
requests in that time get it as it is; requests that arrive while it is
being made wait for that one. However many requests come, each worker's
text is fetched and parsed at most once a second per worker that answers.

Limits stay per worker: ``--max-connections``, ``--connect-rate``,
``--max-user-connections`` and the history budget apply to each process
(README, "All the cores of a box").
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Callable

import ujson
from prometheus_client.parser import text_string_to_metric_families

from gateway.workers.supervisor import ask_worker

MAX_GAUGES = frozenset({"pushgate_loop_lag_seconds", "pushgate_control_lag_seconds"})
HEALTH_TIMEOUT = 0.5   # seconds the siblings have, together, to answer /health
METRICS_TIMEOUT = 2.0  # and /metrics (a busy worker's series take longer to write)
METRICS_FRESH = 1.0   # seconds the box's /metrics answer is served as it is


class Box:
    def __init__(self, index: int, count: int, run_dir: str, clock: Callable[[], float] = time.monotonic):
        self.index = index
        self.count = count
        self.run_dir = run_dir
        self._clock = clock
        self._metrics: tuple[float, bytes] | None = None   # (when it was asked for, the answer)
        self._metrics_pending: asyncio.Future | None = None

    async def gather(self, path: str, own: tuple[int, bytes], timeout: float) -> dict[int, tuple[int, bytes] | None]:
        """Every worker's answer to ``GET path`` (this one's is ``own``): the
        siblings', in parallel, over their UNIX sockets within ``timeout``
        seconds, connecting and reading included; None for one that did not."""
        others = [i for i in range(self.count) if i != self.index]
        answers = await asyncio.gather(*(ask_worker(self.run_dir, i, path, timeout) for i in others))
        return {self.index: own, **dict(zip(others, answers))}

    async def metrics(self, own: Callable[[], bytes]) -> bytes:
        """The box's metrics: every worker's (``own()`` is this one's text),
        as they were at most :data:`METRICS_FRESH` seconds ago."""
        now = self._clock()
        cached = self._metrics
        if cached is not None and now - cached[0] < METRICS_FRESH:
            return cached[1]
        if self._metrics_pending is None:
            self._metrics_pending = asyncio.ensure_future(self._merged_metrics(now, own()))
        return await asyncio.shield(self._metrics_pending)

    async def _merged_metrics(self, asked: float, own: bytes) -> bytes:
        try:
            answers = await self.gather("/metrics", (200, own), METRICS_TIMEOUT)
            text = merge_metrics({i: a[1].decode() for i, a in answers.items() if a and a[0] == 200}, self.count)
            self._metrics = (asked, text)
            return text
        finally:
            self._metrics_pending = None

    async def health(self, own: tuple[int, dict]) -> tuple[int, dict]:
        answers = await self.gather("/health", (own[0], ujson.dumps(own[1]).encode()), HEALTH_TIMEOUT)
        workers = []
        for index in range(self.count):
            answer = answers.get(index)
            if answer is None:
                workers.append({"worker": index, "up": False})
                continue
            try:
                body = ujson.loads(answer[1])
            except ValueError:
                body = {}
            workers.append({"worker": index, "up": True, "ready": answer[0] == 200, **body})
        ready = all(w.get("ready") for w in workers)
        return (200 if ready else 503), {
            "workers": workers,
            "draining": any(w.get("draining") for w in workers),
            "connections": sum(w.get("connections", 0) for w in workers),
        }


def merge_metrics(texts: dict[int, str], count: int) -> bytes:
    """Prometheus text of every worker, each sample with its ``worker`` label,
    plus the box's totals."""
    families: dict[str, tuple[str, str]] = {}           # family name -> (type, help)
    samples: dict[str, list[tuple[dict, float]]] = defaultdict(list)   # family -> samples with worker
    order: list[str] = []
    names: dict[str, list[str]] = defaultdict(list)     # family -> its sample names
    for index, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = (family.type, family.documentation)
                order.append(family.name)
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                if sample.name not in names[family.name]:
                    names[family.name].append(sample.name)
                samples[family.name].append(({"__name__": sample.name, **sample.labels, "worker": str(index)},
                                             sample.value))
    out = ["# HELP pushgate_worker_up Whether a worker of this box answered (1) or not (0).",
           "# TYPE pushgate_worker_up gauge"]
    out.extend(f'pushgate_worker_up{{worker="{i}"}} {1.0 if i in texts else 0.0}' for i in range(count))
    for name in order:
        kind, documentation = families[name]
        out.append(f"# HELP {name} {documentation}")
        out.append(f"# TYPE {name} {kind if kind != 'unknown' else 'untyped'}")
        totals: dict[tuple, float] = {}
        for labels, value in samples[name]:
            out.append(_line(labels, value))
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "worker"))
            if name in MAX_GAUGES:
                totals[key] = max(totals.get(key, value), value)
            else:
                totals[key] = totals.get(key, 0.0) + value
        for key, value in totals.items():
            out.append(_line(dict(key), value))
    return ("\n".join(out) + "\n").encode()


def _line(labels: dict, value: float) -> str:
    labels = dict(labels)
    name = labels.pop("__name__")
    if not labels:
        return f"{name} {value}"
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}} {value}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
