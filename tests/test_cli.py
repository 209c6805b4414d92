"""The `pushgate` command as a user runs it: one line and exit 2 for a bad
setting, at any stage of start-up."""
from __future__ import annotations

import subprocess
import sys

import pytest

from auth import TokenVerifier
from tests.stack import ROOT, SECRET


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
