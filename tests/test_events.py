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
import threading
import time
import uuid

from auth import connection_token
from pushgate_bridge.events import EventReader
from tests.clients import RawClient
from tests.helpers import wait_for, wait_until
from tests.stack import SECRET, Reading

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


def cluster(start_gateway, nsqd, *extra: str):
    """Two nodes of a cluster of their own (their own topics), with events,
    both ready to speak for users; and the reader of their events."""
    name = f"ev{uuid.uuid4().hex[:8]}"
    flags = (f"--topic={name}", f"--events-topic={name}-events", f"--presence-interval={TTL / 3}",
             f"--presence-ttl={TTL}", f"--offline-grace={GRACE}", f"--receipt-timeout={RECEIPT_TIMEOUT}", *extra)
    heard = Heard(nsqd, f"{name}-events")
    a, b = start_gateway(*flags), start_gateway(*flags)
    wait_until(lambda: a.metric("pushgate_events_owners") == 2 and b.metric("pushgate_events_owners") == 2,
               timeout=15, what="both nodes ready for events and counting each other")
    return a, b, heard, name


async def tab(node, user: str) -> RawClient:
    client = await RawClient.open(node.ws_url)
    reply = await client.connect(connection_token(SECRET, user))
    assert "connect" in reply, reply
    return client


def test_users_online_and_offline_once_per_transition_across_two_nodes(start_gateway, nsqd):
    a, b, heard, _ = cluster(start_gateway, nsqd)
    try:
        async def scenario():
            # The first tab anywhere: one user_online; more tabs on either node: none.
            t1 = await tab(a, "alice")
            await wait_for(lambda: heard.of("user_online", user="alice"), what="alice online")
            t2, t3 = await tab(b, "alice"), await tab(a, "alice")
            await wait_for(lambda: len(heard.of("connect", user="alice")) == 3, what="three connects")
            # Closing all of them: one user_offline, after the grace.
            for t in (t1, t2, t3):
                await t.close()
            closed = time.time()
            await wait_for(lambda: heard.of("user_offline", user="alice"), what="alice offline")
            offline = heard.of("user_offline", user="alice")[0]
            assert offline["time"] >= closed + GRACE - 0.2, (offline, closed)
            disconnects = heard.of("disconnect", user="alice")
            assert len(disconnects) == 3 and all(d["code"] == 0 and d["duration"] >= 0 for d in disconnects)

            # A reload within the grace, onto the other node: no transition.
            r = await tab(a, "bob")
            sentinel = await tab(b, "sentinel")
            await wait_for(lambda: heard.of("user_online", user="bob") and heard.of("user_online", user="sentinel"),
                           what="bob and the sentinel online")
            await r.close()
            r = await tab(b, "bob")
            # The sentinel leaves after bob's old tab: its offline comes after
            # bob's would have.
            await sentinel.close()
            await wait_for(lambda: heard.of("user_offline", user="sentinel"), what="the sentinel offline")
            assert heard.of("user_offline", user="bob") == []
            assert len(heard.of("user_online", user="bob")) == 1
            assert len(heard.of("user_online", user="alice")) == 1
            assert len(heard.of("user_offline", user="alice")) == 1
            assert len(heard.of("user_online", user="sentinel")) == 1
            assert {e["node"] for e in heard.of("connect", user="alice")} == {a.node_name, b.node_name}
            await r.close()
            await wait_for(lambda: heard.of("user_offline", user="bob"), what="bob offline at last")
        asyncio.run(scenario())
    finally:
        heard.stop()


def test_a_node_killed_without_a_word_takes_only_its_own_users_offline(start_gateway, nsqd):
    a, b, heard, _ = cluster(start_gateway, nsqd)
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
            assert all(len(heard.of("user_offline", user=f"only-b-{i}")) == 1 for i in range(4))
            for client in only_b + both:
                await client.ws.close()
        asyncio.run(scenario())
    finally:
        heard.stop()


def test_receipts_say_delivered_per_node_with_counts_or_undelivered_once(start_gateway, nsqd):
    a, b, heard, topic = cluster(start_gateway, nsqd)
    try:
        async def scenario():
            tabs = [await tab(a, "carol"), await tab(a, "carol"), await tab(b, "carol")]
            await wait_for(lambda: heard.of("user_online", user="carol"), what="carol online")
            nsqd.publish({"user": "carol", "id": "m1", "receipt": True, "data": {"n": 1}}, topic=topic)
            nsqd.publish({"user": "dave", "id": "m2", "receipt": True, "data": {"n": 2}}, topic=topic)
            await wait_for(lambda: heard.of("undelivered", id="m2"), timeout=RECEIPT_TIMEOUT + 5,
                           what="m2 undelivered to dave, who is offline")
            delivered = sorted((e["node"], e["connections"]) for e in heard.of("delivered", id="m1"))
            assert delivered == sorted([(a.node_name, 2), (b.node_name, 1)])
            assert heard.of("delivered", id="m1", user="carol")
            assert heard.of("undelivered", id="m1") == []
            assert len(heard.of("undelivered", id="m2", user="dave")) == 1
            assert heard.of("delivered", id="m2") == []
            for t in tabs:
                frame = await t.recv()
                assert frame["push"]["pub"]["data"] == {"n": 1}
                await t.close()
        asyncio.run(scenario())
    finally:
        heard.stop()


def test_ten_thousand_receipts_to_a_thousand_users_have_one_outcome_each(start_gateway, nsqd):
    a, b, heard, topic = cluster(start_gateway, nsqd)
    users = [f"u{i}" for i in range(1000)]
    online = users[:200]        # 100 on each node; the other 800 offline
    try:
        async def scenario():
            clients = []
            for i, user in enumerate(online):
                clients.append(await tab(a if i % 2 else b, user))
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
