"""Every read of RQ's own storage (its job hash) in one place, checked against the pinned RQ.

RQ keeps a job as a hash under `Job.redis_job_namespace_prefix + id` whose `status` field holds
the `JobStatus` value. Two things read it without RQ's API: the recovery pass (one HGET per event
is far cheaper than `Job.fetch`, which loads and unpickles the whole job) and the claim script
(which must read the status inside the same Lua call that takes the flag). A new RQ that changed
the key or the values would break both silently; tests/test_rqstore.py holds them to RQ's answers.
"""

from __future__ import annotations

import redis
from rq.job import Job, JobStatus

JOB_KEY_PREFIX = Job.redis_job_namespace_prefix
# Waiting: will start without anyone's help. Alive: waiting, or running now.
WAITING = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)
ALIVE = (*WAITING, JobStatus.STARTED)

# Take the flag for ARGV[1] unless the job it names is waiting (its id is returned) or is not in
# Redis yet but took the flag under ARGV[4] ms ago (being enqueued right now: its id is returned).
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current then
  local status = redis.call('HGET', ARGV[3] .. current, 'status')
  for i = 5, #ARGV do
    if status == ARGV[i] then return current end
  end
  local age = tonumber(ARGV[2]) * 1000 - redis.call('PTTL', KEYS[1])
  if not status and age < tonumber(ARGV[4]) then return current end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""


def job_alive(conn: redis.Redis, job_id: str | None) -> bool:
    """Whether Redis holds the job as waiting or running."""
    if not job_id:
        return False
    status = conn.hget(JOB_KEY_PREFIX + job_id, "status")
    return status is not None and status.decode() in ALIVE


def claim_unless_waiting(
    conn: redis.Redis, flag: str, job_id: str, ttl: int, grace_ms: int
) -> str | None:
    """Set `flag` to job_id for `ttl` seconds (None), or return the waiting job that holds it."""
    script = conn.register_script(_CLAIM)
    args = [job_id, ttl, JOB_KEY_PREFIX, grace_ms, *(s.value for s in WAITING)]
    waiting = script(keys=[flag], args=args)
    return waiting.decode() if isinstance(waiting, bytes) else waiting
