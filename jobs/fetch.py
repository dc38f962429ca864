"""The event jobs: fetch one activity, check one athlete's revocation, and how events queue them.

Jobs take ids, never tokens, load what they need, and may run twice (a killed worker's job is run
again), so each one brings our copy in line with Strava rather than applying a change blindly.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis
from redis.exceptions import LockNotOwnedError
from rq import get_current_job
from rq.job import Job

import models
import services
from jobs import backlog, catchup, claims, pacing, queueing
from jobs.joblog import logged
from jobs.queueing import enqueue, seconds_from_now
from services import Services
from strava_client import NotFound, Unauthorized, parse_activity
from strava_client.ratebudget import NoPermit
from strava_client.tokens import CredentialsRefused, ReconnectNeeded, access_token, revoked
from sync import allowance, eddington

log = logging.getLogger(__name__)

NOT_FOUND_RETRIES = (60, 300, 900)  # Strava can 404 for a while right after a create event
# A fetch's lock outlives any live fetch; a killed worker's lock lapses soon after (a killed work
# horse's is freed at once by its worker: `release_fetch_lock`).
FETCH_LOCK_TTL = queueing.FETCH_TIMEOUT + 15
# The most Strava reads one event can cost: each of its job's tries (the first and RQ's retries of
# a failure) reads once, and a create's fetch reads again for each 404 retry. A catch-up list and a
# revocation check are one read, shared by every event that waits for them.
MAX_READS_PER_EVENT = (1 + len(queueing.RETRY_INTERVALS)) * (1 + len(NOT_FOUND_RETRIES))


def _queue_fetch(
    svc: Services, owner_id: int, activity_id: int, at=None, job_id=None, **kw
) -> tuple:
    """Queue one fetch of an activity unless a queued one holds the claim: (queued now?, its id)."""
    job_id = job_id or queueing.new_job_id({"object_type": "activity", "object_id": activity_id})
    holder = claims.claim(svc.redis, claims.activity_claim(owner_id, activity_id), job_id)
    if holder:
        return False, holder
    meta = {"events": ["activity", activity_id], "owner": owner_id}
    at = pacing.release_at(svc, at)
    enqueue(svc, sync_activity, owner_id, activity_id, at=at, job_id=job_id, meta=meta, **kw)
    return True, job_id


def queue_activity_sync(svc: Services, owner_id: int, activity_id: int, at=None, **kw) -> bool:
    """Queue one fetch of an activity unless a queued one holds the claim; True if queued now."""
    return _queue_fetch(svc, owner_id, activity_id, at=at, **kw)[0]


def _created_fetch_at(svc: Services, fields: dict) -> datetime | None:
    """When a create event's fetch should run: after the delay, when most first edits are in."""
    delay = svc.settings.create_fetch_delay_seconds
    if fields["aspect_type"] != "create" or not delay:
        return None
    return seconds_from_now(svc, delay)


def queue_event(svc: Services, fields: dict, job_id: str | None = None) -> str | None:
    """Queue the work for a stored event; returns the job that carries it (None: a catch-up).

    `job_id` names the job if one is queued; the answer differs when the event rides on the
    queued job that holds the claim. Redis errors go to the caller: the event is left to the
    recovery pass.
    """
    if fields["object_type"] == "athlete":
        return queue_revocation_check(svc, fields["owner_id"], job_id=job_id)
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


def queue_revocation_check(svc: Services, athlete_id: int, at=None, job_id=None) -> str:
    """One revocation check per athlete at a time: forged events in bulk cost one check."""
    job_id = job_id or queueing.new_job_id({"object_type": "athlete", "object_id": athlete_id})
    holder = claims.claim(svc.redis, claims.revocation_claim(athlete_id), job_id)
    if holder:
        return holder
    meta = {"events": ["athlete", athlete_id], "owner": athlete_id}
    at = pacing.release_at(svc, at)
    enqueue(svc, revoke_athlete, athlete_id, at=at, job_id=job_id, meta=meta)
    return job_id


def _fetch_lock(conn: redis.Redis, activity_id: int):
    return conn.lock(f"strava-sync:activity-lock:{activity_id}", timeout=FETCH_LOCK_TTL)


def release_fetch_lock(conn: redis.Redis, job: Job) -> bool:
    """Free the activity lock a fetch job held when its work horse died; True if it held one.

    The lock holds the id of the job that took it, so only that job's lock goes: a fetch of the
    same activity by any other job keeps its own.
    """
    try:
        if job.func is not sync_activity:
            return False
    except ValueError:  # a function this release does not have: not a fetch
        return False
    try:
        _fetch_lock(conn, job.args[1]).do_release(job.id)
    except LockNotOwnedError:
        return False  # it never took the lock, or the lock lapsed already
    return True


@logged(lambda owner_id, activity_id, *_: f"activity {activity_id} of athlete {owner_id}")
def sync_activity(owner_id: int, activity_id: int, not_found_retry: int = 0) -> str:
    """Fetch one activity from Strava and bring our copy in line with it."""
    svc = services.current()
    lock = _fetch_lock(svc.redis, activity_id)
    job = get_current_job()
    if not lock.acquire(blocking=False, token=job.id if job else None):
        # Another fetch of this activity is running; this one must come after it, not beside it.
        queue_activity_sync(
            svc,
            owner_id,
            activity_id,
            at=seconds_from_now(svc, 10),
            not_found_retry=not_found_retry,
        )
        return "busy: fetch handed to a later job"
    try:
        # From here on a new event gets a new fetch, after this one.
        claims.release(svc.redis, claims.activity_claim(owner_id, activity_id))
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
            models.set_event_status(
                conn, event_ids, "ignored", f"athlete {owner_id} not connected", now=svc.now()
            )
            return "ignored: athlete not connected"
        if connection.needs_reconnect_since is not None:
            models.set_event_status(
                conn, event_ids, "ignored", "the rider must reconnect first", now=svc.now()
            )
            return "ignored: the rider must reconnect"
        held = models.activities_by_id(conn, [activity_id]).get(activity_id)
        if (held is None or held["athlete_id"] != owner_id) and not allowance.take(svc, owner_id):
            return _await_catch_up(svc, owner_id, activity_id)
        models.count_attempt(conn, event_ids)
    rider_id = connection.rider_id
    try:
        token = access_token(svc, rider_id)
        if backlog.served_by_list(svc, connection, activity_id):
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
            models.set_event_status(conn, event_ids, "failed", str(exc)[:500], now=svc.now())
        return "failed: Strava refused the rider's token"
    values = parse_activity(data)
    with svc.engine.begin() as conn:
        if models.lock_live_connection(conn, rider_id, owner_id) is None:  # went while we read
            reason = f"athlete {owner_id} not connected"
            models.set_event_status(conn, event_ids, "ignored", reason, now=svc.now())
            return "ignored: athlete not connected"
        outcome = "foreign"
        if values["athlete_id"] == owner_id:
            outcome = models.upsert_activity(conn, rider_id, values, now=svc.now())
        if outcome == "foreign":
            models.set_event_status(
                conn, event_ids, "failed", "activity belongs to another athlete", now=svc.now()
            )
            return "failed: activity belongs to another athlete"
        if outcome != "unchanged":
            eddington.store_numbers(conn, rider_id, svc.settings.eddington_sport_types)
        models.update_connection(conn, rider_id, last_sync=svc.now())
        models.set_event_status(conn, event_ids, "done", now=svc.now())
    return outcome


def _not_found(svc, rider_id, owner_id, activity_id, events, not_found_retry) -> str:
    """Strava says 404: deleted, hidden from our scope, or (right after a create) not ready yet."""
    event_ids = [e.id for e in events]
    with svc.engine.begin() as conn:
        if models.lock_live_connection(conn, rider_id, owner_id) is None:  # went while we read
            reason = f"athlete {owner_id} not connected"
            models.set_event_status(conn, event_ids, "ignored", reason, now=svc.now())
            return "ignored: athlete not connected"
        held = models.delete_activity(conn, activity_id, owner_id) is not None
        just_created = bool(events) and events[-1].aspect_type == "create" and not held
        if held:
            eddington.store_numbers(conn, rider_id, svc.settings.eddington_sport_types)
        if not just_created:
            models.set_event_status(conn, event_ids, "done", now=svc.now())
            return "deleted" if held else "absent"
        if not_found_retry >= len(NOT_FOUND_RETRIES):
            models.set_event_status(
                conn,
                event_ids,
                "failed",
                "Strava still answers 404 after retries; "
                "the nightly sweep will pick the activity up if it appears",
                now=svc.now(),
            )
            return "failed: not found after create"
    delay = NOT_FOUND_RETRIES[not_found_retry]
    retry = not_found_retry + 1
    queue_activity_sync(
        svc, owner_id, activity_id, at=seconds_from_now(svc, delay), not_found_retry=retry
    )
    return f"not found yet: retrying in {delay} s"


def _await_catch_up(svc: Services, owner_id: int, activity_id: int) -> str:
    """Over the athlete's allowance: the activity waits for their catch-up list (one request)."""
    if allowance.wait_for_catch_up(svc, owner_id, activity_id):
        at = allowance.catch_up_time(svc, owner_id)
        enqueue(svc, catchup.catch_up_athlete, owner_id, at=at)
    return "waiting for the athlete's catch-up list"


@logged(lambda athlete_id, *_: f"revocation check of athlete {athlete_id}")
def revoke_athlete(athlete_id: int) -> str:
    """Confirm an athlete's revocation with Strava, then remove their Strava data."""
    svc = services.current()
    # An event from now on gets a check after this one.
    claims.release(svc.redis, claims.revocation_claim(athlete_id))
    with svc.engine.connect() as conn:
        connection = models.get_connection_by_athlete(conn, athlete_id)
    if connection is None or connection.refresh_token is None:
        return _finish(svc, athlete_id, "ignored", "athlete not connected")
    try:
        # Events are not signed: only Strava refusing an unexpired token proves the revocation.
        proven = revoked(svc, connection.rider_id)
    except NoPermit as exc:
        queue_revocation_check(svc, athlete_id, at=datetime.fromtimestamp(exc.retry_at, UTC))
        return "waiting for rate budget"
    except (ReconnectNeeded, CredentialsRefused) as exc:
        return _finish(svc, athlete_id, "ignored", f"not confirmed, nothing deleted: {exc}")
    if not proven:
        return _finish(svc, athlete_id, "ignored", "Strava still accepts the rider's token")
    with svc.engine.begin() as conn:
        models.deauthorize(conn, connection.rider_id, now=svc.now())
    log.info("rider %s revoked access; their Strava data is deleted", connection.rider_id)
    return _finish(svc, athlete_id, "done", None)


def _finish(svc: Services, athlete_id: int, status: str, reason: str | None) -> str:
    """Close the open events of the athlete checked (those that arrived during the check too).

    By owner: the check ran for the events' owner, so those are the events it answered.
    """
    with svc.engine.begin() as conn:
        events = models.open_events_by_owner(conn, "athlete", athlete_id)
        models.set_event_status(conn, [e.id for e in events], status, reason, now=svc.now())
    return status if reason is None else f"{status}: {reason}"
