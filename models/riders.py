"""Riders and their Strava connections."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import dialect_insert, riders, strava_activity, strava_connection


def create_rider(conn: Connection, name: str, *, now: datetime) -> int:
    """Insert a rider (created `now`) and return its id."""
    result = conn.execute(riders.insert().values(name=name, created_at=now))
    return result.inserted_primary_key[0]


def end_sessions(conn: Connection, rider_id: int) -> int:
    """Raise the rider's session generation, ending every session signed in before; returns it."""
    conn.execute(
        riders.update()
        .where(riders.c.id == rider_id)
        .values(session_generation=riders.c.session_generation + 1)
    )
    query = sa.select(riders.c.session_generation).where(riders.c.id == rider_id)
    return conn.execute(query).scalar_one()


def get_rider(conn: Connection, rider_id: int):
    """The rider row, or None."""
    return conn.execute(sa.select(riders).where(riders.c.id == rider_id)).first()


def get_connection(conn: Connection, rider_id: int):
    """The rider's Strava connection row, or None."""
    query = sa.select(strava_connection).where(strava_connection.c.rider_id == rider_id)
    return conn.execute(query).first()


def get_connection_by_athlete(conn: Connection, athlete_id: int):
    """The connection of a Strava athlete, or None."""
    query = sa.select(strava_connection).where(strava_connection.c.athlete_id == athlete_id)
    return conn.execute(query).first()


def save_connection(
    conn: Connection, rider_id: int, athlete_id: int, tokens: dict, scope: str, *, now: datetime
):
    """Create or replace a rider's connection with fresh tokens (tokens already encrypted)."""
    values = dict(
        athlete_id=athlete_id,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        expires_at=tokens["expires_at"],
        scope=scope,
        connected_at=now,
        deauthorized_at=None,
        needs_reconnect_since=None,
        backfill_before=None,
    )
    stmt = dialect_insert(conn.dialect.name, strava_connection).values(rider_id=rider_id, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["rider_id"], set_=values))


def store_tokens(conn: Connection, rider_id: int, tokens: dict) -> None:
    """Store a refreshed token pair (already encrypted)."""
    conn.execute(
        strava_connection.update()
        # A pair issued while the rider disconnected is not stored: the purge stays a purge.
        .where(
            strava_connection.c.rider_id == rider_id, strava_connection.c.deauthorized_at.is_(None)
        )
        .values(
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            expires_at=tokens["expires_at"],
        )
    )


def update_connection(conn: Connection, rider_id: int, **values) -> None:
    """Set columns of a rider's connection (sync times, Eddington numbers, backfill cursor)."""
    conn.execute(
        strava_connection.update().where(strava_connection.c.rider_id == rider_id).values(**values)
    )


def lock_connection(conn: Connection, rider_id: int):
    """The rider's connection row, locked against other writers until the transaction ends.

    PostgreSQL locks the row (FOR UPDATE). SQLite has no row locks: a write that changes nothing
    takes its database-wide write lock, which holds off every other writer just the same.
    """
    table = strava_connection
    mine = table.c.rider_id == rider_id
    if conn.dialect.name == "sqlite":
        conn.execute(table.update().where(mine).values(rider_id=table.c.rider_id))
    return conn.execute(sa.select(table).where(mine).with_for_update()).first()


def lock_live_connection(conn: Connection, rider_id: int, athlete_id: int):
    """The rider's connection, locked (see lock_connection), if it is live and still the athlete's.

    None when it was disconnected, revoked or lost its grant, or now links another athlete: what
    was read from Strava under the old connection must not be written.
    """
    row = lock_connection(conn, rider_id)
    live = (
        row is not None
        and row.athlete_id == athlete_id
        and row.deauthorized_at is None
        and row.refresh_token is not None
        and row.needs_reconnect_since is None
    )
    return row if live else None


def deauthorize(conn: Connection, rider_id: int, *, now: datetime) -> int:
    """Remove a rider's Strava data after a confirmed revocation; returns activities deleted."""
    # The lock every write that follows a Strava read takes: one in flight finishes first, or
    # finds the connection gone and writes nothing.
    lock_connection(conn, rider_id)
    deleted = conn.execute(
        strava_activity.delete().where(strava_activity.c.rider_id == rider_id)
    ).rowcount
    update_connection(
        conn,
        rider_id,
        access_token=None,
        refresh_token=None,
        expires_at=None,
        eddington_number_miles=None,
        eddington_number_km=None,
        eddington_days_miles=None,
        eddington_days_km=None,
        deauthorized_at=now,
        needs_reconnect_since=None,
        backfill_before=None,
    )
    return deleted


def mark_needs_reconnect(conn: Connection, rider_id: int, *, now: datetime) -> None:
    """Record that the rider's grant was lost without proof of revocation (first time only)."""
    table = strava_connection
    conn.execute(
        table.update()
        .where(table.c.rider_id == rider_id, table.c.needs_reconnect_since.is_(None))
        .values(needs_reconnect_since=now)
    )


def reconnect_overdue(conn: Connection, older_than: datetime) -> list[int]:
    """Riders still waiting to reconnect since before a time (their grace period is over)."""
    table = strava_connection
    query = sa.select(table.c.rider_id).where(
        table.c.deauthorized_at.is_(None), table.c.needs_reconnect_since < older_than
    )
    return list(conn.execute(query.order_by(table.c.rider_id)).scalars())


def _connected(rider_id: int | None):
    table = strava_connection
    query = sa.select(table.c.rider_id).where(
        table.c.deauthorized_at.is_(None),
        table.c.refresh_token.is_not(None),
        table.c.needs_reconnect_since.is_(None),  # syncing stops until the rider reconnects
    )
    return query if rider_id is None else query.where(table.c.rider_id == rider_id)


def riders_to_reconcile(conn: Connection, rider_id: int | None = None, limit: int | None = None):
    """Ids of connected riders, least recently reconciled first (never reconciled before all)."""
    table = strava_connection
    query = _connected(rider_id).order_by(
        table.c.last_reconciled_at.is_not(None), table.c.last_reconciled_at, table.c.rider_id
    )
    return list(conn.execute(query.limit(limit)).scalars())


def count_connected(conn: Connection, rider_id: int | None = None) -> int:
    """How many riders are connected (just the one, or none, when rider_id is given)."""
    subquery = _connected(rider_id).subquery()
    return conn.execute(sa.select(sa.func.count()).select_from(subquery)).scalar()
