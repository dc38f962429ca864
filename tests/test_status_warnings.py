"""`strava status` warns about what needs the operator, with the fix, and says nothing false."""

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from conftest import CRON_SECRET, REAL_REDIS, connect_rider, run_jobs
from rq import Worker
from rq.scheduler import RQScheduler

from jobs import recovery, status
from services.diagnose import START_WORKER

AUTH = {"Authorization": f"Bearer {CRON_SECRET}"}


def later(svc, hours: float) -> datetime:
    """A moment `hours` after the services' now: status is read then, nothing else changes."""
    return svc.now() + timedelta(hours=hours)


def noop() -> None:
    """A job that does nothing (only its place in the scheduled registry matters)."""


def test_a_rider_connected_a_minute_ago_is_no_reason_to_warn(app, svc, sim):
    connect_rider(app, sim)
    warnings = status.collect_status(svc, now=later(svc, 0.02))["warnings"]
    assert not any("webhook event" in w or "full sweep" in w for w in warnings), warnings


def test_a_day_without_events_is_named_with_its_length_and_the_check(app, svc, sim):
    connect_rider(app, sim)
    warnings = status.collect_status(svc, now=later(svc, 30))["warnings"]
    assert (
        "no webhook event for 30 hours while 1 rider is connected: the subscription may be gone; "
        "check it with flask --app app strava subscription show"
    ) in warnings


def test_no_full_sweep_for_two_days_points_at_the_disabled_workflow(app, svc, sim):
    connect_rider(app, sim, name=("A", "One"))
    connect_rider(app, sim, name=("B", "Two"))
    warnings = status.collect_status(svc, now=later(svc, 50))["warnings"]
    assert any(w.startswith("no full sweep for 2 days: GitHub disables") for w in warnings)
    assert any("while 2 riders are connected" in w for w in warnings)


@pytest.mark.skipif(not REAL_REDIS, reason="RQ workers and their scheduler need a real Redis")
def test_a_worker_without_the_scheduler_leaves_retries_overdue_and_status_says_so(app, svc):
    worker = Worker([svc.queue("strava"), svc.queue("reconcile")], connection=svc.redis)
    worker.register_birth()
    svc.queue("strava").enqueue_at(datetime.now(UTC) - timedelta(minutes=3), noop)
    [warning] = [w for w in status.collect_status(svc)["warnings"] if "queue strava" in w]
    assert warning == (
        "no worker on queue strava runs the scheduler, so retries and jobs waiting for the rate "
        "limit never start (1 scheduled job overdue by up to 3 minutes): start the workers with "
        f"--with-scheduler, as in {START_WORKER}"
    )
    svc.redis.set(RQScheduler.get_locking_key("strava"), worker.name)  # a scheduler runs
    [warning] = [w for w in status.collect_status(svc)["warnings"] if "queue strava" in w]
    assert warning.startswith("the scheduler on queue strava is behind (1 scheduled job")
    svc.queue("strava").scheduled_job_registry.remove(
        svc.queue("strava").scheduled_job_registry.get_job_ids()[0]
    )
    assert not [w for w in status.collect_status(svc)["warnings"] if "queue strava" in w]
    worker.register_death()


def test_a_manual_sweep_skips_the_nightly_one_and_both_say_the_same(app, client, runner, sim):
    connect_rider(app, sim)
    assert runner.invoke(args=["strava", "reconcile", "--no-wait"]).exit_code == 0
    run_jobs(app)
    answer = client.post("/api/cron/reconcile", headers=AUTH, json={}).get_json()
    assert (answer["too_soon"], answer["trigger"], answer["planned"]) == (True, "command", 0)
    assert answer["reason"].startswith("the nightly sweep is skipped until ")
    assert "a full sweep started by command (run #1) already read" in answer["reason"]
    data = json.loads(runner.invoke(args=["strava", "status", "--json"]).stdout)
    assert data["nightly_skip"] == answer["reason"] and data["last_nightly_sweep"] is None
    lines = runner.invoke(args=["strava", "status"]).stdout.splitlines()
    assert answer["reason"] in lines
    full = r"last full sweep: #1 done, started [^;]+; 1/1 rider, 0 created, 0 updated, 0 deleted"
    assert any(re.fullmatch(full, line) for line in lines), lines


def _recovery_warnings(svc, now=None) -> list[str]:
    return [w for w in status.collect_status(svc, now=now)["warnings"] if "recovery pass" in w]


@pytest.mark.skipif(not REAL_REDIS, reason="RQ workers need a real Redis")
def test_workers_that_never_run_the_recovery_pass_are_named_with_the_fix(app, svc):
    """A stock `rq worker` takes jobs but never runs the pass: stranded events would wait."""
    Worker([svc.queue("strava"), svc.queue("reconcile")], connection=svc.redis).register_birth()

    assert _recovery_warnings(svc) == [
        "workers are listening but none has run the recovery pass in the last day, so events "
        "stored while Redis was unreachable are never queued: start the workers with "
        f"-w worker.Worker, as in {START_WORKER}"
    ]

    recovery.run_if_due(svc)  # what worker.Worker's maintenance does every 30 s
    assert _recovery_warnings(svc) == []
    [late] = _recovery_warnings(svc, now=svc.now() + timedelta(minutes=11))
    assert "none has run the recovery pass for 11 minutes" in late


def test_no_worker_listening_is_no_reason_to_ask_for_the_recovery_pass(app, svc):
    assert _recovery_warnings(svc) == []
