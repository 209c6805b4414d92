"""Settings: flags, environment, defaults, and one-line errors."""
import argparse
import subprocess
import sys

import pytest

from gateway.config import ConfigError, Settings, add_arguments, ephemeral_channel, resolve
from tests.stack import ROOT


def settings(argv, env=None):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return resolve(parser.parse_args(argv), env or {})


SECRET = "--jwt-secret=" + "s" * 32
BASE = [SECRET, "--lookupd-http-address=127.0.0.1:4161"]


def test_flag_then_environment_then_default():
    s = settings(BASE + ["--port=9000"], {"PORT": "7000", "PUSHGATE_TOPIC": "events"})
    assert (s.port, s.topic, s.max_queue_bytes) == (9000, "events", 1 << 20)
    assert settings(BASE, {"PORT": "7000"}).port == 7000
    assert settings(BASE, {"PORT": "7000", "PUSHGATE_PORT": "7100"}).port == 7100


def test_repeatable_flags_and_comma_separated_environment():
    s = settings([SECRET], {"PUSHGATE_NSQD_TCP_ADDRESS": "a:1,b:2",
                                      "PUSHGATE_MAP_TOPIC": "prices,ticks=market:ticks"})
    assert s.nsqd_tcp_address == ["a:1", "b:2"]
    assert s.map_topic == [("prices", "prices"), ("ticks", "market:ticks")]
    assert settings(BASE + ["--lookupd-http-address=h:1"]).lookupd_http_address == ["http://127.0.0.1:4161", "http://h:1"]


@pytest.mark.parametrize("argv,env,named", [
    (["--port=abc"], {}, "--port"),
    ([], {"PUSHGATE_MAX_QUEUE_BYTES": "lots"}, "--max-queue-bytes (from PUSHGATE_MAX_QUEUE_BYTES)"),
    (["--topic=bad topic!"], {}, "--topic"),
    (["--nsqd-tcp-address=nohost"], {}, "--nsqd-tcp-address"),
    (["--jwt-public-key=/nonexistent.pem"], {}, "--jwt-public-key"),
    (["--pong-timeout=30"], {}, "--pong-timeout"),
    (["--max-message-bytes=900000"], {}, "--max-queue-bytes"),
    (["--public-channels=a*b"], {}, "--public-channels"),
    (["--allowed-origins=example.com"], {}, "--allowed-origins"),
    (["--map-topic=pushgate"], {}, "--map-topic"),
    (["--map-topic=alerts=#42"], {}, "--map-topic"),
    (["--jwt-secret=short"], {}, "--jwt-secret"),
    (["--node-name=" + "n" * 257], {}, "--node-name"),
    (["--workers=2", "--port=8000", "--node-name=" + "n" * 255], {}, "--node-name"),
    (["--node-name=tab\there"], {}, "--node-name"),
    ([], {"PUSHGATE_ALLOW_ANONYMOUS": "maybe"}, "--allow-anonymous (from PUSHGATE_ALLOW_ANONYMOUS)"),
    (["--jwt-previous-secret=short"], {}, "--jwt-previous-secret"),
    (["--jwks-url=keycloak:8080/certs"], {}, "--jwks-url"),
    (["--jwks-refetch-interval=0"], {}, "--jwks-refetch-interval"),
    (["--jwt-user-claim=user..id"], {}, "--jwt-user-claim"),
    (["--jwt-user-claim=.id"], {}, "--jwt-user-claim"),
])
def test_bad_values_name_the_setting(argv, env, named):
    with pytest.raises(ConfigError) as exc:
        settings(BASE + argv, env)
    assert "\n" not in str(exc.value)
    if named:
        assert str(exc.value).startswith(named)


def test_jwt_key_or_anonymous_and_an_nsq_source_are_required():
    with pytest.raises(ConfigError, match="--jwt-secret"):
        settings(["--lookupd-http-address=h:1"])
    with pytest.raises(ConfigError, match="--lookupd-http-address"):
        settings([SECRET])
    assert settings(["--allow-anonymous", "--nsqd-tcp-address=h:1"]).allow_anonymous


def test_a_jwks_endpoint_is_enough_and_a_previous_secret_needs_the_current_one():
    s = settings(["--jwks-url=https://idp.example/certs", "--nsqd-tcp-address=h:1"])
    assert (s.jwks_url, s.jwks_refetch_interval, s.jwt_secret) == ("https://idp.example/certs", 5.0, None)
    with pytest.raises(ConfigError, match="^--jwt-previous-secret: needs --jwt-secret"):
        settings(["--jwt-previous-secret=" + "p" * 32, "--jwks-url=http://idp/certs", "--nsqd-tcp-address=h:1"])
    s = settings(BASE + ["--jwt-previous-secret=" + "p" * 32, "--jwt-user-claim=https://example.com/uid",
                         "--cable-jwt-ext"])
    assert (s.jwt_previous_secret, s.jwt_user_claim, s.cable_jwt_ext) == ("p" * 32, "https://example.com/uid", True)


def test_ephemeral_channel_fits_nsq_limits():
    assert ephemeral_channel("web.1") == "web.1#ephemeral"
    assert ephemeral_channel("pod/with:odd chars") == "pod-with-odd-chars#ephemeral"
    long_a, long_b = ephemeral_channel("x" * 80 + "a"), ephemeral_channel("x" * 80 + "b")
    assert len(long_a) <= 64 and long_a != long_b
    assert Settings(port=8123, node_name="n").nsq_channel == "n#ephemeral"


@pytest.mark.process
def test_serve_stops_with_one_line_naming_the_setting():
    done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--port=abc"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert done.stderr == "pushgate: error: --port: 'abc' is not an integer\n"


def test_settings_defaults_are_the_option_defaults():
    # Settings takes each field's default from its option (config._default):
    # the same values, and a list default is a fresh one for each Settings.
    from dataclasses import fields

    from gateway.config import OPTIONS
    defaults = {f.name: (f.default_factory() if callable(f.default_factory) else f.default) for f in fields(Settings)}
    assert {o.dest: o.default for o in OPTIONS} == defaults
    assert Settings().presence is not Settings().presence


def test_presence_and_status_page_settings():
    s = settings(BASE + ["--presence=chat", "--presence=room:*", "--admin-secret=x"],
                 {"PUSHGATE_JOIN_LEAVE": "room:*"})
    assert (s.presence, s.join_leave, s.admin_enabled) == (["chat", "room:*"], ["room:*"], True)
    assert not settings(BASE).admin_enabled
    with pytest.raises(ConfigError, match="--presence-ttl"):
        settings(BASE + ["--presence-interval=5", "--presence-ttl=9"])
    with pytest.raises(ConfigError, match="--admin"):
        settings(BASE + ["--admin"])
    with pytest.raises(ConfigError, match="--presence"):
        settings(BASE + ["--presence=a*b"])


def test_the_control_topic_is_the_clusters_own_unless_given():
    assert settings(BASE).control_topic == "pushgate-control"           # as before, for the default --topic
    assert settings(BASE + ["--topic=shop"]).control_topic == "shop-control"
    assert settings(BASE + ["--topic=shop", "--control-topic=ours"]).control_topic == "ours"
    long = settings(BASE + ["--topic=" + "t" * 64]).control_topic
    assert len(long) == 64 and long.endswith("-control") and long != settings(BASE + ["--topic=" + "t" * 63 + "u"]).control_topic


def test_cable_rpc_settings():
    s = settings(["--lookupd-http-address=http://127.0.0.1:4161", "--cable-rpc-url=http://app:3000/_anycable",
                  "--cable-whisper"], {"PUSHGATE_CABLE_RPC_HEADERS": "Cookie, X-Api-Token"})
    assert (s.cable_rpc_url, s.cable_rpc_headers, s.cable_whisper) == (
        "http://app:3000/_anycable", "cookie,x-api-token", True)
    assert (s.cable_rpc_concurrency, s.cable_rpc_queue, s.cable_rpc_timeout) == (28, 2048, 3.0)
    with pytest.raises(ConfigError, match="--cable-rpc-timeout"):
        settings(BASE + ["--cable-rpc-url=http://app/_anycable", "--cable-rpc-timeout=10"])
    with pytest.raises(ConfigError, match="--cable-rpc-url"):
        settings(BASE + ["--cable-rpc-url=app:3000"])
