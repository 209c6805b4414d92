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
from tests.helpers import wait_for, wait_for_time, wait_until
from tests.stack import SECRET, Gateway, http


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


def process_state(pid: int) -> str | None:
    """The state letter of process ``pid`` (R, S, T for stopped, Z...), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def box_health_within(gateway, seconds: float) -> tuple[int, dict] | None:
    """The box's /health from the first of several requests in parallel
    (the kernel spreads them over the workers) that is answered within
    ``seconds``, or None if none is."""
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(http, "GET", f"{gateway.url}/health", None, None, seconds) for _ in range(8)]
        for future in concurrent.futures.as_completed(futures):
            try:
                status, body = future.result()
            except OSError:   # a request that landed on the stopped worker: timed out
                continue
            return status, json.loads(body)
    return None


def test_a_hung_worker_is_killed_and_started_again_and_the_box_answers_meanwhile(start_gateway, nsqd):
    # Issue 23, finding 5: with one of two workers stopped, half the new
    # connects hung, /health hung or took 2 s, and the supervisor did nothing.
    gateway = start_gateway("--workers=2", "--public-channels=news", "--history-margin=0.2", "--worker-timeout=4")

    async def scenario():
        await wait_for_time(gateway.recovers_from())
        clients = [await sdk_client(gateway.ws_url, f"h{n}", channels=("news",)) for n in range(16)]
        nsqd.publish({"channel": "news", "data": 0})
        for _, rec in clients:
            assert await rec.next() == ("news", 0)
        victim = workers_of(gateway)[0]
        os.kill(victim["pid"], signal.SIGSTOP)
        try:
            # The box answers for itself within a second (gateway/workers/box.py:
            # its siblings have 0.5 s), whatever the stopped worker does: 503,
            # with that worker down. Asked while it is still stopped.
            answer = await asyncio.to_thread(box_health_within, gateway, 1.5)
            assert process_state(victim["pid"]) == "T", "asked too late: the worker is no longer stopped"
            assert answer is not None, "no /health answer within 1.5 s while a worker is stopped"
            status, body = answer
            assert status == 503 and [w["up"] for w in body["workers"]] == [False, True], body
            for n in range(1, 4):
                nsqd.publish({"channel": "news", "data": n})
            # The supervisor kills the stopped worker after --worker-timeout: its
            # clients reconnect to the others and recover, or are told they cannot.
            await wait_for(lambda: process_state(victim["pid"]) in (None, "Z"), timeout=20,
                           what="the supervisor to kill the stopped worker")
            for _, rec in clients:
                got = []
                while len(got) < 3:
                    try:
                        got.append(await rec.next(timeout=15))
                    except asyncio.TimeoutError:
                        break
                if got != [("news", 1), ("news", 2), ("news", 3)]:
                    ctx = rec.subscribed["news"]
                    assert ctx.was_recovering and not ctx.recovered, (got, ctx)
        finally:
            if process_state(victim["pid"]) == "T":
                os.kill(victim["pid"], signal.SIGCONT)
        wait_until(lambda: all(w.get("ready") for w in workers_of(gateway)) and
                   workers_of(gateway)[0]["pid"] != victim["pid"], timeout=30, what="the worker restarted")
        # Every new connection is served again.
        fresh = [await sdk_client(gateway.ws_url, f"n{n}", channels=("news",)) for n in range(12)]
        nsqd.publish({"channel": "news", "data": 4})
        for _, rec in fresh:
            assert await rec.next() == ("news", 4)
        for client, _ in clients + fresh:
            await client.disconnect()
    asyncio.run(scenario())
    assert "has not answered for" in gateway.log() and "killing it" in gateway.log()


def test_workers_die_with_their_supervisor(start_gateway):
    # Issue 23, finding 6: `kill -9` of the supervisor left its workers serving,
    # and a supervisor started again bound beside them.
    gateway = start_gateway("--workers=2", "--drain-period=1")
    pids = [w["pid"] for w in workers_of(gateway)]
    group = gateway.proc.pid
    try:
        gateway.proc.kill()
        gateway.proc.wait()
        wait_until(lambda: all(process_state(pid) in (None, "Z") for pid in pids), timeout=15,
                   what="the workers to exit after their supervisor was killed")
    finally:
        try:
            os.killpg(group, signal.SIGKILL)   # whatever is left of the box
        except ProcessLookupError:
            pass
    assert gateway.log().count("the supervisor is gone") == 2


def time_wait_on(port: int) -> int:
    """How many TCP sockets of this host on local port ``port`` are in TIME_WAIT."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "06":
                count += 1
    return count


def test_workers_start_at_once_on_a_port_a_node_closed_connections_on(start_gateway, tmp_path, nsqd, lookupd):
    # Issue 24: the supervisor's port check bound with SO_REUSEPORT alone, and
    # the TIME_WAIT sockets a stopped node leaves on its port refused that bind
    # ("already in use") for a minute; the workers themselves (SO_REUSEADDR)
    # would have listened at once.
    node = start_gateway("--drain-period=1")

    async def scenario():
        raws = []
        for n in range(8):
            raw = await RawClient.open(node.ws_url)
            await raw.connect(connection_token(SECRET, f"t{n}"))
            raws.append(raw)
        node.proc.send_signal(signal.SIGTERM)
        for raw in raws:   # the node closes them: the TIME_WAIT is on its side
            assert await raw.closed(timeout=10) == (3001, "shutdown")
    asyncio.run(scenario())
    assert node.stop() == 0
    assert time_wait_on(node.port) > 0, "no TIME_WAIT left on the port: the test would prove nothing"

    box = Gateway(tmp_path / "box", nsqd, lookupd, "--workers=2", f"--port={node.port}")  # the last --port wins
    box.port = node.port
    try:
        box.start()   # waits for the box's /health to say 200 on that port
        assert "already in use" not in box.log()
        assert [w["ready"] for w in workers_of(box)] == [True, True]
    finally:
        box.stop()


def test_workers_start_a_few_at_a_time(start_gateway):
    # Issue 24: fifty-nine workers started at once on two cores each took
    # longer than they had to answer, were killed and started again, and the
    # box never settled. At most one per core (two at least) starts at once;
    # the next when one of them first answers.
    from gateway.workers.supervisor import STARTING
    gateway = start_gateway(f"--workers={STARTING + 1}")
    assert [w["ready"] for w in workers_of(gateway)] == [True] * (STARTING + 1)
    wait_until(lambda: gateway.log().count(" answers, ") == STARTING + 1, timeout=15,
               what="the supervisor to hear from every worker")
    lines = [line for line in gateway.log().splitlines() if "pushgate.supervisor" in line]
    started = [i for i, line in enumerate(lines) if " started (pid " in line]
    answered = [i for i, line in enumerate(lines) if " answers, " in line]
    assert len(started) == STARTING + 1 and len(answered) == STARTING + 1, lines
    assert started[STARTING] > answered[0], lines   # the last one waited for a first answer
    assert started[STARTING - 1] < answered[0], lines   # the first ones did not wait for each other
