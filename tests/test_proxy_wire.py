"""The proxy wire format apart from our gateway: the test backend's handlers
(and so the Python bridge's helpers) answer the request bodies Centrifugo's
documentation shows, in the shapes it documents; the gateway reads
Centrifugo's documented answers as Centrifugo does; the Protobuf and JSON
codecs carry a publisher's info; an envelope carries it through NSQ."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import ujson
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from gateway.backend.caller import ANSWER, Caller, CallerMetrics, Outcome
from gateway.core.history import Published
from gateway.core.metrics import Metrics
from gateway.nsq.envelope import BadMessage, parse_envelope
from gateway.protocols.centrifugo import proxy
from gateway.protocols.centrifugo.json_codec import JSON
from gateway.protocols.centrifugo.protobuf_codec import PROTOBUF
from gateway.protocols.centrifugo.schema import CLASSES
from pushgate_bridge import proxy as bridge
from tests.helpers import run
from tests.proxy_backend import Backend, sign

EXAMPLES = json.loads((Path(__file__).parent / "data" / "centrifugo_proxy_examples.json").read_text())
RESULT_FIELDS = {
    "connect": {"user", "expire_at", "info", "b64info", "data", "b64data", "channels", "subs", "meta"},
    "refresh": {"expired", "expire_at", "info", "b64info", "meta"},
    "subscribe": {"expire_at", "info", "b64info", "data", "b64data", "override"},
    "publish": {"data", "b64data", "skip_history", "tags", "idempotency_key"},
    "rpc": {"data", "b64data"},
    "sub_refresh": {"expired", "expire_at", "info", "b64info"},
}


def _check_shape(kind: str, answer: dict) -> None:
    assert len(answer) == 1 and set(answer) <= {"result", "error", "disconnect"}, answer
    if "result" in answer:
        assert set(answer["result"]) <= RESULT_FIELDS[kind], answer
    elif "error" in answer:
        assert type(answer["error"]["code"]) is int and type(answer["error"]["message"]) is str
    else:
        assert type(answer["disconnect"]["code"]) is int and type(answer["disconnect"]["reason"]) is str


def test_the_backend_answers_centrifugos_documented_requests():
    async def scenario():
        backend = await Backend().start()
        client = AsyncHTTPClient(force_instance=True)
        answers = {}
        try:
            for kind, body in EXAMPLES["requests"].items():
                assert set(body) <= set(EXAMPLES["fields"][kind]), kind
                response = await client.fetch(HTTPRequest(
                    backend.url(kind), method="POST", body=json.dumps(body),
                    headers={"Content-Type": "application/json", "Cookie": f"session={sign('56')}"}))
                assert response.code == 200 and response.headers["Content-Type"] == "application/json"
                answers[kind] = json.loads(response.body)
                _check_shape(kind, answers[kind])
            # Without the cookie a connect is refused as the documentation shows it.
            response = await client.fetch(HTTPRequest(backend.url("connect"), method="POST",
                                                      body=json.dumps(EXAMPLES["requests"]["connect"])))
            assert json.loads(response.body) == EXAMPLES["answers"]["connect_refused"]
        finally:
            client.close()
            await backend.stop()
        return answers
    answers = run(scenario())
    assert answers["connect"]["result"]["user"] == "56"
    assert answers["subscribe"]["result"]["data"] == {"welcome": "chat:index", "user": "56"}
    assert answers["publish"]["result"]["data"] == {"text": None, "by": "56"}
    assert answers["rpc"] == EXAMPLES["answers"]["rpc"]
    assert type(answers["refresh"]["result"]["expire_at"]) is int
    assert type(answers["sub_refresh"]["result"]["expire_at"]) is int


def test_the_bridge_builds_the_documented_answers():
    assert bridge.result(user="56") == EXAMPLES["answers"]["connect"]
    assert bridge.result(expire_at=1565436268) == EXAMPLES["answers"]["refresh"]
    assert bridge.result() == EXAMPLES["answers"]["subscribe"]
    assert bridge.result(data={"answer": "2019"}) == EXAMPLES["answers"]["rpc"]
    assert bridge.disconnect(4501, "unauthorized") == EXAMPLES["answers"]["connect_refused"]
    assert bridge.error(403, "permission denied") == EXAMPLES["answers"]["subscribe_refused"]
    assert bridge.result(data=b"\x00\x01", subs={"a": {"info": b"i"}}) == {
        "result": {"b64data": "AAE=", "subs": {"a": {"b64info": "aQ=="}}}}
    call = bridge.parse_request(json.dumps({**EXAMPLES["requests"]["rpc"]}), {"cookie": "x=1"})
    assert call.method == "getCurrentPrice" and call.data == {"params": {"object_id": 12}}
    assert call.headers.get("Cookie") == "x=1" and not call.binary
    assert bridge.parse_request('{"encoding":"binary","b64data":"AAE="}').data == b"\x00\x01"
    with pytest.raises(bridge.BadRequest):
        bridge.parse_request("[1]")


class _Recording(Caller):
    def __init__(self) -> None:
        super().__init__("test", "http://127.0.0.1:1/", CallerMetrics(Metrics().registry), timeout=1,
                         concurrency=1, queue=1)
        self.reasons: list[str] = []

    def refused(self, reason: str) -> None:
        self.reasons.append(reason)


def test_the_gateway_reads_centrifugos_documented_answers():
    caller = _Recording()
    answers = EXAMPLES["answers"]
    assert proxy.decide(caller, Outcome(ANSWER, answers["connect"])).result == {"user": "56"}
    assert proxy.decide(caller, Outcome(ANSWER, answers["rpc"])).result == {"data": {"answer": "2019"}}
    refused = proxy.decide(caller, Outcome(ANSWER, answers["subscribe_refused"]))
    assert refused.error is not None and (refused.error.code, refused.error.message) == (403, "permission denied")
    gone = proxy.decide(caller, Outcome(ANSWER, answers["connect_refused"]))
    assert gone.disconnect == (4501, "unauthorized") and not gone.disconnect.reconnect
    # Disconnect before error before result, as Centrifugo reads them; {} is an empty result.
    both = proxy.decide(caller, Outcome(ANSWER, {**answers["subscribe_refused"], **answers["connect_refused"]}))
    assert both.disconnect is not None and both.error is None
    assert proxy.decide(caller, Outcome(ANSWER, {})).result == {}
    assert caller.reasons == []
    # Garbage is refused with a reason, never applied.
    for bad in ({"error": {"code": "403"}}, {"error": {"code": 0, "message": "x"}}, {"result": [1]},
                {"disconnect": {"code": 1000, "reason": "x"}}, {"error": "no"}):
        assert proxy.decide(caller, Outcome(ANSWER, bad)).failed, bad
    assert len(caller.reasons) == 5
    assert proxy.decide(caller, Outcome("timeout")).failed


def test_a_publication_carries_its_publishers_info_in_both_encodings():
    info = {"user": "alice", "client": "c-1", "conn_info": b'{"name":"Alice"}'}
    data = Published(b'{"t":1}')
    data.info = info
    assert ujson.loads(JSON.pub_push_full("room", data, 7)) == {"push": {"channel": "room", "pub": {
        "data": {"t": 1}, "info": {"user": "alice", "client": "c-1", "conn_info": {"name": "Alice"}}, "offset": 7}}}
    raw = PROTOBUF.pub_push_full("room", data, 7)
    reply = CLASSES["Reply"].FromString(raw[1:])
    pub = reply.push.pub
    assert reply.push.channel == "room" and pub.data == b'{"t":1}' and pub.offset == 7
    assert (pub.info.user, pub.info.client, pub.info.conn_info) == ("alice", "c-1", b'{"name":"Alice"}')


def test_an_envelope_carries_the_publisher_and_skip_history():
    delivery = parse_envelope(b'{"channel":"room","data":1,"info":{"user":"a","client":"c","conn_info":{"x":1}},'
                              b'"skip_history":true}')
    assert delivery.info == {"user": "a", "client": "c", "conn_info": b'{"x":1}'} and delivery.skip_history
    plain = parse_envelope(b'{"channel":"room","data":1}')
    assert plain.info is None and not plain.skip_history
    for bad in (b'{"channel":"r","data":1,"info":[]}', b'{"channel":"r","data":1,"info":{"user":1}}',
                b'{"channel":"r","data":1,"skip_history":"yes"}'):
        with pytest.raises(BadMessage):
            parse_envelope(bad)


def test_history_keeps_a_client_publications_publisher():
    from gateway.core.history import History, Publication, Retention
    from gateway.core.hub import Hub
    from gateway.nsq.ingest import Ingest
    history = History(Retention(10, 300), margin_ns=0)
    ingest = Ingest(Hub(), Metrics(), history, envelope_topic="pushgate", mapped={}, max_message_bytes=65536,
                    max_message_age=30, dedupe_window=10, on_gap=lambda channels: None, clock=lambda: 2 * 10**18)
    body = (b'{"channel":"room","data":{"t":1},"info":{"user":"a","client":"c","conn_info":{"n":1}}}')
    ingest.handle("pushgate", body, 2 * 10**18 - 10**6, "nsqd", b"id1")
    ingest.handle("pushgate", b'{"channel":"room","data":{"t":2}}', 2 * 10**18 - 10**5, "nsqd", b"id2")
    pubs = history.publications("room")
    assert len(pubs) == 2 and all(isinstance(p, Publication) for p in pubs)
    rendered = ujson.loads(JSON.reply(5, "history", {"publications": pubs}))["history"]["publications"]
    assert rendered[0]["info"] == {"user": "a", "client": "c", "conn_info": {"n": 1}}
    assert rendered[0]["data"] == {"t": 1} and "info" not in rendered[1]
    reply = CLASSES["Reply"].FromString(PROTOBUF.reply(5, "history", {"publications": pubs})[1:])
    first, second = reply.history.publications
    assert first.info.user == "a" and first.info.conn_info == b'{"n":1}' and first.data == b'{"t":1}'
    assert not second.HasField("info")
