"""Connection tokens: what the gateway accepts and refuses."""
import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest

from auth import (ConnectionClaims, TokenExpired, TokenInvalid, TokenMismatch, TokenVerifier, connection_token,
                  subscription_token)
from tests.keys import ec_pair, public_pem, rsa_pair

SECRET = "unit-test-secret-of-32-bytes-or-more"


def test_minted_token_round_trips():
    token = connection_token(SECRET, 42, ttl=60, channels=["news"], info={"name": "A"}, now=time.time())
    claims = TokenVerifier(secret=SECRET).verify_connection(token)
    assert claims.user == "42" and claims.channels == ("news",) and claims.info == {"name": "A"}
    assert claims.expires_at is not None


@pytest.mark.parametrize("make_key,alg", [(rsa_pair, "RS256"), (ec_pair, "ES256"), (rsa_pair, "PS256")])
def test_public_key_algorithms(make_key, alg):
    key = make_key()
    verifier = TokenVerifier(public_key_pem=public_pem(key))
    assert verifier.verify_connection(jwt.encode({"sub": "u"}, key, algorithm=alg)).user == "u"


def test_expired_is_distinguished_from_invalid():
    verifier = TokenVerifier(secret=SECRET)
    with pytest.raises(TokenExpired):
        verifier.verify_connection(connection_token(SECRET, "u", ttl=10, now=time.time() - 100))


@pytest.mark.parametrize("token", [
    "", "abc", "a.b.c",
    jwt.encode({"sub": "u"}, None, algorithm="none"),
    jwt.encode({"sub": "u"}, "wrong-secret-but-long-enough-to-be-ok", algorithm="HS256"),
    jwt.encode({"nosub": "u"}, SECRET, algorithm="HS256"),
    jwt.encode({"sub": 42}, SECRET, algorithm="HS256"),
    jwt.encode({"sub": "u", "channel": "news"}, SECRET, algorithm="HS256"),
    jwt.encode({"sub": "u", "channels": "news"}, SECRET, algorithm="HS256"),
    jwt.encode({"sub": "u", "channels": [""]}, SECRET, algorithm="HS256"),
])
def test_invalid_tokens(token):
    with pytest.raises(TokenInvalid):
        TokenVerifier(secret=SECRET).verify_connection(token)


def test_a_key_only_serves_its_own_algorithm_family():
    rsa_key = rsa_pair()
    verifier = TokenVerifier(public_key_pem=public_pem(rsa_key))
    with pytest.raises(TokenInvalid):  # no HMAC secret configured at all
        verifier.verify_connection(jwt.encode({"sub": "u"}, SECRET, algorithm="HS256"))
    with pytest.raises(TokenInvalid):  # an EC token against an RSA key
        verifier.verify_connection(jwt.encode({"sub": "u"}, ec_pair(), algorithm="ES256"))


def test_audience_and_issuer():
    verifier = TokenVerifier(secret=SECRET, audience="gw", issuer="rails")
    good = jwt.encode({"sub": "u", "aud": "gw", "iss": "rails"}, SECRET)
    assert verifier.verify_connection(good) == ConnectionClaims(user="u")
    for bad in ({"sub": "u", "aud": "other", "iss": "rails"}, {"sub": "u", "iss": "rails"},
                {"sub": "u", "aud": "gw", "iss": "evil"}):
        with pytest.raises(TokenInvalid):
            verifier.verify_connection(jwt.encode(bad, SECRET))
    # Without a configured audience an aud claim is not checked.
    assert TokenVerifier(secret=SECRET).verify_connection(jwt.encode({"sub": "u", "aud": "x"}, SECRET)).user == "u"


@pytest.mark.parametrize("claims", [
    {"sub": "u", "exp": float("inf")}, {"sub": "u", "exp": float("nan")}, {"sub": "u", "nbf": float("-inf")},
    {"sub": "u\ud800"}, {"sub": "u", "info": {"k": ["\udfff"]}}, {"sub": "u", "channels": ["news\ud83d"]},
])
def test_claims_that_are_not_interchangeable_json_are_invalid_not_an_error(claims):
    # PyJWT reads claims with the json module, which accepts NaN, Infinity and
    # lone surrogates; they must be refused as invalid, not crash later.
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}')
    payload = jwt.utils.base64url_encode(json.dumps(claims).encode())
    signing_input = header + b"." + payload
    signature = jwt.utils.base64url_encode(hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest())
    token = (signing_input + b"." + signature).decode()
    with pytest.raises(TokenInvalid):
        TokenVerifier(secret=SECRET).verify_connection(token)


def test_a_subscription_token_may_be_bound_to_one_connection():
    verifier = TokenVerifier(secret=SECRET)
    bound = subscription_token(SECRET, "u", "private:x", extra={"client": "c-1"})
    assert verifier.verify_subscription(bound, "u", "private:x", "c-1").client == "c-1"
    with pytest.raises(TokenMismatch):
        verifier.verify_subscription(bound, "u", "private:x", "c-2")
    assert verifier.verify_subscription(subscription_token(SECRET, "u", "private:x"), "u", "private:x", "c-2")


def tampered(token: str, segment: int, change) -> str:
    parts = token.split(".")
    parts[segment] = change(parts[segment])
    return ".".join(parts)


GOOD = jwt.encode({"sub": "u", "aud": "gw", "iss": "rails", "channels": ["a"]}, SECRET, algorithm="HS256")
HMAC_CASES = {
    "good": GOOD,
    "another secret": jwt.encode({"sub": "u", "aud": "gw", "iss": "rails"}, "z" * 40, algorithm="HS256"),
    "payload changed": tampered(GOOD, 1, lambda p: p[:-2] + ("A" if p[-2] != "A" else "B") + p[-1]),
    "signature changed": tampered(GOOD, 2, lambda s: ("A" if s[0] != "A" else "B") + s[1:]),
    "signature not base64": tampered(GOOD, 2, lambda s: s[:-1] + "!"),
    "payload padded wrong": tampered(GOOD, 1, lambda p: p + "="),
    "signature one char long": tampered(GOOD, 2, lambda s: "A"),
    "four segments": GOOD + ".x",
    "two segments": GOOD.rsplit(".", 1)[0],
    "no sub": jwt.encode({"aud": "gw", "iss": "rails"}, SECRET, algorithm="HS256"),
    "payload a list": "eyJhbGciOiJIUzI1NiJ9." + base64.urlsafe_b64encode(b"[1]").rstrip(b"=").decode() + ".x",
    "aud list with gw": jwt.encode({"sub": "u", "aud": ["x", "gw"], "iss": "rails"}, SECRET, algorithm="HS256"),
    "aud other": jwt.encode({"sub": "u", "aud": "x", "iss": "rails"}, SECRET, algorithm="HS256"),
    "aud missing": jwt.encode({"sub": "u", "iss": "rails"}, SECRET, algorithm="HS256"),
    "iss other": jwt.encode({"sub": "u", "aud": "gw", "iss": "evil"}, SECRET, algorithm="HS256"),
    "HS384": jwt.encode({"sub": "u", "aud": "gw", "iss": "rails"}, SECRET, algorithm="HS384"),
    "HS512": jwt.encode({"sub": "u", "aud": "gw", "iss": "rails"}, SECRET, algorithm="HS512"),
}


@pytest.mark.parametrize("case", sorted(HMAC_CASES))
def test_the_hmac_path_decides_as_pyjwt_does(case):
    token = HMAC_CASES[case]
    verifier = TokenVerifier(secret=SECRET, audience="gw", issuer="rails")
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    alg = header["alg"]
    try:
        reference = jwt.decode(token, SECRET, algorithms=[alg], audience="gw", issuer="rails",
                               options={"require": ["sub"], "verify_exp": False})
    except jwt.PyJWTError:
        reference = None
    try:
        ours = verifier._decode(token)
    except TokenInvalid:
        ours = None
    assert ours == reference, case


# --- rotation, claims, user claims, AnyCable's tokens -------------------------------------

PREVIOUS = "the-secret-before-this-one-32-bytes-long"


def test_a_previous_secret_is_accepted_beside_the_current_one():
    verifier = TokenVerifier(secret=SECRET, previous_secret=PREVIOUS)
    for secret in (SECRET, PREVIOUS):
        for alg in ("HS256", "HS512"):
            assert verifier.verify_connection(jwt.encode({"sub": "u"}, secret, algorithm=alg)).user == "u"
    with pytest.raises(TokenInvalid):
        verifier.verify_connection(jwt.encode({"sub": "u"}, "a-third-secret-nobody-configured-x", algorithm="HS256"))
    with pytest.raises(TokenInvalid):   # without it configured, the previous secret is just another secret
        TokenVerifier(secret=SECRET).verify_connection(jwt.encode({"sub": "u"}, PREVIOUS, algorithm="HS256"))


def test_expire_at_overrides_exp_for_the_connection_and_zero_means_never():
    verifier = TokenVerifier(secret=SECRET)
    now = int(time.time())
    claims = verifier.verify_connection(jwt.encode({"sub": "u", "exp": now + 60, "expire_at": now + 600}, SECRET))
    assert claims.expires_at == now + 600
    assert verifier.verify_connection(jwt.encode({"sub": "u", "exp": now + 60, "expire_at": 0}, SECRET)).expires_at \
        is None
    with pytest.raises(TokenExpired):   # exp is still checked
        verifier.verify_connection(jwt.encode({"sub": "u", "exp": now - 5, "expire_at": 0}, SECRET))
    for bad in ("soon", -1, True, [1]):
        with pytest.raises(TokenInvalid):
            verifier.verify_connection(jwt.encode({"sub": "u", "expire_at": bad}, SECRET))


def test_the_subs_claim_takes_precedence_over_channels():
    token = jwt.encode({"sub": "u", "channels": ["ignored"], "meta": {"plan": "pro"}, "subs": {
        "news": {"data": {"welcome": 1}, "info": {"role": "reader"}},
        "room": {"b64data": "AAEC", "override": {"presence": {"value": False}, "join_leave": {"value": True}}},
        "plain": {}}}, SECRET)
    claims = TokenVerifier(secret=SECRET).verify_connection(token)
    assert claims.channels == ("news", "room", "plain") and claims.meta == {"plan": "pro"}
    news, room, plain = claims.subs
    assert (news.data, news.info, news.in_presence) == (b'{"welcome":1}', b'{"role":"reader"}', True)
    assert (room.data, room.info, room.in_presence) == (b"\x00\x01\x02", None, False)
    assert (plain.data, plain.info) == (None, None)


@pytest.mark.parametrize("subs", [["news"], {"news": "x"}, {"": {}}, {"news": {"b64data": "!!"}},
                                  {"news": {"b64info": 5}}, {"news": {"override": {"presence": True}}},
                                  {"news": {"override": []}}])
def test_a_subs_claim_of_the_wrong_shape_is_invalid(subs):
    with pytest.raises(TokenInvalid):
        TokenVerifier(secret=SECRET).verify_connection(jwt.encode({"sub": "u", "subs": subs}, SECRET))


@pytest.mark.parametrize("path,claims,user", [
    ("user_id", {"user_id": "alice"}, "alice"),
    ("user.id", {"user": {"id": 42}}, "42"),
    ("user.id", {"user.id": "flat", "user": {"id": "nested"}}, "flat"),   # a claim of that very name wins
    ("https://example.com/uid", {"https://example.com/uid": "auth0|7"}, "auth0|7"),
    ("a.b.c", {"a": {"b": {"c": "deep"}}}, "deep"),
])
def test_the_user_claim_is_a_name_or_a_dotted_path(path, claims, user):
    verifier = TokenVerifier(secret=SECRET, user_claim=path)
    assert verifier.verify_connection(jwt.encode(claims, SECRET)).user == user
    subscription = jwt.encode({**claims, "channel": "private:x"}, SECRET)   # subscription tokens alike
    assert verifier.verify_subscription(subscription, user, "private:x").user == user


@pytest.mark.parametrize("claims", [{"sub": "alice"}, {"user": {"id": True}}, {"user": {"id": None}},
                                    {"user": "alice"}, {"user": {"id": {"x": 1}}}])
def test_a_user_claim_that_is_missing_or_not_an_id_is_invalid(claims):
    with pytest.raises(TokenInvalid):
        TokenVerifier(secret=SECRET, user_claim="user.id").verify_connection(jwt.encode(claims, SECRET))


def anycable_token(identifiers, **claims) -> str:
    """As anycable-rails' AnyCable::JWT.encode mints it: identifiers JSON-encoded in ext, no sub."""
    return jwt.encode({"ext": json.dumps(identifiers), "exp": int(time.time()) + 60, **claims}, SECRET)


GID = base64.urlsafe_b64encode(b"gid://shop/User/42").rstrip(b"=").decode()   # User.find(42).to_gid_param


@pytest.mark.parametrize("identifiers,user", [
    ({"current_user": GID}, "42"),
    ({"user": "gid://shop/User/7"}, "7"),
    ({"user_id": 42}, "42"),
    ({"current_user": GID, "tenant": "acme"}, "42"),
    ({"user": "alice", "device": "d1"}, "alice"),
])
def test_anycable_tokens_name_the_user_with_their_identifiers(identifiers, user):
    verifier = TokenVerifier(secret=SECRET)
    assert verifier.verify_connection(anycable_token(identifiers), ext=True).user == user
    with pytest.raises(TokenInvalid):   # where ext tokens are not accepted, it has no sub
        verifier.verify_connection(anycable_token(identifiers))


def test_anycable_identifiers_the_user_claim_picks_and_ones_it_cannot_read():
    assert TokenVerifier(secret=SECRET, user_claim="account").verify_connection(
        anycable_token({"account": 5, "current_user": GID}), ext=True).user == "5"
    verifier = TokenVerifier(secret=SECRET)
    for bad in ({"tenant": "a", "device": "b"}, {}, {"user": True}):
        with pytest.raises(TokenInvalid):
            verifier.verify_connection(anycable_token(bad), ext=True)
    for ext in (42, "not json", "[1]", '{"user": "\\ud800"}'):
        with pytest.raises(TokenInvalid):
            verifier.verify_connection(jwt.encode({"ext": ext}, SECRET), ext=True)
    with pytest.raises(TokenExpired):
        verifier.verify_connection(anycable_token({"user": "a"}, exp=int(time.time()) - 5), ext=True)


@pytest.mark.parametrize("case", ["huge", "deep", "huge header", "kid object"])
def test_hostile_tokens_are_invalid_not_an_error(case):
    if case == "huge":
        token = jwt.encode({"sub": "u", "pad": "x" * 70000}, SECRET)
    elif case == "deep":
        payload = jwt.utils.base64url_encode(b'{"sub":"u","x":' + b"[" * 20000 + b"]" * 20000 + b"}")
        header = jwt.utils.base64url_encode(b'{"alg":"HS256"}')
        signature = jwt.utils.base64url_encode(hmac.new(SECRET.encode(), header + b"." + payload,
                                                        hashlib.sha256).digest())
        token = (header + b"." + payload + b"." + signature).decode()
    elif case == "huge header":
        token = jwt.utils.base64url_encode(b'{"alg":"HS256","x":' + b"[" * 15000 + b"]" * 15000 + b"}").decode() + ".e30.x"
    else:
        token = jwt.utils.base64url_encode(b'{"alg":"RS256","kid":{"a":1}}').decode() + ".e30.x"
    with pytest.raises(TokenInvalid):
        TokenVerifier(secret=SECRET, public_key_pem=public_pem(rsa_pair())).verify_connection(token)


def test_a_subscription_tokens_expire_at_is_the_subscriptions_expiry():
    now = int(time.time())
    token = subscription_token(SECRET, "u", "private:x", extra={"expire_at": now + 900})
    assert TokenVerifier(secret=SECRET).verify_subscription(token, "u", "private:x").expires_at == now + 900
    never = subscription_token(SECRET, "u", "private:x", extra={"expire_at": 0})
    assert TokenVerifier(secret=SECRET).verify_subscription(never, "u", "private:x").expires_at is None


def test_a_connection_tokens_b64info_is_its_info_when_it_is_json():
    verifier = TokenVerifier(secret=SECRET)
    encoded = base64.b64encode(b'{"name":"Ann"}').decode()
    assert verifier.verify_connection(jwt.encode({"sub": "u", "info": {"x": 1}, "b64info": encoded}, SECRET)).info \
        == {"name": "Ann"}
    for bad in (base64.b64encode(b"\x00\x01").decode(), "!!", 5, base64.b64encode(b'["\\ud800"]').decode(),
                base64.b64encode(b"NaN").decode()):
        with pytest.raises(TokenInvalid):
            verifier.verify_connection(jwt.encode({"sub": "u", "b64info": bad}, SECRET))
