"""RQ job functions and the helpers that enqueue them.

Jobs take ids, never tokens, load what they need, and may run twice (a killed worker's job is run
again), so each one brings our copy in line with Strava rather than applying a change blindly.
Job options (queue, retries, timeouts, TTLs) live in `enqueue` alone.
"""

from __future__ import annotations

import logging
import random
import uuid
from datetime import UTC, datetime

import redis
from rq import Callback, Retry

import models
import reconcile
import services
from jobs import backlog, claims, failures, inline, pacing, recovery
from jobs.joblog import logged, note_differences
from services import Services
from strava_client import NotFound, Unauthorized, parse_activity
from strava_client.ratebudget import NoPermit
from strava_client.tokens import CredentialsRefused, ReconnectNeeded, access_token, revoked
from sync import allowance, eddington, sweeplock

log = logging.getLogger(__name__)

NOT_FOUND_RETRIES = (60, 300, 900)  # Strava can 404 for a while right after a create event
FETCH_TIMEOUT = 60  # RQ stops an activity fetch after this long
RIDER_TIMEOUT = 600  # RQ stops a rider's sweep or backfill job after this long
# A fetch's lock outlives any live fetch; a killed worker's lock lapses soon after.
FETCH_LOCK_TTL = FETCH_TIMEOUT + 15
CATCH_UP_JOB = "jobs.catchup.catch_up_athlete"


def enqueue(svc: Services, func, *args, queue="strava", at=None, job_id=None, meta=None, **kwargs):
    """Queue a job with the project's options; `at` (a datetime) schedules it for later.

    `meta` carries what the failure callback needs (the events' object, or the run and rider).
    """
    options = dict(
        job_id=job_id,
        meta=meta or {},
        job_timeout=RIDER_TIMEOUT if queue == "reconcile" else FETCH_TIMEOUT,
        result_ttl=3600,
        failure_ttl=7 * 86400,
        retry=Retry(max=3, interval=[30, 120, 600]),
        on_failure=Callback(failures.mark_failed),
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


def new_job_id(fields: dict) -> str:
    """A fresh id for the job an event's work would get (stored with the event beforehand)."""
    kind = "revoke-athlete" if fields["object_type"] == "athlete" else "sync-activity"
    return f"{kind}-{fields['object_id']}-{uuid.uuid4().hex[:12]}"


def _queue_fetch(
    svc: Services, owner_id: int, activity_id: int, at=None, job_id=None, **kw
) -> tuple:
    """Queue one fetch of an activity unless one is waiting: (queued now?, the job's id)."""
    job_id = job_id or new_job_id({"object_type": "activity", "object_id": activity_id})
    waiting = claims.claim(svc.redis, claims.activity_flag(owner_id, activity_id), job_id)
    if waiting:
        return False, waiting
    meta = {"events": ["activity", activity_id], "owner": owner_id}
    at = pacing.release_at(svc, at)
    enqueue(svc, sync_activity, owner_id, activity_id, at=at, job_id=job_id, meta=meta, **kw)
    return True, job_id


def queue_activity_sync(svc: Services, owner_id: int, activity_id: int, at=None, **kw) -> bool:
    """Queue one fetch of an activity unless one is already waiting; True if a job was queued."""
    return _queue_fetch(svc, owner_id, activity_id, at=at, **kw)[0]


def _in(svc: Services, seconds: float) -> datetime:
    # The services' clock, so a driven clock (bench/day.py) schedules retries in its own time.
    return datetime.fromtimestamp(svc.clock() + seconds, UTC)


def _created_fetch_at(svc: Services, fields: dict) -> datetime | None:
    """When a create event's fetch should run: after the delay, when most first edits are in."""
    delay = svc.config.get("CREATE_FETCH_DELAY_SECONDS", 0)
    if fields["aspect_type"] != "create" or not delay:
        return None
    return _in(svc, delay)


def queue_event(svc: Services, fields: dict, job_id: str | None = None) -> str | None:
    """Queue the work for a stored event; returns the job that carries it (None: a catch-up).

    `job_id` names the job if one is queued; the answer differs when the event rides on a job
    already waiting. Redis errors go to the caller: the event is left to the recovery pass.
    """
    if fields["object_type"] == "athlete":
        return _queue_revocation_check(svc, fields["owner_id"], job_id=job_id)
    if fields["aspect_type"] == "create" and allowance.spent(svc, fields["owner_id"]):
        _await_catch_up(svc, fields["owner_id"], fields["object_id"])  # no fetch job at all
        return None
    at = _created_fetch_at(svc, fields)
    return _queue_fetch(svc, fields["owner_id"], fields["object_id"], at=at, job_id=job_id)[1]


def queue_stored_event(svc: Services, event_id: int, fields: dict, stored_job: str | None = None):
    """Queue a stored event's work and make sure its row names the job carrying it.

    The job id on the row is how the recovery pass tells a waiting event from an orphaned one. The
    webhook stores the event with a fresh id (`stored_job`) and the row is written again only when
    the event rides on another job.
    """
    job_id = queue_event(svc, fields, stored_job)
    if job_id is None or job_id != stored_job:
        with svc.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            models.mark_queued(conn, event_id, job_id)


def _queue_revocation_check(svc: Services, athlete_id: int, at=None, job_id=None) -> str:
    """One revocation check per athlete at a time: forged events in bulk cost one check."""
    job_id = job_id or new_job_id({"object_type": "athlete", "object_id": athlete_id})
    waiting = claims.claim(svc.redis, claims.revoke_flag(athlete_id), job_id)
    if waiting:
        return waiting
    meta = {"events": ["athlete", athlete_id]}
    at = pacing.release_at(svc, at)
    enqueue(svc, revoke_athlete, athlete_id, at=at, job_id=job_id, meta=meta)
    return job_id


def queue_rider_job(svc: Services, func, rider_id: int, run_id: int, *args, at=None) -> None:
    meta = {"run_id": run_id, "rider_id": rider_id}
    enqueue(svc, func, rider_id, run_id, *args, queue="reconcile", at=at, meta=meta)


def reschedule_at(when: float) -> datetime:
    # Jitter spreads the jobs that all waited for the same window reset.
    return datetime.fromtimestamp(when + random.uniform(1, 30), UTC)


# -- jobs -----------------------------------------------------------------------------------------


@logged(lambda owner_id, activity_id, *_: f"activity {activity_id} of athlete {owner_id}")
def sync_activity(owner_id: int, activity_id: int, not_found_retry: int = 0) -> str:
    """Fetch one activity from Strava and bring our copy in line with it."""
    svc = services.current()
    recovery.run_if_due(svc, queue_stored_event)  # workers keep the recovery pass going
    lock = svc.redis.lock(f"strava-sync:activity-lock:{activity_id}", timeout=FETCH_LOCK_TTL)
    if not lock.acquire(blocking=False):
        # Another fetch of this activity is running; this one must come after it, not beside it.
        queue_activity_sync(
            svc, owner_id, activity_id, at=_in(svc, 10), not_found_retry=not_found_retry
        )
        return "busy: fetch handed to a later job"
    try:
        # From here on a new event gets a new fetch, after this one.
        claims.release(svc.redis, claims.activity_flag(owner_id, activity_id))
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
        if connection.needs_reconnect_since is not None:
            models.set_event_status(conn, event_ids, "ignored", "the rider must reconnect first")
            return "ignored: the rider must reconnect"
        held = models.activities_by_id(conn, [activity_id]).get(activity_id)
        if (held is None or held["athlete_id"] != owner_id) and not allowance.take(svc, owner_id):
            return _await_catch_up(svc, owner_id, activity_id)
        models.count_attempt(conn, event_ids)
    rider_id = connection.rider_id
    try:
        token = access_token(svc, rider_id)
        if backlog.served_by_list(svc, connection, activity_id, token):
            return "listed with the athlete's other waiting activities"
        data = svc.client.get_activity(token, activity_id, lane="realtime")
    except NoPermit as exc:
        at = datetime.fromtimestamp(exc.retry_at, UTC)  # booked for a window with a free permit
        queue_activity_sync(svc, owner_id, activity_id, at=at, not_found_retry=not_found_retry)
        return f"waiting for rate budget from {at.isoformat()}"
    except NotFound:
        return _not_found(svc, rider_id, owner_id, activity_id, events, not_found_retry)
    except (Unauthorized, ReconnectNeeded, CredentialsRefused) as exc:
        # Not proof of a revocation: the event fails with the reason, the rider's data stays.
        with svc.engine.begin() as conn:
            models.set_event_status(conn, event_ids, "failed", str(exc)[:500])
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
            eddington.store_numbers(conn, rider_id, svc.config["EDDINGTON_SPORT_TYPES"])
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
            eddington.store_numbers(conn, rider_id, svc.config["EDDINGTON_SPORT_TYPES"])
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


def recover() -> dict:
    """Run the recovery pass and schedule the next one (see recovery.py)."""
    svc = services.current()
    recovery.schedule_next(svc)
    return recovery.run_pass(svc, queue_stored_event)


@logged(lambda athlete_id, *_: f"revocation check of athlete {athlete_id}")
def revoke_athlete(athlete_id: int) -> str:
    """Confirm an athlete's revocation with Strava, then remove their Strava data."""
    svc = services.current()
    # An event from now on gets a check after this one.
    claims.release(svc.redis, claims.revoke_flag(athlete_id))
    with svc.engine.connect() as conn:
        connection = models.get_connection_by_athlete(conn, athlete_id)
    if connection is None or connection.refresh_token is None:
        return _finish(svc, athlete_id, "ignored", "athlete not connected")
    try:
        # Events are not signed: only Strava refusing an unexpired token proves the revocation.
        proven = revoked(svc, connection.rider_id)
    except NoPermit as exc:
        _queue_revocation_check(svc, athlete_id, at=datetime.fromtimestamp(exc.retry_at, UTC))
        return "waiting for rate budget"
    except (ReconnectNeeded, CredentialsRefused) as exc:
        return _finish(svc, athlete_id, "ignored", f"not confirmed, nothing deleted: {exc}")
    if not proven:
        return _finish(svc, athlete_id, "ignored", "Strava still accepts the rider's token")
    with svc.engine.begin() as conn:
        models.deauthorize(conn, connection.rider_id)
    log.info("rider %s revoked access; their Strava data is deleted", connection.rider_id)
    return _finish(svc, athlete_id, "done", None)


def _finish(svc: Services, athlete_id: int, status: str, reason: str | None) -> str:
    """Close the athlete's open events (those that arrived during the check too)."""
    with svc.engine.begin() as conn:
        events = models.open_events(conn, "athlete", athlete_id)
        models.set_event_status(conn, [e.id for e in events], status, reason)
    return status if reason is None else f"{status}: {reason}"


# -- sweeps and backfills -------------------------------------------------------------------------


def queue_sweep(
    svc: Services,
    trigger: str,
    *,
    dry_run: bool = False,
    max_riders: int | None = None,
    rider_id: int | None = None,
) -> dict:
    """Plan tonight's sweep, queue one job per planned rider, and say what was planned.

    One full sweep at a time: while one runs, or too soon after the last, nothing is queued.
    """
    if not dry_run:
        recovery.run_pass(svc, queue_stored_event)  # pending events too; closes runs that vanished
    if not sweeplock.guarded(dry_run, max_riders, rider_id):
        return _plan_and_queue(svc, trigger, dry_run, max_riders, rider_id, full=False)
    with sweeplock.planning(svc):
        refused = sweeplock.refusal(svc, trigger, models.now())
        if refused is None:
            return _plan_and_queue(svc, trigger, dry_run, max_riders, rider_id, full=True)
    return refused | {"planned": 0, "deferred": 0, "budget": svc.budget.snapshot()}


def _plan_and_queue(svc, trigger, dry_run, max_riders, rider_id, *, full: bool) -> dict:
    planned, deferred = reconcile.plan_sweep(svc, max_riders, rider_id)
    with svc.engine.begin() as conn:
        run_id = models.create_run(conn, "reconcile", trigger, dry_run)
        models.update_run(conn, run_id, riders_planned=len(planned), riders_deferred=deferred)
        models.finish_run_if_complete(conn, run_id)
        if full:
            sweeplock.record(conn, run_id)
    try:
        starts = reconcile.sweep_start_times(svc, len(planned))
        for rider, start in zip(planned, starts, strict=True):
            at = None if start is None else reschedule_at(start)
            queue_rider_job(svc, reconcile_rider, rider, run_id, dry_run, at=at)
    except redis.RedisError as exc:
        failures.run_failed(
            svc, run_id, f"could not queue the riders' jobs: Redis {type(exc).__name__}"
        )
        raise
    summary = {"run_id": run_id, "planned": len(planned), "deferred": deferred, "dry_run": dry_run}
    return summary | {"budget": svc.budget.snapshot()}


@logged(lambda rider_id, run_id, *_: f"sweep #{run_id} of rider {rider_id}")
def reconcile_rider(rider_id: int, run_id: int, dry_run: bool = False) -> dict:
    """Compare one rider's recent activities with Strava's and repair the difference."""
    svc = services.current()
    try:
        repair = reconcile.repair_rider(svc, rider_id, dry_run=dry_run)
    except NoPermit as exc:
        with svc.engine.begin() as conn:
            models.add_to_run(conn, run_id, riders_rescheduled=1)
        queue_rider_job(
            svc, reconcile_rider, rider_id, run_id, dry_run, at=reschedule_at(exc.retry_at)
        )
        return {"waiting_until": exc.retry_at}
    except Unauthorized as exc:
        # A refused token is how a missed revocation shows: let the revocation check decide.
        with svc.engine.connect() as conn:
            connection = models.get_connection(conn, rider_id)
        if connection is not None:
            _queue_revocation_check(svc, connection.athlete_id)
        failures.rider_done(svc, run_id, error=f"rider {rider_id}: {exc}")
        return {"error": "token refused"}
    except (ReconnectNeeded, CredentialsRefused) as exc:
        failures.rider_done(
            svc, run_id, error=str(exc)
        )  # not a revocation: no check, nothing deleted
        return {"error": "no usable grant"}
    if dry_run:
        note_differences(svc, run_id, rider_id, repair.changes)
    failures.rider_done(svc, run_id, **repair.counts())
    return repair.counts()
