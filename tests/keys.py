"""Key pairs for RS256/ES256 tests, generated per run (never committed)."""
from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def rsa_pair():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_pair():
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)


def write_public_pem(private_key, path: Path) -> Path:
    path.write_bytes(public_pem(private_key))
    return path
