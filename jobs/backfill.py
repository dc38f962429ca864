"""A rider's history read from Strava (on connecting, or `strava backfill`), page by page.

The cursor (`backfill_before`) is saved after every page, so a backfill that runs out of budget
resumes where it stopped; `reconcile.backfill_page` reads one page.
"""

from __future__ import annotations

import redis

import models
import reconcile
import services
from jobs import failures
from jobs.joblog import logged
from jobs.queueing import queue_rider_job, reschedule_at
from services import Services
from strava_client.ratebudget import NoPermit


def queue_backfill(
    svc: Services, rider_id: int, days: int | None = None, trigger: str | None = None
) -> int:
    """Restart a rider's history read (all of it, or the last `days`); returns the run id."""
    trigger = trigger or ("connect" if days is None else "command")
    with svc.engine.begin() as conn:
        models.update_connection(conn, rider_id, backfill_before=None)
        run_id = models.create_run(conn, "backfill", trigger, now=svc.now())
        models.update_run(conn, run_id, riders_planned=1)
    try:
        queue_rider_job(svc, backfill_rider, rider_id, run_id, days)
    except redis.RedisError as exc:
        failures.run_failed(
            svc, run_id, f"could not queue the backfill: Redis {type(exc).__name__}"
        )
        raise
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
                models.add_to_run(conn, run_id, riders_rescheduled=1, now=svc.now())
            at = reschedule_at(exc.retry_at)
            queue_rider_job(svc, backfill_rider, rider_id, run_id, days, at=at)
            return f"waiting for rate budget until {at.isoformat()}"
        with svc.engine.begin() as conn:
            models.add_to_run(conn, run_id, **repair.counts(), now=svc.now())
    failures.rider_done(svc, run_id)
    return "done"
