"""Every input that can carry a lone surrogate or an absurd number, in
process: each is answered as bad input (its protocol's answer for it), never
as an internal error, and logs no traceback.

JSON lets a client write any UTF-16 code unit as ``\\ud800``, which Python
decodes into a string no UTF-8 encoder takes, and numbers of any size
(``1e400`` reads as Infinity, ``1`` followed by 400 zeros as an int no
float holds). The doors: the Centrifugo protocol's commands (tokens in
connect, refresh, subscribe, sub_refresh), Action Cable's commands (history
``since``) and its ``/events`` request (``Last-Event-ID``, ``history_since``),
``/emulation`` bodies and request headers. The server API's bodies are in
tests/test_server_api_core.py.
"""
from __future__ import annotations

import json
import logging

import pytest

from auth.tokens import TokenInvalid, TokenVerifier, sign
from gateway.core.session import CLOSED, CONNECTED, MAX_TTL
from gateway.protocols.cable.protocol import EXT
from gateway.protocols.cable.sse import history_of
from gateway.protocols.centrifugo import model
from gateway.protocols.centrifugo.emulation import parse
from gateway.transports.endpoint import HttpRefusal, Request
from gateway.transports.http import over
from tests.inprocess import WIRE_PROTOBUF, FakeClock, frame, make_host, open_cable, open_session
from tests.stack import SECRET
from tests.test_core import pb_command, pb_messages

LONE = "\ud800"
HUGE = 10**400          # an integer no float holds
FAR = 1e300             # a float, but no Unix time


@pytest.fixture
def no_traceback(caplog):
    """Fails the test if anything was logged at ERROR or with a traceback."""
    caplog.set_level(logging.WARNING)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


def connected(host, wire=None):
    session, transport = open_session(host, *([wire] if wire else []))
    session.handle_frame(frame({"id": 1, "connect": {"token": sign({"sub": "u"}, SECRET)}}))
    assert session.state is CONNECTED
    transport.messages()
    return session, transport


# --- tokens ------------------------------------------------------------------------------

@pytest.mark.parametrize("token", [
    "abc" + LONE, "a" + LONE + ".b.c", "eyJhbGciOiJIUzI1NiJ9." + LONE + ".sig",
    sign({"sub": "u", "exp": HUGE}, SECRET), sign({"sub": "u", "nbf": -HUGE}, SECRET),
])
def test_tokens_with_a_lone_surrogate_or_an_absurd_time_are_invalid(token, no_traceback):
    with pytest.raises(TokenInvalid):
        TokenVerifier(secret=SECRET).verify_connection(token)


@pytest.mark.parametrize("token", ["abc" + LONE, sign({"sub": "u", "exp": HUGE}, SECRET)])
def test_a_connect_with_such_a_token_is_closed_as_invalid_token(token, no_traceback):
    session, transport = open_session(make_host(FakeClock()))
    session.handle_frame(frame({"id": 1, "connect": {"token": token}}))
    assert transport.closed == model.DISCONNECT_INVALID_TOKEN


def test_refresh_and_subscription_tokens_with_a_lone_surrogate_are_refused(no_traceback):
    host = make_host(FakeClock())
    session, transport = connected(host)
    session.handle_frame(frame({"id": 2, "subscribe": {"channel": "private", "token": "x" + LONE}}))
    assert transport.messages() == [{"id": 2, "error": {"code": 103, "message": "permission denied"}}]
    session.handle_frame(frame({"id": 3, "sub_refresh": {"channel": "#u", "token": "x" + LONE}}))
    assert transport.messages() == [{"id": 3, "error": {"code": 103, "message": "permission denied"}}]
    session.handle_frame(frame({"id": 4, "refresh": {"token": "x" + LONE}}))
    assert transport.closed == model.DISCONNECT_INVALID_TOKEN


def test_a_token_that_expires_in_the_year_9999_is_a_ttl_the_protocol_can_carry(no_traceback):
    # Protobuf's ttl is a uint32 (about 136 years): "never", not an internal error.
    clock = FakeClock()
    host = make_host(clock)
    for exp in (253402300799, FAR):
        session, transport = open_session(host, WIRE_PROTOBUF)
        session.handle_frame(pb_command(1, "connect", token=sign({"sub": "u", "exp": exp}, SECRET)))
        assert session.state is CONNECTED, transport.closed
        assert pb_messages(transport)[0].connect.ttl == MAX_TTL


def test_a_cable_connection_with_such_a_token_is_unauthorized(no_traceback):
    session, transport = open_cable(make_host(FakeClock()), "abc" + LONE, EXT)
    assert transport.messages() == [{"type": "disconnect", "reason": "unauthorized", "reconnect": False}]


# --- Action Cable ----------------------------------------------------------------------------

IDENTIFIER = json.dumps({"channel": "$pubsub", "stream_name": "news"})


@pytest.mark.parametrize("since", ["1e300", "1e400", "-1e400", "1" + "0" * 400, "NaN"])
def test_a_history_since_that_is_not_a_time_is_an_invalid_request_not_a_reconnect(since, no_traceback):
    host = make_host(FakeClock(), public_channels="news")
    for first in (True, False):
        session, transport = open_cable(host, sign({"sub": "u"}, SECRET), EXT)
        transport.messages()
        if not first:   # a history command on a subscription, as after a restore
            session.handle_frame(json.dumps({"command": "subscribe", "identifier": IDENTIFIER}))
            transport.messages()
        command = "subscribe" if first else "history"
        session.handle_frame('{"command":"%s","identifier":%s,"history":{"since":%s}}'
                             % (command, json.dumps(IDENTIFIER), since))
        # Not internal_server_error with reconnect: true, which @anycable/web answers
        # by coming back to ask the same again.
        assert transport.messages()[-1] == {"type": "disconnect", "reason": "invalid_request", "reconnect": False}
        assert session.state is CLOSED


def test_since_false_and_a_real_time_are_still_history_requests(no_traceback):
    clock = FakeClock()
    host = make_host(clock, public_channels="news")
    host.history.continuity_from(clock.ns() - 60 * 10**9)
    for since in ("false", "%d" % (clock.wall() - 10)):
        session, transport = open_cable(host, sign({"sub": "u"}, SECRET), EXT)
        transport.messages()
        session.handle_frame('{"command":"subscribe","identifier":%s,"history":{"since":%s}}'
                             % (json.dumps(IDENTIFIER), since))
        assert session.state is CONNECTED
        assert transport.messages()[0]["type"] == "confirm_subscription"


@pytest.mark.parametrize("headers, query", [
    ({"last-event-id": "\xb2/1/news"}, {}),            # "²": str.isdigit() says yes, int() says no
    ({"last-event-id": "\u0661\u0662/1/news"}, {}),    # Arabic-Indic digits
    ({}, {"history_since": ["\xb2"]}),
    ({}, {"history_since": ["1" * 5000]}),             # more digits than int() reads
])
def test_events_positions_that_are_not_ascii_digits_are_400(headers, query, no_traceback):
    request = Request("GET", "/events", headers, {"stream": ["news"], **query})
    answer = history_of(request)
    assert isinstance(answer, HttpRefusal) and answer.status == 400


@pytest.mark.parametrize("length, too_big", [("\xb2", False), ("1" * 5000, True), ("9" * 23, True),
                                             ("65537", True), ("65536", False)])
def test_a_content_length_is_read_without_internal_errors(length, too_big):
    # "²" is no length: left to Tornado, which answers 400. Digits beyond what
    # int() reads are a length over any limit: 413.
    assert over(length, 65536) is too_big


# --- /emulation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("body, problem", [
    ({"node": "a", "session": "s", "data": LONE}, "lone surrogate"),
    ({"node": "a" + LONE, "session": "s", "data": "{}"}, "node"),
    ({"node": "a" * 60 + LONE, "session": "s", "data": "{}"}, "node"),
    ({"node": "a", "session": "s" + LONE, "data": "{}"}, "session"),
    ({"node": "a", "session": "s", "data": "\x01" * 1000}, "control characters"),
])
def test_emulation_bodies_with_a_lone_surrogate_or_raw_control_characters_are_400(body, problem):
    with pytest.raises(ValueError, match=problem):
        parse(json.dumps(body).encode(), "application/json")
