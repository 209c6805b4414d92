"""What the packages ship, built as a release would build them and installed
where nothing of this checkout can be seen:

- the gateway's wheel, into a fresh virtualenv: `pushgate --version` and
  `pushgate serve --help`, then a node that serves /admin and its assets,
  reading from a real nsqd; every module under gateway/ and auth/ and every
  status-page file is in the wheel (an editable install would hide a missing
  one);
- the Python bridge's wheel, into another: `import pushgate_bridge` mints a
  token, with nothing but the standard library (not the gateway);
- the Rails bridge's .gem, with Debian's `gem build` and `gem install
  --local`: `require "pushgate"`; and Bundler's git source with the `glob:`
  the README and docs/rails.md show (without it Bundler finds no gemspec);
- every version is VERSION's.

Everything is built from a fresh copy of the checkout (tests.stack.fresh_checkout:
what git tracks, as it is now) into the test's temporary directory."""
from __future__ import annotations

import base64
import configparser
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.stack import ROOT, SECRET, Gateway, fresh_checkout, http

VERSION = (ROOT / "VERSION").read_text().strip()
BUNDLER_LINE = 'gem "pushgate", git: "{url}", glob: "bridges/rails/*.gemspec"'


def listed_packages(setup_cfg) -> set[str]:
    config = configparser.ConfigParser()
    config.read(setup_cfg)
    return {line.strip() for line in config["options"]["packages"].splitlines() if line.strip()}


def test_the_gateway_distribution_lists_every_package_it_has():
    found = {".".join(init.parent.relative_to(ROOT).parts)
             for top in ("gateway", "auth") for init in (ROOT / top).rglob("__init__.py")}
    assert listed_packages(ROOT / "setup.cfg") == found


def test_the_bridge_is_a_distribution_of_its_own():
    assert listed_packages(ROOT / "bridges" / "python" / "setup.cfg") == {"pushgate_bridge"}
    assert not any(p.startswith("pushgate_bridge") for p in listed_packages(ROOT / "setup.cfg"))


def test_the_status_page_files_ship_as_package_data():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["gateway.ops"].split(",")]
    package = ROOT / "gateway" / "ops"
    files = sorted(f.relative_to(package).as_posix() for f in (package / "static").iterdir())
    assert files and all(any(fnmatch.fnmatch(f, p) for p in patterns) for f in files), (files, patterns)


# --- built and installed ------------------------------------------------------------------------

def run(*args: str | Path, cwd: Path, env: dict | None = None, timeout: float = 300) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, args))}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def outside_env(**extra: str) -> dict:
    """The environment, without this checkout's virtualenv or tools on PATH."""
    ours = (str(ROOT / ".venv" / "bin"), str(ROOT / ".tools" / "bin"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PUSHGATE_", "VIRTUAL_ENV", "PYTHON", "GEM_", "BUNDLE", "RUBY"))}
    env["PATH"] = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p not in ours)
    return {**env, **extra}


def fresh_venv(path: Path) -> Path:
    run(sys.executable, "-m", "venv", path, cwd=path.parent)
    return path / "bin"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The three packages, built from a fresh copy of the checkout."""
    base = tmp_path_factory.mktemp("packages")
    source = fresh_checkout(base / "pushgate")
    dist = base / "dist"
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", dist]
    run(*pip, source, cwd=base)
    run(*pip, source / "bridges" / "python", cwd=base)
    gem = shutil.which("gem")
    assert gem, "gem (Debian's ruby) is needed: run `make ruby`"
    run(gem, "build", "--silent", "pushgate.gemspec", cwd=source / "bridges" / "rails", env=outside_env())
    for built_gem in (source / "bridges" / "rails").glob("*.gem"):
        shutil.move(built_gem, dist / built_gem.name)
    names = {"gateway": f"pushgate-{VERSION}-py3-none-any.whl", "bridge": f"pushgate_bridge-{VERSION}-py3-none-any.whl",
             "gem": f"pushgate-{VERSION}.gem"}
    # Every package is built, each with VERSION's version.
    assert sorted(path.name for path in dist.iterdir()) == sorted(names.values())
    return {"source": source, **{kind: dist / name for kind, name in names.items()}}


def test_the_bridges_carry_the_version_make_writes_from_version():
    python = (ROOT / "bridges/python/pushgate_bridge/_version.py").read_text()
    ruby = (ROOT / "bridges/rails/lib/pushgate/version.rb").read_text()
    assert f'__version__ = "{VERSION}"' in python and f'VERSION = "{VERSION}"' in ruby, "VERSION changed: run make"


@pytest.mark.process
def test_the_gateway_wheel_holds_every_module_and_status_page_file(built):
    source = built["source"]
    expected = {path.relative_to(source).as_posix() for top in ("gateway", "auth")
                for path in (source / top).rglob("*.py")}
    expected |= {path.relative_to(source).as_posix() for path in (source / "gateway/ops/static").iterdir()}
    with zipfile.ZipFile(built["gateway"]) as wheel:
        shipped = {name for name in wheel.namelist() if not name.startswith(f"pushgate-{VERSION}.dist-info/")}
    assert shipped == expected, {"missing": expected - shipped, "unexpected": shipped - expected}


@pytest.mark.process
def test_the_gateway_wheel_in_a_fresh_virtualenv_serves_the_status_page(built, nsqd, tmp_path):
    bin_dir = fresh_venv(tmp_path / "venv")
    run(bin_dir / "python", "-m", "pip", "install", "--quiet", built["gateway"], cwd=tmp_path, env=outside_env())
    # The installed package, not this checkout's.
    where = run(bin_dir / "python", "-c", "import gateway; print(gateway.__file__)", cwd=tmp_path)
    assert where.startswith(str(tmp_path / "venv")), where
    assert run(bin_dir / "pushgate", "--version", cwd=tmp_path, env=outside_env()) == f"pushgate {VERSION}\n"
    usage = run(bin_dir / "pushgate", "serve", "--help", cwd=tmp_path, env=outside_env())
    assert "--lookupd-http-address" in usage and "--admin-secret" in usage

    node = Gateway(tmp_path / "node", nsqd, None, "--admin-secret=packaged", program=[str(bin_dir / "pushgate")],
                   cwd=tmp_path)
    node.start()
    try:
        auth = {"Authorization": "Basic " + base64.b64encode(b"any:packaged").decode()}
        static = built["source"] / "gateway" / "ops" / "static"
        page = http("GET", f"{node.url}/admin", headers=auth)
        assert page == (200, (static / "index.html").read_bytes())
        assets = re.findall(rb'(?:src|href)="/admin/([a-z.]+)"', page[1])
        assert {"admin.js", "admin.css"} <= {a.decode() for a in assets}, assets
        for asset in assets:
            assert http("GET", f"{node.url}/admin/{asset.decode()}", headers=auth) == (
                200, (static / asset.decode()).read_bytes()), asset
        status, body = http("GET", f"{node.url}/admin/status.json", headers=auth)
        assert status == 200 and json.loads(body)["nodes"][0]["version"] == f"pushgate {VERSION}"
    finally:
        node.stop()


@pytest.mark.process
def test_the_bridge_wheel_in_a_fresh_virtualenv_needs_nothing_else(built, tmp_path):
    with zipfile.ZipFile(built["bridge"]) as wheel:
        shipped = {name for name in wheel.namelist() if ".dist-info/" not in name}
    source = built["source"] / "bridges" / "python"
    assert shipped == {p.relative_to(source).as_posix() for p in (source / "pushgate_bridge").rglob("*.py")}
    bin_dir = fresh_venv(tmp_path / "venv")
    run(bin_dir / "python", "-m", "pip", "install", "--quiet", "--no-index", built["bridge"], cwd=tmp_path)
    check = ("import importlib.util, pushgate_bridge\n"
             f"pushgate_bridge.configure(secret={SECRET!r})\n"
             "token = pushgate_bridge.connection_token('42', ttl=60)\n"
             "print(pushgate_bridge.__version__, token.count('.'), importlib.util.find_spec('gateway'))")
    assert run(bin_dir / "python", "-c", check, cwd=tmp_path) == f"{VERSION} 2 None\n"


@pytest.mark.process
def test_the_gem_installs_with_debians_gem_and_loads(built, tmp_path):
    gems = tmp_path / "gems"
    env = outside_env(GEM_HOME=str(gems), GEM_PATH=str(gems), PUSHGATE_JWT_SECRET=SECRET)
    run("gem", "install", "--local", "--no-document", "--install-dir", gems, built["gem"], cwd=tmp_path, env=env)
    check = ('require "pushgate"\n'
             'puts Pushgate::VERSION, $LOADED_FEATURES.grep(%r{/pushgate\\.rb$}).first\n'
             'puts Pushgate.connection_token("42", ttl: 60).count(".")')
    version, loaded, dots = run("ruby", "-e", check, cwd=tmp_path, env=env).split()
    assert (version, dots) == (VERSION, "2") and loaded.startswith(str(gems)), loaded


@pytest.mark.process
def test_bundler_takes_the_gem_from_git_with_the_documented_glob(built, tmp_path):
    repo = built["source"]
    if not (repo / ".git").exists():
        git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
        run(*git, "init", "--quiet", cwd=repo)
        run(*git, "add", "--all", cwd=repo)
        run(*git, "commit", "--quiet", "--message", "release", cwd=repo)
    for doc in ("README.md", "docs/rails.md"):
        assert BUNDLER_LINE.format(url="https://github.com/your-org/pushgate.git") in (ROOT / doc).read_text(), doc
    env = outside_env(BUNDLE_PATH=str(tmp_path / "bundle"), BUNDLE_APP_CONFIG=str(tmp_path / ".bundle"),
                      BUNDLE_GEMFILE=str(tmp_path / "Gemfile"))
    bundle = shutil.which("bundle")
    assert bundle, "Bundler (Debian's ruby-bundler) is needed: run `make ruby`"

    # The line as documented: Bundler finds bridges/rails/pushgate.gemspec.
    (tmp_path / "Gemfile").write_text(BUNDLER_LINE.format(url=repo.as_uri()) + "\n")
    run(bundle, "install", "--quiet", cwd=tmp_path, env=env)
    check = 'require "pushgate"; puts Pushgate::VERSION, $LOADED_FEATURES.grep(%r{/pushgate\\.rb$}).first'
    version, loaded = run(bundle, "exec", "ruby", "-e", check, cwd=tmp_path, env=env).split()
    assert version == VERSION and loaded.startswith(str(tmp_path / "bundle")), loaded

    # Without glob: it looks at the top of the repository only, and finds no gem.
    (tmp_path / "Gemfile").write_text(f'gem "pushgate", git: "{repo.as_uri()}"\n')
    (tmp_path / "Gemfile.lock").unlink()
    without = subprocess.run([bundle, "install", "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
    assert without.returncode != 0 and "Could not find gem 'pushgate'" in without.stdout + without.stderr
