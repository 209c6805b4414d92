"""Parsing what arrives from NSQ, and remembering recent ids."""
import pytest
import ujson

from gateway.nsq.dedupe import RecentIds
from gateway.nsq.envelope import BadMessage, Delivery, parse_envelope, parse_mapped


def body(**fields) -> bytes:
    return ujson.dumps(fields).encode()


def test_targets_combine_and_repeat_only_once():
    d = parse_envelope(body(channel="news", channels=["news", "sport"], user=42, users=["7"], data={"a": 1}, id=9))
    assert d == Delivery(("news", "sport", "#42", "#7"), b'{"a":1}', "9")


def test_data_may_be_any_json_value_including_null():
    assert parse_envelope(body(channel="c", data=None)).data == b"null"
    assert parse_envelope(body(channel="c", data="line\nbreak")).data == b'"line\\nbreak"'


@pytest.mark.parametrize("raw,reason", [
    (b"{", "not_json"), (b"[]", "bad_envelope"), (body(channel="c"), "bad_envelope"),
    (body(data=1), "no_target"), (body(channel="", data=1), "bad_envelope"),
    (body(channel=1, data=1), "bad_envelope"), (body(channels="c", data=1), "bad_envelope"),
    (body(user=True, data=1), "bad_envelope"), (body(users=[None], data=1), "bad_envelope"),
    (body(channel="c", id="", data=1), "bad_envelope"), (body(channel="c" * 256, data=1), "bad_envelope"),
    (body(channel="c", id={"x": 1}, data=1), "bad_envelope"), (body(channels=[], data=1), "no_target"),
])
def test_bad_envelopes(raw, reason):
    with pytest.raises(BadMessage) as exc:
        parse_envelope(raw)
    assert exc.value.reason == reason


def test_mapped_topic_bodies():
    assert parse_mapped(b' {"p": 1} ', "prices") == Delivery(("prices",), b'{"p":1}', None)
    assert parse_mapped(b"tick 1.08", "prices").data == b'"tick 1.08"'
    with pytest.raises(BadMessage):
        parse_mapped(b"\xff\xfe", "prices")


def test_recent_ids_forget_the_oldest_first():
    recent = RecentIds(3)
    assert [recent.seen(k) for k in ("a", "b", "a", "c", "d")] == [False, False, True, False, False]
    assert len(recent) == 3
    assert recent.seen("a") is False  # evicted by "d"
    assert recent.seen("d") is True


def test_a_personal_channel_is_foreign_to_everyone_but_its_user():
    from gateway.core.channels import foreign_personal
    assert not foreign_personal("#alice", "alice")
    assert foreign_personal("#alice", "bob")
    assert foreign_personal("#", "")          # an anonymous user has no personal channel
    assert foreign_personal("#alice", "")
    assert not foreign_personal("news", "") and not foreign_personal("news", "alice")
