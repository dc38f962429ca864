"""Activities, and the Eddington numbers computed from them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import ACTIVITY_FIELDS, dialect_insert, strava_activity


def same_activity(row, values: dict) -> bool:
    """Whether a stored row already holds these values."""
    return all(row[f] == values[f] for f in ACTIVITY_FIELDS)


def upsert_activity(conn: Connection, rider_id: int, values: dict, *, now: datetime) -> str:
    """Insert or update one activity; returns 'created', 'updated', 'unchanged' or 'foreign'.

    Keyed by the owner as well as the id: an activity we hold for another athlete is never
    overwritten ('foreign'), whatever a forged event or a confused caller asks.
    """
    table = strava_activity
    existing = conn.execute(sa.select(table).where(table.c.id == values["id"])).first()
    if existing is not None:
        row = existing._mapping
        if row["athlete_id"] != values["athlete_id"]:
            return "foreign"
        if same_activity(row, values) and row["rider_id"] == rider_id:
            return "unchanged"
    full = dict(values, rider_id=rider_id, fetched_at=now)
    stmt = dialect_insert(conn.dialect.name, table).values(**full)
    changed = {k: v for k, v in full.items() if k != "id"}
    owner_matches = table.c.athlete_id == stmt.excluded.athlete_id
    conn.execute(
        stmt.on_conflict_do_update(index_elements=["id"], set_=changed, where=owner_matches)
    )
    return "created" if existing is None else "updated"


def delete_activity(conn: Connection, activity_id: int, athlete_id: int) -> int | None:
    """Delete one athlete's activity; returns its rider id, or None when we held no such row."""
    table = strava_activity
    mine = sa.and_(table.c.id == activity_id, table.c.athlete_id == athlete_id)
    rider_id = conn.execute(sa.select(table.c.rider_id).where(mine)).scalar()
    if rider_id is not None:
        conn.execute(table.delete().where(mine))
    return rider_id


def activities_for_repair(
    conn: Connection, rider_id: int, after: datetime, before: datetime, ids=()
) -> dict:
    """{id: row} of a rider's activities starting in (after, before), and of any held `ids`."""
    table = strava_activity
    # Strava's `after` is exclusive; so is ours, so both sides describe the same window.
    in_window = sa.and_(
        table.c.rider_id == rider_id, table.c.start_date > after, table.c.start_date < before
    )
    query = sa.select(table).where(sa.or_(in_window, table.c.id.in_(list(ids))))
    return {row.id: row._mapping for row in conn.execute(query)}


def activities_by_id(conn: Connection, ids) -> dict:
    """{id: row} of the activities we hold among `ids`."""
    table = strava_activity
    query = sa.select(table).where(table.c.id.in_(list(ids)))
    return {row.id: row._mapping for row in conn.execute(query)}


def rider_activities(conn: Connection, rider_id: int):
    """A rider's activities, newest first."""
    table = strava_activity
    query = sa.select(table).where(table.c.rider_id == rider_id).order_by(table.c.start_date.desc())
    return conn.execute(query).all()


def daily_distances(conn: Connection, rider_id: int, sport_types: Iterable[str]) -> list[float]:
    """Metres ridden per local calendar day, counting only the given sport types."""
    table = strava_activity
    query = sa.select(table.c.start_date_local, table.c.distance).where(
        table.c.rider_id == rider_id, table.c.sport_type.in_(sorted(sport_types))
    )
    per_day: dict[date, float] = {}
    for start_local, distance in conn.execute(query):
        per_day[start_local.date()] = per_day.get(start_local.date(), 0.0) + (distance or 0.0)
    return list(per_day.values())
