"""Which pushgate channel an Action Cable identifier names (pure, no I/O).

No Ruby channel code runs in pushgate, so only streams that need none are
served, as AnyCable's standalone mode does:

* ``{"channel":"Turbo::StreamsChannel","signed_stream_name":…}``, what
  ``turbo_stream_from`` renders (other keys, Turbo's data attributes, are
  ignored);
* ``{"channel":"$pubsub","signed_stream_name":…}`` or
  ``{"channel":"$pubsub","stream_name":…}``, AnyCable's pseudo-channel.

Any other channel is refused. A stream name ``S`` is the pushgate channel
``S``, or ``PREFIX:S`` with ``--cable-channel-prefix`` (cable.yml's
``channel_prefix``, which the Ruby adapter applies when it publishes);
personal streams (``#<user>``) are never prefixed. Who may read which
channel is the session's business (:meth:`gateway.protocols.cable.session.CableSession`).

**Signed stream names** are what ``ActiveSupport::MessageVerifier.new(key,
digest: "SHA256", serializer: JSON).generate(name)`` makes:
``base64(JSON(name)) + "--" + hex(HMAC-SHA256(key, <that base64 text>))``.
The HMAC is checked over the exact text received, never a re-encoding, so
both base64 alphabets (Rails' strict one, and the URL-safe one of AnyCable's
Ruby helper and Rails 7.1's ``url_safe: true``), padded or not, verify.
The text is split at its last ``--``: URL-safe base64 may itself hold one.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import NamedTuple

import ujson

from gateway.core.channels import PERSONAL_PREFIX, valid_channel

TURBO = "Turbo::StreamsChannel"
PUBSUB = "$pubsub"
# Longest identifier accepted: a Turbo identifier for a 255-character stream
# name fits with room for data attributes. Identifiers are kept per
# subscription, so their size is bounded like everything else a client holds.
MAX_IDENTIFIER = 1024
DIGEST_HEX = 64


class Refused(Exception):
    """The identifier names no stream this gateway serves; ``str()`` says why."""


class Stream(NamedTuple):
    channel: str     # the pushgate channel
    signed: bool     # named by a verified signature (which is its own permission)


def verify_signed(signed: str, key: bytes) -> str | None:
    """The stream name inside a signed stream name, or None when the signature
    does not verify or the content is not a JSON string."""
    data, sep, digest = signed.rpartition("--")
    if not sep or not data or len(digest) != DIGEST_HEX:
        return None
    try:
        text = data.encode("ascii")
        expected = hmac.new(key, text, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(expected, digest.encode("ascii")):
            return None
        padded = text.replace(b"-", b"+").replace(b"_", b"/")
        padded += b"=" * (-len(padded) % 4)
        name = ujson.loads(base64.b64decode(padded, validate=True))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None
    return name if isinstance(name, str) else None


class CableStreams:
    """The identifier rules of one gateway: its signing key and channel prefix."""

    def __init__(self, secret: str | None, prefix: str = ""):
        self._key = secret.encode() if secret else None
        self.prefix = prefix

    def channel_of(self, stream: str) -> str:
        if not self.prefix or stream.startswith(PERSONAL_PREFIX):
            return stream
        return f"{self.prefix}:{stream}"

    def resolve(self, identifier: str) -> Stream:
        """The channel ``identifier`` names; raises Refused."""
        if len(identifier) > MAX_IDENTIFIER:
            raise Refused(f"identifier longer than {MAX_IDENTIFIER} characters")
        try:
            params = ujson.loads(identifier)
        except (ValueError, OverflowError):
            raise Refused("the identifier is not JSON") from None
        if type(params) is not dict or not isinstance(params.get("channel"), str):
            raise Refused('the identifier is not an object with a "channel" string')
        name = params["channel"]
        if name == TURBO:
            stream, signed = self._signed(params.get("signed_stream_name")), True
        elif name == PUBSUB:
            if "stream_name" in params and "signed_stream_name" in params:
                raise Refused("$pubsub: stream_name and signed_stream_name both given")
            if "signed_stream_name" in params:
                stream, signed = self._signed(params["signed_stream_name"]), True
            elif isinstance(params.get("stream_name"), str):
                stream, signed = params["stream_name"], False
            else:
                raise Refused("$pubsub: no stream_name or signed_stream_name")
        else:
            raise Refused(f"channel {name[:80]!r}: Ruby channel classes do not run in pushgate "
                          f"(only {TURBO} and $pubsub streams)")
        channel = self.channel_of(stream)
        if not valid_channel(channel):
            raise Refused(f"stream {stream[:80]!r} is not a channel name (1-255 printable characters)")
        return Stream(channel, signed)

    def _signed(self, signed: object) -> str:
        if not isinstance(signed, str):
            raise Refused("signed_stream_name missing")
        if self._key is None:
            raise Refused("signed stream names need --turbo-streams-secret")
        stream = verify_signed(signed, self._key)
        if stream is None:
            raise Refused("signed_stream_name does not verify")
        return stream
