"""The JWKS key store (auth/jwks.py) and the token rules around it, in
process: a real JWKS endpoint (tests/jwks_server.py, a Tornado server in the
test's event loop) fetched by the node's real fetcher, with a fake clock for
the store's intervals."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time

import jwt
import pytest

from auth import KeyPending, TokenExpired, TokenInvalid, TokenVerifier
from auth.jwks import MIN_INTERVAL, REFRESH_EVERY, KeyStore, parse
from gateway.backend.jwks import fetcher
from tests.inprocess import FakeClock
from tests.jwks_server import JwksServer, jwk, new_key


def hmac_token(header: dict, claims: dict, secret: str) -> str:
    """A token PyJWT would refuse to make (it checks headers and keys)."""
    signing_input = b".".join(jwt.utils.base64url_encode(json.dumps(part).encode()) for part in (header, claims))
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


def scenario(test):
    """Run ``test(server, store, verifier, clock)`` on a fresh loop with a
    JWKS server that publishes key "a" (RSA)."""
    async def main():
        server = await JwksServer().start()
        server.add("a")
        clock = FakeClock()
        store = KeyStore(fetcher(server.url, timeout=2), url=server.url, clock=clock.monotonic)
        verifier = TokenVerifier(jwks=store)
        try:
            await test(server, store, verifier, clock)
        finally:
            await server.stop()
    asyncio.run(main())


async def verified(verifier: TokenVerifier, token: str):
    """verify_connection, waiting once for the key set as a session does."""
    try:
        return verifier.verify_connection(token)
    except KeyPending as pending:
        await pending.ready
        return verifier.verify_connection(token)


def test_a_kid_unknown_at_first_waits_for_one_fetch_then_verifies():
    async def test(server, store, verifier, clock):
        token = server.token("a", {"sub": "alice"})
        with pytest.raises(KeyPending) as first:
            verifier.verify_connection(token)
        with pytest.raises(KeyPending) as second:   # a second connect meanwhile shares the fetch
            verifier.verify_connection(token)
        second.value.ready.cancel()   # one waiter gone (its connection closed): the fetch goes on
        await first.value.ready
        assert verifier.verify_connection(token).user == "alice"
        assert server.hits == 1
    scenario(test)


def test_rotation_adds_a_key_on_its_first_token_and_withdraws_the_old_one():
    async def test(server, store, verifier, clock):
        assert (await verified(verifier, server.token("a", {"sub": "u"}))).user == "u"
        server.add("b", "EC")
        server.withdraw("a")
        clock.advance(MIN_INTERVAL)
        assert (await verified(verifier, server.token("b", {"sub": "u"}))).user == "u"
        assert server.hits == 2
        with pytest.raises(TokenInvalid):   # withdrawn by the fetch: refused at once
            verifier.verify_connection(server.token("a", {"sub": "u"}))
    scenario(test)


def test_a_flood_of_made_up_kids_costs_one_fetch_per_interval_and_no_memory():
    async def test(server, store, verifier, clock):
        await store.refresh()
        hits = server.hits
        for n in range(500):
            with pytest.raises(TokenInvalid) as refused:
                verifier.verify_connection(server.token("a", {"sub": "u"}, headers={"kid": f"bogus-{n}"}))
            if isinstance(refused.value, KeyPending):
                await refused.value.ready
        assert server.hits == hits   # the last fetch ended less than MIN_INTERVAL ago (fake clock): none
        clock.advance(MIN_INTERVAL)
        pending = []
        for n in range(500):
            try:
                verifier.verify_connection(server.token("a", {"sub": "u"}, headers={"kid": f"again-{n}"}))
            except KeyPending as exc:
                pending.append(exc.ready)
            except TokenInvalid:
                pass
        await asyncio.gather(*pending)
        assert server.hits == hits + 1 and len(pending) == 500
        assert list(store.keys) == ["a"] and len(verifier._headers) <= 65
    scenario(test)


def test_while_the_endpoint_is_down_known_kids_work_and_unknown_ones_are_refused():
    async def test(server, store, verifier, clock):
        await store.refresh()
        await server.stop()
        clock.advance(REFRESH_EVERY)     # stale: fetched again in the background, which fails
        assert verifier.verify_connection(server.token("a", {"sub": "u"})).user == "u"
        server.add("c")
        clock.advance(MIN_INTERVAL)
        with pytest.raises(KeyPending) as waiting:
            verifier.verify_connection(server.token("c", {"sub": "u"}))
        await waiting.value.ready
        with pytest.raises(TokenInvalid) as refused:
            verifier.verify_connection(server.token("c", {"sub": "u"}))
        assert not isinstance(refused.value, KeyPending)
        assert verifier.verify_connection(server.token("a", {"sub": "u"})).user == "u"
        assert list(store.keys) == ["a"]
    scenario(test)


def test_garbage_or_a_set_without_usable_keys_keeps_the_known_keys():
    async def test(server, store, verifier, clock):
        await store.refresh()
        for published in ([], [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}], [{"nonsense": True}]):
            server.published = published
            clock.advance(MIN_INTERVAL)
            await store.refresh()
            assert list(store.keys) == ["a"]
        server.status = 500
        clock.advance(MIN_INTERVAL)
        await store.refresh()
        assert verifier.verify_connection(server.token("a", {"sub": "u"})).user == "u"
    scenario(test)


def test_which_keys_of_a_set_are_kept():
    rsa_key, ec_key, ed_key = new_key("RSA"), new_key("EC"), new_key("OKP")
    keys, skipped = parse(json.dumps({"keys": [
        jwk("rsa", rsa_key), jwk("ec", ec_key), jwk("ed", ed_key), jwk("no-use", rsa_key, use=None),
        jwk("enc", rsa_key, use="enc"), {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        jwk("", rsa_key), jwk("rs384-only", rsa_key, alg="RS384"), jwk("wrong-alg", ec_key, alg="RS256"),
        {"kty": "RSA", "kid": "broken", "n": "AA", "e": "!!"}, "not an object",
    ]}).encode())
    assert sorted(keys) == ["ec", "ed", "no-use", "rs384-only", "rsa"]
    assert keys["rs384-only"].algorithms == {"RS384"} and keys["ec"].algorithms == {"ES256"}
    assert len(skipped) == 6
    for raw in (b"", b"[]", b'{"keys": {}}', b"\xff"):
        with pytest.raises(ValueError):
            parse(raw)


@pytest.mark.parametrize("kind", ["RSA", "EC", "OKP", "secp256k1"])
def test_rsa_ec_and_ed25519_keys_verify_and_a_key_only_its_algorithms(kind):
    async def test(server, store, verifier, clock):
        server.add("k", kind)
        await store.refresh()
        assert verifier.verify_connection(server.token("k", {"sub": "u"})).user == "u"
        other = "ES256" if kind == "RSA" else "RS256"
        forged = jwt.encode({"sub": "u"}, new_key("EC" if kind == "RSA" else "RSA"), algorithm=other,
                            headers={"kid": "k"})
        with pytest.raises(TokenInvalid):
            verifier.verify_connection(forged)
        with pytest.raises(TokenInvalid):  # the kid's key, but the signature of another
            verifier.verify_connection(server.token("a", {"sub": "u"}, headers={"kid": "k"}))
    scenario(test)


@pytest.mark.parametrize("case", ["none", "hs256 with the public key", "no kid", "kid not a string", "expired"])
def test_tokens_a_key_set_refuses(case):
    async def test(server, store, verifier, clock):
        await store.refresh()
        if case == "none":
            token = jwt.encode({"sub": "u"}, None, algorithm="none", headers={"kid": "a"})
        elif case == "hs256 with the public key":   # algorithm confusion: the JWK as an HMAC secret
            token = hmac_token({"alg": "HS256", "kid": "a"}, {"sub": "u"}, json.dumps(server.published[0]))
        elif case == "no kid":
            token = jwt.encode({"sub": "u"}, server.keys["a"], algorithm="RS256")
        elif case == "kid not a string":
            token = hmac_token({"alg": "RS256", "kid": 7}, {"sub": "u"}, "x")
        if case == "expired":
            token = server.token("a", {"sub": "u", "exp": int(time.time()) - 10})
            with pytest.raises(TokenExpired):
                verifier.verify_connection(token)
            return
        with pytest.raises(TokenInvalid) as refused:
            verifier.verify_connection(token)
        assert not isinstance(refused.value, KeyPending)
    scenario(test)
