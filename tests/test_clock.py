"""One clock: under a driven clock (the demo, bench/day.py) every part runs on its time.

The clock here starts at a fixed noon days away from the wall clock and only moves when the test
moves it, so a part that read the wall clock would disagree with it.
"""

import pytest
import sqlalchemy as sa
from clocks import NOON
from conftest import CRON_SECRET, connect_rider, event, make_app, run_jobs
from test_perf import backfilled

import models
from jobs import history, recovery, sweep
from strava_sim import SimClock

AUTH = {"Authorization": f"Bearer {CRON_SECRET}"}
HOUR = 3600
STORED = (
    "subscription_id", "object_type", "object_id", "aspect_type", "owner_id", "event_time",
    "updates",
)  # fmt: skip


@pytest.fixture
def clock():
    return SimClock(start=NOON)


@pytest.fixture
def driven(database_url, sim, clock):
    """An app on the driven clock, and its services."""
    app = make_app(database_url, sim, CLOCK=clock.now)
    return app, app.extensions["strava_sync"]


def test_the_recovery_pass_is_due_by_the_driven_clock(driven, clock):
    _, svc = driven
    assert recovery.run_if_due(svc) is not None
    assert recovery.run_if_due(svc) is None  # no driven time passed
    clock.advance(recovery.EVERY + 1)  # no wall time passes
    assert recovery.run_if_due(svc) is not None


def test_the_recovery_pass_ages_events_by_the_driven_clock(driven, clock, sim):
    app, svc = driven
    _, athlete = connect_rider(app, sim)
    body = event(athlete, 77)
    with svc.engine.begin() as conn:  # stored and queued, its job since lost
        models.store_event(conn, {k: body[k] for k in STORED}, None, now=svc.now())
    clock.advance(recovery.STALE_AFTER.total_seconds() + HOUR)  # no wall time passes
    assert recovery.run_pass(svc)["stale_failed"] == 1
    with svc.engine.connect() as conn:
        row = conn.execute(sa.select(models.webhook_event)).one()
    assert (row.status, row.processed_at) == ("failed", svc.now())


def test_sweep_spacing_follows_the_driven_clock(driven, clock, sim):
    app, svc = driven
    connect_rider(app, sim)
    client = app.test_client()
    first = client.post("/api/cron/reconcile", headers=AUTH, json={}).get_json()
    run_jobs(app)
    clock.advance(HOUR)
    assert client.post("/api/cron/reconcile", headers=AUTH, json={}).get_json()["too_soon"]
    clock.advance(svc.settings.reconcile_min_interval_hours * HOUR)
    again = client.post("/api/cron/reconcile", headers=AUTH, json={}).get_json()
    assert again["planned"] == 1 and again["run_id"] != first["run_id"]


def test_history_planning_follows_the_driven_clock(driven, clock, sim):
    app, svc = driven
    backfilled(app, sim)
    clock.advance(40 * 24 * HOUR)  # the history is due again (VERIFY_HISTORY_DAYS is 30)
    assert history.queue_checks(svc)["reason"] == "today's sweep has not started"
    sweep.queue_sweep(svc, "cron")
    assert history.queue_checks(svc)["planned"] == 1
    assert history.queue_checks(svc)["reason"] == "already planned today"
    clock.advance(24 * HOUR)  # the next driven day plans again, after its sweep
    run_jobs(app)
    sweep.queue_sweep(svc, "command")
    assert "planned" in history.queue_checks(svc)
