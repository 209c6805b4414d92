"""The core's words and each protocol's way of saying them: every reason
has a wire form in every protocol, and none is lost on the way."""
from __future__ import annotations

from gateway.core.vocabulary import Ending, Reason, SubscriptionEnd
from gateway.protocols.cable import protocol as cable
from gateway.protocols.centrifugo import model


def test_every_reason_has_a_centrifugo_code_whose_range_says_the_same_about_reconnecting():
    assert set(model.CODES) == set(Reason)
    for reason in Reason:
        disconnect = model.disconnect_of(Ending(reason))
        assert disconnect == model.CODES[reason]
        assert disconnect.reconnect == reason.reconnect, reason   # the SDKs act on the range
        assert disconnect.reason == reason.words
    assert len({d.code for d in model.CODES.values()}) == len(Reason)


def test_an_ending_keeps_its_words_and_an_applications_own_code():
    assert model.disconnect_of(Ending(Reason.INAPPROPRIATE_PROTOCOL, "JSON only")) == model.Disconnect(3506, "JSON only")
    assert model.disconnect_of(Ending(Reason.FORCE_DISCONNECT, "banned", 4501)) == model.Disconnect(4501, "banned")
    assert cable.disconnect_reason(Ending(Reason.FORCE_DISCONNECT, "banned for spam", 4501)) == ("banned_for_spam", False)


def test_every_reason_reads_as_an_action_cable_disconnect():
    for reason in Reason:
        words, reconnect = cable.disconnect_reason(Ending(reason))
        assert words and " " not in words and reconnect == reason.reconnect, reason
    assert cable.disconnect_reason(Ending(Reason.SHUTDOWN)) == ("server_restart", True)
    assert cable.disconnect_reason(Ending(Reason.INVALID_TOKEN)) == ("unauthorized", False)


def test_every_subscription_end_has_an_unsubscribe_code_in_the_range_that_means_it():
    assert set(model.UNSUBSCRIBE_CODES) == set(SubscriptionEnd)
    for end, (code, words) in model.UNSUBSCRIBE_CODES.items():
        assert (code >= 2500) == end.resubscribe and words == end.words
