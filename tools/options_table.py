"""Rewrite README.md's configuration table from gateway/config.py's OPTIONS.

    .venv/bin/python tools/options_table.py

tests/test_docs.py checks that the two agree; run this after adding or
changing a flag.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.config import OPTIONS  # noqa: E402

HEADER = "| Flag | Environment | Default | Meaning |\n|---|---|---|---|\n"


def default_text(option) -> str:
    if option.default in (None, "", []):
        return "(unset)"
    text = f"`{option.default}`"
    if isinstance(option.default, int) and not isinstance(option.default, bool) and option.default >= 1 << 20 \
            and option.default % (1 << 20) == 0:
        text += f" ({option.default >> 20} MiB)"
    return text


def table() -> str:
    rows = []
    for option in OPTIONS:
        env = f"`{option.env}`" + (", `PORT`" if option.flag == "port" else "")
        rows.append(f"| `--{option.flag}` | {env} | {default_text(option)} | {option.help} |")
    return HEADER + "\n".join(rows) + "\n"


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    pattern = re.compile(re.escape(HEADER) + r"(?:\|.*\|\n)+")
    if not pattern.search(text):
        raise SystemExit("README.md has no configuration table to rewrite")
    readme.write_text(pattern.sub(lambda m: table(), text, count=1))


if __name__ == "__main__":
    main()
