"""The recovery pass: no event stays queued, no run stays running, no data is kept past its time.

Redis can restart empty and workers can die, so the durable state in the database is checked
against what Redis still holds: events `pending` or `queued` whose job is gone are queued again (the
claims make that harmless when the job does exist), and runs with no job left and no progress are
closed `abandoned`. Riders whose grant was lost are purged after the grace period, and old events
are pruned. Every step works in small batches and is safe to run twice.

Who runs it, and why each: every sweep, before planning (a run whose jobs vanished must not block
the next sweep); and whatever works the queues, between jobs, at most once every EVERY seconds
across processes (`run_if_due`): `worker.Worker`'s maintenance (it wakes every EVERY seconds when
idle) and, in inline mode, the in-process runner. Both run outside Redis, so a Redis that
restarted empty cannot stop them. A self-rescheduling job and a pass on every fetch once did the
same from inside Redis; the first vanished with a Redis restart (so the second had to restart it),
and both are gone.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import redis
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from sqlalchemy.exc import SQLAlchemyError

import models
from jobs import fetch, rqstore
from jobs.queueing import RIDER_TIMEOUT
from jobs.status import RECOVERY_RAN_KEY  # `strava status` warns when no pass runs

log = logging.getLogger(__name__)

EVERY = 30  # seconds between passes started by workers (a pass is a few small queries)
# Whether a pass is due, by the services' clock (a driven clock drives the passes too): the time
# of the last pass is kept in RECOVERY_RAN_KEY, and only one process at a time may claim the next.
_CLAIM_RECOVERY = """
local last = tonumber(redis.call('GET', KEYS[1]))
local now = tonumber(ARGV[1])
if last and now >= last and now - last < tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', 86400)
return 1
"""
# A queued event's job is in Redis before the row says queued; this covers a claim whose job
# another process is enqueueing right now (claims.CLAIM_GRACE_MS) and a webhook still queueing.
ORPHAN_AFTER = timedelta(seconds=15)
STALE_AFTER = timedelta(days=3)  # longer than any fetch may wait for budget (claims.CLAIM_TTL)
# A rider job runs at most RIDER_TIMEOUT; RQ retries a killed one within minutes.
ABANDON_AFTER = timedelta(seconds=RIDER_TIMEOUT + 900)
BATCH = 200  # rows each step handles per pass
PRUNE_BATCHES = 5  # prune batches per pass, each its own short transaction


def run_if_due(svc) -> dict | None:
    """Run the pass unless a process ran it in the last EVERY seconds; None when not run.

    Catches Redis and database errors (and logs them): the worker that runs it must go on.
    """
    try:
        claim = svc.redis.register_script(_CLAIM_RECOVERY)
        if not claim(keys=[RECOVERY_RAN_KEY], args=[repr(svc.clock()), EVERY]):
            return None
        return run_pass(svc)
    except (redis.RedisError, SQLAlchemyError) as exc:
        log.warning("the recovery pass stopped early (%s); the next one carries on", exc)
        return None


def run_pass(svc, now: datetime | None = None) -> dict:
    """One recovery pass; returns what each step did."""
    now = now or svc.now()
    with svc.engine.begin() as conn:
        failed = models.fail_stale_events(conn, now - STALE_AFTER, now=now)
    outcome = {
        "stale_failed": failed,
        "requeued": requeue_orphans(svc, now),
        "abandoned": close_abandoned_runs(svc, now),
        "purged": purge_overdue_reconnects(svc, now),
        "pruned": prune_events(svc, now),
    }
    if any(outcome.values()):
        log.info("recovery pass: %s", outcome)
    return outcome


def requeue_orphans(svc, now: datetime) -> int:
    """Queue again the events whose job no longer exists (or never did); returns how many."""
    with svc.engine.connect() as conn:
        rows = models.queued_events(conn, now - ORPHAN_AFTER, BATCH)
        rows += [
            r for r in models.pending_events(conn, BATCH) if r.received_at < now - ORPHAN_AFTER
        ]
    orphans = [r for r in rows if not rqstore.job_alive(svc.redis, r.job_id)]
    for row in orphans:
        fetch.queue_stored_event(svc, row.id, dict(row._mapping))
    return len(orphans)


def live_run_ids(svc) -> set[int]:
    """Runs that still have a rider job waiting, scheduled or running in Redis."""
    ids: set[str] = set()
    for name in ("reconcile", "strava"):
        queue = Queue(name, connection=svc.redis)
        ids.update(queue.get_job_ids())
        for registry in (ScheduledJobRegistry, StartedJobRegistry):
            ids.update(registry(queue=queue).get_job_ids(cleanup=False))
    jobs = Job.fetch_many(sorted(ids), connection=svc.redis)
    return {j.meta["run_id"] for j in jobs if j is not None and "run_id" in j.meta}


def close_abandoned_runs(svc, now: datetime) -> int:
    """Close runs with no job left in Redis and no progress for ABANDON_AFTER as `abandoned`."""
    with svc.engine.connect() as conn:
        running = models.running_runs(conn)
    if not running:
        return 0
    live = live_run_ids(svc)
    quiet = [r for r in running if (r.progress_at or r.started_at) < now - ABANDON_AFTER]
    stuck = [r for r in quiet if r.id not in live]
    with svc.engine.begin() as conn:
        for run in stuck:
            reason = "abandoned: its jobs vanished from Redis and no rider reported since"
            models.update_run(conn, run.id, status="abandoned", error=reason, finished_at=now)
    return len(stuck)


def purge_overdue_reconnects(svc, now: datetime) -> int:
    """Purge riders still unreconnected after RECONNECT_GRACE_DAYS, as for a revocation."""
    grace = timedelta(days=svc.settings.reconnect_grace_days)
    with svc.engine.begin() as conn:
        overdue = models.reconnect_overdue(conn, now - grace)[:BATCH]
        for rider_id in overdue:
            models.deauthorize(conn, rider_id, now=svc.now())
            log.info("rider %s never reconnected within the grace period; data purged", rider_id)
    return len(overdue)


def prune_events(svc, now: datetime) -> int:
    """Delete done/ignored events past EVENT_RETENTION_DAYS (failed: three times as long)."""
    days = svc.settings.event_retention_days
    pruned = 0
    for _ in range(PRUNE_BATCHES):
        with svc.engine.begin() as conn:
            n = models.prune_events(
                conn, now - timedelta(days=days), now - timedelta(days=3 * days), BATCH
            )
        pruned += n
        if n < BATCH:
            break
    return pruned
