"""--workers: a box of worker processes on one port, supervised."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import signal

from auth import connection_token
from gateway.core.trends import STEP
from tests.clients import RawClient, sdk_client
from tests.helpers import wait_for_time, wait_until
from tests.stack import SECRET, http


def workers_of(gateway) -> list[dict]:
    status, body = http("GET", f"{gateway.url}/health")
    return json.loads(body)["workers"]


def connections_per_worker(gateway) -> dict[str, float]:
    _, body = http("GET", f"{gateway.url}/metrics")
    out = {}
    for line in body.decode().splitlines():
        if line.startswith('pushgate_connections{worker="'):
            out[line.split('"')[1]] = float(line.split()[-1])
    return out


def test_workers_share_the_port_and_one_publish_reaches_clients_on_every_worker(start_gateway, nsqd):
    gateway = start_gateway("--workers=2", "--public-channels=news", "--admin-secret=box")
    workers = workers_of(gateway)
    assert [w["node"] for w in workers] == [f"{gateway.name}-{gateway.port}-0", f"{gateway.name}-{gateway.port}-1"]
    assert all(w["ready"] for w in workers) and len({w["pid"] for w in workers}) == 2

    async def scenario():
        clients = [await sdk_client(gateway.ws_url, f"u{n}", channels=("news",)) for n in range(24)]
        per_worker = connections_per_worker(gateway)
        assert set(per_worker) == {"0", "1"} and all(v > 0 for v in per_worker.values()), per_worker
        nsqd.publish({"channel": "news", "data": "to all"})
        for _, rec in clients:
            assert await rec.next() == ("news", "to all")
        for client, _ in clients:
            await client.disconnect()
    asyncio.run(scenario())

    _, body = http("GET", f"{gateway.url}/metrics")
    text = body.decode()
    assert 'pushgate_worker_up{worker="0"} 1.0' in text and 'pushgate_worker_up{worker="1"} 1.0' in text
    totals = [line for line in text.splitlines() if line.startswith("pushgate_connects_total ")]
    per = [line for line in text.splitlines() if line.startswith("pushgate_connects_total{worker=")]
    assert float(totals[0].split()[-1]) == sum(float(line.split()[-1]) for line in per) == 24

    # /admin's charts: whichever worker answers, every worker is a node of its own,
    # asked through the control topic, and the cluster's series adds them up.
    auth = {"Authorization": "Basic " + base64.b64encode(b"any:box").decode()}

    def trends() -> dict | None:
        found = json.loads(http("GET", f"{gateway.url}/admin/trends.json", headers=auth)[1])
        sampled = [n for n in found["nodes"] if n["start"] is not None]
        return found if len(sampled) == 2 else None
    found = wait_until(trends, timeout=15, what="both workers, each with a sample, in /admin/trends.json")
    assert sorted(n["name"] for n in found["nodes"]) == [f"{gateway.name}-{gateway.port}-{i}" for i in (0, 1)]
    assert found["unanswered"] == []
    cluster = found["cluster"]
    last = cluster["start"] + STEP * (len(cluster["connections"]) - 1)  # the time of its last sample
    assert cluster["connections"][-1] == sum(n["connections"][int((last - n["start"]) // STEP)]
                                             for n in found["nodes"])


def test_a_killed_worker_is_restarted_and_its_clients_recover_on_the_others(start_gateway, nsqd):
    gateway = start_gateway("--workers=2", "--public-channels=news", "--history-margin=0.2")

    async def scenario():
        await wait_for_time(gateway.recovers_from())  # the workers vouch for the clients' positions
        clients = [await sdk_client(gateway.ws_url, f"k{n}", channels=("news",)) for n in range(16)]
        nsqd.publish({"channel": "news", "data": 0})
        for _, rec in clients:
            assert await rec.next() == ("news", 0)
        victim = workers_of(gateway)[0]
        os.kill(victim["pid"], signal.SIGKILL)
        for n in range(1, 4):
            nsqd.publish({"channel": "news", "data": n})
        # Every client gets 1, 2, 3 exactly once: live on the surviving worker,
        # recovered from history by the ones whose worker died.
        for _, rec in clients:
            assert [await rec.next(timeout=15) for _ in range(3)] == [("news", 1), ("news", 2), ("news", 3)]
            await rec.nothing_more(0.1)
        wait_until(lambda: all(w.get("ready") for w in workers_of(gateway)) and
                   workers_of(gateway)[0]["pid"] != victim["pid"], timeout=20, what="the worker restarted")
        for client, _ in clients:
            await client.disconnect()
    asyncio.run(scenario())
    assert "worker 0 (pid" in gateway.log() and "restarting it in" in gateway.log()


def test_sigterm_drains_every_worker_and_the_supervisor_exits_0(start_gateway):
    gateway = start_gateway("--workers=2", "--drain-period=1")

    async def scenario():
        raws = []
        for n in range(20):
            raw = await RawClient.open(gateway.ws_url)
            await raw.connect(connection_token(SECRET, f"d{n}"))
            raws.append(raw)
        assert set(connections_per_worker(gateway).values()) != {0.0}
        gateway.proc.send_signal(signal.SIGTERM)
        for raw in raws:
            assert await raw.closed(timeout=10) == (3001, "shutdown")
    asyncio.run(scenario())
    assert gateway.proc.wait(timeout=15) == 0
    log = gateway.log()
    assert log.count(" pushgate: drained, exiting") == 2 and "every worker drained, exiting" in log
