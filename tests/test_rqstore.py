"""Our reads of RQ's job hash agree with RQ itself, for every state RQ's own API puts a job in.

Run against the pinned RQ (requirements.txt): a new RQ that stores jobs differently fails here,
not silently in the recovery pass or the claims.
"""

from datetime import UTC, datetime, timedelta

import pytest
from rq import get_current_job
from rq.job import Job, JobStatus

from jobs import claims, rqstore
from jobs.inline import InlineWorker

SEEN: dict[str, tuple] = {}
KEY = "strava-sync:waiting:test"
# A claim's age is read from its TTL: this one was taken a second past the grace period.
OLDER_THAN_GRACE = claims.CLAIM_TTL * 1000 - claims.CLAIM_GRACE_MS - 1000


def observe() -> None:
    """A job that records what our readers say about itself while it runs."""
    job = get_current_job()
    job.connection.set(KEY, job.id, ex=claims.CLAIM_TTL)
    holder = claims.claim(job.connection, KEY, "newcomer")
    SEEN[job.id] = (job.get_status(), rqstore.job_alive(job.connection, job.id), holder)


def fail() -> None:
    raise RuntimeError("planned failure")


def run(svc) -> None:
    InlineWorker([svc.queue("strava")], connection=svc.redis).work(burst=True)


def in_state(svc, state: str) -> Job:
    """A job put into `state` by RQ's own API (and, for the finished states, its own worker)."""
    queue = svc.queue("strava")
    if state == "scheduled":
        return queue.enqueue_at(datetime.now(UTC) + timedelta(hours=1), observe)
    if state == "deferred":
        return queue.enqueue(observe, depends_on=queue.enqueue_at(datetime.now(UTC), observe))
    job = queue.enqueue(fail if state == "failed" else observe)
    if state in ("finished", "failed"):
        run(svc)
    elif state == "canceled":
        job.cancel()
    elif state == "deleted":
        job.delete()
    return job


STATES = ["queued", "scheduled", "deferred", "finished", "failed", "canceled", "deleted"]


@pytest.mark.parametrize("state", STATES)
def test_job_alive_agrees_with_rq(svc, state):
    job = in_state(svc, state)
    status = Job.fetch(job.id, connection=svc.redis).get_status() if state != "deleted" else None
    assert (status or "deleted") == state

    assert rqstore.job_alive(svc.redis, job.id) == (status in rqstore.ALIVE)
    assert rqstore.job_alive(svc.redis, job.id) == (state in ("queued", "scheduled", "deferred"))


@pytest.mark.parametrize("state", STATES)
def test_a_claim_rides_on_a_job_exactly_while_rq_says_it_waits(svc, state):
    job = in_state(svc, state)
    svc.redis.set(KEY, job.id, px=OLDER_THAN_GRACE)

    holder = claims.claim(svc.redis, KEY, "newcomer")

    waiting = state in ("queued", "scheduled", "deferred")
    assert holder == (job.id if waiting else None)
    assert svc.redis.get(KEY).decode() == (job.id if waiting else "newcomer")


def test_a_running_job_is_alive_but_its_claim_is_taken(svc):
    job = svc.queue("strava").enqueue(observe)

    run(svc)

    # Running: the recovery pass leaves its events alone, and a new event needs a job after it.
    assert SEEN[job.id] == (JobStatus.STARTED, True, None)


def test_a_fresh_claim_whose_job_is_not_in_redis_yet_is_being_enqueued(svc):
    svc.redis.set(KEY, "being-enqueued", ex=claims.CLAIM_TTL)

    assert claims.claim(svc.redis, KEY, "newcomer") == "being-enqueued"


def test_no_job_id_is_not_alive(svc):
    assert not rqstore.job_alive(svc.redis, None)
    assert not rqstore.job_alive(svc.redis, "never-queued")


def test_a_job_popped_by_a_worker_that_died_before_starting_it_is_lost(svc):
    """RQ pops from several queues with LPOP: a worker killed right after holds the job alone."""
    job = svc.queue("strava").enqueue(observe)
    svc.redis.set(KEY, job.id, px=OLDER_THAN_GRACE)
    assert svc.redis.lpop(svc.queue("strava").key).decode() == job.id  # what the worker did

    assert Job.fetch(job.id, connection=svc.redis).get_status() == JobStatus.QUEUED  # RQ's view
    assert not rqstore.job_alive(svc.redis, job.id)
    assert claims.claim(svc.redis, KEY, "newcomer") is None  # the next event gets a live job
    assert svc.redis.get(KEY) == b"newcomer"


def test_a_job_moved_to_the_intermediate_list_of_a_one_queue_worker_waits(svc):
    queue = svc.queue("strava")
    job = queue.enqueue(observe)
    svc.redis.lmove(queue.key, queue.intermediate_queue_key)  # RQ's one-queue dequeue
    svc.redis.set(KEY, job.id, px=OLDER_THAN_GRACE)

    assert rqstore.job_alive(svc.redis, job.id)
    assert claims.claim(svc.redis, KEY, "newcomer") == job.id
