"""The nightly workflow's status step (`.github/scripts/check_status.py`) against the app.

The script runs as the workflow runs it (a subprocess with APP_URL, CRON_SECRET and a step
summary file), against the app served on loopback: green on a healthy system, red with the
warning in the summary for each condition the club must hear about.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from conftest import CRON_SECRET, REAL_REDIS, LiveServer, connect_rider, event, make_app

import models
from jobs import burst
from strava_client import parse_rate_limits

SCRIPT = ".github/scripts/check_status.py"
PUBLIC = "https://club.example.org"


def healthy_app(database_url, sim, **overrides):
    """An app with nothing to report: subscribed to itself, a work run today, an event today."""
    app = make_app(database_url, sim, PUBLIC_URL=PUBLIC, **overrides)
    svc = app.extensions["strava_sync"]
    _, athlete = connect_rider(app, sim)
    with svc.engine.begin() as conn:
        models.set_setting(conn, "subscription_id", "120475")
        models.set_setting(conn, "subscription_callback_url", PUBLIC + "/api/strava/webhook")
    client = app.test_client()
    assert client.post("/api/strava/webhook", json=event(athlete, 1)).status_code == 200
    with svc.engine.begin() as conn:  # its fetch done, as a work run would have left it
        conn.execute(models.webhook_event.update().values(status="done"))
    burst.record_run(svc, {"jobs_run": 1})
    return app


@pytest.fixture
def healthy(database_url, sim):
    return healthy_app(database_url, sim)


def check(app, tmp_path, secret=CRON_SECRET) -> tuple[int, str, str]:
    """Run the script against the app: (exit status, its output, the step summary)."""
    summary = tmp_path / "summary.md"
    with LiveServer(app) as server:
        env = {"APP_URL": server.url, "CRON_SECRET": secret, "GITHUB_STEP_SUMMARY": str(summary)}
        result = subprocess.run(
            [sys.executable, SCRIPT], env=env, capture_output=True, text=True, check=False
        )
    return result.returncode, result.stdout, summary.read_text()


def test_a_healthy_night_passes_green(healthy, tmp_path):
    assert check(healthy, tmp_path) == (
        0,
        "strava-sync is healthy\n",
        "### strava-sync is healthy\n",
    )


def test_a_wrong_secret_fails_and_says_so(healthy, tmp_path):
    code, out, _ = check(healthy, tmp_path, secret="wrong")
    assert code == 1 and "refused the CRON_SECRET" in out


def _no_subscription(svc):
    with svc.engine.begin() as conn:
        models.set_setting(conn, "subscription_id", None)
    svc.forget_subscription()


def _foreign_callback(svc):
    with svc.engine.begin() as conn:
        models.set_setting(conn, "subscription_callback_url", "https://old.example.org/hook")


def _no_work_run(svc):
    svc.redis.delete(burst.LAST_RUN_KEY)


def _stuck_event(svc):
    table = models.webhook_event
    with svc.engine.begin() as conn:
        hours_ago = svc.now() - timedelta(hours=7)
        conn.execute(table.update().values(status="queued", received_at=hours_ago))
        # A fresh event too, so the "no event for 24 h" warning is not what fails the check.
        fields = {**event(1, 2, aspect="update"), "updates": {}}
        fresh, _, _ = models.store_event(conn, fields, None, now=svc.now())
        models.set_event_status(conn, [fresh], "done", now=svc.now())


def _needs_reconnect(svc):
    with svc.engine.begin() as conn:
        models.mark_needs_reconnect(conn, 1, now=svc.now())


def _credentials_refused(svc):
    with svc.engine.begin() as conn:
        models.set_setting(conn, "strava_credentials_refused_at", "2026-12-01T03:17:00+00:00")


def _budget_exhausted(svc):
    headers = {
        "X-RateLimit-Limit": "200,2000", "X-RateLimit-Usage": "10,2000",
        "X-ReadRateLimit-Limit": "100,1000", "X-ReadRateLimit-Usage": "5,1000",
    }  # fmt: skip
    svc.budget.record_response(200, parse_rate_limits(headers))


@pytest.mark.parametrize(
    ("condition", "warning"),
    [
        (_no_subscription, "no push subscription is known"),
        (_foreign_callback, "callback is https://old.example.org/hook, not this app's"),
        pytest.param(
            _no_work_run,
            "no `strava work` run finished in the last 24 h",
            marks=pytest.mark.skipif(not REAL_REDIS, reason="inline mode has its own worker"),
        ),
        (_stuck_event, "1 event has waited over 6 h"),
        (_needs_reconnect, "1 rider must reconnect"),
        (_credentials_refused, "Strava refused this application's credentials"),
        (_budget_exhausted, "daily read budget is used up"),
    ],
)
def test_each_condition_fails_the_night_with_its_warning(healthy, tmp_path, condition, warning):
    condition(healthy.extensions["strava_sync"])
    code, out, summary = check(healthy, tmp_path)
    assert code == 1
    assert summary.startswith("### strava-sync needs attention")
    lines = [w for w in summary.splitlines() if warning in w]
    assert lines and all(f"::error::{line[2:]}" in out.splitlines() for line in lines)


def test_a_sweep_beyond_capacity_fails_the_night(database_url, sim, tmp_path):
    app = healthy_app(database_url, sim, STRAVA_READ_RATE_LIMITS=(100, 1))
    code, out, _ = check(app, tmp_path)
    assert code == 1
    assert "::error::1 rider is beyond what the nightly sweep can check in 48 h" in out
