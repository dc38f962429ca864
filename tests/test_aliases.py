"""Jobs an earlier release queued under its function names still run after the upgrade.

Each job is queued as that release stored it (its function and failure callback as dotted names)
and run by a real worker with our job class: in-process (the inline runner's), and with real Redis
`worker.Worker`, which forks a work horse per job as in production.
"""

from datetime import timedelta

import pytest
import sqlalchemy as sa
from conftest import REAL_REDIS, connect_rider, event, run_jobs
from rq import Callback
from test_jobs import activity_row, connection, post

import models
import services
import worker
from jobs.aliases import ALIASES
from jobs.inline import InlineWorker
from services import QUEUES

OLD_CALLBACK = "failures.mark_failed"


def queue_old(svc, name, *args, queue="strava", **options):
    """Queue a job the way an earlier release did: every name a dotted string."""
    options.setdefault("on_failure", Callback(OLD_CALLBACK))
    return svc.queue(queue).enqueue(name, *args, **options)


def work(svc, kind):
    with services.bind(svc):
        if kind == "forking":
            rq_worker = worker.Worker([svc.queue(n) for n in QUEUES], connection=svc.redis)
        else:  # the inline runner's worker: a SimpleWorker with AliasJob
            rq_worker = InlineWorker([svc.queue(n) for n in QUEUES], connection=svc.redis)
        rq_worker.work(burst=True, logging_level="WARNING")


def new_run(svc, kind):
    with svc.engine.begin() as conn:
        run_id = models.create_run(conn, kind, "test", now=svc.now())
        models.update_run(conn, run_id, riders_planned=1)
    return run_id


def riders_done(svc, run_id):
    with svc.engine.connect() as conn:
        return models.get_run(conn, run_id).riders_done


def held_ids(svc, rider):
    with svc.engine.connect() as conn:
        return {a.id for a in models.rider_activities(conn, rider)}


KINDS = [
    "simple",
    pytest.param(
        "forking",
        marks=pytest.mark.skipif(not REAL_REDIS, reason="a forked horse needs a real Redis"),
    ),
]


@pytest.mark.parametrize("kind", KINDS)
def test_old_sync_activity_job_stores_the_activity(app, svc, sim, kind):
    _, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete, event=False)
    queue_old(svc, "jobs.sync_activity", athlete, activity)
    work(svc, kind)
    assert activity_row(svc, activity).athlete_id == athlete


@pytest.mark.parametrize("kind", KINDS)
def test_old_revoke_athlete_job_deauthorizes_a_revoked_rider(app, svc, sim, kind):
    rider, athlete = connect_rider(app, sim)
    sim.revoke(athlete, event=False)
    queue_old(svc, "jobs.revoke_athlete", athlete)
    work(svc, kind)
    assert connection(svc, rider).deauthorized_at is not None


@pytest.mark.parametrize("kind", KINDS)
def test_old_reconcile_rider_job_repairs_the_rider(app, svc, sim, kind):
    rider, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete, event=False)
    run_id = new_run(svc, "reconcile")
    queue_old(svc, "jobs.reconcile_rider", rider, run_id, False, queue="reconcile")
    work(svc, kind)
    assert activity in held_ids(svc, rider) and riders_done(svc, run_id) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_old_backfill_rider_job_reads_the_history(app, svc, sim, kind):
    rider, athlete = connect_rider(app, sim)
    activities = {sim.create_activity(athlete, event=False) for _ in range(2)}
    with svc.engine.begin() as conn:
        models.update_connection(conn, rider, backfill_before=None)  # as queue_backfill does
    run_id = new_run(svc, "backfill")
    queue_old(svc, "backfill.backfill_rider", rider, run_id, None, queue="reconcile")
    work(svc, kind)
    assert held_ids(svc, rider) == activities and riders_done(svc, run_id) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_old_verify_history_job_deletes_what_strava_no_longer_lists(app, client, svc, sim, kind):
    rider, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete, event=False)
    post(client, event(athlete, activity))
    run_jobs(app)
    sim.delete_activity(activity, event=False)
    run_id = new_run(svc, "verify")
    queue_old(svc, "history.verify_history", rider, run_id, queue="reconcile")
    work(svc, kind)
    assert held_ids(svc, rider) == set() and riders_done(svc, run_id) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_old_catch_up_job_lists_the_athletes_activities(app, svc, sim, kind):
    rider, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete, event=False)
    queue_old(svc, "catchup.catch_up_athlete", athlete)
    work(svc, kind)
    assert held_ids(svc, rider) == {activity}


@pytest.mark.parametrize("kind", KINDS)
def test_old_recover_job_queues_an_orphaned_event_again(app, client, svc, sim, kind):
    _, athlete = connect_rider(app, sim)
    post(client, event(athlete, sim.create_activity(athlete, event=False)))
    svc.redis.flushdb()  # Redis restarted empty: the event's job is gone
    with svc.engine.begin() as conn:
        old = svc.now() - timedelta(minutes=5)
        conn.execute(models.webhook_event.update().values(received_at=old))
    queue_old(svc, "jobs.recover", queue="reconcile")
    work(svc, kind)  # the pass queues the fetch, which the same burst then runs
    with svc.engine.connect() as conn:
        assert [r.status for r in conn.execute(sa.select(models.webhook_event))] == ["done"]


@pytest.mark.parametrize("kind", KINDS)
def test_old_failure_callback_closes_the_jobs_events(app, client, svc, sim, kind):
    _, athlete = connect_rider(app, sim)
    post(client, event(athlete, 77))
    svc.redis.flushdb()
    meta = {"events": ["activity", 77], "owner": athlete}
    # Too few arguments: the job fails for good, and the old callback name must still run.
    queue_old(svc, "jobs.sync_activity", athlete, meta=meta)
    work(svc, kind)
    with svc.engine.connect() as conn:
        rows = conn.execute(sa.select(models.webhook_event)).all()
    assert [(r.status, r.error) for r in rows] == [("failed", "TypeError")]


def test_every_alias_names_a_job_the_tests_run():
    tested = {
        "jobs.sync_activity", "jobs.revoke_athlete", "jobs.reconcile_rider", "jobs.recover",
        "backfill.backfill_rider", "history.verify_history", "catchup.catch_up_athlete",
        OLD_CALLBACK,
    }  # fmt: skip
    assert set(ALIASES) == tested
