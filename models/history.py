"""Queries for the rotating full-history check: whose history is due, and marking it verified."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import strava_activity, strava_connection


def riders_to_verify(conn: Connection, older_than: datetime, limit: int) -> list[tuple[int, int]]:
    """(rider id, activities held) of connected riders whose history is due, least recent first.

    Due: never verified, or last verified before `older_than`; riders still being backfilled wait.
    """
    table, held = strava_connection, strava_activity
    count = sa.select(sa.func.count()).where(held.c.rider_id == table.c.rider_id).scalar_subquery()
    query = (
        sa.select(table.c.rider_id, count)
        .where(
            table.c.deauthorized_at.is_(None),
            table.c.refresh_token.is_not(None),
            table.c.backfill_before == 0,
            sa.or_(table.c.history_verified_at.is_(None), table.c.history_verified_at < older_than),
        )
        .order_by(
            table.c.history_verified_at.is_not(None),
            table.c.history_verified_at,
            table.c.rider_id,
        )
        .limit(limit)
    )
    return [tuple(row) for row in conn.execute(query)]
