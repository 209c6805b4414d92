"""The backend's events on a real nsqd, from two real nodes, read with the
Python bridge's NSQ reader (pushgate_bridge.events): users online and
offline once per transition, a node killed without a word, receipts
(docs/events.md). The Ruby bridge's reader is tested in
tests/test_bridge_ruby.py against the same kind of stack.

"None came" is never waited for with a sleep: a later event that must come
after the one that must not (a sentinel user's offline, a sentinel
message's undelivered) says when to look."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

import pytest

from auth import connection_token
from pushgate_bridge.events import EventReader
from tests.clients import RawClient
from tests.helpers import wait_for, wait_until
from tests.stack import API_KEY, ROOT, SECRET, Nsqd, Reading, http

CONSUMERS = {"python": [sys.executable, str(ROOT / "tests" / "events_consumer.py")],
             "ruby": ["ruby", str(ROOT / "tests" / "ruby" / "events_consumer.rb")]}
TRANSITIONS = ("user_online", "user_offline")

GRACE = 1.0
TTL = 3.0
RECEIPT_TIMEOUT = 2.0


class Heard:
    """Every event the bridge's reader got, in order."""

    def __init__(self, nsqd, topic: str):
        self.events: list[dict] = []
        self.lock = threading.Lock()
        self.reader = EventReader(topic, "test", nsqd_tcp_addresses=[nsqd.tcp_address], max_in_flight=500,
                                  on_any=self._heard)
        self.reader.start()

    def _heard(self, event: dict) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: str, **fields) -> list[dict]:
        with self.lock:
            return [e for e in self.events if e["type"] == kind and all(e.get(k) == v for k, v in fields.items())]

    def stop(self) -> None:
        self.reader.stop()
        self.reader.join()


class Consumer:
    """A bridge's reader in a process of its own (tests/events_consumer.py,
    tests/ruby/events_consumer.rb): what it printed, line by line."""

    def __init__(self, bridge: str, topic: str, channel: str, nsqd_tcp: str):
        self.proc = subprocess.Popen([*CONSUMERS[bridge], topic, channel, nsqd_tcp], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.lines: list[dict] = []
        self.stderr = ""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr += line

    def of(self, kind: str, **fields) -> list[dict]:
        return [e for e in list(self.lines) if e.get("type") == kind and all(e.get(k) == v for k, v in fields.items())]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def subscribed(nsqd, topic: str, channel: str) -> bool:
    """Whether ``channel`` of ``topic`` has a reader on ``nsqd``."""
    query = urllib.parse.urlencode({"format": "json", "topic": topic, "channel": channel})
    status, body = http("GET", f"http://{nsqd.http_address}/stats?{query}")
    return status == 200 and any(c["channel_name"] == channel and c["clients"] for t in json.loads(body)["topics"] or ()
                                 if t["topic_name"] == topic for c in t["channels"])


def transitions(events: list[dict]) -> list[tuple[str, str]]:
    return sorted((e["type"], e["user"]) for e in events if e.get("type") in TRANSITIONS)


def cluster(start_gateway, nsqd, *extra: str, ruby: bool = False):
    """Two nodes of a cluster of their own (their own topics), with events,
    both ready to speak for users; the Python bridge's reader of their
    events; and with ``ruby``, the Rails bridge's reader on a channel of its own."""
    name = f"ev{uuid.uuid4().hex[:8]}"
    flags = (f"--topic={name}", f"--events-topic={name}-events", f"--presence-interval={TTL / 6}",
             f"--presence-ttl={TTL}", f"--offline-grace={GRACE}", f"--receipt-timeout={RECEIPT_TIMEOUT}", *extra)
    heard = Heard(nsqd, f"{name}-events")
    consumer = None
    if ruby:
        consumer = Consumer("ruby", f"{name}-events", "ruby", nsqd.tcp_address)
        wait_until(lambda: subscribed(nsqd, f"{name}-events", "ruby"), what="the Ruby reader subscribed")
    a, b = start_gateway(*flags), start_gateway(*flags)
    wait_until(lambda: a.metric("pushgate_events_owners") == 2 and b.metric("pushgate_events_owners") == 2,
               timeout=15, what="both nodes ready for events and counting each other")
    return a, b, heard, name, consumer


async def tab(node, user: str) -> RawClient:
    client = await RawClient.open(node.ws_url)
    reply = await client.connect(connection_token(SECRET, user))
    assert "connect" in reply, reply
    return client


def test_users_online_and_offline_once_per_transition_across_two_nodes(start_gateway, nsqd):
    a, b, heard, _, ruby = cluster(start_gateway, nsqd, "--presence=room:*", "--public-channels=room:*",
                                   "--events-channels=room:*", ruby=True)
    try:
        async def scenario():
            # The first tab anywhere: one user_online; more tabs on either node: none.
            t1 = await tab(a, "alice")
            await wait_for(lambda: heard.of("user_online", user="alice"), what="alice online")
            t2, t3 = await tab(b, "alice"), await tab(a, "alice")
            await wait_for(lambda: len(heard.of("connect", user="alice")) == 3, what="three connects")
            # A channel with presence: occupied once, by its first subscriber on either node.
            for t in (t1, t2):
                await t.send({"id": 2, "subscribe": {"channel": "room:1"}})
                assert "subscribe" in await t.recv()
            await wait_for(lambda: len(heard.of("subscribe", channel="room:1")) == 2, what="two subscribes")
            assert len(heard.of("channel_occupied", channel="room:1")) == 1
            # Closing all of them: one user_offline, after the grace.
            for t in (t1, t2, t3):
                await t.close()
            closed = time.time()
            await wait_for(lambda: heard.of("user_offline", user="alice"), what="alice offline")
            offline = heard.of("user_offline", user="alice")[0]
            assert offline["time"] >= closed + GRACE - 0.2, (offline, closed)
            disconnects = heard.of("disconnect", user="alice")
            assert len(disconnects) == 3 and all(d["code"] == 0 and d["duration"] >= 0 for d in disconnects)
            await wait_for(lambda: heard.of("channel_vacated", channel="room:1"), what="room:1 vacated")
            assert len(heard.of("unsubscribe", channel="room:1")) == 2

            # A reload within the grace, onto the other node (bob) or the same one (carl): no transition.
            r = await tab(a, "bob")
            same = await tab(a, "carl")
            sentinel = await tab(b, "sentinel")
            await wait_for(lambda: all(heard.of("user_online", user=u) for u in ("bob", "carl", "sentinel")),
                           what="bob, carl and the sentinel online")
            await r.close()
            r = await tab(b, "bob")
            await same.close()
            same = await tab(a, "carl")
            # The sentinel leaves after bob's old tab: its offline comes after
            # bob's would have.
            await sentinel.close()
            await wait_for(lambda: heard.of("user_offline", user="sentinel"), what="the sentinel offline")
            assert heard.of("user_offline", user="bob") == [] and heard.of("user_offline", user="carl") == []
            assert len(heard.of("user_online", user="bob")) == 1 and len(heard.of("user_online", user="carl")) == 1
            assert len(heard.of("user_online", user="alice")) == 1
            assert len(heard.of("user_offline", user="alice")) == 1
            assert len(heard.of("user_online", user="sentinel")) == 1
            assert len(heard.of("channel_occupied", channel="room:1")) == 1
            assert len(heard.of("channel_vacated", channel="room:1")) == 1
            assert not heard.of("subscribe", channel="#alice")     # not a channel --events-channels names
            assert {e["node"] for e in heard.of("connect", user="alice")} == {a.node_name, b.node_name}
            await r.close()
            await same.close()
            await wait_for(lambda: heard.of("user_offline", user="bob") and heard.of("user_offline", user="carl"),
                           what="bob and carl offline at last")
            # The Rails bridge's reader heard the same transitions.
            await wait_for(lambda: transitions(ruby.lines) == transitions(heard.events),
                           what="the Ruby reader to hear the same transitions")
        asyncio.run(scenario())
        assert ruby.stop() == 0, ruby.stderr
        assert ruby.lines[-1] == {"stopped": True}
    finally:
        heard.stop()
        ruby.stop()


def test_a_node_killed_without_a_word_takes_only_its_own_users_offline(start_gateway, nsqd):
    a, b, heard, _, ruby = cluster(start_gateway, nsqd, ruby=True)
    try:
        async def scenario():
            only_b = [await tab(b, f"only-b-{i}") for i in range(4)]
            both = [await tab(b, f"both-{i}") for i in range(4)] + [await tab(a, f"both-{i}") for i in range(4)]
            users = [f"only-b-{i}" for i in range(4)] + [f"both-{i}" for i in range(4)]
            await wait_for(lambda: all(heard.of("user_online", user=u) for u in users), what="all online")
            killed = time.time()
            b.proc.kill()   # SIGKILL: no goodbye, no last deltas
            await wait_for(lambda: all(heard.of("user_offline", user=f"only-b-{i}") for i in range(4)),
                           timeout=TTL + 6, what="b's own users offline")
            for i in range(4):
                event = heard.of("user_offline", user=f"only-b-{i}")[0]
                assert event["time"] <= killed + TTL + 2, (event, killed)
                assert event["node"] == a.node_name
            # Users still connected to a stay online: a sentinel's offline, a
            # grace after it leaves, comes after theirs would have.
            sentinel = await tab(a, "sentinel")
            await wait_for(lambda: heard.of("user_online", user="sentinel"), what="the sentinel online")
            await sentinel.close()
            await wait_for(lambda: heard.of("user_offline", user="sentinel"), what="the sentinel offline")
            assert not any(heard.of("user_offline", user=f"both-{i}") for i in range(4))
            assert all(len(heard.of("user_online", user=u)) == 1 for u in users)
            assert all(len(heard.of("user_offline", user=f"only-b-{i}")) == 1 for i in range(4))
            await wait_for(lambda: transitions(ruby.lines) == transitions(heard.events),
                           what="the Ruby reader to hear the same transitions")
            for client in only_b + both:
                await client.ws.close()
        asyncio.run(scenario())
    finally:
        heard.stop()
        ruby.stop()


def test_receipts_say_delivered_per_node_with_counts_or_undelivered_once(start_gateway, nsqd):
    a, b, heard, topic, _ = cluster(start_gateway, nsqd)
    try:
        async def scenario():
            tabs = [await tab(a, "carol"), await tab(a, "carol"), await tab(b, "carol")]
            await wait_for(lambda: heard.of("user_online", user="carol"), what="carol online")
            nsqd.publish({"user": "carol", "id": "m1", "receipt": True, "data": {"n": 1}}, topic=topic)
            # The server API's publish asks for receipts too, naming the message by its idempotency_key.
            api = (f"{b.url}/api/publish", {"X-API-Key": API_KEY})
            assert http("POST", api[0], json.dumps({"user": "carol", "data": 3, "receipt": True}).encode(),
                        api[1])[0] == 400
            status, _ = http("POST", api[0], json.dumps({"user": "carol", "data": {"n": 3}, "receipt": True,
                                                         "idempotency_key": "m3"}).encode(), api[1])
            assert status == 200
            nsqd.publish({"user": "dave", "id": "m2", "receipt": True, "data": {"n": 2}}, topic=topic)
            await wait_for(lambda: heard.of("undelivered", id="m2"), timeout=RECEIPT_TIMEOUT + 5,
                           what="m2 undelivered to dave, who is offline")
            assert sorted(e["connections"] for e in heard.of("delivered", id="m3", user="carol")) == [1, 2]
            delivered = sorted((e["node"], e["connections"]) for e in heard.of("delivered", id="m1"))
            assert delivered == sorted([(a.node_name, 2), (b.node_name, 1)])
            assert heard.of("delivered", id="m1", user="carol")
            assert heard.of("undelivered", id="m1") == []
            assert len(heard.of("undelivered", id="m2", user="dave")) == 1
            assert heard.of("delivered", id="m2") == []
            for t in tabs:
                assert [(await t.recv())["push"]["pub"]["data"] for _ in range(2)] == [{"n": 1}, {"n": 3}]
                await t.close()
        asyncio.run(scenario())
    finally:
        heard.stop()


def test_ten_thousand_receipts_to_a_thousand_users_have_one_outcome_each(start_gateway, nsqd):
    # A longer wait for the nodes' reports than the other tests give: 10,000 at once on a
    # machine the whole suite shares must not turn a late report into an undelivered.
    # Shedding (a loop late by 0.1 s refuses connects) is not what this tests: 200 clients connect at once.
    a, b, heard, topic, _ = cluster(start_gateway, nsqd, "--receipt-timeout=4", "--shed-loop-lag=5")
    users = [f"u{i}" for i in range(1000)]
    online = users[:200]        # 100 on each node; the other 800 offline
    try:
        async def scenario():
            opening = asyncio.Semaphore(20)

            async def open_tab(i: int, user: str) -> RawClient:
                async with opening:
                    return await tab(a if i % 2 else b, user)
            clients = await asyncio.gather(*(open_tab(i, user) for i, user in enumerate(online)))
            await wait_for(lambda: len(heard.of("user_online")) >= len(online), timeout=20,
                           what="the online users announced")

            async def drain(client):   # read what they are sent, as a browser would
                try:
                    while True:
                        await client.ws.recv()
                except Exception:
                    pass
            readers = [asyncio.ensure_future(drain(c)) for c in clients]
            read = Reading(a, b, topic=topic)
            for start in range(0, 10_000, 1000):
                bodies = [json.dumps({"user": users[n % 1000], "id": f"r{n}", "receipt": True,
                                      "data": n}).encode() for n in range(start, start + 1000)]
                nsqd.mpublish(bodies, topic=topic)
                await wait_for(lambda: read.caught_up(start + 1000), timeout=20, what="both nodes read them")
            await wait_for(lambda: len(heard.of("delivered")) + len(heard.of("undelivered")) >= 10_000,
                           timeout=30, what="an outcome for every message")
            await wait_for(lambda: a.metric("pushgate_events_queued") == 0 and
                           b.metric("pushgate_events_queued") == 0, what="nothing more queued")
            for r in readers:
                r.cancel()
            for c in clients:
                await c.ws.close()
        asyncio.run(scenario())
        outcomes: dict[tuple[str, str], list[str]] = {}
        for event in heard.of("delivered") + heard.of("undelivered"):
            outcomes.setdefault((event["id"], event["user"]), []).append(event["type"])
        expected = {(f"r{n}", users[n % 1000]) for n in range(10_000)}
        assert set(outcomes) == expected
        wrong = {pair: kinds for pair, kinds in outcomes.items()
                 if kinds != (["delivered"] if pair[1] in set(online) else ["undelivered"])}
        assert not wrong, list(wrong.items())[:10]
        assert a.metric("pushgate_events_dropped_total", reason="full") == 0
        assert b.metric("pushgate_events_dropped_total", reason="full") == 0
    finally:
        heard.stop()


@pytest.mark.process   # its own nsqd, stopped and started again under the reader
@pytest.mark.parametrize("bridge", sorted(CONSUMERS))
def test_a_bridges_reader_waits_for_nsqd_reconnects_requeues_a_failure_and_closes_cleanly(bridge, tmp_path):
    nsqd = Nsqd(tmp_path / "nsqd")       # not started yet: the reader must wait for it
    reader = Consumer(bridge, "events", "worker", nsqd.tcp_address)
    try:
        wait_until(lambda: "connecting again" in reader.stderr, what=f"the {bridge} reader to retry")
        nsqd.start()
        wait_until(lambda: subscribed(nsqd, "events", "worker"), what="the reader subscribed")
        nsqd.publish({"type": "user_online", "user": "1", "fail_once": "a"}, topic="events")
        wait_until(lambda: reader.of("user_online", user="1"), what="the event, after its requeue")
        assert {"failed": "a"} in reader.lines
        assert len(reader.of("user_online", user="1")) == 1    # finished: not handed over again

        nsqd.stop()                                            # nsqd restarts on the same ports
        again = Nsqd(tmp_path / "nsqd")
        again.tcp_port, again.http_port = nsqd.tcp_port, nsqd.http_port
        again.start()
        nsqd = again
        wait_until(lambda: subscribed(nsqd, "events", "worker"), timeout=15, what="the reader back")
        nsqd.publish({"type": "user_offline", "user": "1"}, topic="events")
        wait_until(lambda: reader.of("user_offline", user="1"), what="an event after the reconnect")
        assert reader.stop() == 0, reader.stderr
        assert reader.lines[-1] == {"stopped": True}
        # CLS: nsqd saw the reader leave, and holds nothing in flight for it.
        wait_until(lambda: not subscribed(nsqd, "events", "worker"), what="the reader gone from nsqd")
    finally:
        reader.stop()
        nsqd.stop()


@pytest.mark.parametrize("bridge", sorted(CONSUMERS))
def test_a_bridges_reader_finds_nsqd_through_nsqlookupd(bridge, nsqd, lookupd):
    topic = f"ev{uuid.uuid4().hex[:8]}-events"
    nsqd.publish({"type": "noise"}, topic=topic)      # the topic exists: nsqd tells nsqlookupd
    reader = Consumer(bridge, topic, "worker", f"lookupd:{lookupd.http_address}")
    try:
        wait_until(lambda: subscribed(nsqd, topic, "worker"), what=f"the {bridge} reader, found through nsqlookupd")
        nsqd.publish({"type": "user_online", "user": "7"}, topic=topic)
        wait_until(lambda: reader.of("user_online", user="7"), what="the event")
        assert reader.stop() == 0, reader.stderr
    finally:
        reader.stop()
