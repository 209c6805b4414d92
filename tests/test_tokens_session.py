"""Token features as a session applies them, in process: a connect (or a
/cable connection) whose kid the JWKS store is fetching waits for it with
what came behind it; the subs, expire_at and meta claims in the connect."""
from __future__ import annotations

import asyncio
import json
import time

import jwt

from auth import TokenVerifier
from auth.jwks import KeyStore
from gateway.backend.jwks import fetcher
from gateway.core.session import CLOSED, CONNECTED
from gateway.protocols.centrifugo import proxy
from tests.inprocess import frame, make_host, open_cable, open_session
from tests.jwks_server import JwksServer
from tests.stack import SECRET


def with_jwks(test, **overrides):
    async def main():
        server = await JwksServer().start()
        server.add("a", "EC")
        host = make_host(**overrides)
        store = KeyStore(fetcher(server.url), url=server.url)
        host.verifier = TokenVerifier(secret=SECRET, jwks=store)
        try:
            await test(server, host, store)
        finally:
            await server.stop()
    asyncio.run(main())


async def until(check, what: str) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_connect_with_an_unknown_kid_waits_for_the_key_set_and_what_follows_waits_behind_it():
    async def test(server, host, store):
        session, transport = open_session(host)
        session.handle_frame(frame({"id": 1, "connect": {"token": server.token("a", {"sub": "ann"})}},
                                   {"id": 2, "subscribe": {"channel": "news"}}))
        session.handle_frame(frame({"id": 3, "subscribe": {"channel": "chat:x"}}))   # while it waits
        assert session.state is not CONNECTED and transport.messages() == []
        await until(lambda: session.state is CONNECTED and len(transport.sent) == 3, "the connect and subscribes")
        assert [m["id"] for m in transport.messages()] == [1, 2, 3]
        other, other_transport = open_session(host)   # a known kid now: at once
        other.handle_frame(frame({"id": 1, "connect": {"token": server.token("a", {"sub": "bo"})}}))
        assert other.state is CONNECTED and server.hits == 1
    with_jwks(test)


def test_a_waiting_connection_that_closes_leaves_the_fetch_to_the_others():
    async def test(server, host, store):
        gone, _ = open_session(host)
        stays, transport = open_session(host)
        for session in (gone, stays):
            session.handle_frame(frame({"id": 1, "connect": {"token": server.token("a", {"sub": "ann"})}}))
        gone.transport_closed()
        await until(lambda: stays.state is CONNECTED, "the other connection")
        assert gone.state is CLOSED and server.hits == 1
    with_jwks(test)


def test_a_subscription_token_and_a_refresh_token_with_a_new_kid_wait_for_the_key_set_too():
    async def test(server, host, store):
        session, transport = open_session(host)
        session.handle_frame(frame({"id": 1, "connect": {"token": jwt.encode({"sub": "ann"}, SECRET)}}))
        transport.messages()
        server.add("b", "RSA")
        store._min_interval = 0   # no wait between fetches here: each new kid is fetched
        session.handle_frame(frame(
            {"id": 2, "subscribe": {"channel": "private:x",
                                    "token": server.token("b", {"sub": "ann", "channel": "private:x"})}},
            {"id": 3, "subscribe": {"channel": "news"}}))
        await until(lambda: len(transport.sent) == 2, "both subscribes answered")
        replies = transport.messages()
        assert [m["id"] for m in replies] == [2, 3] and "error" not in replies[0]
        server.add("c", "EC")
        session.handle_frame(frame({"id": 4, "refresh": {"token": server.token("c", {"sub": "ann",
                                                                                    "exp": int(time.time()) + 60})}}))
        await until(lambda: transport.sent, "the refresh answered")
        assert transport.messages()[0]["refresh"]["expires"] is True
    with_jwks(test)


def test_an_unknown_kid_after_the_fetch_is_closed_as_invalid_token():
    async def test(server, host, store):
        server.add("b", publish=False)
        session, transport = open_session(host)
        session.handle_frame(frame({"id": 1, "connect": {"token": server.token("b", {"sub": "ann"})}}))
        await until(lambda: session.state is CLOSED, "the refusal")
        assert transport.closed[0] == 3500
        assert host.metrics.token_errors.labels("invalid")._value.get() == 1
    with_jwks(test)


def test_a_cable_connection_with_an_unknown_kid_waits_too():
    async def test(server, host, store):
        session, transport = open_cable(host, server.token("a", {"sub": "ann"}))
        assert transport.raw() == []
        await until(lambda: session.state is CONNECTED, "welcome")
        assert transport.messages()[0]["type"] == "welcome"
    with_jwks(test)


def test_the_subs_claim_is_the_connect_replys_subs_with_their_data_and_meta_rides_on_proxy_calls():
    host = make_host(subscribe_proxy_url="http://127.0.0.1:1/subscribe", subscribe_proxy=["room:*"],
                     presence=["news", "chat:*"])
    session, transport = open_session(host)
    token = jwt.encode({"sub": "ann", "channels": ["ignored"], "meta": {"plan": "pro"},
                        "subs": {"news": {"data": {"hi": 1}, "info": {"seat": 3}},
                                 "chat:a": {"override": {"presence": {"value": False}}}}}, SECRET)
    session.handle_frame(frame({"id": 1, "connect": {"token": token}}))
    reply = transport.messages()[0]["connect"]
    assert set(reply["subs"]) == {"#ann", "news", "chat:a"} and reply["subs"]["news"]["data"] == {"hi": 1}
    assert session.channels == {"#ann", "news", "chat:a"}
    assert proxy.request(session)["meta"] == {"plan": "pro"}
    (entry,) = host.presence.clients("news").values()
    assert entry["user"] == "ann" and json.loads(entry["chan_info"]) == {"seat": 3}
    assert host.presence.clients("chat:a") == {}   # override.presence false


def test_a_json_client_cannot_be_sent_binary_subs_data():
    session, transport = open_session(make_host())
    token = jwt.encode({"sub": "ann", "subs": {"news": {"b64data": "AAEC"}}}, SECRET)
    session.handle_frame(frame({"id": 1, "connect": {"token": token}}))
    assert session.state is CLOSED and transport.closed[0] == 3500


def test_expire_at_sets_the_connections_ttl_and_one_in_the_past_is_error_110():
    now = int(time.time())
    for expire_at, answer in ((now + 100, "ttl"), (0, None), (now - 5, 110)):
        session, transport = open_session(make_host())
        token = jwt.encode({"sub": "ann", "exp": now + 3600, "expire_at": expire_at}, SECRET)
        session.handle_frame(frame({"id": 1, "connect": {"token": token}}))
        message = transport.messages()[0]
        if answer == 110:
            assert message["error"]["code"] == 110
        elif answer == "ttl":
            assert message["connect"]["expires"] and 95 <= message["connect"]["ttl"] <= 100
        else:
            assert "expires" not in message["connect"] and session.expiry is None


def test_a_subscription_tokens_info_data_and_override_apply_to_its_subscription():
    host = make_host(presence=["private:*"])
    session, transport = open_session(host)
    session.handle_frame(frame({"id": 1, "connect": {"token": jwt.encode({"sub": "ann"}, SECRET)}}))
    transport.messages()
    grant = jwt.encode({"sub": "ann", "channel": "private:a", "info": {"seat": 1}, "data": {"hi": "a"}}, SECRET)
    hidden = jwt.encode({"sub": "ann", "channel": "private:b", "override": {"presence": {"value": False}}}, SECRET)
    binary = jwt.encode({"sub": "ann", "channel": "private:c", "b64data": "AAEC"}, SECRET)
    session.handle_frame(frame({"id": 2, "subscribe": {"channel": "private:a", "token": grant}},
                               {"id": 3, "subscribe": {"channel": "private:b", "token": hidden}},
                               {"id": 4, "subscribe": {"channel": "private:c", "token": binary}}))
    a, b, c = transport.messages()
    assert a["subscribe"]["data"] == {"hi": "a"} and "error" not in b and c["error"]["code"] == 103
    (entry,) = host.presence.clients("private:a").values()
    assert json.loads(entry["chan_info"]) == {"seat": 1}
    assert host.presence.clients("private:b") == {} and session.channels == {"#ann", "private:a", "private:b"}


def test_subs_info_must_be_json_for_every_client_and_data_for_a_json_client():
    from tests.inprocess import WIRE_PROTOBUF
    from tests.test_core import pb_command
    for info, data, ok in (("AAEC", None, False), (None, "AAEC", True)):
        options = {k: v for k, v in (("b64info", info), ("b64data", data)) if v}
        session, transport = open_session(make_host(), WIRE_PROTOBUF)
        token = jwt.encode({"sub": "ann", "subs": {"news": options}}, SECRET)
        session.handle_frame(pb_command(1, "connect", token=token))
        assert (session.state is CONNECTED) is ok, options


def test_a_subscription_tokens_override_follows_every_rule_of_the_server_apis():
    # Before, only override.presence applied: force_recovery false still
    # answered recoverable, and presence true on a channel without presence
    # was taken without a word.
    host = make_host(presence=["private:p*"])
    session, transport = open_session(host)
    session.handle_frame(frame({"id": 1, "connect": {"token": jwt.encode({"sub": "ann"}, SECRET)}}))
    transport.messages()
    assert host.history.enabled("private:a")
    plain = jwt.encode({"sub": "ann", "channel": "private:a"}, SECRET)
    no_recovery = jwt.encode({"sub": "ann", "channel": "private:b",
                              "override": {"force_recovery": {"value": False}}}, SECRET)
    unhonoured = jwt.encode({"sub": "ann", "channel": "private:c",
                             "override": {"presence": {"value": True}}}, SECRET)
    unknown = jwt.encode({"sub": "ann", "channel": "private:d", "override": {"flying": {"value": True}}}, SECRET)
    session.handle_frame(frame({"id": 2, "subscribe": {"channel": "private:a", "token": plain}},
                               {"id": 3, "subscribe": {"channel": "private:b", "token": no_recovery}},
                               {"id": 4, "subscribe": {"channel": "private:c", "token": unhonoured}},
                               {"id": 5, "subscribe": {"channel": "private:d", "token": unknown}}))
    a, b, c, d = transport.messages()
    assert a["subscribe"]["recoverable"] is True
    assert "recoverable" not in b["subscribe"] and b["subscribe"]["positioned"] is True
    assert c["error"]["code"] == 108 and "presence" in c["error"]["message"]
    assert d["error"]["code"] == 108 and "flying" in d["error"]["message"]
    assert session.state is CONNECTED and session.channels == {"#ann", "private:a", "private:b"}


def test_the_subs_claims_override_follows_every_rule_of_the_server_apis():
    host = make_host(presence=["chat:*"])
    session, transport = open_session(host)
    token = jwt.encode({"sub": "ann", "subs": {"news": {"override": {"force_recovery": {"value": False}}},
                                               "chat:a": {}}}, SECRET)
    session.handle_frame(frame({"id": 1, "connect": {"token": token}}))
    subs = transport.messages()[0]["connect"]["subs"]
    assert "recoverable" not in subs["news"] and subs["news"]["positioned"] is True
    assert subs["chat:a"]["recoverable"] is True
    # One it cannot honour (presence true where presence is not kept): the token is refused.
    session, transport = open_session(host)
    token = jwt.encode({"sub": "ann", "subs": {"news": {"override": {"presence": {"value": True}}}}}, SECRET)
    session.handle_frame(frame({"id": 1, "connect": {"token": token}}))
    assert session.state is CLOSED and transport.closed[0] == 3500
