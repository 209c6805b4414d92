"""Per-subscription overrides (Centrifugo's ``SubscribeOptionOverride``), as
pushgate can honour them.

Centrifugo's channel options are per namespace, and a subscription may
override five of them: ``presence``, ``join_leave``,
``force_push_join_leave``, ``force_recovery``, ``force_positioning``, each
as ``{"value": true|false}``. Here the same options are per channel pattern
(``--presence``, ``--join-leave``, history), shared by every node, so an
override is honoured where one subscription can differ from the channel's
rule without the other nodes knowing, and refused (:class:`Unhonoured`,
with the reason) where it cannot:

* ``presence: false`` keeps the subscriber out of the channel's presence
  (and so out of its joins and leaves: pushgate announces them from presence
  entries); ``true`` where ``--presence`` keeps the channel changes nothing,
  elsewhere it is refused (the other nodes do not track the channel).
* ``join_leave: false`` keeps the subscriber's joins and leaves unannounced
  on a ``--join-leave`` channel that ``--presence`` does not list; on one it
  does, a subscriber in presence is announced, so it is refused unless
  ``presence`` is false too. ``true`` needs a ``--join-leave`` channel.
* ``force_push_join_leave``: every subscriber of a ``--join-leave`` channel
  gets its joins and leaves, and no subscriber of another channel can:
  ``true`` there and ``false`` elsewhere change nothing, the rest is refused.
* ``force_recovery: false`` answers without ``recoverable`` (the client
  does not recover, and a recover it asks for is not attempted); ``true``
  needs a channel that keeps history.
* ``force_positioning``: a channel that keeps history positions every
  subscriber (a loss this node detects ends the subscription), so ``false``
  is refused there; ``true`` needs history.

Pure: the presence rules and history are passed in.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from gateway.core.history import History
    from gateway.core.presence import ChannelPresence

OVERRIDES = ("presence", "join_leave", "force_push_join_leave", "force_recovery", "force_positioning")


class SubscriptionOptions(NamedTuple):
    """What an override changes for one subscription."""

    in_presence: bool = True   # listed in presence, and its joins and leaves announced
    recoverable: bool = True   # the result says ``recoverable`` (where the channel keeps history)


DEFAULT = SubscriptionOptions()


class BadOverride(ValueError):
    """An override of the wrong shape (the server API: 107; a proxy: garbage; a token: refused)."""


class Unhonoured(ValueError):
    """An override pushgate cannot honour for this channel (the server API: 108; a token: refused)."""


def flags(override: object) -> dict[str, bool]:
    """``override`` as {option: value}; raises BadOverride."""
    if override is None:
        return {}
    if type(override) is not dict:
        raise BadOverride("override is not an object")
    out = {}
    for key, value in override.items():
        if key not in OVERRIDES:
            raise BadOverride(f"override.{str(key)[:40]} is not one of {', '.join(OVERRIDES)}")
        if value is None:
            continue
        if type(value) is not dict or type(value.get("value", False)) is not bool:
            raise BadOverride(f'override.{key} must be {{"value": true or false}}')
        out[key] = value.get("value", False)
    return out


def options_for(override: object, channel: str, presence: ChannelPresence, history: History) -> SubscriptionOptions:
    """The options of a subscription to ``channel`` with ``override`` (Centrifugo's
    JSON shape, or None); raises BadOverride or Unhonoured with the reason."""
    given = flags(override)
    if not given:
        return DEFAULT
    listed, announced, kept = presence.enabled(channel), presence.announces(channel), history.enabled(channel)
    in_presence = given.get("presence")
    join_leave = given.get("join_leave")
    push_join_leave = given.get("force_push_join_leave")
    recovery = given.get("force_recovery")
    positioning = given.get("force_positioning")
    if in_presence is True and not listed:
        raise Unhonoured(f"override.presence true: presence is kept only for channels of --presence, "
                         f"and {channel[:80]!r} is not one")
    if join_leave is True and not announced:
        raise Unhonoured(f"override.join_leave true: joins and leaves are announced only on channels of "
                         f"--join-leave, and {channel[:80]!r} is not one")
    if join_leave is True and in_presence is False:
        raise Unhonoured("override.join_leave true with presence false: pushgate announces the joins and "
                         "leaves of subscribers in presence")
    if join_leave is False and announced and listed and in_presence is not False:
        raise Unhonoured("override.join_leave false on a channel of both --presence and --join-leave: a "
                         "subscriber in presence is announced; give presence false too")
    if push_join_leave is True and not announced:
        raise Unhonoured(f"override.force_push_join_leave true: joins and leaves are pushed only on channels "
                         f"of --join-leave, and {channel[:80]!r} is not one")
    if push_join_leave is False and announced:
        raise Unhonoured("override.force_push_join_leave false: every subscriber of a --join-leave channel "
                         "gets its joins and leaves")
    if recovery is True and not kept:
        raise Unhonoured(f"override.force_recovery true: {channel[:80]!r} keeps no history to recover from "
                         "(--history-size, --history)")
    if positioning is True and not kept:
        raise Unhonoured(f"override.force_positioning true: {channel[:80]!r} keeps no history, so no stream "
                         "position (--history-size, --history)")
    if positioning is False and kept:
        raise Unhonoured("override.force_positioning false: a channel that keeps history positions every "
                         "subscriber (a loss detected here ends the subscription)")
    return SubscriptionOptions(in_presence=not (in_presence is False or (join_leave is False and announced)),
                               recoverable=recovery is not False)
