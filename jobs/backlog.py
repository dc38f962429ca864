"""A backlog of one athlete's waiting fetches served by one list of their recent activities.

A bulk upload, a day of edits, or the fetches that waited while the budget was spent leave an
athlete with several activities to fetch. When a fetch finds others of the athlete's activities
waiting, one list request (their 200 most recent, one read) stores every listed one and closes
its events, and the listed activities' waiting jobs are cancelled; an activity the list does not
show (older than the 200, deleted, not ready yet) keeps its own fetch. One list an athlete every
LIST_EVERY seconds at most, so made-up ids in bulk cannot make every fetch a list and a fetch.
"""

from __future__ import annotations

import contextlib

from rq.exceptions import NoSuchJobError
from rq.job import Job

import models
import reconcile
from jobs import claims
from services import Services

LIST_FROM = 2  # activities waiting (this one included) from which one list beats single fetches
WAITING = ("queued", "scheduled", "deferred")  # job states that have not started
LIST_EVERY = 300  # seconds between one athlete's lists: forged ids in bulk cost few extra reads


def served_by_list(svc: Services, connection, activity_id: int) -> bool:
    """List the athlete's recent activities if several wait; True when this one was among them.

    Raises NoPermit like a fetch: the caller's job then waits for its turn.
    """
    athlete_id = connection.athlete_id
    with svc.engine.connect() as conn:
        waiting = models.waiting_activities(conn, athlete_id)
    if len(waiting.keys() | {activity_id}) < LIST_FROM:
        return False
    # One key a LIST_EVERY span of the services' clock (a driven clock outruns Redis's expiry).
    key = f"strava-sync:backlog-listed:{athlete_id}:{int(svc.clock()) // LIST_EVERY}"
    if not svc.redis.set(key, 1, nx=True, ex=2 * LIST_EVERY):
        return False  # listed a moment ago: what it did not show needs its own fetch
    served: set[int] = set()

    def record(conn, comparison: reconcile.Comparison) -> None:
        served.update((waiting.keys() | {activity_id}) & comparison.listing.theirs.keys())
        events = [e for a in served for e in waiting.get(a, [])]
        models.set_event_status(conn, events, "done", now=svc.now())
        models.update_connection(conn, connection.rider_id, last_sync=svc.now())

    compared = reconcile.store_recent(svc, connection, record)
    if compared is None:
        return False  # disconnected while Strava answered: the fetch finds that out itself
    _cancel_fetches(svc, athlete_id, served - {activity_id})
    return activity_id in served


def _cancel_fetches(svc: Services, athlete_id: int, activity_ids) -> None:
    """Cancel the waiting fetch jobs of activities the list served (each would cost a read)."""
    for activity_id in activity_ids:
        key = claims.activity_claim(athlete_id, activity_id)
        job_id = svc.redis.get(key)
        if job_id is None:
            continue
        job_id = job_id.decode()
        with contextlib.suppress(NoSuchJobError):
            job = Job.fetch(job_id, connection=svc.redis)
            if job.get_status(refresh=False) in WAITING:
                job.delete()
        claims.drop(svc.redis, key, job_id)
