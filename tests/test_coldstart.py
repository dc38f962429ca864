"""A production entry point loads no development tool, no migration machinery and no command.

On Vercel every cold start imports `api/index.py` before it can answer Strava (2 s), so what it
imports is part of the answer time; gunicorn (`wsgi.py`) and the workers (`worker.py`) start the
same way. Each is imported in a fresh interpreter with a deployment's settings (REDIS_URL set, a
PostgreSQL DATABASE_URL on a loopback port nobody listens on), and its loaded modules are listed.
bench/coldstart.py measures the time.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from e2e_support import free_port

ROOT = Path(__file__).resolve().parent.parent
# The simulator, the demo, inline mode's Redis stand-in, the benchmarks, Alembic, the commands.
FORBIDDEN = ("strava_sim", "demo", "fakeredis", "bench", "alembic", "cli")


def loaded_modules(entry: str) -> set[str]:
    """The modules a fresh interpreter holds after importing `entry`."""
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "DATABASE_URL": f"postgresql://strava@127.0.0.1:{port}/strava",
        "SECRET_KEY": secrets.token_urlsafe(32),
        "STRAVA_CLIENT_ID": "4242",
        "STRAVA_CLIENT_SECRET": secrets.token_hex(20),
        "PUBLIC_URL": "https://club.example.org",
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    code = f"import sys; import {entry}; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(done.stdout.split())


@pytest.mark.parametrize("entry", ["api.index", "wsgi", "worker"])
def test_a_production_entry_point_loads_no_tool_no_alembic_and_no_command(entry):
    loaded = loaded_modules(entry)
    assert entry in loaded and "sqlalchemy" in loaded
    assert sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN) == []


def test_vercel_loads_no_database_driver_http_client_or_cipher_before_its_first_request():
    """What the first request needs loads then: the webhook's own answer needs no HTTP client."""
    loaded = loaded_modules("api.index")
    late = ("psycopg", "sqlalchemy.dialects.postgresql", "requests", "cryptography.fernet")
    assert [m for m in late if m in loaded] == []
    assert "web.pages" in loaded and "webhook" in loaded  # the whole app, not the refusing one


def test_the_commands_still_load_under_the_flask_command():
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "strava", "--help"],
        cwd=ROOT, capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert {"work", "status", "reconcile", "subscription"} <= {
        line.split()[0] for line in done.stdout.split("Commands:")[1].splitlines() if line.strip()
    }
