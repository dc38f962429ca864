"""Every read of RQ's own storage (its job hash) in one place, checked against the pinned RQ.

RQ keeps a job as a hash under `Job.redis_job_namespace_prefix + id` whose `status` field holds
the `JobStatus` value, and a queued job's id in its queue's list. Two things read them without
RQ's API: the recovery pass (one small script call per event is far cheaper than `Job.fetch`,
which loads and unpickles the whole job) and the claim script (which must read the status inside
the same Lua call that takes the flag). A new RQ that changed the keys or the values would break
both silently; tests/test_rqstore.py holds them to RQ's answers.
"""

from __future__ import annotations

import redis
from rq import Queue
from rq.job import Job, JobStatus

JOB_KEY_PREFIX = Job.redis_job_namespace_prefix
QUEUE_KEY_PREFIX = Queue.redis_queue_namespace_prefix
# Waiting: will start without anyone's help. Alive: waiting, or running now.
WAITING = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)
ALIVE = (*WAITING, JobStatus.STARTED)

# The job's status, or false when Redis lost it. A job popped by a worker that died before it
# marked the job started is still "queued" in its hash but in no list: RQ's LPOP from several
# queues (ours listen to two) hands it to nobody, so "queued" counts only while the job's queue
# (or the intermediate list RQ uses for one queue) holds its id. ARGV[1]: job id; [2], [3]: the
# job and queue key prefixes.
_LIVE_STATUS = """
local function live_status(id, job_prefix, queue_prefix)
  local found = redis.call('HMGET', job_prefix .. id, 'status', 'origin')
  local status, origin = found[1], found[2]
  if status == 'queued' then
    local queue = queue_prefix .. (origin or '')
    if not redis.call('LPOS', queue, id) and not redis.call('LPOS', queue .. ':intermediate', id)
    then
      return 'lost'
    end
  end
  return status
end
"""
_JOB_STATUS = _LIVE_STATUS + "return live_status(ARGV[1], ARGV[2], ARGV[3])"

# Take the flag for ARGV[1] unless the job it names is waiting (its id is returned) or is not in
# Redis yet but took the flag under ARGV[5] ms ago (being enqueued right now: its id is returned).
_TAKE_FLAG = """
local current = redis.call('GET', KEYS[1])
if current then
  local status = live_status(current, ARGV[3], ARGV[4])
  for i = 6, #ARGV do
    if status == ARGV[i] then return current end
  end
  local age = tonumber(ARGV[2]) * 1000 - redis.call('PTTL', KEYS[1])
  if not status and age < tonumber(ARGV[5]) then return current end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""
_CLAIM = _LIVE_STATUS + _TAKE_FLAG


def job_alive(conn: redis.Redis, job_id: str | None) -> bool:
    """Whether Redis holds the job as waiting (in its queue, when queued) or running."""
    if not job_id:
        return False
    status = conn.register_script(_JOB_STATUS)(args=[job_id, JOB_KEY_PREFIX, QUEUE_KEY_PREFIX])
    return status is not None and status.decode() in ALIVE


def claim_unless_waiting(
    conn: redis.Redis, flag: str, job_id: str, ttl: int, grace_ms: int
) -> str | None:
    """Set `flag` to job_id for `ttl` seconds (None), or return the waiting job that holds it."""
    script = conn.register_script(_CLAIM)
    args = [job_id, ttl, JOB_KEY_PREFIX, QUEUE_KEY_PREFIX, grace_ms, *(s.value for s in WAITING)]
    waiting = script(keys=[flag], args=args)
    return waiting.decode() if isinstance(waiting, bytes) else waiting
