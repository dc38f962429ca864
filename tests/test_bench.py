"""Smoke tests: each benchmark runs start to end with tiny sizes (figures are not checked)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REAL_DATABASE, REAL_REDIS

ROOT = Path(__file__).resolve().parent.parent
real_services = pytest.mark.skipif(
    not (REAL_REDIS and REAL_DATABASE), reason="needs TEST_REDIS_URL and TEST_DATABASE_URL"
)


def bench(name: str, *args: str, real: bool = False) -> str:
    """Run bench/<name>.py; returns its output, failing the test on a non-zero exit."""
    argv = [sys.executable, str(ROOT / "bench" / f"{name}.py"), *args]
    if real:
        argv += ["--redis-url", REAL_REDIS, "--database-url", REAL_DATABASE]
    # A benchmark measures the machine, on its real clock: CI's libfaketime stays out of it (its
    # own redis-server and `strava work` under a faked clock never finished the work_cost run).
    drop = ("TEST_", "LD_PRELOAD", "FAKETIME")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_day_runs_with_three_riders():
    out = bench("day", "--riders", "3", "--create-delay", "30")
    assert "Summary: 3 riders" in out and "reads/rider-day" in out


@real_services
def test_ingest_runs_briefly():
    out = bench(
        "ingest", "--duration", "1", "--burst", "20", "--riders", "5", "--connections", "2",
        "--generator", "python", real=True,
    )  # fmt: skip
    assert "burst of 20: 20 answered 200, 20 stored" in out


@real_services
def test_jobs_runs_briefly():
    assert "ms CPU a job with worker.Worker" in bench("jobs", "--jobs", "10", real=True)


@real_services
def test_sweep_plan_runs_briefly():
    assert "Summary" in bench("sweep_plan", "--connections", "200", "--repeat", "1", real=True)


def test_coldstart_compares_the_app_with_its_libraries():
    out = bench("coldstart", "--rounds", "1")
    assert "import api.index" in out and "ratio" in out


@real_services
def test_coldstart_times_the_first_event_answered_and_queued():
    out = bench("coldstart", "--rounds", "1", real=True)
    assert "(2 of 2 events queued or scheduled in Redis)" in out
    assert "cold start to the first event answered" in out


@real_services
def test_work_cost_counts_an_idle_run_and_a_busy_one():
    out = bench("work_cost", "--jobs", "2", "--database-url", REAL_DATABASE)
    assert "idle run (nothing queued or due)" in out and "run with 2 fetches" in out
