"""The nightly sweep and the backfill: compare what we hold with what Strava lists, fix the gap.

Events are hints and some never arrive, so once a night each rider's recent activities are listed
from Strava (summaries only: one request per 200 activities) and compared with our rows: missing or
changed ones are upserted, ones Strava no longer lists are deleted. Running it twice changes nothing
the second time. Planning takes riders least recently reconciled first, as many as the day's bulk
budget allows; the rest wait for the next night.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import models
from ratebudget import window_bounds
from services import Services, access_token
from strava_client import parse_activity

PER_PAGE = 200  # Strava's maximum page size
WINDOW = 15 * 60  # Strava's short rate-limit window, in seconds
COST_PER_RIDER = 1  # list requests a nightly check of one rider usually takes


@dataclass
class Repair:
    """What one rider's comparison found (and, unless a dry run, applied)."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    unannounced: int = 0
    requests: int = 0
    changed: dict = field(default_factory=dict)  # activity id -> when we last saw it

    def counts(self) -> dict:
        """The sync_run counters this repair adds to."""
        return {
            "activities_created": self.created,
            "activities_updated": self.updated,
            "activities_deleted": self.deleted,
            "activities_unannounced": self.unannounced,
            "requests_used": self.requests,
        }


def plan_sweep(svc: Services, max_riders: int | None = None, rider_id: int | None = None):
    """Tonight's riders by today's remaining bulk budget: (planned rider ids, how many deferred)."""
    capacity = svc.budget.available("bulk")["day"] // COST_PER_RIDER
    if max_riders is not None:
        capacity = min(capacity, max_riders)
    with svc.engine.connect() as conn:
        planned = models.riders_to_reconcile(conn, rider_id, limit=capacity)
        deferred = models.count_connected(conn, rider_id) - len(planned)
    return planned, deferred


def stagger(count: int, left_now: int, per_window: int, window_end: float) -> list[float | None]:
    """When each of `count` rider jobs should start (None: now, else an epoch second).

    As many as this window's bulk permits start now; the rest go a window's worth to each
    following reset, so a job does not wake at every reset only to find the window spent.
    """
    per_window = max(1, per_window)
    return [
        None if i < left_now else window_end + (i - left_now) // per_window * WINDOW
        for i in range(count)
    ]


def sweep_start_times(svc: Services, count: int) -> list[float | None]:
    """stagger() with the shared budget's figures for the bulk lane."""
    snapshot = svc.budget.snapshot()
    per_window = min(
        int(snapshot[b]["limit_15min"] * (1 - snapshot["reserve"])) for b in ("overall", "read")
    )
    _, window_end, _, _ = window_bounds(svc.clock())
    return stagger(count, svc.budget.available("bulk")["window"], per_window, window_end)


def lookback_start(now: datetime, last_reconciled_at: datetime | None, days: int) -> datetime:
    """Where a rider's check starts: `days` ago, or earlier if the last good sweep is older."""
    start = now - timedelta(days=days)
    if last_reconciled_at is not None and last_reconciled_at < start:
        return last_reconciled_at
    return start


def _list_all(svc: Services, token: str, scope: str, repair: Repair, **window) -> list[dict]:
    """Every summary in the window, following Strava's paging rule."""
    # Without activity:read_all Strava drops private activities after paging, so a short page
    # is not proof of the end: only an empty page is.
    short_page_ends = "activity:read_all" in (scope or "").split(",")
    items, page = [], 1
    while True:
        batch = svc.client.list_activities(token, page=page, per_page=PER_PAGE, **window)
        repair.requests += 1
        items.extend(batch)
        if not batch or (short_page_ends and len(batch) < PER_PAGE):
            return items
        page += 1


def repair_rider(svc: Services, rider_id: int, *, dry_run: bool = False) -> Repair:
    """Make the rider's activities in the lookback window equal Strava's; raises NoPermit."""
    with svc.engine.connect() as conn:
        connection = models.get_connection(conn, rider_id)
    now = datetime.fromtimestamp(svc.clock(), UTC)
    days = svc.config["RECONCILE_LOOKBACK_DAYS"]
    after = lookback_start(now, connection.last_reconciled_at, days)
    token = access_token(svc, rider_id)
    repair = Repair()
    listed = _list_all(svc, token, connection.scope, repair, after=int(after.timestamp()))
    theirs = {
        v["id"]: v for v in map(parse_activity, listed) if v["athlete_id"] == connection.athlete_id
    }
    with svc.engine.begin() as conn:
        ours = models.fetched_between(conn, rider_id, after, now + timedelta(days=1))
        for values in theirs.values():
            outcome = models.upsert_activity(conn, rider_id, values, write=not dry_run)
            if outcome != "unchanged":
                setattr(repair, outcome, getattr(repair, outcome) + 1)
                repair.changed[values["id"]] = ours.get(values["id"], after)
        for activity_id in ours.keys() - theirs.keys():
            if not dry_run:
                models.delete_activity(conn, activity_id)
            repair.deleted += 1
            repair.changed[activity_id] = ours[activity_id]
        # A change counts as announced when an event for it arrived after we last saw it.
        repair.unannounced = len(models.unannounced(conn, repair.changed))
        if dry_run:
            return repair
        if repair.changed:
            models.update_eddington(conn, rider_id, svc.config["EDDINGTON_SPORT_TYPES"])
        # The same clock as the window's end, so the next lookback starts where this one ended.
        models.update_connection(conn, rider_id, last_reconciled_at=now, last_sync=now)
    return repair


def backfill_page(svc: Services, rider_id: int, floor: int | None) -> tuple[bool, Repair]:
    """Read one page of older history into our table; returns (finished, what changed).

    The cursor (`backfill_before`) is saved after every page, so a backfill that runs out of
    budget resumes where it stopped.
    """
    with svc.engine.connect() as conn:
        connection = models.get_connection(conn, rider_id)
    if connection.backfill_before == 0:
        return True, Repair()  # finished earlier: a re-run of the job changes nothing
    before = connection.backfill_before or int(svc.clock()) + 1
    token = access_token(svc, rider_id)
    repair = Repair(requests=1)
    # No `after`: with it Strava lists oldest first, and the cursor walks newest to oldest.
    batch = svc.client.list_activities(token, before=before, per_page=PER_PAGE)
    values = [v for v in map(parse_activity, batch) if v["athlete_id"] == connection.athlete_id]
    if floor is not None:
        values = [v for v in values if v["start_date"].timestamp() > floor]
    with svc.engine.begin() as conn:
        for v in values:
            outcome = models.upsert_activity(conn, rider_id, v)
            if outcome != "unchanged":
                setattr(repair, outcome, getattr(repair, outcome) + 1)
        oldest = min((int(v["start_date"].timestamp()) for v in values), default=None)
        finished = oldest is None or len(batch) == 0 or len(values) < len(batch)
        models.update_connection(
            conn, rider_id, backfill_before=0 if finished else oldest, last_sync=models.now()
        )
        if repair.created or repair.updated:
            models.update_eddington(conn, rider_id, svc.config["EDDINGTON_SPORT_TYPES"])
    return finished, repair
