"""The recovery pass: no event stays queued, no run stays running, no data is kept past its time.

Redis can restart empty and workers can die, so the durable state in the database is checked
against what Redis still holds: events `pending` or `queued` whose job is gone are queued again (the
per-object claims make that harmless when the job does exist), and runs with no job left and no
progress are closed `abandoned`. Riders whose grant was lost are purged after the grace period,
and old events are pruned. Every step works in small batches and is safe to run twice.

Who runs it: every sweep (before planning, so a run whose jobs vanished cannot block the next
sweep), and workers, two ways. A scheduled job (`jobs.recover`) runs it every `EVERY` seconds and
schedules its successor, so idle workers keep it going; and the first fetch job after `EVERY`
seconds runs it and restarts that chain, which a Redis that restarted empty has lost (with the key
saying the pass ran). `requeue` is `jobs.queue_stored_event`, passed in: jobs builds on this module.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis
from rq import Queue, Retry
from rq.job import Job
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from sqlalchemy.exc import SQLAlchemyError

import models
from jobs import claims

log = logging.getLogger(__name__)

EVERY = 30  # seconds between passes started by workers (a pass is a few small queries)
RAN_KEY = "strava-sync:recovery-ran"
CHAIN_FLAG = "strava-sync:waiting:recovery"
RECOVERY_PREFIX = "recovery-"  # the recurring job's id starts so: status and `work` leave it out
CHAIN_RETRIES = 2880  # a day of retries, EVERY seconds apart
# A queued event's job is in Redis before the row says queued; this covers a claim whose job
# another process is enqueueing right now (claims.CLAIM_GRACE_MS) and a webhook still queueing.
ORPHAN_AFTER = timedelta(seconds=15)
STALE_AFTER = timedelta(days=3)  # longer than any fetch may wait for budget (claims.WAITING_TTL)
# A rider job runs at most 600 s (jobs.RIDER_TIMEOUT); RQ retries a killed one within minutes.
ABANDON_AFTER = timedelta(seconds=600 + 900)
BATCH = 200  # rows each step handles per pass
PRUNE_BATCHES = 5  # prune batches per pass, each its own short transaction
LIVE = (b"queued", b"scheduled", b"started", b"deferred")
# Whether a pass is due, by the services' clock (a driven clock drives the passes too): the time
# of the last pass is kept in RAN_KEY, and only one process at a time may claim the next one.
_CLAIM_RECOVERY = """
local last = tonumber(redis.call('GET', KEYS[1]))
local now = tonumber(ARGV[1])
if last and now >= last and now - last < tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', 86400)
return 1
"""


def run_if_due(svc, requeue: Callable) -> dict | None:
    """Run the pass if no process ran it in the last EVERY seconds, and keep the chain going.

    Catches Redis and database errors (and logs them): the job it piggybacks on must not fail.
    """
    try:
        claim = svc.redis.register_script(_CLAIM_RECOVERY)
        if not claim(keys=[RAN_KEY], args=[repr(svc.clock()), EVERY]):
            return None
        schedule_next(svc)
        return run_pass(svc, requeue)
    except (redis.RedisError, SQLAlchemyError) as exc:
        log.warning("the recovery pass stopped early (%s); the next one carries on", exc)
        return None


def schedule_next(svc) -> None:
    """Schedule the next `jobs.recover` in EVERY seconds, unless one is already scheduled."""
    job_id = f"{RECOVERY_PREFIX}{uuid.uuid4().hex[:12]}"
    if claims.claim(svc.redis, CHAIN_FLAG, job_id):
        return
    at = datetime.fromtimestamp(svc.clock() + EVERY, UTC)
    # Named, not imported: jobs imports this module (see the module docstring).
    # Retried, not dropped, when Redis fails under it: a broken chain would stop the passes.
    retry = Retry(max=CHAIN_RETRIES, interval=EVERY)
    options = {"job_id": job_id, "result_ttl": EVERY, "failure_ttl": 86400, "retry": retry}
    Queue("reconcile", connection=svc.redis).enqueue_at(at, "jobs.recover", **options)


def run_pass(svc, requeue: Callable, now: datetime | None = None) -> dict:
    """One recovery pass; returns what each step did."""
    now = now or svc.now()
    with svc.engine.begin() as conn:
        failed = models.fail_stale_events(conn, now - STALE_AFTER, now=now)
    outcome = {
        "stale_failed": failed,
        "requeued": requeue_orphans(svc, requeue, now),
        "abandoned": close_abandoned_runs(svc, now),
        "purged": purge_overdue_reconnects(svc, now),
        "pruned": prune_events(svc, now),
    }
    if any(outcome.values()):
        log.info("recovery pass: %s", outcome)
    return outcome


def job_alive(svc, job_id: str | None) -> bool:
    """Whether Redis still holds the job as waiting or running."""
    if not job_id:
        return False
    return svc.redis.hget(Job.redis_job_namespace_prefix + job_id, "status") in LIVE


def requeue_orphans(svc, requeue: Callable, now: datetime) -> int:
    """Queue again the events whose job no longer exists (or never did); returns how many."""
    with svc.engine.connect() as conn:
        rows = models.queued_events(conn, now - ORPHAN_AFTER, BATCH)
        rows += [
            r for r in models.pending_events(conn, BATCH) if r.received_at < now - ORPHAN_AFTER
        ]
    orphans = [r for r in rows if not job_alive(svc, r.job_id)]
    for row in orphans:
        requeue(svc, row.id, dict(row._mapping))
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
