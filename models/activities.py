"""Activities, and the Eddington numbers computed from them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eddington import eddington_numbers

from .riders import update_connection
from .schema import ACTIVITY_FIELDS, _insert, now, strava_activity


def upsert_activity(conn: Connection, rider_id: int, values: dict, write: bool = True) -> str:
    """Insert or update one activity; returns 'created', 'updated' or 'unchanged'.

    With write=False nothing is written: the answer says what a write would do (dry runs).
    """
    table = strava_activity
    existing = conn.execute(sa.select(table).where(table.c.id == values["id"])).first()
    if existing is not None:
        row = existing._mapping
        if all(row[f] == values[f] for f in ACTIVITY_FIELDS) and row["rider_id"] == rider_id:
            return "unchanged"
    if not write:
        return "created" if existing is None else "updated"
    full = dict(values, rider_id=rider_id, fetched_at=now())
    stmt = _insert(conn, table).values(**full)
    changed = {k: v for k, v in full.items() if k != "id"}
    conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=changed))
    return "created" if existing is None else "updated"


def delete_activity(conn: Connection, activity_id: int) -> int:
    """Delete one activity; returns the owning rider id, or None when we did not hold it."""
    table = strava_activity
    rider_id = conn.execute(sa.select(table.c.rider_id).where(table.c.id == activity_id)).scalar()
    if rider_id is not None:
        conn.execute(table.delete().where(table.c.id == activity_id))
    return rider_id


def fetched_between(conn: Connection, rider_id: int, after: datetime, before: datetime):
    """{id: fetched_at} of a rider's activities starting in (after, before)."""
    table = strava_activity
    # Strava's `after` is exclusive; so is ours, so both sides describe the same window.
    query = sa.select(table.c.id, table.c.fetched_at).where(
        table.c.rider_id == rider_id, table.c.start_date > after, table.c.start_date < before
    )
    return dict(conn.execute(query).all())


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


def update_eddington(conn: Connection, rider_id: int, sport_types: Iterable[str]) -> None:
    """Recompute and store the rider's Eddington numbers from the activities we hold."""
    miles, km = eddington_numbers(daily_distances(conn, rider_id, sport_types))
    update_connection(conn, rider_id, eddington_number_miles=miles, eddington_number_km=km)
