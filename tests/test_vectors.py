"""The shared bridge vectors (bridges/testdata), checked from the Python side:
the gateway accepts every valid token and refuses every invalid one, the
Python bridge (its own code, standard library only) and auth/ both mint
exactly the vector bytes, and the gateway reads every vector envelope as
intended. The Ruby bridge checks the same files."""
import json
from pathlib import Path

import jwt
import pytest

import pushgate_bridge
from pushgate_bridge import tokens as bridge_tokens
from auth import TokenExpired, TokenInvalid, TokenMismatch, TokenVerifier, connection_token, subscription_token
from gateway.nsq.envelope import parse_envelope

DATA = Path(__file__).resolve().parents[1] / "bridges" / "testdata"
TOKENS = json.loads((DATA / "tokens.json").read_text())
ENVELOPES = json.loads((DATA / "envelopes.json").read_text())
VERIFIER = TokenVerifier(secret=TOKENS["secret"], clock=lambda: TOKENS["now"] + 1)


@pytest.mark.parametrize("vector", TOKENS["connection"], ids=lambda v: v["name"])
def test_connection_vectors(vector):
    minted = connection_token(TOKENS["secret"], vector["user"], ttl=vector["ttl"],
                              channels=vector.get("channels"), info=vector.get("info"), now=TOKENS["now"])
    assert minted == vector["token"]
    assert bridge_tokens.connection_token(TOKENS["secret"], vector["user"], ttl=vector["ttl"],
                                          channels=vector.get("channels"), info=vector.get("info"),
                                          now=TOKENS["now"]) == vector["token"]
    # An independent decoder agrees on what the bytes mean.
    assert jwt.decode(minted, TOKENS["secret"], algorithms=["HS256"], options={"verify_exp": False}) == vector["claims"]
    claims = VERIFIER.verify_connection(vector["token"])
    assert claims.user == str(vector["user"])
    assert claims.channels == tuple(vector.get("channels") or ())
    assert claims.info == vector.get("info")


@pytest.mark.parametrize("vector", TOKENS["subscription"], ids=lambda v: v["name"])
def test_subscription_vectors(vector):
    minted = subscription_token(TOKENS["secret"], vector["user"], vector["channel"], ttl=vector["ttl"],
                                now=TOKENS["now"])
    assert minted == vector["token"]
    assert bridge_tokens.subscription_token(TOKENS["secret"], vector["user"], vector["channel"],
                                            ttl=vector["ttl"], now=TOKENS["now"]) == vector["token"]
    assert jwt.decode(minted, TOKENS["secret"], algorithms=["HS256"], options={"verify_exp": False}) == vector["claims"]
    claims = VERIFIER.verify_subscription(vector["token"], str(vector["user"]), vector["channel"])
    assert claims.channel == vector["channel"]


ERRORS = {"expired": TokenExpired, "invalid": TokenInvalid, "mismatch": TokenMismatch}


@pytest.mark.parametrize("vector", TOKENS["invalid"], ids=lambda v: v["name"])
def test_invalid_vectors_are_refused(vector):
    with pytest.raises(ERRORS[vector["error"]]) as exc:
        if vector["kind"] == "connection":
            VERIFIER.verify_connection(vector["token"])
        else:
            VERIFIER.verify_subscription(vector["token"], vector["user"], vector["channel"])
    if vector["error"] == "invalid":
        assert not isinstance(exc.value, TokenMismatch)


@pytest.mark.parametrize("vector", ENVELOPES, ids=lambda v: v["name"])
def test_envelope_vectors(vector):
    args = vector["args"]
    publisher = pushgate_bridge.Publisher("127.0.0.1:1")
    if vector["call"] == "publish_to_user":
        envelope = {"user": args["user"], "data": args["data"], "id": args["id"]}
    elif vector["call"] == "broadcast":
        envelope = {"channel": args["channel"], "data": args["data"], "id": args["id"]}
    else:
        envelope = args["envelope"]
    assert publisher.encode(envelope).decode() == vector["bytes"]
    # The gateway reads the bytes as the call meant them.
    delivery = parse_envelope(vector["bytes"].encode())
    data = args["envelope"]["data"] if "envelope" in args else args["data"]
    assert json.loads(delivery.data) == data
    if vector["call"] == "publish_to_user":
        assert delivery.channels == (f"#{args['user']}",)
    elif vector["call"] == "broadcast":
        assert delivery.channels == (args["channel"],)
