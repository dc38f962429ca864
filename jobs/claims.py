"""Waiting-work flags in Redis: one queued job per activity fetch, or per revocation check.

A flag names the job that will do an object's work. While that job is queued or scheduled, a new
event for the object rides on it instead of queueing another; once the job starts it releases
the flag, so an event arriving during the work gets exactly one more job after it.
"""

from __future__ import annotations

import redis
from rq import get_current_job
from rq.job import Job

WAITING_TTL = 2 * 86400  # a waiting fetch may wait for tomorrow's rate budget
CLAIM_GRACE_MS = 10_000  # a claim whose job is not yet in Redis is being enqueued right now

# The flag's job is "waiting" while queued or scheduled; a new event then rides on it.
# Otherwise the caller's job id takes the flag and must be enqueued.
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


def activity_flag(owner_id: int, activity_id: int) -> str:
    """The flag of an activity's waiting fetch for one owner.

    Keyed by owner too: a forged event naming another athlete's activity never carries theirs.
    """
    return f"strava-sync:waiting:activity:{owner_id}:{activity_id}"


def revoke_flag(athlete_id: int) -> str:
    """The flag of an athlete's waiting revocation check."""
    return f"strava-sync:waiting:revoke:{athlete_id}"


def claim(conn: redis.Redis, flag: str, job_id: str) -> str | None:
    """Take a flag for job_id (None), or the id of the job already waiting on it."""
    script = conn.register_script(_CLAIM)
    args = [job_id, WAITING_TTL, Job.redis_job_namespace_prefix, CLAIM_GRACE_MS]
    waiting = script(keys=[flag], args=args)
    return waiting.decode() if isinstance(waiting, bytes) else waiting


def release(conn: redis.Redis, flag: str) -> None:
    """Give up the flag if the running job holds it: later events need a job after this one."""
    job = get_current_job()
    if job is not None:
        conn.register_script(_RELEASE)(keys=[flag], args=[job.id])


def drop(conn: redis.Redis, flag: str, job_id: str) -> None:
    """Give up the flag if job_id holds it: that job was cancelled, its work done another way."""
    conn.register_script(_RELEASE)(keys=[flag], args=[job_id])
