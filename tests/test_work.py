"""`strava work` run exactly as the GitHub Actions workflow runs it, on real Redis and PostgreSQL.

The system runs as a club with no server runs it: gunicorn serves the webhook, no rq worker is
up, and the workflow's step (its `run` line, with its environment) is started as a subprocess.
"Due" is set by moving a scheduled job's time in RQ's registry, never by waiting for it; the one
wait on time is for a run's deadline to pass while its job is held at the simulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import REAL_DATABASE, REAL_REDIS
from e2e_support import BIN, ROOT, StallFirstFetch, start_process, wait_until
from rq.registry import ScheduledJobRegistry

import models
from jobs import burst

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (REAL_REDIS and REAL_DATABASE),
        reason="the work command's tests need TEST_REDIS_URL and TEST_DATABASE_URL",
    ),
]

WORKFLOW = ROOT / ".github" / "workflows" / "work.yml"
DAY = 86400


def workflow_step() -> dict:
    """The workflow's step that runs the work command."""
    flow = yaml.safe_load(WORKFLOW.read_text())
    [step] = [s for s in flow["jobs"]["work"]["steps"] if "strava work" in s.get("run", "")]
    return step


def work_argv_env(stack, max_seconds: str | None = None) -> tuple[list[str], dict]:
    """The step's command and environment: its secrets are the stack's values of the same names."""
    step = workflow_step()
    env = dict(stack.env, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    for name, value in step["env"].items():
        if not str(value).startswith("${{"):
            env[name] = str(value)  # the step's own literal settings, MAX_SECONDS among them
        else:
            assert name in stack.env, f"the workflow passes {name}, which the stack does not set"
    if max_seconds is not None:
        env["MAX_SECONDS"] = max_seconds
    return ["bash", "-c", step["run"]], env


def run_work(stack, max_seconds: str | None = None) -> str:
    """Run the step to its end; returns its output (it must exit 0)."""
    argv, env = work_argv_env(stack, max_seconds)
    result = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def start_work(stack, name: str, max_seconds: str | None = None):
    """Start the step in the background (a Process whose log is in the test's tmp_path)."""
    argv, env = work_argv_env(stack, max_seconds)
    return start_process(name, argv, env, Path(stack.tmp_path))


def reschedule(stack, activity_id: int, at: float) -> None:
    """Move an activity's scheduled fetch to `at` (epoch seconds): its time has come, or not."""
    registry = ScheduledJobRegistry(queue=stack.queues()[0])
    [job_id] = [
        j for j in stack.scheduled_job_ids() if j.startswith(f"sync-activity-{activity_id}")
    ]
    stack.redis.zadd(registry.key, {job_id: int(at)})


def rows(stack) -> set[int]:
    """The ids of every stored activity."""
    return set(stack.activity_ids())


def fetches(stack, *activity_ids: int) -> list[int]:
    """How many times the simulator served each activity."""
    return [stack.sim.requests_by_activity[a] for a in activity_ids]


def last_run(stack) -> dict:
    return json.loads(stack.redis.get(burst.LAST_RUN_KEY))


def store_while_redis_was_away(stack, athlete_id: int, activity_id: int) -> None:
    """An event the webhook stored `pending` (Redis unreachable) ten minutes ago."""
    fields = {
        "subscription_id": stack.sim.subscription["id"], "object_type": "activity",
        "object_id": activity_id, "aspect_type": "update", "owner_id": athlete_id,
        "event_time": int(time.time()) - 600, "updates": {},
    }  # fmt: skip
    table = models.webhook_event
    with stack.engine.begin() as conn:
        # The stack's processes run on the machine's clock, so the test's rows do too.
        ago = datetime.now(UTC) - timedelta(minutes=10)
        event_id, _, _ = models.store_event(conn, fields, None, now=ago)
        models.mark_pending(conn, event_id)
        conn.execute(table.update().where(table.c.id == event_id).values(received_at=ago))


def test_work_runs_what_is_queued_or_due_and_leaves_the_rest(start_stack):
    # The create delay as deployed: the webhook schedules each create's fetch for later.
    stack = start_stack(workers=0, env={"CREATE_FETCH_DELAY_SECONDS": "120"})
    sim = stack.sim
    # One athlete each: several waiting fetches of one athlete would be served by one list.
    (rider_id, athlete), *others = (stack.connect_rider(f"Rider {n}") for n in range(4))
    edited = sim.create_activity(athlete, name="Held already", event=False)
    stack.seed_history(rider_id, [edited])
    sim.update_activity(edited, name="Renamed")  # an update is fetched at once: queued
    due = sim.create_activity(others[0][1], name="Due")
    not_due = sim.create_activity(others[1][1], name="Not yet due")
    lost_athlete = others[2][1]
    lost = sim.create_activity(lost_athlete, name="Stored while Redis was away", event=False)
    stack.deliver()
    store_while_redis_was_away(stack, lost_athlete, lost)
    reschedule(stack, due, time.time() - 60)  # its time has come
    reschedule(stack, not_due, time.time() + DAY)  # a day away, however slow this machine is

    out = run_work(stack)

    assert "3 jobs run (1 came due)" in out and "1 scheduled for later" in out, out
    assert rows(stack) == {edited, due, lost}
    assert stack.stored_activities(rider_id)[edited]["name"] == "Renamed"
    assert fetches(stack, edited, due, lost, not_due) == [1, 1, 1, 0]
    assert [j for j in stack.scheduled_job_ids() if not j.startswith("recovery-")] == [
        j for j in stack.scheduled_job_ids() if j.startswith(f"sync-activity-{not_due}")
    ]
    assert stack.event_statuses_of(not_due) == ["queued"]
    assert stack.job_counts()["failed"] == 0

    # The next run finds nothing due: it changes nothing.
    requests = sum(sim.requests.values())
    assert "0 jobs run" in run_work(stack)
    assert (rows(stack), sum(sim.requests.values())) == ({edited, due, lost}, requests)

    # Its time comes: the run after that fetches it, once.
    reschedule(stack, not_due, time.time() - 1)
    assert "1 jobs run (1 came due)" in run_work(stack)
    assert rows(stack) == {edited, due, lost, not_due}
    assert fetches(stack, edited, due, lost, not_due) == [1, 1, 1, 1]
    assert last_run(stack)["jobs_run"] == 1


def test_a_job_running_at_the_deadline_finishes_and_the_rest_waits(start_stack):
    stall = StallFirstFetch()
    stack = start_stack(workers=0, before_request=stall)
    _, athlete = stack.connect_rider("Slow")
    _, other = stack.connect_rider("Next")  # another athlete: one athlete's two would be listed
    stall.activity_id = first = stack.sim.create_activity(athlete, name="Held at Strava")
    second = stack.sim.create_activity(other, name="Next in line")
    stack.deliver()

    run = start_work(stack, "work-deadline", max_seconds="1")
    try:
        wait_until(stall.reached.is_set, timeout=120, what="the first fetch to reach Strava")
        held_at = time.monotonic()
        # The run's deadline is 1 s after it started, which was before its fetch arrived here.
        wait_until(lambda: time.monotonic() >= held_at + 1, timeout=5, what="the deadline")
    finally:
        stall.release.set()
    assert run.popen.wait(timeout=120) == 0, run.tail()

    assert "stopped at the deadline" in run.tail()
    assert stack.event_statuses_of(first) == ["done"] and stack.activity_row_count(first) == 1
    assert stack.event_statuses_of(second) == ["queued"] and stack.activity_row_count(second) == 0
    assert stack.queues()[0].count == 1

    run_work(stack)
    assert stack.event_statuses_of(second) == ["done"]
    assert fetches(stack, first, second) == [1, 1]


def test_an_overlapping_second_run_changes_nothing(start_stack):
    stall = StallFirstFetch()
    stack = start_stack(workers=0, before_request=stall)
    _, athlete = stack.connect_rider("Overlap")
    stall.activity_id = activity = stack.sim.create_activity(athlete, name="Held at Strava")
    stack.deliver()

    first = start_work(stack, "work-first")
    try:
        wait_until(stall.reached.is_set, timeout=120, what="the first run's fetch")
        out = run_work(stack)  # the second run, while the first one's job is running
        assert "0 jobs run" in out, out
        assert stack.sim.requests_by_activity[activity] == 1
        assert stack.activity_row_count(activity) == 0
        assert stack.event_statuses_of(activity) == ["queued"]
    finally:
        stall.release.set()
    assert first.popen.wait(timeout=120) == 0, first.tail()

    assert "1 jobs run" in first.tail()
    assert stack.event_statuses_of(activity) == ["done"] and stack.activity_row_count(activity) == 1
    assert stack.sim.requests_by_activity[activity] == 1
    assert stack.job_counts()["failed"] == 0
    assert last_run(stack)["jobs_run"] == 1
