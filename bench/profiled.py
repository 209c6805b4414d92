"""Run ``pushgate`` under cProfile: ``profiled.py OUT serve ...`` writes the
profile of that process to OUT (pstats) when it exits (SIGTERM drains, then
exits). For ``--workers 1`` only: a supervisor's workers are other processes.

    .venv/bin/python bench/connect_storm.py --clients 10000 --workers 1 --profile /tmp/connect.prof
"""
from __future__ import annotations

import cProfile
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.cli import main  # noqa: E402

out = sys.argv.pop(1)
profile = cProfile.Profile()
profile.enable()
try:
    code = main()
finally:
    profile.disable()
    profile.dump_stats(out)
sys.exit(code)
