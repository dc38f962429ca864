"""The project installs as a package: `pip install .`, then its commands work from any folder.

The wheel is built from a copy of the tree (nothing is written into the repository) and installed
into a fresh virtual environment without its dependencies, which it borrows from this one, so the
test reaches no package index.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("api", "tests", "bench", "docs", "deploy")  # what the wheel does not need


def run(argv: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command to completion and return what it printed."""
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the project installed from its wheel; returns the venv's bin folder."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "*.egg-info", *SHIPPED))
    built = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(base / "dist"),
            str(source),
        ],
        cwd=base,
    )
    assert built.returncode == 0, built.stderr
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False)
    purelib = next(env_dir.glob("lib/python*/site-packages"))
    # The dependencies come from the running environment (a path, not a site dir: its editable
    # hook for this checkout is not processed, so only the installed wheel provides our code).
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    wheel = next((base / "dist").glob("strava_sync-*.whl"))
    done = run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(purelib),
            str(wheel),
        ],
        cwd=base,
    )
    assert done.returncode == 0, done.stderr
    return env_dir / "bin"


def clean_env(folder: Path) -> dict:
    """An environment with no project settings, no PYTHONPATH, and a HOME of its own."""
    # No faked clock either (CI's libfaketime needs the PYTHONPATH shim dropped here).
    drop = ("STRAVA_", "TEST_", "LD_PRELOAD", "FAKETIME")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.pop("PYTHONPATH", None)
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env["HOME"] = str(folder)
    return env


def test_installed_flask_help_lists_every_command_from_another_folder(installed, tmp_path):
    flask = [str(installed / "python"), "-m", "flask", "--app", "app"]
    done = run([*flask, "--help"], cwd=tmp_path, env=clean_env(tmp_path))
    assert done.returncode == 0, done.stderr
    for command in ("init-db", "db", "strava", "demo", "simulate"):
        assert f"  {command} " in done.stdout
    located = run(
        [str(installed / "python"), "-c", "import app; print(app.__file__)"],
        cwd=tmp_path,
        env=clean_env(tmp_path),
    )
    assert str(ROOT) not in located.stdout and "site-packages" in located.stdout


def test_installed_demo_passes_from_another_folder(installed, tmp_path):
    flask = [str(installed / "python"), "-m", "flask", "--app", "app"]
    done = run(
        [*flask, "demo", "--riders", "2", "--days", "1"], cwd=tmp_path, env=clean_env(tmp_path)
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Consistency check: PASS" in done.stdout
