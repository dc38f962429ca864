"""RQ job functions and the helpers that enqueue them.

Jobs take ids, never tokens, load what they need, and may run twice (a killed worker's job is run
again), so each one brings our copy in line with Strava rather than applying a change blindly.
Job options (queue, retries, timeouts, TTLs) live in `enqueue` alone.
"""

from __future__ import annotations

import logging
import random
import uuid
from datetime import UTC, datetime, timedelta

import redis
from rq import Callback, Retry, get_current_job
from rq.job import Job

import allowance
import inline
import models
import reconcile
import services
from joblog import logged, note_differences
from ratebudget import NoPermit
from services import Services
from strava_client import (
    ApplicationInactive,
    NotFound,
    StravaError,
    Unauthorized,
    parse_activity,
)
from tokens import access_token

log = logging.getLogger(__name__)

NOT_FOUND_RETRIES = (60, 300, 900)  # Strava can 404 for a while right after a create event
WAITING_TTL = 2 * 86400  # a waiting fetch may wait for tomorrow's rate budget
CLAIM_GRACE_MS = 10_000  # a claim whose job is not yet in Redis is being enqueued right now
FETCH_TIMEOUT = 60  # RQ stops an activity fetch after this long
# A fetch's lock outlives any live fetch; a killed worker's lock lapses soon after.
FETCH_LOCK_TTL = FETCH_TIMEOUT + 15
CATCH_UP_JOB = "catchup.catch_up_athlete"

# A fetch for one activity is "waiting" while the job named by its flag is queued or scheduled;
# a new event then rides on it. Otherwise the caller's job id takes the flag and must be enqueued.
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current then
  local status = redis.call('HGET', ARGV[3] .. current, 'status')
  if status == 'queued' or status == 'scheduled' or status == 'deferred' then return current end
  local age = tonumber(ARGV[2]) * 1000 - redis.call('PTTL', KEYS[1])
  if not status and age < tonumber(ARGV[4]) then return current end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def enqueue(svc: Services, func, *args, queue="strava", at=None, job_id=None, meta=None, **kwargs):
    """Queue a job with the project's options; `at` (a datetime) schedules it for later.

    `meta` carries what the failure callback needs (the events' object, or the run and rider).
    """
    options = dict(
        job_id=job_id,
        meta=meta or {},
        job_timeout=600 if queue == "reconcile" else FETCH_TIMEOUT,
        result_ttl=3600,
        failure_ttl=7 * 86400,
        retry=Retry(max=3, interval=[30, 120, 600]),
        on_failure=Callback(mark_failed),
    )
    q = svc.queue(queue)
    # One round trip: RQ's queue registration, job hash and push go out as one pipeline.
    with svc.redis.pipeline() as pipe:
        if at is None:
            job = q.enqueue(func, *args, **kwargs, **options, pipeline=pipe)
        else:
            job = q.enqueue_at(at, func, *args, **kwargs, **options, pipeline=pipe)
        pipe.execute()
    inline.jobs_queued(svc)
    return job


def _flag(owner_id: int, activity_id: int) -> str:
    # Keyed by owner too: a forged event naming another athlete's activity never carries theirs.
    return f"strava-sync:waiting:activity:{owner_id}:{activity_id}"


def _claim(svc: Services, owner_id: int, activity_id: int, job_id: str) -> bool:
    """Take the activity's waiting-fetch flag for job_id; False when a fetch is already waiting."""
    script = svc.redis.register_script(_CLAIM)
    args = [job_id, WAITING_TTL, Job.redis_job_namespace_prefix, CLAIM_GRACE_MS]
    return script(keys=[_flag(owner_id, activity_id)], args=args) is None


def queue_activity_sync(svc: Services, owner_id: int, activity_id: int, at=None, **kw) -> bool:
    """Queue one fetch of an activity unless one is already waiting; True if a job was queued."""
    job_id = f"sync-activity-{activity_id}-{uuid.uuid4().hex[:12]}"
    if not _claim(svc, owner_id, activity_id, job_id):
        return False
    meta = {"events": ["activity", activity_id]}
    enqueue(svc, sync_activity, owner_id, activity_id, at=at, job_id=job_id, meta=meta, **kw)
    return True


def _in(svc: Services, seconds: float) -> datetime:
    # The services' clock, so a driven clock (bench/day.py) schedules retries in its own time.
    return datetime.fromtimestamp(svc.clock() + seconds, UTC)


def _created_fetch_at(svc: Services, fields: dict) -> datetime | None:
    """When a create event's fetch should run: after the delay, when most first edits are in."""
    delay = svc.config.get("CREATE_FETCH_DELAY_SECONDS", 0)
    if fields["aspect_type"] != "create" or not delay:
        return None
    return _in(svc, delay)


def queue_event(svc: Services, event_id: int, fields: dict) -> None:
    """Queue the work for a stored event (stored as queued); raises redis errors to the caller."""
    if fields["object_type"] == "athlete":
        _queue_revocation_check(svc, fields["owner_id"])
    elif fields["aspect_type"] == "create" and allowance.spent(svc, fields["owner_id"]):
        _await_catch_up(svc, fields["owner_id"], fields["object_id"])  # no fetch job at all
    else:
        at = _created_fetch_at(svc, fields)
        queue_activity_sync(svc, fields["owner_id"], fields["object_id"], at=at)


def requeue_pending(svc: Services, older_than: float = 30, limit: int = 500) -> int:
    """Queue events that were stored while Redis was unreachable; returns how many."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
    with svc.engine.connect() as conn:
        rows = [r for r in models.pending_events(conn, limit) if r.received_at <= cutoff]
    for row in rows:
        queue_event(svc, row.id, dict(row._mapping))
        with svc.engine.begin() as conn:
            models.mark_queued(conn, row.id)
    return len(rows)


def _queue_revocation_check(svc: Services, athlete_id: int, at=None) -> None:
    enqueue(svc, revoke_athlete, athlete_id, at=at, meta={"events": ["athlete", athlete_id]})


def _queue_rider_job(svc: Services, func, rider_id: int, run_id: int, *args, at=None) -> None:
    meta = {"run_id": run_id, "rider_id": rider_id}
    enqueue(svc, func, rider_id, run_id, *args, queue="reconcile", at=at, meta=meta)


def _reschedule_at(when: float) -> datetime:
    # Jitter spreads the jobs that all waited for the same window reset.
    return datetime.fromtimestamp(when + random.uniform(1, 30), UTC)


# -- jobs -----------------------------------------------------------------------------------------


@logged(lambda owner_id, activity_id, *_: f"activity {activity_id} of athlete {owner_id}")
def sync_activity(owner_id: int, activity_id: int, not_found_retry: int = 0) -> str:
    """Fetch one activity from Strava and bring our copy in line with it."""
    svc = services.current()
    job = get_current_job()
    lock = svc.redis.lock(f"strava-sync:activity-lock:{activity_id}", timeout=FETCH_LOCK_TTL)
    if not lock.acquire(blocking=False):
        # Another fetch of this activity is running; this one must come after it, not beside it.
        queue_activity_sync(
            svc, owner_id, activity_id, at=_in(svc, 10), not_found_retry=not_found_retry
        )
        return "busy: fetch handed to a later job"
    try:
        if job is not None:
            # From here on a new event gets a new fetch, after this one.
            flag = _flag(owner_id, activity_id)
            svc.redis.register_script(_RELEASE)(keys=[flag], args=[job.id])
        return _sync_activity(svc, owner_id, activity_id, not_found_retry)
    finally:
        lock.release()


def _sync_activity(svc: Services, owner_id: int, activity_id: int, not_found_retry: int) -> str:
    with svc.engine.begin() as conn:
        events = models.open_events(conn, "activity", activity_id)
        events = [e for e in events if e.owner_id == owner_id]  # another athlete's are not ours
        connection = models.get_connection_by_athlete(conn, owner_id)
        event_ids = [e.id for e in events]
        if connection is None or connection.deauthorized_at is not None:
            models.set_event_status(conn, event_ids, "ignored", f"athlete {owner_id} not connected")
            return "ignored: athlete not connected"
        held = models.activities_by_id(conn, [activity_id]).get(activity_id)
        if (held is None or held["athlete_id"] != owner_id) and not allowance.take(svc, owner_id):
            return _await_catch_up(svc, owner_id, activity_id)
        models.count_attempt(conn, event_ids)
    rider_id = connection.rider_id
    try:
        token = access_token(svc, rider_id)
        data = svc.client.get_activity(token, activity_id, lane="realtime")
    except NoPermit as exc:
        at = _reschedule_at(exc.retry_at)
        queue_activity_sync(svc, owner_id, activity_id, at=at, not_found_retry=not_found_retry)
        return f"waiting for rate budget until {at.isoformat()}"
    except NotFound:
        return _not_found(svc, rider_id, owner_id, activity_id, events, not_found_retry)
    except Unauthorized as exc:
        with svc.engine.begin() as conn:
            models.set_event_status(conn, event_ids, "failed", str(exc))
        return "failed: Strava refused the rider's token"
    values = parse_activity(data)
    with svc.engine.begin() as conn:
        outcome = "foreign"
        if values["athlete_id"] == owner_id:
            outcome = models.upsert_activity(conn, rider_id, values)
        if outcome == "foreign":
            models.set_event_status(
                conn, event_ids, "failed", "activity belongs to another athlete"
            )
            return "failed: activity belongs to another athlete"
        if outcome != "unchanged":
            models.update_eddington(conn, rider_id, svc.config["EDDINGTON_SPORT_TYPES"])
        models.update_connection(conn, rider_id, last_sync=models.now())
        models.set_event_status(conn, event_ids, "done")
    return outcome


def _not_found(svc, rider_id, owner_id, activity_id, events, not_found_retry) -> str:
    """Strava says 404: deleted, hidden from our scope, or (right after a create) not ready yet."""
    event_ids = [e.id for e in events]
    with svc.engine.begin() as conn:
        held = models.delete_activity(conn, activity_id, owner_id) is not None
        just_created = bool(events) and events[-1].aspect_type == "create" and not held
        if held:
            models.update_eddington(conn, rider_id, svc.config["EDDINGTON_SPORT_TYPES"])
        if not just_created:
            models.set_event_status(conn, event_ids, "done")
            return "deleted" if held else "absent"
        if not_found_retry >= len(NOT_FOUND_RETRIES):
            models.set_event_status(
                conn,
                event_ids,
                "failed",
                "Strava still answers 404 after retries; "
                "the nightly sweep will pick the activity up if it appears",
            )
            return "failed: not found after create"
    delay = NOT_FOUND_RETRIES[not_found_retry]
    retry = not_found_retry + 1
    queue_activity_sync(svc, owner_id, activity_id, at=_in(svc, delay), not_found_retry=retry)
    return f"not found yet: retrying in {delay} s"


def _await_catch_up(svc: Services, owner_id: int, activity_id: int) -> str:
    """Over the athlete's allowance: the activity waits for their catch-up list (one request)."""
    if allowance.wait_for_catch_up(svc, owner_id, activity_id):
        at = allowance.catch_up_time(svc, owner_id)
        enqueue(svc, CATCH_UP_JOB, owner_id, at=at)  # named, not imported: catchup imports us
    return "waiting for the athlete's catch-up list"


@logged(lambda athlete_id, *_: f"revocation check of athlete {athlete_id}")
def revoke_athlete(athlete_id: int) -> str:
    """Confirm an athlete's revocation with Strava, then remove their Strava data."""
    svc = services.current()
    with svc.engine.connect() as conn:
        connection = models.get_connection_by_athlete(conn, athlete_id)
        events = models.open_events(conn, "athlete", athlete_id)
    event_ids = [e.id for e in events]
    if connection is None or connection.refresh_token is None:
        _finish(svc, event_ids, "ignored", "athlete not connected")
        return "ignored: athlete not connected"
    try:
        # Events are not signed: only Strava refusing the token proves the revocation.
        token = access_token(svc, connection.rider_id, force_refresh=True)
        svc.client.list_activities(token, per_page=1, lane="realtime")
    except Unauthorized:
        with svc.engine.begin() as conn:
            models.deauthorize(conn, connection.rider_id)
            models.set_event_status(conn, event_ids, "done")
        log.info("rider %s revoked access; their Strava data is deleted", connection.rider_id)
        return "revoked"
    except NoPermit as exc:
        _queue_revocation_check(svc, athlete_id, at=_reschedule_at(exc.retry_at))
        return "waiting for rate budget"
    _finish(svc, event_ids, "ignored", "Strava still accepts the rider's token: not revoked")
    return "not revoked"


def _finish(svc: Services, event_ids, status: str, reason: str | None = None) -> None:
    with svc.engine.begin() as conn:
        models.set_event_status(conn, event_ids, status, reason)


def mark_failed(job: Job, connection: redis.Redis, exc_type, exc_value, traceback) -> None:
    """RQ failure callback: once no retries are left, record why on the job's events."""
    svc = services.current()
    if isinstance(exc_value, ApplicationInactive):
        # Nothing works until the application's owner renews: make it plain to the operator.
        log.error("%s", exc_value)
        with svc.engine.begin() as conn:
            models.set_setting(conn, "application_inactive_at", models.now().isoformat())
    if job.retries_left:
        return  # RQ will try again
    # StravaError messages name no token; other exceptions are reduced to their type.
    reason = str(exc_value)[:500] if isinstance(exc_value, StravaError) else exc_type.__name__
    if "run_id" in job.meta:
        _rider_done(svc, job.meta["run_id"], error=f"rider {job.meta['rider_id']}: {reason}")
        return
    if "events" not in job.meta:
        return
    object_type, object_id = job.meta["events"]
    with svc.engine.begin() as conn:
        events = models.open_events(conn, object_type, object_id)
        models.set_event_status(conn, [e.id for e in events], "failed", reason)


# -- sweeps and backfills -------------------------------------------------------------------------


def queue_sweep(
    svc: Services,
    trigger: str,
    *,
    dry_run: bool = False,
    max_riders: int | None = None,
    rider_id: int | None = None,
) -> dict:
    """Plan tonight's sweep, queue one job per planned rider, and say what was planned."""
    if not dry_run:
        requeue_pending(svc)
        with svc.engine.begin() as conn:
            # Longer than any fetch may wait for budget (WAITING_TTL).
            models.fail_stale_events(conn, datetime.now(UTC) - timedelta(days=3))
    planned, deferred = reconcile.plan_sweep(svc, max_riders, rider_id)
    with svc.engine.begin() as conn:
        run_id = models.create_run(conn, "reconcile", trigger, dry_run)
        models.update_run(conn, run_id, riders_planned=len(planned), riders_deferred=deferred)
        models.finish_run_if_complete(conn, run_id)
    for rider, start in zip(planned, reconcile.sweep_start_times(svc, len(planned)), strict=True):
        at = None if start is None else _reschedule_at(start)
        _queue_rider_job(svc, reconcile_rider, rider, run_id, dry_run, at=at)
    return {
        "run_id": run_id,
        "planned": len(planned),
        "deferred": deferred,
        "dry_run": dry_run,
        "budget": svc.budget.snapshot(),
    }


@logged(lambda rider_id, run_id, *_: f"sweep #{run_id} of rider {rider_id}")
def reconcile_rider(rider_id: int, run_id: int, dry_run: bool = False) -> dict:
    """Compare one rider's recent activities with Strava's and repair the difference."""
    svc = services.current()
    try:
        repair = reconcile.repair_rider(svc, rider_id, dry_run=dry_run)
    except NoPermit as exc:
        with svc.engine.begin() as conn:
            models.add_to_run(conn, run_id, riders_rescheduled=1)
        _queue_rider_job(
            svc, reconcile_rider, rider_id, run_id, dry_run, at=_reschedule_at(exc.retry_at)
        )
        return {"waiting_until": exc.retry_at}
    except Unauthorized as exc:
        # A refused token is how a missed revocation shows: let the revocation check decide.
        with svc.engine.connect() as conn:
            connection = models.get_connection(conn, rider_id)
        if connection is not None:
            _queue_revocation_check(svc, connection.athlete_id)
        _rider_done(svc, run_id, error=f"rider {rider_id}: {exc}")
        return {"error": "token refused"}
    if dry_run:
        note_differences(svc, run_id, rider_id, repair.changes)
    _rider_done(svc, run_id, **repair.counts())
    return repair.counts()


def _rider_done(svc: Services, run_id: int, error: str | None = None, **counts: int) -> None:
    with svc.engine.begin() as conn:
        models.add_to_run(conn, run_id, riders_done=1, **counts)
        if error:
            models.update_run(conn, run_id, error=error[:500])
        models.finish_run_if_complete(conn, run_id)


def queue_backfill(
    svc: Services, rider_id: int, days: int | None = None, trigger: str | None = None
) -> int:
    """Restart a rider's history read (all of it, or the last `days`); returns the run id."""
    trigger = trigger or ("connect" if days is None else "command")
    with svc.engine.begin() as conn:
        models.update_connection(conn, rider_id, backfill_before=None)
        run_id = models.create_run(conn, "backfill", trigger)
        models.update_run(conn, run_id, riders_planned=1)
    _queue_rider_job(svc, backfill_rider, rider_id, run_id, days)
    return run_id


@logged(lambda rider_id, run_id, *_: f"backfill #{run_id} of rider {rider_id}")
def backfill_rider(rider_id: int, run_id: int, days: int | None = None) -> str:
    """Read a rider's history page by page on the bulk lane, resuming after budget waits."""
    svc = services.current()
    floor = int(svc.clock()) - days * 86400 if days else None
    finished = False
    while not finished:
        try:
            finished, repair = reconcile.backfill_page(svc, rider_id, floor)
        except NoPermit as exc:
            with svc.engine.begin() as conn:
                models.add_to_run(conn, run_id, riders_rescheduled=1)
            at = _reschedule_at(exc.retry_at)
            _queue_rider_job(svc, backfill_rider, rider_id, run_id, days, at=at)
            return f"waiting for rate budget until {at.isoformat()}"
        with svc.engine.begin() as conn:
            models.add_to_run(conn, run_id, **repair.counts())
    _rider_done(svc, run_id)
    return "done"
