"""End-to-end: the system run as production runs it, against the Strava simulator.

Each test starts its own `Stack` (see e2e_support.py): the simulator on loopback in this process,
our app under gunicorn (two workers), three `rq worker --with-scheduler strava reconcile`
processes, real Redis and PostgreSQL, all configured by environment variables alone. Events reach
us as Strava sends them: the simulator POSTs them to gunicorn's webhook, after the subscription
was created with `flask strava subscription create` (Strava's validation GET included).

Tests wait by polling for a state, with generous timeouts, and assert on that state; nothing here
measures time. They need TEST_REDIS_URL and TEST_DATABASE_URL and are skipped without them.
"""

from __future__ import annotations

import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests
from conftest import REAL_DATABASE, REAL_REDIS
from e2e_support import Stack, StallFirstFetch, wait_until
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from strava_client.ratebudget import RateBudget, window_bounds
from strava_sim import Faults

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (REAL_REDIS and REAL_DATABASE),
        reason="end-to-end tests need TEST_REDIS_URL and TEST_DATABASE_URL",
    ),
]

# Limits high enough that waiting for budget plays no part (the low-limit test is about that).
ROOMY = {"limits": (1200, 60_000), "read_limits": (600, 30_000)}


def finished_run(stack: Stack, run_id: int):
    """The sync_run row once it is no longer running, else None."""
    row = stack.run_row(run_id)
    return row if row.status != "running" else None


# -- 1. a burst of lost, repeated and reordered events -------------------------------------------


def test_burst_across_50_riders_converges(start_stack):
    """Lost, repeated and reordered events for 50 riders, then the sweep: we equal Strava."""
    stack = start_stack(faults=Faults(drop_rate=0.1, duplicate_rate=0.2, shuffle=True), **ROOMY)
    sim, rng = stack.sim, random.Random(5)
    now = datetime.now(UTC)

    # Each rider already has three rides from the past week stored (a finished backfill).
    riders = []
    for i in range(50):
        rider_id, athlete_id = stack.connect_rider(f"Rider{i:02d}")
        history = [
            sim.create_activity(
                athlete_id,
                name=f"Ride {days} days ago",
                distance=round(rng.uniform(5_000, 200_000), 1),
                start_date=now - timedelta(days=days, hours=rng.randint(0, 12)),
                event=False,
            )
            for days in (1, 2, 3)
        ]
        stack.seed_history(rider_id, history)
        riders.append((rider_id, athlete_id, history))

    # Then every rider records a ride, edits one and deletes another. Deletes only touch rides
    # we already hold: a create event for a ride deleted before its fetch is retried for 21
    # minutes by design (Strava may 404 briefly after a create), longer than a test should wait.
    for n, (_, athlete_id, (edited, deleted, _)) in enumerate(riders):
        sim.create_activity(athlete_id, name="Evening Ride", distance=rng.uniform(5_000, 90_000))
        if n % 3 == 0:
            sim.update_activity(edited, name=f"Audax {n}", distance=200_000.0)
        elif n % 3 == 1:
            sim.update_activity(edited, private=True)
        else:
            sim.update_activity(edited, sport_type="GravelRide")
        sim.delete_activity(deleted)
    pushed = stack.deliver()
    assert pushed["dropped"] and pushed["duplicated"]  # the faults did happen
    stack.wait_idle(timeout=240)

    # The nightly sweep repairs what the dropped events never told us.
    sweep = stack.start_sweep()
    assert (sweep["planned"], sweep["deferred"]) == (50, 0)
    run = wait_until(
        lambda: finished_run(stack, sweep["run_id"]), timeout=120, what="the sweep to finish"
    )
    assert (run.status, run.riders_done, run.error) == ("done", 50, None)
    stack.wait_idle(timeout=60)
    # Each ride changed once and had one event: every dropped event left at most one difference
    # for the sweep (a list of a rider's waiting fetches may have put a create or an edit right
    # already), and nothing else was left to repair.
    repaired = run.activities_created + run.activities_updated + run.activities_deleted
    assert repaired == run.activities_unannounced <= pushed["dropped"]

    truth = {rider_id: stack.sim_activities(athlete_id) for rider_id, athlete_id, _ in riders}
    for rider_id, _, _ in riders:
        assert stack.stored_activities(rider_id) == truth[rider_id], f"rider {rider_id}"
    assert stack.activity_row_count() == sum(map(len, truth.values()))

    statuses = stack.event_statuses()
    assert set(statuses) <= {"done", "ignored", "failed"}, statuses
    # Exact repeats answered "duplicate" and stored nothing.
    assert statuses.total() == pushed["delivered"] - pushed["duplicated"]
    # At most one fetch per distinct event of an activity: repeats and events that arrived
    # while a fetch was waiting rode on that fetch.
    events = stack.events_per_activity()
    extra = {a: (n, events[a]) for a, n in sim.requests_by_activity.items() if n > events[a]}
    assert not extra, f"activity: (fetches, distinct events) {extra}"
    assert sim.rate_limited == 0
    assert sim.max_window_usage() <= sim.read_limits[0]


# -- 2. a low read limit shared by three workers --------------------------------------------------


FILL_TIMEOUT = 100  # seconds the low-limit test allows three workers to spend one window


def window_with_room() -> float | None:
    """The end of this rate window if more than the fill timeout is left of it, else None."""
    _, reset, _, _ = window_bounds(time.time())
    return reset if reset - time.time() > FILL_TIMEOUT + 5 else None


def test_low_read_limit_is_shared_by_all_workers(start_stack):
    """Three workers draw on one budget: no 429, and what does not fit waits in RQ."""
    # The app starts with the default limits (100 per 15 minutes) and learns 30 from Strava's
    # headers; 60 events need twice that.
    stack = start_stack(read_limits=(30, 1000))
    sim = stack.sim
    # One activity an athlete: one athlete's several would be served by one list of theirs.
    athletes = [stack.connect_rider(f"Climber{i}")[1] for i in range(60)]
    activities = [sim.create_activity(a) for a in athletes]
    # Strava's windows reset at :00, :15, :30 and :45, on the wall clock the sim and our side
    # share (the workers are separate processes: no clock can be injected). A reset in mid-test
    # would let waiting fetches run, so start with more of the window left than the fill may take.
    reset = wait_until(
        window_with_room, timeout=FILL_TIMEOUT + 60, what="a rate window with room", interval=1
    )
    stack.deliver()

    def first_window_spent() -> bool:
        # Nothing runnable is left, and every event not done has its fetch in RQ's scheduled
        # registry (one activity per event here, so one scheduled job per waiting event).
        jobs, statuses = stack.job_counts(), stack.event_statuses()
        return (
            jobs["queued"] == jobs["started"] == 0
            and statuses.total() == len(activities)
            and statuses["done"] + statuses["queued"] == len(activities)
            and jobs["scheduled"] == statuses["queued"]
        )

    wait_until(
        first_window_spent, timeout=FILL_TIMEOUT, what="the read window to fill and fetches to wait"
    )
    assert time.time() < reset, "a rate window reset during the test"

    assert sim.rate_limited == 0
    # The window was used to the last permit and not beyond, by three processes together.
    assert sim.max_window_usage() == sum(sim.requests_by_activity.values()) == 30
    statuses, jobs = stack.event_statuses(), stack.job_counts()
    assert statuses == {"done": 30, "queued": 30}
    assert jobs["failed"] == 0
    workers = stack.rq_workers()
    assert len(workers) == 3 and all(w.successful_job_count > 0 for w in workers)
    # The other 30 fetches were not slept in or failed: each waits in RQ's scheduled registry
    # for its turn after the window's reset.
    registry = ScheduledJobRegistry("strava", connection=stack.redis)
    due = set()
    for job_id in registry.get_job_ids(cleanup=False):
        job = Job.fetch(job_id, connection=stack.redis)
        assert (job.func_name, job.get_status()) == ("jobs.fetch.sync_activity", "scheduled")
        due.add(registry.get_scheduled_time(job).timestamp())
    # All in the next window (its 30 permits), paced across it: not all at the reset.
    assert reset <= min(due) and max(due) < reset + 900 and len(due) == 30
    budget = RateBudget(stack.redis).snapshot()
    assert budget["read"]["limit_15min"] == 30  # learned from X-ReadRateLimit-Limit


# -- 3. a worker's job killed mid-fetch -----------------------------------------------------------


def test_sigkill_mid_job_loses_nothing(start_stack):
    """A work horse killed during its fetch: RQ retries the job and the activity arrives once."""
    stall = StallFirstFetch()
    stack = start_stack(before_request=stall)
    sim = stack.sim
    rider_id, athlete_id = stack.connect_rider("Fragile")
    # Other riders' rides: one rider's would be served by one list of theirs, the victim's too.
    others = [sim.create_activity(stack.connect_rider(f"Other{i}")[1]) for i in range(3)]
    stall.activity_id = victim = sim.create_activity(athlete_id, name="Slow to fetch")
    try:
        stack.deliver()
        wait_until(stall.reached.is_set, timeout=30, what="the victim's fetch to reach Strava")
        # The job is in the middle of its fetch: kill its work horse, as the OOM killer would.
        (job_id,) = [j for j in stack.started_job_ids() if j.startswith(f"sync-activity-{victim}")]
        os.kill(stack.work_horse(job_id), signal.SIGKILL)
    finally:
        stall.release.set()

    # RQ's worker sees its horse die and, the job having retries left (Retry(max=3)),
    # schedules it again instead of failing it. The event stays queued, nothing is stored yet.
    wait_until(
        lambda: job_id in stack.scheduled_job_ids(), timeout=20, what="RQ to schedule the retry"
    )
    job = Job.fetch(job_id, connection=stack.redis)
    assert (job.get_status(), job.retries_left) == ("scheduled", 2)
    assert stack.event_statuses_of(victim) == ["queued"]
    assert stack.activity_row_count(victim) == 0
    # The other fetches went on meanwhile on the other workers.
    wait_until(
        lambda: all(stack.activity_row_count(a) == 1 for a in others),
        timeout=30,
        what="the other activities",
    )

    # The killed job's fetch lock did not wait FETCH_LOCK_TTL to lapse: its worker freed it when
    # the horse died (a held lock would only hand the retry on).
    assert stack.redis.exists(f"strava-sync:activity-lock:{victim}") == 0

    # RQ's retry comes due 30 s after the kill; the scheduler enqueues it and it completes.
    wait_until(
        lambda: stack.event_statuses_of(victim) == ["done"],
        timeout=60,
        what="the retried fetch",
    )
    assert stack.activity_row_count(victim) == 1
    assert stack.stored_activities(rider_id) == stack.sim_activities(athlete_id)
    assert sim.requests_by_activity[victim] == 2  # the killed fetch and the retry
    assert Job.fetch(job_id, connection=stack.redis).get_status() == "finished"
    assert stack.job_counts()["failed"] == 0


# -- 4. a concurrent burst at the webhook ---------------------------------------------------------


def test_webhook_takes_a_concurrent_burst(start_stack):
    """200 events at once: every one answered 200 and stored, then all of them processed."""
    stack = start_stack(**ROOMY)
    sim = stack.sim
    riders = [stack.connect_rider(f"Sprinter{i}") for i in range(10)]
    activities = {sim.create_activity(a, event=False): a for _, a in riders for _ in range(2)}
    # Ten distinct edits of each of 20 activities, all at once: 200 events, 2 gunicorn workers.
    start = int(time.time())
    bodies = [
        {
            "aspect_type": "update",
            "event_time": start + k,
            "object_id": activity_id,
            "object_type": "activity",
            "owner_id": owner,
            "subscription_id": sim.subscription["id"],
            "updates": {"title": f"Edit {k}"},
        }
        for activity_id, owner in activities.items()
        for k in range(10)
    ]
    random.Random(3).shuffle(bodies)

    def post(body) -> tuple[int, dict]:
        with requests.post(stack.callback_url, json=body, timeout=30) as response:
            return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(post, bodies))

    assert [code for code, _ in answers] == [200] * len(bodies), answers
    assert all(body["status"] == "queued" for _, body in answers), answers
    assert stack.event_statuses().total() == len(bodies)

    # Each activity's ten events rode on few fetches, and all of them were answered.
    stack.wait_idle(timeout=120)
    assert stack.event_statuses() == {"done": len(bodies)}
    for activity_id in activities:
        assert 1 <= sim.requests_by_activity[activity_id] <= 10
    for rider_id, athlete_id in riders:
        assert stack.stored_activities(rider_id) == stack.sim_activities(athlete_id)
