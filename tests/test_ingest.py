"""Ingest: size, age and dedupe decisions on what NSQ hands the gateway."""
import time

import ujson

from gateway.core.history import History, Retention
from gateway.core.hub import Hub
from gateway.nsq.ingest import Ingest
from gateway.core.metrics import Metrics


def make_ingest(**overrides) -> Ingest:
    options = dict(envelope_topic="pushgate", mapped={"prices": "prices"}, max_message_bytes=1024,
                   max_message_age=30.0, dedupe_window=100)
    options.update(overrides)
    return Ingest(Hub(), Metrics(), History(Retention(100, 300)), **options)


def dropped(ingest: Ingest, reason: str) -> float:
    return ingest.metrics.registry.get_sample_value("pushgate_nsq_dropped_total", {"reason": reason}) or 0




def test_nsq_ids_are_only_unique_per_topic_and_nsqd():
    now = time.time_ns()
    ingest = make_ingest()
    body = ujson.dumps({"channel": "c", "data": 1}).encode()
    ingest.handle("pushgate", body, now, "nsqd-a:4150", b"0001")
    ingest.handle("prices", b"1.08", now, "nsqd-a:4150", b"0001")     # same id, other topic
    ingest.handle("pushgate", body, now, "nsqd-b:4150", b"0001")      # same id, other nsqd
    assert dropped(ingest, "duplicate") == 0
    ingest.handle("pushgate", body, now, "nsqd-a:4150", b"0001")      # a redelivery
    assert dropped(ingest, "duplicate") == 1


def test_publisher_id_dedupes_across_nsqds():
    now = time.time_ns()
    ingest = make_ingest()
    body = ujson.dumps({"user": "u", "id": "evt", "data": 1}).encode()
    ingest.handle("pushgate", body, now, "nsqd-a:4150", b"0001")
    ingest.handle("pushgate", body, now, "nsqd-b:4150", b"0777")
    assert dropped(ingest, "duplicate") == 1


def test_size_and_age_limits():
    now = time.time_ns()
    ingest = make_ingest(max_message_bytes=64, max_message_age=5.0)
    ingest.handle("prices", b"1" * 65, now, "n", b"1")
    ingest.handle("prices", b"1", now - 6 * 10**9, "n", b"2")
    ingest.handle("prices", b"1", now - 4 * 10**9, "n", b"3")
    assert (dropped(ingest, "too_big"), dropped(ingest, "stale")) == (1, 1)
    assert ingest.metrics.registry.get_sample_value("pushgate_publications_total") == 1


def test_a_dropped_message_that_names_channels_is_a_gap_in_their_history():
    now = time.time_ns()
    gaps = []
    ingest = make_ingest(max_message_age=5.0, on_gap=gaps.append)
    history = ingest.history
    epoch, before = history.top("news", now)
    history.continuity_from(now - 60 * 10**9)
    # Stale, too big, and invalid data: each names channels and leaves a gap there.
    ingest.handle("pushgate", ujson.dumps({"channel": "news", "data": 1}).encode(), now - 40 * 10**9, "n", b"1")
    ingest.handle("pushgate", b'{"users": [7, "eight"], "data": NaN}', now, "n", b"2")
    ingest.handle("prices", b"1" * 2000, now, "n", b"3")
    assert gaps == [("news",), ("#7", "#eight"), ("prices",)]
    assert not history.recover("news", epoch, before, now + 10**9).recovered
    # Garbage that names no channel could be delivered by nobody: no gap.
    ingest.handle("pushgate", b"not json", now, "n", b"4")
    ingest.handle("pushgate", b'{"channel": "", "data": 1}', now, "n", b"5")
    assert len(gaps) == 3


def test_only_interchangeable_json_is_delivered():
    now = time.time_ns()
    ingest = make_ingest()
    for i, body in enumerate([b'{"channel":"c","data":NaN}', b'{"channel":"c","data":[1e999]}',
                              b'{"channel":"c","data":-Infinity}', b'{"channel":"c","data":"\\ud800"}',
                              b'{"channel":"c","data":{"\\udc00":1}}']):
        ingest.handle("pushgate", body, now, "n", b"%d" % i)
    assert dropped(ingest, "invalid_json") == 5
    assert not ingest.metrics.registry.get_sample_value("pushgate_publications_total")
    ingest.handle("pushgate", b'{"channel":"c","data":"\\ud83d\\ude00 1.5e300"}', now, "n", b"ok")
    assert ingest.metrics.registry.get_sample_value("pushgate_publications_total") == 1


class _Subscriber:
    """A hub subscriber that keeps what it is pushed (the hub needs only push)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def push(self, frame: bytes) -> None:
        self.frames.append(frame)


class _Wire:
    class codec:
        @staticmethod
        def pub_push(channel, data, offset):
            return data

    @staticmethod
    def frame(message):
        return message


def test_exclude_skips_the_named_connection_only_and_history_keeps_it():
    now = time.time_ns()
    sender, other = _Subscriber(), _Subscriber()
    sockets = {"sid-1": sender}
    ingest = make_ingest(sockets=sockets)
    for subscriber in (sender, other):
        ingest.hub.subscribe("room", subscriber, _Wire)
    body = ujson.dumps({"channel": "room", "data": {"n": 1}, "exclude": "sid-1"}).encode()
    assert ingest.handle("pushgate", body, now, "nsqd:4150", b"0001") == 1
    assert sender.frames == [] and other.frames == [b'{"n":1}']
    assert [p.data for p in ingest.history.publications("room")] == [b'{"n":1}']   # kept for recovery
    # An id no connection here has excludes nobody; a malformed one drops the message.
    ingest.handle("pushgate", ujson.dumps({"channel": "room", "data": 2, "exclude": "elsewhere"}).encode(), now,
                  "nsqd:4150", b"0002")
    assert sender.frames == [b"2"]
    for bad in (5, "", "x" * 257):
        ingest.handle("pushgate", ujson.dumps({"channel": "room", "data": 3, "exclude": bad}).encode(), now,
                      "nsqd:4150", bad.__repr__().encode())
    assert dropped(ingest, "bad_envelope") == 3
