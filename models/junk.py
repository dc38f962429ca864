"""Events for athletes who are not connected: counted, a few kept as examples, never all stored.

Anyone can post events naming any athlete. Those for athletes we do not hold change nothing, so
storing each one would let junk fill the database. Instead each UTC day keeps one counter row per
athlete (at most JUNK_ATHLETES of them; the rest share one row) and the first JUNK_EXAMPLES of
each athlete's events as `ignored` rows in webhook_event, without their `updates`. So junk adds at
most JUNK_ROWS_PER_DAY rows a day to webhook_event, each of at most about JUNK_ROW_BYTES.
"""

from __future__ import annotations

import functools
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import dialect_insert, webhook_event, webhook_junk

JUNK_EXAMPLES = 3  # example events kept per athlete and UTC day
JUNK_ATHLETES = 200  # athletes counted apart per UTC day
OTHER_ATHLETES = -1  # owner_id of the row counting every athlete beyond JUNK_ATHLETES
JUNK_ROWS_PER_DAY = JUNK_EXAMPLES * JUNK_ATHLETES  # webhook_event rows junk may add a day
# An example row's stored text is capped (types 100 characters each, reason 500, no `updates`):
# its columns hold under 1 KiB whatever was posted.
JUNK_ROW_BYTES = 1024


def count(conn: Connection, owner_id: int, day: date, at: datetime, identity: str) -> int | None:
    """Count one junk event for an athlete and day; returns that athlete's count (0: not apart).

    None, counting nothing, when an event with this identity is stored already (an exact repeat).
    Beyond JUNK_ATHLETES athletes a day, events are counted on the shared OTHER_ATHLETES row.
    """
    params = {"day": day, "owner_id": owner_id, "at": at, "identity": identity}
    found = conn.execute(_count_statement(conn.dialect.name), params).first()
    if found is None:
        return None
    counted_as, events = found
    return 0 if counted_as == OTHER_ATHLETES else events


@functools.cache
def _count_statement(dialect: str):
    """count's upsert, built once per dialect (parameters bound later)."""
    table, p = webhook_junk, sa.bindparam
    day, owner_id = p("day", type_=sa.Date), p("owner_id", type_=sa.BigInteger)
    apart = sa.select(sa.func.count()).where(table.c.day == day, table.c.owner_id != OTHER_ATHLETES)
    has_row = sa.exists().where(table.c.day == day, table.c.owner_id == owner_id)
    owner = sa.case(
        (sa.or_(has_row, apart.scalar_subquery() < JUNK_ATHLETES), owner_id),
        else_=OTHER_ATHLETES,
    )
    at = p("at", type_=table.c.last_received_at.type)
    repeat = sa.exists().where(webhook_event.c.identity == p("identity", type_=sa.String))
    # The WHERE clause also lets SQLite tell the SELECT from the ON CONFLICT clause that follows.
    values = sa.select(day, owner, sa.literal(1), at).where(~repeat)
    insert = dialect_insert(dialect, table)
    insert = insert.from_select(["day", "owner_id", "events", "last_received_at"], values)
    return insert.on_conflict_do_update(
        index_elements=["day", "owner_id"],
        set_={"events": table.c.events + 1, "last_received_at": insert.excluded.last_received_at},
    ).returning(table.c.owner_id, table.c.events)


def summary(conn: Connection, day: date) -> dict:
    """The day's junk: athletes counted apart, events in all, and the busiest athletes."""
    table = webhook_junk
    rows = conn.execute(
        sa.select(table.c.owner_id, table.c.events)
        .where(table.c.day == day)
        .order_by(table.c.events.desc())
    ).all()
    return {
        "athletes": sum(1 for r in rows if r.owner_id != OTHER_ATHLETES),
        "events": sum(r.events for r in rows),
        "top": {str(r.owner_id): r.events for r in rows[:5]},
    }


def prune(conn: Connection, before: date) -> int:
    """Delete the counters of days before `before`; returns how many rows went."""
    return conn.execute(webhook_junk.delete().where(webhook_junk.c.day < before)).rowcount
