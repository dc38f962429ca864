"""The recovery pass: vanished jobs, abandoned runs, the reconnect grace period, event retention."""

from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa
from conftest import configure, connect_rider, event, run_jobs, stop_redis_client

import models
from jobs import backfill, recovery, status, sweep

LATER = timedelta(minutes=5)  # past ORPHAN_AFTER: an event this old is not being enqueued now


def post(client, body):
    response = client.post("/api/strava/webhook", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["status"]


def event_rows(svc):
    with svc.engine.connect() as conn:
        table = models.webhook_event
        return conn.execute(sa.select(table).order_by(table.c.id)).all()


def run_pass(svc, now=None):
    return recovery.run_pass(svc, now=now or svc.now() + LATER)


def test_events_whose_jobs_vanished_are_queued_again(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim)
    activities = [sim.create_activity(athlete) for _ in range(3)]
    for activity in activities:
        assert post(client, event(athlete, activity)) == "queued"
    assert all(r.job_id for r in event_rows(svc))
    svc.redis.flushdb()  # Redis restarted empty: the jobs are gone, the rows say queued
    assert run_jobs(app) == 0
    assert run_pass(svc)["requeued"] == 3
    run_jobs(app)
    assert [r.status for r in event_rows(svc)] == ["done"] * 3
    with svc.engine.connect() as conn:
        assert len(models.rider_activities(conn, rider)) == 3


def test_events_whose_jobs_still_wait_are_left_alone(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    post(client, event(athlete, sim.create_activity(athlete)))
    assert run_pass(svc)["requeued"] == 0
    assert svc.queue("strava").count == 1


def test_worker_runs_the_pass_once_per_interval(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    post(client, event(athlete, sim.create_activity(athlete)))
    assert recovery.run_if_due(svc) is not None
    assert recovery.run_if_due(svc) is None
    svc.redis.delete(status.RECOVERY_RAN_KEY)  # as after a Redis restart
    assert recovery.run_if_due(svc) is not None


def test_run_whose_jobs_vanished_is_closed_abandoned(app, client, svc, sim):
    for i in range(2):
        connect_rider(app, sim, name=("R", str(i)))
    run_id = sweep.queue_sweep(svc, "cron")["run_id"]
    assert run_pass(svc, svc.now() + timedelta(hours=2))["abandoned"] == 0  # jobs wait
    svc.redis.flushdb()
    assert run_pass(svc, svc.now() + timedelta(minutes=10))["abandoned"] == 0  # too soon
    assert run_pass(svc, svc.now() + timedelta(hours=2))["abandoned"] == 1
    with svc.engine.connect() as conn:
        run = models.get_run(conn, run_id)
    assert run.status == "abandoned" and "vanished" in run.error and run.finished_at


def test_rider_reports_stamp_progress(app, svc, sim):
    connect_rider(app, sim)
    run_id = sweep.queue_sweep(svc, "cron")["run_id"]
    run_jobs(app)
    with svc.engine.connect() as conn:
        assert models.get_run(conn, run_id).progress_at is not None


def test_backfill_that_cannot_be_queued_ends_failed(app, svc, sim):
    rider, _ = connect_rider(app, sim)
    stop_redis_client(svc)
    with pytest.raises(redis.RedisError):
        backfill.queue_backfill(svc, rider)
    with svc.engine.connect() as conn:
        (run,) = models.recent_runs(conn, "backfill")
    assert run.status == "failed" and "could not queue" in run.error


def test_riders_past_the_reconnect_grace_are_purged(app, client, svc, sim):
    overdue, athlete = connect_rider(app, sim)
    waiting, other = connect_rider(app, sim, name=("Bob", "Waiting"))
    for owner in (athlete, other):
        post(client, event(owner, sim.create_activity(owner)))
    run_jobs(app)
    with svc.engine.begin() as conn:
        for rider in (overdue, waiting):
            models.mark_needs_reconnect(conn, rider, now=svc.now())
    now = svc.now()
    assert run_pass(svc, now + timedelta(days=29))["purged"] == 0
    configure(svc, reconnect_grace_days=30)
    with svc.engine.begin() as conn:
        models.update_connection(conn, waiting, needs_reconnect_since=now + timedelta(days=5))
    assert run_pass(svc, now + timedelta(days=31))["purged"] == 1
    with svc.engine.connect() as conn:
        gone, kept = models.get_connection(conn, overdue), models.get_connection(conn, waiting)
        assert gone.deauthorized_at is not None and gone.refresh_token is None
        assert models.rider_activities(conn, overdue) == []
        assert kept.deauthorized_at is None and len(models.rider_activities(conn, waiting)) == 1


def test_old_events_are_pruned_failed_ones_kept_longer(app, client, svc, sim, monkeypatch):
    _, athlete = connect_rider(app, sim)
    for k in range(6):
        post(client, event(athlete, 1000 + k, "delete", event_time=1764316800 + k))
    run_jobs(app)
    ids = [r.id for r in event_rows(svc)]
    now = svc.now()
    ages = {ids[0]: 31, ids[1]: 29, ids[2]: 31, ids[3]: 91, ids[4]: 31, ids[5]: 2}
    with svc.engine.begin() as conn:
        table = models.webhook_event
        for event_id, days in ages.items():
            conn.execute(
                table.update()
                .where(table.c.id == event_id)
                .values(received_at=now - timedelta(days=days))
            )
        models.set_event_status(conn, [ids[2], ids[3]], "failed", "x", now=svc.now())
        models.set_event_status(conn, [ids[4]], "ignored", "x", now=svc.now())
    monkeypatch.setattr(recovery, "BATCH", 1)  # small batches still get through them all
    assert run_pass(svc, now)["pruned"] == 3
    assert [r.id for r in event_rows(svc)] == [ids[1], ids[2], ids[5]]
