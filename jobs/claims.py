"""Claims in Redis: one queued job per activity fetch, or per revocation check.

A claim is a key naming the job that will do an object's work. While that job is queued or
scheduled, a new event for the object rides on it instead of queueing another; once the job
starts it releases the claim, so an event arriving during the work gets exactly one more job.
"""

from __future__ import annotations

import redis
from rq import get_current_job

from jobs import rqstore

CLAIM_TTL = 2 * 86400  # a claimed fetch may wait for tomorrow's rate budget
CLAIM_GRACE_MS = 10_000  # a claim whose job is not yet in Redis is being enqueued right now

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# The keys keep their first name ("waiting"): claims taken before an upgrade stay honoured.
def activity_claim(owner_id: int, activity_id: int) -> str:
    """The claim on an activity's fetch for one owner.

    Keyed by owner too: a forged event naming another athlete's activity never rides on theirs.
    """
    return f"strava-sync:waiting:activity:{owner_id}:{activity_id}"


def revocation_claim(athlete_id: int) -> str:
    """The claim on an athlete's revocation check."""
    return f"strava-sync:waiting:revoke:{athlete_id}"


def claim(conn: redis.Redis, key: str, job_id: str) -> str | None:
    """Claim `key` for job_id (None: enqueue it), or the id of the queued job that holds it."""
    return rqstore.claim_unless_waiting(conn, key, job_id, CLAIM_TTL, CLAIM_GRACE_MS)


def release(conn: redis.Redis, key: str) -> None:
    """Give up the claim if the running job holds it: later events need a job after this one."""
    job = get_current_job()
    if job is not None:
        conn.register_script(_RELEASE)(keys=[key], args=[job.id])


def drop(conn: redis.Redis, key: str, job_id: str) -> None:
    """Give up the claim if job_id holds it: that job was cancelled, its work done another way."""
    conn.register_script(_RELEASE)(keys=[key], args=[job_id])
