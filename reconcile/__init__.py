"""The nightly sweep and the backfill: compare what we hold with what Strava lists, fix the gap.

Events are hints and some never arrive, so once a night each rider's recent activities are listed
from Strava (summaries only: one request per 200 activities) and compared with our rows. The
comparison is a pure function, `diff(ours, theirs) -> Changes`; a repair applies the changes and a
dry run simply does not. Running it twice changes nothing the second time. Planning takes riders
least recently reconciled first, as many as the day's bulk budget allows; the rest wait.

`compare_listing` is the one list-diff-apply path that the sweep, the backfill, the history check
and the catch-up share; each says only what differs (window, paging, what it records). Its write
re-checks the connection under the row lock the purge takes, so a rider who disconnects while a
list request is in flight gets nothing written back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

import models
from services import Services
from strava_client import parse_activity
from strava_client.ratebudget import WINDOW, window_bounds
from strava_client.tokens import access_token
from sync import eddington

PER_PAGE = 200  # Strava's maximum page size
COST_PER_RIDER = 1  # list requests a nightly check of one rider usually takes


@dataclass(frozen=True)
class Changes:
    """What must change for our rows to equal Strava's."""

    created: tuple[dict, ...] = ()
    updated: tuple[dict, ...] = ()
    deleted: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.created or self.updated or self.deleted)

    def ids(self) -> list[int]:
        """Every activity id this change touches."""
        return [v["id"] for v in self.created + self.updated] + list(self.deleted)


def diff(
    ours: Mapping[int, Mapping],
    theirs: Mapping[int, dict],
    *,
    athlete_id: int,
    listed_at: datetime | None = None,
    deletes: bool = True,
) -> Changes:
    """The changes that make `ours` (id -> row) equal `theirs` (id -> parsed activity).

    Rows held for another athlete are never touched, and neither is a row fetched after the
    listing was requested (`listed_at`): an event's fetch saw a newer Strava than this list did.
    """

    def touchable(row) -> bool:
        newer = listed_at is not None and row["fetched_at"] > listed_at
        return row["athlete_id"] == athlete_id and not newer

    created, updated = [], []
    for activity_id, values in theirs.items():
        row = ours.get(activity_id)
        if row is None:
            created.append(values)
        elif touchable(row) and not models.same_activity(row, values):
            updated.append(values)
    deleted = (
        [i for i, row in ours.items() if i not in theirs and touchable(row)] if deletes else []
    )
    return Changes(tuple(created), tuple(updated), tuple(deleted))


def apply(svc: Services, conn, connection, changes: Changes) -> None:
    """Write the changes and, when there were any, recompute the rider's Eddington numbers."""
    for values in changes.created + changes.updated:
        models.upsert_activity(conn, connection.rider_id, values, now=svc.now())
    for activity_id in changes.deleted:
        models.delete_activity(conn, activity_id, connection.athlete_id)
    if changes:
        eddington.store_numbers(conn, connection.rider_id, svc.settings.eddington_sport_types)


@dataclass
class Repair:
    """What one rider's comparison found (and, unless a dry run, applied)."""

    changes: Changes = field(default_factory=Changes)
    unannounced: int = 0
    requests: int = 0

    def counts(self) -> dict:
        """The sync_run counters this repair adds to."""
        return {
            "activities_created": len(self.changes.created),
            "activities_updated": len(self.changes.updated),
            "activities_deleted": len(self.changes.deleted),
            "activities_unannounced": self.unannounced,
            "requests_used": self.requests,
        }


def plan_sweep(svc: Services, max_riders: int | None = None, rider_id: int | None = None):
    """Tonight's riders by today's remaining bulk budget: (planned rider ids, how many deferred)."""
    # The sweep's own lane: however busy the day's events, at least RECONCILE_MIN_SHARE is left.
    capacity = svc.budget.sweep_allowance() // COST_PER_RIDER
    if max_riders is not None:
        capacity = min(capacity, max_riders)
    with svc.engine.connect() as conn:
        planned = models.riders_to_reconcile(conn, rider_id, limit=capacity)
        deferred = models.count_connected(conn, rider_id) - len(planned)
    return planned, deferred


def sweep_capacity(
    riders: int,
    read_limit_day: int,
    realtime_reads: int,
    *,
    reserve: float,
    min_share: float,
    every_hours: int = 48,
) -> tuple[int, int]:
    """(riders the sweep cannot reach every `every_hours`, the daily read limit that would).

    The sweep gets what the bulk lane leaves of a day with `realtime_reads` of real-time work,
    and never less than `min_share` of the day.
    """
    sweep_reads = max(min_share * read_limit_day, (1 - reserve) * read_limit_day - realtime_reads)
    reachable = int(sweep_reads * every_hours / 24) // COST_PER_RIDER
    need = riders * COST_PER_RIDER * 24 / every_hours  # sweep reads a day
    by_share = need / min_share if min_share else math.inf
    needed = math.ceil(min(by_share, (need + realtime_reads) / (1 - reserve)))
    return max(0, riders - reachable), needed


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
    return stagger(count, svc.budget.available("sweep")["window"], per_window, window_end)


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
        batch = svc.client.list_activities(
            token, page=page, per_page=PER_PAGE, lane="sweep", **window
        )
        repair.requests += 1
        items.extend(batch)
        if not batch or (short_page_ends and len(batch) < PER_PAGE):
            return items
        page += 1


def _owned(listed: list[dict], athlete_id: int) -> dict[int, dict]:
    """Strava's summaries parsed, keeping only the athlete's own."""
    return {v["id"]: v for v in map(parse_activity, listed) if v["athlete_id"] == athlete_id}


# -- the one list-diff-apply path -----------------------------------------------------------------

KINDS = ("created", "updated", "deleted")


@dataclass(frozen=True)
class Listing:
    """One list answer: the athlete's own activities in it (id -> parsed), and its length."""

    theirs: dict[int, dict]
    sent: int  # summaries Strava sent, before keeping the athlete's own: a full page has more


@dataclass(frozen=True)
class Comparison:
    """A list answer compared with the rows we hold for it, and the changes applied."""

    listing: Listing
    ours: Mapping[int, Mapping]
    changes: Changes


def live_connection(svc: Services, *, rider_id: int | None = None, athlete_id: int | None = None):
    """The connection to compare, by rider or athlete; None when it is missing or disconnected."""
    with svc.engine.connect() as conn:
        if athlete_id is None:
            row = models.get_connection(conn, rider_id)
        else:
            row = models.get_connection_by_athlete(conn, athlete_id)
    gone = row is None or row.deauthorized_at is not None or row.refresh_token is None
    return None if gone else row


def compare_listing(
    svc: Services,
    connection,
    list_summaries: Callable[[str], list[dict]],
    held: Callable[[Connection, Listing], Mapping[int, Mapping]],
    *,
    kinds: tuple[str, ...] = KINDS,
    keep: Callable[[dict], bool] = lambda values: True,
    record: Callable[[Connection, Comparison], None] | None = None,
    dry_run: bool = False,
) -> Comparison | None:
    """List the athlete's activities, diff them with ours and apply the changes of `kinds`.

    The caller says what differs: `list_summaries(token)` reads its window and pages, `keep`
    narrows what Strava listed, `held` is our rows the listing answers for, and `record` writes
    its bookkeeping in the same transaction. Raises NoPermit and the token errors; returns None,
    writing nothing, when the connection went (or changed hands) while Strava answered.
    """
    token = access_token(svc, connection.rider_id)
    listed_at = svc.now()  # fetched_at uses the same clock: a later fetch is newer than this
    summaries = list_summaries(token)
    theirs = {i: v for i, v in _owned(summaries, connection.athlete_id).items() if keep(v)}
    listing = Listing(theirs, len(summaries))
    athlete_id = connection.athlete_id
    with svc.engine.begin() as conn:
        # Under the row lock `models.deauthorize` takes too: a disconnect either waits for this
        # write and purges it, or has happened and this writes nothing.
        if models.lock_live_connection(conn, connection.rider_id, athlete_id) is None:
            return None
        ours = held(conn, listing)
        found = diff(
            ours, theirs, athlete_id=athlete_id, listed_at=listed_at, deletes="deleted" in kinds
        )
        changes = Changes(*(getattr(found, k) if k in kinds else () for k in KINDS))
        if not dry_run:
            apply(svc, conn, connection, changes)
        comparison = Comparison(listing, ours, changes)
        if record is not None:
            record(conn, comparison)
    return comparison


def store_recent(
    svc: Services, connection, record: Callable[[Connection, Comparison], None] | None = None
) -> Comparison | None:
    """List the athlete's most recent activities (one read, real-time lane) and store them.

    Catch-up and backlog lists share it; deletions are left to the sweep (the window is open).
    """
    return compare_listing(
        svc,
        connection,
        lambda token: svc.client.list_activities(token, per_page=PER_PAGE, lane="realtime"),
        lambda conn, listing: models.activities_by_id(conn, listing.theirs.keys()),
        kinds=("created", "updated"),
        record=record,
    )


# -- the callers: the nightly sweep and the backfill ----------------------------------------------


def repair_rider(svc: Services, rider_id: int, *, dry_run: bool = False) -> Repair:
    """Make the rider's activities in the lookback window equal Strava's; raises NoPermit."""
    connection = live_connection(svc, rider_id=rider_id)
    repair = Repair()
    if connection is None:
        return repair  # disconnected since planned: nothing of theirs is left to compare
    now = svc.now()
    after = lookback_start(now, connection.last_reconciled_at, svc.settings.reconcile_lookback_days)

    def held(conn, listing: Listing):
        upper = now + timedelta(days=1)
        return models.activities_for_repair(conn, rider_id, after, upper, listing.theirs.keys())

    def record(conn, comparison: Comparison) -> None:
        repair.changes = changes = comparison.changes
        # A change counts as announced when an event for it arrived after we last saw it.
        ours = comparison.ours
        last_seen = {i: ours[i]["fetched_at"] if i in ours else after for i in changes.ids()}
        repair.unannounced = len(models.unannounced(conn, last_seen))
        if not dry_run:
            # The same clock as the window's end: the next lookback starts where this one ended.
            models.update_connection(conn, rider_id, last_reconciled_at=now, last_sync=now)

    start = int(after.timestamp())
    compare_listing(
        svc,
        connection,
        lambda token: _list_all(svc, token, connection.scope, repair, after=start),
        held,
        record=record,
        dry_run=dry_run,
    )
    return repair


def backfill_page(svc: Services, rider_id: int, floor: int | None) -> tuple[bool, Repair]:
    """Read one page of older history into our table; returns (finished, what changed).

    The cursor (`backfill_before`) is saved after every page, so a backfill that runs out of
    budget resumes where it stopped. Nothing is deleted: a backfill only adds and refreshes.
    """
    connection = live_connection(svc, rider_id=rider_id)
    if connection is None or connection.backfill_before == 0:
        return True, Repair()  # disconnected, or finished earlier: a re-run changes nothing
    before = connection.backfill_before or int(svc.clock()) + 1

    def record(conn, comparison: Comparison) -> None:
        models.update_connection(
            conn, rider_id, backfill_before=_cursor(comparison.listing), last_sync=svc.now()
        )

    compared = compare_listing(
        svc,
        connection,
        # No `after`: with it Strava lists oldest first, and the cursor walks newest to oldest.
        lambda token: svc.client.list_activities(token, before=before, per_page=PER_PAGE),
        lambda conn, listing: models.activities_by_id(conn, listing.theirs.keys()),
        kinds=("created", "updated"),
        keep=lambda values: floor is None or int(values["start_date"].timestamp()) > floor,
        record=record,
    )
    if compared is None:
        return True, Repair(requests=1)  # disconnected while Strava answered
    return _cursor(compared.listing) == 0, Repair(changes=compared.changes, requests=1)


def _cursor(listing: Listing) -> int:
    """Where the backfill's next page ends: its oldest start kept, or 0 when it has finished."""
    oldest = min((int(v["start_date"].timestamp()) for v in listing.theirs.values()), default=None)
    finished = oldest is None or len(listing.theirs) < listing.sent
    return 0 if finished else oldest
