"""The nightly sweep: plan which riders tonight's budget reaches, and each rider's sweep job.

Planning itself is `reconcile.plan_sweep`; this module runs the recovery pass first, keeps to one
full sweep at a time (`sweeplock`), records the run and queues one `reconcile_rider` a rider.
"""

from __future__ import annotations

import redis

import models
import reconcile
import services
from jobs import failures, fetch, recovery
from jobs.joblog import logged, note_differences
from jobs.queueing import queue_rider_job, reschedule_at
from services import Services
from strava_client import Unauthorized
from strava_client.ratebudget import NoPermit
from strava_client.tokens import CredentialsRefused, ReconnectNeeded
from sync import sweeplock


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
        recovery.run_pass(svc)  # pending events too; closes runs that vanished
    if not sweeplock.is_full_sweep(dry_run, max_riders, rider_id):
        return _plan_and_queue(svc, trigger, dry_run, max_riders, rider_id, full=False)
    with sweeplock.planning(svc):
        refused = sweeplock.refusal(svc, trigger, svc.now())
        if refused is None:
            return _plan_and_queue(svc, trigger, dry_run, max_riders, rider_id, full=True)
    return refused | {"planned": 0, "deferred": 0, "budget": svc.budget.snapshot()}


def _plan_and_queue(svc, trigger, dry_run, max_riders, rider_id, *, full: bool) -> dict:
    planned, deferred = reconcile.plan_sweep(svc, max_riders, rider_id)
    with svc.engine.begin() as conn:
        run_id = models.create_run(conn, "reconcile", trigger, dry_run=dry_run, now=svc.now())
        models.update_run(conn, run_id, riders_planned=len(planned), riders_deferred=deferred)
        models.finish_run_if_complete(conn, run_id, now=svc.now())
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
            models.add_to_run(conn, run_id, riders_rescheduled=1, now=svc.now())
        queue_rider_job(
            svc, reconcile_rider, rider_id, run_id, dry_run, at=reschedule_at(exc.retry_at)
        )
        return {"waiting_until": exc.retry_at}
    except Unauthorized as exc:
        # A refused token is how a missed revocation shows: let the revocation check decide.
        with svc.engine.connect() as conn:
            connection = models.get_connection(conn, rider_id)
        if connection is not None:
            fetch.queue_revocation_check(svc, connection.athlete_id)
        failures.rider_done(svc, run_id, error=f"rider {rider_id}: {exc}")
        return {"error": "token refused"}
    except (ReconnectNeeded, CredentialsRefused) as exc:
        # Not a revocation: no check, nothing deleted.
        failures.rider_done(svc, run_id, error=str(exc))
        return {"error": "no usable grant"}
    if dry_run:
        note_differences(svc, run_id, rider_id, repair.changes)
    failures.rider_done(svc, run_id, **repair.counts())
    return repair.counts()
