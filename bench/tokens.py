"""What checking a connection token costs, in process: an HMAC token (the
common case, one per connect), one signed with the previous secret while a
rotation is under way, an RS256 token with --jwt-public-key and one whose key
comes from a JWKS key set by its kid; beside the floor measured in the same
run (computing the HMAC-SHA256 alone) and, with --ref, another commit.

    .venv/bin/python bench/tokens.py
    .venv/bin/python bench/tokens.py --ref main      # main as the baseline, same run
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-of-at-least-32-bytes-long"
PREVIOUS = "the-secret-before-that-one-32-bytes-x"


def best_us(call, number: int) -> float:
    call()
    return min(timeit.repeat(call, number=number, repeat=7)) / number * 1e6


def measure(number: int) -> dict:
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from auth.tokens import TokenVerifier, connection_token
    token = connection_token(SECRET, 42, ttl=600, channels=["news"], info={"name": "A"})
    result = {"hmac_floor": best_us(lambda: hmac.compare_digest(
        hmac.new(SECRET.encode(), token.rsplit(".", 1)[0].encode(), hashlib.sha256).digest(), b"x" * 32), number)}
    verifier = TokenVerifier(secret=SECRET)
    result["hmac"] = best_us(lambda: verifier.verify_connection(token), number)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    rs256 = jwt.encode({"sub": "42", "exp": 2**31}, key, algorithm="RS256")
    static = TokenVerifier(public_key_pem=pem)
    result["rs256_public_key"] = best_us(lambda: static.verify_connection(rs256), number // 10)
    try:
        rotating = TokenVerifier(secret=SECRET, previous_secret=PREVIOUS)
    except TypeError:   # a commit without rotation
        return result
    old = connection_token(PREVIOUS, 42, ttl=600, channels=["news"], info={"name": "A"})
    result["hmac_previous_secret"] = best_us(lambda: rotating.verify_connection(old), number)
    from auth.jwks import KeyStore
    from jwt.algorithms import RSAAlgorithm
    document = json.dumps({"keys": [{**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k",
                                     "use": "sig"}]}).encode()

    async def fetch() -> bytes:
        return document

    store = KeyStore(fetch)
    asyncio.run(store._run())
    jwks = TokenVerifier(jwks=store)
    kid_token = jwt.encode({"sub": "42", "exp": 2**31}, key, algorithm="RS256", headers={"kid": "k"})
    result["rs256_jwks"] = best_us(lambda: jwks.verify_connection(kid_token), number // 10)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=20000, help="tokens per timing (a tenth for RS256)")
    parser.add_argument("--ref", help="also measure this git commit of pushgate, as the baseline")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args.number)))
        return
    sys.path.insert(0, str(ROOT / "bench"))
    from common import measure_trees
    for label, figures in measure_trees("tokens.py", args.ref, "--number", str(args.number)):
        print(f"{label}: " + ", ".join(f"{name} {us:.2f} us" for name, us in figures.items()))

if __name__ == "__main__":
    main()
