"""How every job is queued: the options (queue, retries, timeouts, TTLs), job ids, and times.

The lowest of the job modules: each job module queues its own function, and any job that queues
another module's function imports that module, so every job is named by reference, never by a
dotted string. Job options live in `enqueue` alone.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

from rq import Callback, Retry

from jobs import failures
from services import Services

FETCH_TIMEOUT = 60  # RQ stops an activity fetch after this long
RIDER_TIMEOUT = 600  # RQ stops a rider's sweep or backfill job after this long
RETRY_INTERVALS = [30, 120, 600]  # seconds before each of RQ's retries of a failed job


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
        retry=Retry(max=len(RETRY_INTERVALS), interval=RETRY_INTERVALS),
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
    if svc.runner is not None:
        svc.runner.wake()  # inline mode: the in-process worker runs what was just queued
    return job


def queue_rider_job(svc: Services, func, rider_id: int, run_id: int, *args, at=None) -> None:
    """Queue one rider's part of a run (sweep, backfill, history check) on the reconcile queue."""
    meta = {"run_id": run_id, "rider_id": rider_id}
    enqueue(svc, func, rider_id, run_id, *args, queue="reconcile", at=at, meta=meta)


def new_job_id(fields: dict) -> str:
    """A fresh id for the job an event's work would get (stored with the event beforehand)."""
    kind = "revoke-athlete" if fields["object_type"] == "athlete" else "sync-activity"
    return f"{kind}-{fields['object_id']}-{uuid.uuid4().hex[:12]}"


def seconds_from_now(svc: Services, seconds: float) -> datetime:
    """The time `seconds` from now on the services' clock (a driven clock schedules in its time)."""
    return datetime.fromtimestamp(svc.clock() + seconds, UTC)


def reschedule_at(when: float) -> datetime:
    """When a job that waited for the rate budget runs again: just after `when`, jittered."""
    # Jitter spreads the jobs that all waited for the same window reset.
    return datetime.fromtimestamp(when + random.uniform(1, 30), UTC)
