"""What `pip install .` ships: every package under gateway/ and auth/ (an
editable install would hide a missing one, the wheel would not have it),
and not the Python bridge, which is its own distribution."""
from __future__ import annotations

import configparser
import fnmatch

from tests.stack import ROOT


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
