"""The `pushgate` command as a user runs it: one line and exit 2 for a bad
setting, at any stage of start-up; a mistyped flag or command gets one line
naming what was meant (within one edit); a publish to an nsqd that is not
there names the address, where it came from, and the fix."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from auth import TokenVerifier
from gateway.cli import one_edit_apart
from tests.stack import ROOT, SECRET, free_port

pytestmark = pytest.mark.process  # each test runs `python -m gateway`


def pushgate(*args: str, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_token_mints_what_the_gateway_accepts():
    done = pushgate("token", f"--jwt-secret={SECRET}", "--user=42", "--ttl=60", "--channel=news")
    assert done.returncode == 0, done.stderr
    claims = TokenVerifier(secret=SECRET).verify_connection(done.stdout.strip())
    assert (claims.user, claims.channels) == ("42", ("news",))
    assert claims.expires_at is not None


@pytest.mark.parametrize("args,env,line", [
    (["--jwt-secret=short"], {}, "pushgate: error: --jwt-secret: must be at least 32 bytes, like the gateway's"),
    ([], {"PUSHGATE_JWT_SECRET": "s" * 31}, "pushgate: error: --jwt-secret: must be at least 32 bytes, "
                                              "like the gateway's"),
    ([], {}, "pushgate: error: --jwt-secret: required to mint a token"),
    ([f"--jwt-secret={SECRET}", "--ttl=0"], {}, "pushgate: error: --ttl: 0 must be at least 1 second"),
    ([f"--jwt-secret={SECRET}", "--ttl=-60"], {}, "pushgate: error: --ttl: -60 must be at least 1 second"),
    ([f"--jwt-secret={SECRET}", "--ttl=soon"], {}, "pushgate: error: --ttl: 'soon' is not a whole number of seconds"),
])
def test_token_refuses_what_the_gateway_would_refuse(args, env, line):
    done = pushgate("token", "--user=42", *args, env=env)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", line + "\n")


SERVE = ["serve", f"--jwt-secret={SECRET}", "--lookupd-http-address=127.0.0.1:4161"]


def one_line_and_exit_2(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stdout == "" and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("pushgate: error: --")
    return done.stderr.strip()


@pytest.mark.parametrize("workers", ["--workers=1", "--workers=2"])
def test_serve_on_a_port_in_use_names_the_port(workers):
    # With workers, the supervisor's check binds with SO_REUSEADDR (so a port
    # left in TIME_WAIT is free: tests/test_workers.py): a live listener is not.
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_and_exit_2(pushgate(*SERVE, "--address=127.0.0.1", f"--port={port}", workers))
    assert line == (f"pushgate: error: --port: 127.0.0.1:{port} is already in use; stop what holds it or "
                    "choose another port (--port, PUSHGATE_PORT or PORT)")


def test_serve_on_an_address_this_host_does_not_have_names_the_address():
    # 192.0.2.0/24 is reserved for documentation: no host has it, so bind() fails
    # at once (and nothing is ever sent anywhere).
    line = one_line_and_exit_2(pushgate(*SERVE, "--address=192.0.2.1", "--port=0"))
    assert line.startswith("pushgate: error: --address: 192.0.2.1 is not an address of this host")


@pytest.mark.parametrize("content,expected", [
    (None, "cannot read {path}: No such file or directory"),
    ("dir", "cannot read {path}: Is a directory"),
    (b"not a key", "{path} is not a PEM public key"),
    (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
     "{path}: the PEM public key cannot be loaded (damaged?)"),
    ("ed25519", "{path}: an RSA or EC public key is needed, not Ed25519PublicKey"),
])
def test_serve_with_a_bad_public_key_file_names_it(tmp_path, content, expected):
    path = tmp_path / "key.pem"
    if content == "dir":
        path.mkdir()
    elif content == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate().public_key()
        path.write_bytes(key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    elif content is not None:
        path.write_bytes(content)
    line = one_line_and_exit_2(pushgate("serve", "--lookupd-http-address=127.0.0.1:4161", f"--jwt-public-key={path}"))
    assert line == "pushgate: error: --jwt-public-key: " + expected.format(path=path)


@pytest.mark.parametrize("args,line", [
    (["serve", "--lookup-http-address", "127.0.0.1:4161"],
     "serve: unknown flag --lookup-http-address: did you mean --lookupd-http-address? "
     "(pushgate serve --help lists them)"),
    (["publish", "--nsqd-http-adress=127.0.0.1:4151", "--user=42", "1"],
     "publish: unknown flag --nsqd-http-adress: did you mean --nsqd-http-address? "
     "(pushgate publish --help lists them)"),
    # Said before argparse would stop at --user missing.
    (["token", "--usre=42"], "token: unknown flag --usre: did you mean --user? (pushgate token --help lists them)"),
    (["serve", "--jwt-secrt=x", "--lookupd", "y"],
     "serve: unknown flags --jwt-secrt: did you mean --jwt-secret?; --lookupd (the start of "
     "--lookupd-http-address and --lookupd-poll-interval) (pushgate serve --help lists them)"),
    (["serve", "--frobnicate"], "serve: unknown flag --frobnicate (pushgate serve --help lists them)"),
    (["publsh"], "no command 'publsh': did you mean publish? (the commands: serve, publish, token)"),
])
def test_a_mistyped_flag_or_command_gets_one_line_with_a_suggestion(args, line):
    done = pushgate(*args)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"pushgate: error: {line}\n")


def test_one_edit_is_a_letter_added_removed_changed_or_two_neighbours_swapped():
    for typed in ("--lookup-http-address", "--lookupdd-http-address", "--lookupx-http-address",
                  "--lookpud-http-address"):
        assert one_edit_apart(typed, "--lookupd-http-address"), typed
    for typed in ("--lookupd-http-address", "--lookp-http-adress", "--lookdup-http-address", "--nsqd-tcp-address"):
        assert not one_edit_apart(typed, "--lookupd-http-address"), typed


@pytest.mark.parametrize("given,source", [("flag", "given by --nsqd-http-address"),
                                          ("env", "given by PUSHGATE_NSQD_HTTP_ADDRESS")])
def test_publish_to_an_unreachable_nsqd_names_the_address_where_it_came_from_and_the_fix(given, source):
    port = free_port()  # nothing listens there
    address = f"127.0.0.1:{port}"
    args = [f"--nsqd-http-address={address}"] if given == "flag" else []
    env = {"PUSHGATE_NSQD_HTTP_ADDRESS": address} if given == "env" else {}
    done = pushgate("publish", *args, "--user=42", '{"hello": 1}', env=env)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (f"pushgate: publish failed: cannot reach nsqd at http://{address} (Connection refused), "
                           f"{source}: start nsqd there, or give its HTTP address with --nsqd-http-address "
                           "(or PUSHGATE_NSQD_HTTP_ADDRESS)\n")
