"""Queries for the operator's overview (`strava status`, `strava riders`, the admin page)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import riders, strava_connection, sync_run, webhook_event

NIGHTLY_TRIGGERS = ("cron", "demo")  # the scheduled sweep (the demo stands in for it)


def rider_rows(conn: Connection):
    """Every rider with its connection's columns (None for a rider never connected), by id."""
    c = strava_connection
    query = (
        sa.select(
            riders.c.id,
            riders.c.name,
            c.c.athlete_id,
            c.c.refresh_token.is_not(None).label("has_token"),
            c.c.connected_at,
            c.c.last_sync,
            c.c.last_reconciled_at,
            c.c.deauthorized_at,
            c.c.needs_reconnect_since,
            c.c.eddington_number_km,
            c.c.eddington_number_miles,
            c.c.leaderboard_hidden,
        )
        .select_from(riders.outerjoin(c, c.c.rider_id == riders.c.id))
        .order_by(riders.c.id)
    )
    return conn.execute(query).all()


def rider_state(row, stale_before: datetime) -> str:
    """One state per rider: deauthorized, needs reconnect, not connected, stale or current."""
    if row.deauthorized_at is not None:
        return "deauthorized"
    if row.needs_reconnect_since is not None:
        return "needs reconnect"
    if row.athlete_id is None or not row.has_token:
        return "not connected"
    # A rider connected (and so backfilled) recently is current even before its first sweep.
    seen = max((t for t in (row.last_reconciled_at, row.connected_at) if t), default=None)
    return "stale" if seen is None or seen < stale_before else "current"


def last_run(conn: Connection, kind: str, triggers: tuple[str, ...]):
    """The newest run of a kind started by one of `triggers`, or None."""
    query = (
        sa.select(sync_run)
        .where(sync_run.c.kind == kind, sync_run.c.trigger.in_(triggers))
        .order_by(sync_run.c.id.desc())
        .limit(1)
    )
    return conn.execute(query).first()


def last_event_at(conn: Connection) -> datetime | None:
    """When the newest webhook event was received, or None."""
    return conn.execute(sa.select(sa.func.max(webhook_event.c.received_at))).scalar()
