"""What a job's failure leaves behind: the events it carried and the run it reported to.

RQ calls `mark_failed` when a job raises (after its last retry, it closes what the job carried);
`rider_done` and `run_failed` close a rider's part of a sweep, backfill or history check. The
callback reads what it needs from `job.meta` (see `queueing.enqueue`).
"""

from __future__ import annotations

import logging

import redis
from rq.job import Job

import models
import services
from services import Services
from strava_client import ApplicationInactive, StravaError

log = logging.getLogger(__name__)


def mark_failed(job: Job, connection: redis.Redis, exc_type, exc_value, traceback) -> None:
    """RQ failure callback: once no retries are left, record why on the job's events."""
    svc = services.current()
    if isinstance(exc_value, ApplicationInactive):
        # Nothing works until the application's owner renews: make it plain to the operator.
        log.error("%s", exc_value)
        with svc.engine.begin() as conn:
            models.set_setting(conn, "application_inactive_at", svc.now().isoformat())
    if job.retries_left:
        return  # RQ will try again
    # StravaError messages name no token; other exceptions are reduced to their type.
    reason = str(exc_value)[:500] if isinstance(exc_value, StravaError) else exc_type.__name__
    if "run_id" in job.meta:
        rider_done(svc, job.meta["run_id"], error=f"rider {job.meta['rider_id']}: {reason}")
        return
    if "events" not in job.meta:
        return
    object_type, object_id = job.meta["events"]
    owner = job.meta.get("owner")  # a fetch carries its owner's events only, never a victim's
    with svc.engine.begin() as conn:
        events = models.open_events(conn, object_type, object_id)
        ids = [e.id for e in events if owner is None or e.owner_id == owner]
        models.set_event_status(conn, ids, "failed", reason, now=svc.now())


def rider_done(svc: Services, run_id: int, error: str | None = None, **counts: int) -> None:
    """Count one rider of a run as done (with its figures or error); close the run when all are."""
    with svc.engine.begin() as conn:
        models.add_to_run(conn, run_id, riders_done=1, **counts, now=svc.now())
        if error:
            models.update_run(conn, run_id, error=error[:500])
        models.finish_run_if_complete(conn, run_id, now=svc.now())


def run_failed(svc: Services, run_id: int, reason: str) -> None:
    """End a run that could not queue its work as failed, with the reason."""
    with svc.engine.begin() as conn:  # a run that could not queue its work never stays running
        models.update_run(conn, run_id, status="failed", error=reason, finished_at=svc.now())
