"""A JWKS endpoint as an identity provider (Keycloak, Auth0, Cognito)
serves one: a real Tornado server on a free port, in the test's event loop,
whose key set a test changes (rotation) or takes down. It counts the
requests it answered (``hits``). Keys are real ones, made with
``cryptography``; :meth:`JwksServer.token` signs with them, kid in the header."""
from __future__ import annotations

import json
from typing import Any

import jwt
import tornado.web
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets


def new_key(kind: str) -> Any:
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "EC":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "secp256k1":
        return ec.generate_private_key(ec.SECP256K1())
    if kind == "OKP":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


ALGORITHM = {"RSA": "RS256", "EC": "ES256", "secp256k1": "ES256K", "OKP": "EdDSA"}


def jwk(kid: str, private_key: Any, **fields: Any) -> dict:
    """The public JWK of ``private_key``, with ``kid`` and ``use: sig`` (``fields`` override)."""
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        entry = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        entry = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        entry = OKPAlgorithm.to_jwk(public, as_dict=True)
    entry.update({"kid": kid, "use": "sig"})
    entry.update(fields)
    return {k: v for k, v in entry.items() if v is not None}


class JwksServer:
    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}          # kid -> private key (what tokens are signed with)
        self.published: list[dict] = []         # the JWKS "keys" served
        self.hits = 0
        self.status = 200
        self._server: HTTPServer | None = None
        self.port = 0

    def add(self, kid: str, kind: str = "RSA", publish: bool = True, **fields: Any) -> Any:
        key = self.keys[kid] = new_key(kind)
        if publish:
            self.published.append(jwk(kid, key, **fields))
        return key

    def withdraw(self, kid: str) -> None:
        self.published = [k for k in self.published if k.get("kid") != kid]

    def token(self, kid: str, claims: dict, alg: str | None = None, headers: dict | None = None) -> str:
        key = self.keys[kid]
        if isinstance(key, rsa.RSAPrivateKey):
            kind = "RSA"
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            kind = "secp256k1" if isinstance(key.curve, ec.SECP256K1) else "EC"
        else:
            kind = "OKP"
        return jwt.encode(claims, key, algorithm=alg or ALGORITHM[kind], headers={"kid": kid, **(headers or {})})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/certs"

    async def start(self, port: int = 0) -> "JwksServer":
        server = self

        class Certs(tornado.web.RequestHandler):
            def get(self) -> None:
                server.hits += 1
                self.set_status(server.status)
                self.set_header("Content-Type", "application/json")
                self.write(json.dumps({"keys": server.published}))

        self._server = HTTPServer(tornado.web.Application([(r"/certs", Certs)]))
        sockets = bind_sockets(port, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self._server.add_sockets(sockets)
        return self

    async def stop(self) -> None:
        """Down: the port no longer answers (connection refused)."""
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None
