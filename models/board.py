"""The pages' queries: the club leaderboard and what a rider's own page shows."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eddington import METRES_PER_KM, METRES_PER_MILE

from .riders import update_connection
from .schema import riders, strava_activity, strava_connection


def _day_totals(sport_types: Iterable[str]):
    """Per rider and local calendar day, the metres of counted rides (a subquery)."""
    table = strava_activity
    day = sa.func.date(table.c.start_date_local)
    return (
        sa.select(table.c.rider_id, sa.func.sum(table.c.distance).label("metres"))
        .where(table.c.sport_type.in_(sorted(sport_types)))
        .group_by(table.c.rider_id, day)
        .subquery()
    )


def _qualifying(days, unit_metres: float, number):
    """How many of a rider's days reached `number` units (the days behind its Eddington number)."""
    reached = sa.and_(number > 0, days.c.metres >= number * unit_metres)
    return sa.func.coalesce(sa.func.sum(sa.case((reached, 1), else_=0)), 0)


def leaderboard(conn: Connection, sport_types: Iterable[str]) -> list:
    """Connected riders not hidden, by Eddington number (miles, then km), with qualifying days."""
    conn_t, days = strava_connection, _day_totals(sport_types)
    miles, km = conn_t.c.eddington_number_miles, conn_t.c.eddington_number_km
    query = (
        sa.select(
            riders.c.id.label("rider_id"),
            riders.c.name,
            sa.func.coalesce(miles, 0).label("miles"),
            sa.func.coalesce(km, 0).label("km"),
            _qualifying(days, METRES_PER_MILE, miles).label("days_miles"),
            _qualifying(days, METRES_PER_KM, km).label("days_km"),
        )
        .select_from(riders.join(conn_t, conn_t.c.rider_id == riders.c.id))
        .outerjoin(days, days.c.rider_id == riders.c.id)
        .where(conn_t.c.deauthorized_at.is_(None), conn_t.c.leaderboard_hidden.is_(False))
        .group_by(riders.c.id, riders.c.name, miles, km)
        .order_by(sa.func.coalesce(miles, 0).desc(), sa.func.coalesce(km, 0).desc(), riders.c.name)
    )
    return conn.execute(query).all()


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
