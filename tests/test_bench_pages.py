"""Smoke test: bench/pages.py runs on a tiny club and prints a figure for every page."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_pages_runs_and_reports_every_page(tmp_path):
    argv = [sys.executable, "bench/pages.py", "--riders", "3", "--rides", "4", "--repeat", "2"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    for path in ("/", "/me", "/leaderboard", "/admin"):
        assert re.search(
            rf"^{re.escape(path)} +median +[\d.]+ ms +p95 +[\d.]+ ms$", done.stdout, re.M
        )
