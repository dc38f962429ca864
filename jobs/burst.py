"""What a burst of work (`strava work`) needs beyond RQ: due jobs moved by our clock, a record.

A worker that stays up has RQ's scheduler move scheduled jobs (the create delay, 404 retries,
budget waits) to their queues when their time comes. A burst run does that itself, by the
services' clock (so tests can say what "now" is), under the scheduler's own per-queue locks, so
a scheduler on a host, or another burst run, never moves the same job twice. Each finished run
is recorded in Redis, where `strava status` looks for workers that come and go.
"""

from __future__ import annotations

import json

from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.scheduler import RQScheduler

from services import QUEUES, Services

LAST_RUN_KEY = "strava-sync:work:last-run"
LAST_RUN_TTL = 7 * 86400  # long enough for a week's gap to show as "last run 6 days ago"


def promote_due(svc: Services, now: float) -> list[str]:
    """Move scheduled jobs due by `now` (epoch seconds) to their queues; returns their ids.

    Queues whose scheduler lock another process holds are left to that process.
    """
    scheduler = RQScheduler(list(QUEUES), connection=svc.redis)
    locked = scheduler.acquire_locks()
    moved = []
    try:
        for name in locked:
            moved += _promote(svc, name, int(now))
    finally:
        scheduler.release_locks()
    return moved


def _promote(svc: Services, name: str, timestamp: int) -> list[str]:
    queue = svc.queue(name)
    registry = ScheduledJobRegistry(queue=queue)
    job_ids = registry.get_jobs_to_schedule(timestamp)
    if not job_ids:
        return []
    with svc.redis.pipeline() as pipe:
        for job in Job.fetch_many(job_ids, connection=svc.redis):
            if job is not None:  # its hash expired: nothing left to run
                queue.enqueue_job(job, pipeline=pipe)
        for job_id in job_ids:
            registry.remove(job_id, pipeline=pipe)
        pipe.execute()
    return job_ids


def record_run(svc: Services, summary: dict) -> None:
    """Remember a finished run (its summary, with when it ended) for `strava status`."""
    ended = svc.now().isoformat(timespec="seconds")
    svc.redis.set(LAST_RUN_KEY, json.dumps({**summary, "finished_at": ended}), ex=LAST_RUN_TTL)


def last_run(svc: Services) -> dict | None:
    """The last recorded run's summary, or None."""
    raw = svc.redis.get(LAST_RUN_KEY)
    return json.loads(raw) if raw else None
