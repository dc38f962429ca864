"""The pages' queries: the club leaderboard and what a rider's own page shows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .riders import update_connection
from .schema import METRES_PER_KM, METRES_PER_MILE, riders, strava_activity, strava_connection


class LeaderRow(NamedTuple):
    """One line of the leaderboard."""

    rider_id: int
    name: str
    miles: int
    km: int
    days_miles: int
    days_km: int


def _day_totals(sport_types: Iterable[str], rider_ids: list[int]):
    """Per rider and local calendar day, the metres of counted rides (a subquery)."""
    table = strava_activity
    day = sa.func.date(table.c.start_date_local)
    return (
        sa.select(table.c.rider_id, sa.func.sum(table.c.distance).label("metres"))
        .where(table.c.sport_type.in_(sorted(sport_types)), table.c.rider_id.in_(rider_ids))
        .group_by(table.c.rider_id, day)
        .subquery()
    )


def _count_qualifying(conn: Connection, sport_types: Iterable[str], rows: list) -> dict:
    """{rider id: (days miles, days km)} computed from the rides, for rows stored before 0003."""
    days = _day_totals(sport_types, [r.rider_id for r in rows])
    numbers = {r.rider_id: (r.miles, r.km) for r in rows}
    counted = {r.rider_id: [0, 0] for r in rows}
    for rider_id, metres in conn.execute(sa.select(days.c.rider_id, days.c.metres)):
        miles, km = numbers[rider_id]
        counted[rider_id][0] += bool(miles and metres >= miles * METRES_PER_MILE)
        counted[rider_id][1] += bool(km and metres >= km * METRES_PER_KM)
    return {rider_id: tuple(pair) for rider_id, pair in counted.items()}


def leaderboard(conn: Connection, sport_types: Iterable[str]) -> list:
    """Connected riders not hidden, by Eddington number (miles, then km), with qualifying days."""
    table = strava_connection
    miles = sa.func.coalesce(table.c.eddington_number_miles, 0)
    km = sa.func.coalesce(table.c.eddington_number_km, 0)
    query = (
        sa.select(
            riders.c.id.label("rider_id"),
            riders.c.name,
            miles.label("miles"),
            km.label("km"),
            table.c.eddington_days_miles.label("days_miles"),
            table.c.eddington_days_km.label("days_km"),
        )
        .select_from(riders.join(table, table.c.rider_id == riders.c.id))
        .where(table.c.deauthorized_at.is_(None), table.c.leaderboard_hidden.is_(False))
        .order_by(miles.desc(), km.desc(), riders.c.name)
    )
    rows = conn.execute(query).all()
    # Numbers stored before the days were (revision 0003): count those riders' days once here.
    missing = [r for r in rows if r.days_miles is None or r.days_km is None]
    counted = _count_qualifying(conn, sport_types, missing) if missing else {}
    return [
        LeaderRow(*r[:4], *counted[r.rider_id]) if r.rider_id in counted else LeaderRow(*r)
        for r in rows
    ]


def recent_activities(conn: Connection, rider_id: int, limit: int = 10) -> list:
    """A rider's newest activities, for their page."""
    table = strava_activity
    query = (
        sa.select(table)
        .where(table.c.rider_id == rider_id)
        .order_by(table.c.start_date.desc(), table.c.id.desc())
        .limit(limit)
    )
    return conn.execute(query).all()


def set_leaderboard_hidden(conn: Connection, rider_id: int, hidden: bool) -> None:
    """Hide a rider from the club leaderboard, or show them again."""
    update_connection(conn, rider_id, leaderboard_hidden=hidden)


def rider_choices(conn: Connection) -> list:
    """(id, name) of every rider, by name, for the admin's invite form."""
    return conn.execute(sa.select(riders.c.id, riders.c.name).order_by(riders.c.name)).all()
