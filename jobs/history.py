"""The rotating full-history check: old deletions the nightly sweep's lookback never sees.

The sweep compares only the last RECONCILE_LOOKBACK_DAYS, so a missed delete of an older ride
stays with us for good. Once a day, after the sweep, a slice of the bulk budget (VERIFY_SLICE of
the day's reads) goes to riders whose history was last verified more than VERIFY_HISTORY_DAYS ago:
their whole history is listed page by page, newest first, and whatever we hold in each page's span
that Strava no longer lists is deleted (`reconcile.diff`). Nothing is created or updated here that
the sweep and the events would not; the check exists for the deletes. Cost: one read a page of 200
activities, so a rider with n activities costs about 1 + n/200 reads every VERIFY_HISTORY_DAYS.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import models
import reconcile
import services
from jobs import failures
from jobs.queueing import queue_rider_job, reschedule_at
from services import Services
from strava_client.ratebudget import NoPermit

VERIFY_SLICE = 0.1  # share of the day's read limit the history checks may plan
PLANNED_KEY = "strava-sync:history-planned:{day}"  # one planning a UTC day, across workers
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def pages_for(held: int) -> int:
    """List requests a history of `held` activities takes (the last page is short or empty)."""
    return held // reconcile.PER_PAGE + 1


def plan_checks(svc: Services) -> list[int]:
    """Riders whose history is due, as many as today's slice of the bulk budget covers."""
    snapshot = svc.budget.snapshot()
    limit_day = min(snapshot[b]["limit_day"] for b in ("overall", "read"))
    reads = min(int(limit_day * VERIFY_SLICE), svc.budget.available("bulk")["day"])
    now = svc.now()
    due_before = now - timedelta(days=svc.settings.verify_history_days)
    with svc.engine.connect() as conn:
        candidates = models.riders_to_verify(conn, due_before, limit=max(reads, 0))
    planned = []
    for rider_id, held in candidates:
        reads -= pages_for(held)
        if reads < 0:
            break
        planned.append(rider_id)
    return planned


def queue_checks(svc: Services) -> dict:
    """Plan today's history checks once (after today's sweep started) and queue one job a rider."""
    now = svc.now()
    with svc.engine.connect() as conn:
        sweeps = models.recent_runs(conn, limit=1)
    if not sweeps or sweeps[0].started_at.date() != now.date():
        return {"planned": 0, "reason": "today's sweep has not started"}
    key = PLANNED_KEY.format(day=now.date().isoformat())
    if not svc.redis.set(key, 1, nx=True, ex=2 * 86400):
        return {"planned": 0, "reason": "already planned today"}
    planned = plan_checks(svc)
    with svc.engine.begin() as conn:
        run_id = models.create_run(conn, "verify", "daily", now=svc.now())
        models.update_run(conn, run_id, riders_planned=len(planned))
        models.finish_run_if_complete(conn, run_id, now=svc.now())
    for rider_id in planned:
        queue_rider_job(svc, verify_history, rider_id, run_id)
    return {"run_id": run_id, "planned": len(planned)}


def verify_page(
    svc: Services, rider_id: int, before: int | None
) -> tuple[int | None, reconcile.Repair]:
    """Compare one page of the rider's history; returns (the next cursor or None, what changed)."""
    connection = reconcile.live_connection(svc, rider_id=rider_id)
    if connection is None:
        return None, reconcile.Repair()  # gone since planned: nothing of theirs is left to check
    before = before or int(svc.clock()) + 1
    upper = datetime.fromtimestamp(before, UTC)

    def held(conn, listing: reconcile.Listing):
        return models.activities_for_repair(conn, rider_id, _span(listing)[0], upper)

    compared = reconcile.compare_listing(
        svc,
        connection,
        lambda token: svc.client.list_activities(token, before=before, per_page=reconcile.PER_PAGE),
        held,
        kinds=("deleted",),  # the check is for deletes
    )
    if compared is None:
        return None, reconcile.Repair(requests=1)  # disconnected while Strava answered
    oldest = _span(compared.listing)[1]
    cursor = None if oldest is None else max(min(oldest + 1, before - 1), 1)
    return cursor, reconcile.Repair(changes=compared.changes, requests=1)


def _span(listing: reconcile.Listing) -> tuple[datetime, int | None]:
    """The start of the span a page answers for, and its oldest start when more pages follow."""
    oldest = min((int(v["start_date"].timestamp()) for v in listing.theirs.values()), default=None)
    if listing.sent < reconcile.PER_PAGE or oldest is None:
        return EPOCH, None
    # A full page may stop inside one second: that second is compared again on the next page.
    return datetime.fromtimestamp(oldest, UTC), oldest


def verify_history(rider_id: int, run_id: int, before: int | None = None) -> str:
    """List a rider's whole history and delete what Strava no longer lists; resumes after waits."""
    svc = services.current()
    cursor: int | None = before
    while True:
        try:
            cursor, repair = verify_page(svc, rider_id, cursor)
        except NoPermit as exc:
            at = reschedule_at(exc.retry_at)
            queue_rider_job(svc, verify_history, rider_id, run_id, cursor, at=at)
            return f"waiting for rate budget until {at.isoformat()}"
        with svc.engine.begin() as conn:
            models.add_to_run(conn, run_id, **repair.counts(), now=svc.now())
        if cursor is None:
            break
    now = svc.now()
    with svc.engine.begin() as conn:
        models.update_connection(conn, rider_id, history_verified_at=now)
    failures.rider_done(svc, run_id)
    return "verified"
