"""Docs that can be checked against the code are: README's configuration
table is the OPTIONS table, and the Procfile it shows is the Procfile."""
from __future__ import annotations

import re

from gateway.config import OPTIONS
from tests.stack import ROOT

README = (ROOT / "README.md").read_text()


def test_the_readme_lists_every_option_with_its_variable_default_and_help():
    rows = {m.group(1): m.groups()[1:] for m in
            re.finditer(r"^\| `--([a-z-]+)` \| (.*?) \| (.*?) \| (.*?) \|$", README, re.M)}
    assert list(rows) == [o.flag for o in OPTIONS]
    for option in OPTIONS:
        env, default, meaning = rows[option.flag]
        assert f"`{option.env}`" in env, option.flag
        expected = "(unset)" if option.default in (None, "", []) else f"`{option.default}`"
        assert default.startswith(expected), (option.flag, default)
        assert meaning == option.help, option.flag


def test_the_readme_shows_the_procfile_as_it_is():
    procfile = (ROOT / "Procfile").read_text().strip()
    assert f"```\n{procfile}\n```" in README
