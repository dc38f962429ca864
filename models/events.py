"""The webhook inbox: events as Strava sent them, and what became of each."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import junk
from .schema import UTCDateTime, dialect_insert, strava_connection, webhook_event

UPDATES_CAP = 2048  # characters of an event's `updates` JSON we keep
ERROR_CAP = 500  # characters of an event's `error` we keep
TEXT_CAP = 100  # characters of an (unknown) object_type or aspect_type we keep
WAITING = ("pending", "queued")  # an event whose work is still to come
TRUNCATED = "...[truncated]"


def cap(text: str | None, limit: int) -> str | None:
    """The text cut to `limit` characters, saying so when it was cut."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED


def event_identity(fields: dict) -> str:
    """A stable digest of the fields that make an event the same event."""
    keys = ("subscription_id", "object_type", "object_id", "aspect_type", "owner_id", "event_time")
    canonical = json.dumps(
        [fields[k] for k in keys] + [fields["updates"]], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def store_event(
    conn: Connection,
    fields: dict,
    unhandled: str | None,
    job_id: str | None = None,
    *,
    now: datetime,
):
    """Store an event, choosing its status in SQL; returns (id, status, error).

    An event whose athlete is connected is stored in one statement (one round trip: the webhook
    answers Strava while others wait for a connection): `queued` when it is handled (`unhandled`
    is None), else `ignored` with the reason. An event for an athlete who is not connected is
    junk (junk.py): counted for the UTC day of `now`, stored as an example only while the day's
    bound allows; its id is None when it was only counted. Status None: this exact event was
    stored before.
    """
    params = dict(
        fields,
        # Stored text is capped (a junk event is not kept whole); the identity hashes it all.
        object_type=cap(fields["object_type"], TEXT_CAP),
        aspect_type=cap(fields["aspect_type"], TEXT_CAP),
        updates=cap(json.dumps(fields["updates"], sort_keys=True), UPDATES_CAP),
        identity=event_identity(fields),
        received_at=now,
        unhandled=cap(unhandled, ERROR_CAP),
        job_id=job_id,
    )
    found = conn.execute(_store_statement(conn.dialect.name, unhandled is None), params).first()
    if found is not None:
        return tuple(found)
    counted = junk.count(conn, fields["owner_id"], now.date(), now, params["identity"])
    if counted is None:
        return None, None, None
    reason = params["unhandled"] or f"athlete {fields['owner_id']} is not connected to us"
    if not 0 < counted <= junk.JUNK_EXAMPLES:
        return None, "ignored", reason
    example = dict(params, updates="{}", unhandled=reason)  # junk keeps no `updates`
    found = conn.execute(_store_statement(conn.dialect.name, False, junk=True), example).first()
    return (None, None, None) if found is None else tuple(found)


_STORED = ("subscription_id", "object_type", "object_id", "aspect_type", "owner_id", "event_time")


@functools.cache
def _store_statement(dialect: str, handled: bool, junk: bool = False):
    """store_event's INSERT ... SELECT, built once per dialect and kind (parameters bound later).

    It inserts only for a connected athlete, except a junk example (stored `ignored` regardless).
    """
    table, p = webhook_event, sa.bindparam
    connected = sa.exists().where(
        strava_connection.c.athlete_id == p("owner_id"),
        strava_connection.c.deauthorized_at.is_(None),
    )
    received = p("received_at", type_=UTCDateTime)
    if handled:
        status, error, processed = sa.literal("queued"), sa.null(), sa.null()
        job = p("job_id", type_=sa.Text)
    else:
        status, error, processed = sa.literal("ignored"), p("unhandled", type_=sa.Text), received
        job = sa.null()
    names = [*_STORED, "updates", "identity", "received_at"]
    values = [p(n, type_=table.c[n].type) for n in names]
    columns = [table.c[n] for n in names]
    columns += [table.c.attempts, table.c.status, table.c.error, table.c.processed_at]
    columns.append(table.c.job_id)
    # A WHERE clause also lets SQLite tell the SELECT from the ON CONFLICT clause that follows it.
    select = sa.select(*values, sa.literal(0), status, error, processed, job)
    select = select.where(sa.true() if junk else connected)
    insert = dialect_insert(dialect, table)
    return (
        insert.from_select(columns, select)
        .on_conflict_do_nothing(index_elements=["identity"])
        .returning(table.c.id, table.c.status, table.c.error)
    )


def mark_pending(conn: Connection, event_id: int) -> None:
    """Put a queued event back to pending: its job could not be queued (Redis unreachable)."""
    table = webhook_event
    conn.execute(
        table.update()
        .where(table.c.id == event_id, table.c.status == "queued")
        .values(status="pending")
    )


def set_event_status(
    conn: Connection, event_ids: Iterable[int], status: str, error=None, *, now: datetime
) -> None:
    """Move events to a status; a final status stamps processed_at with `now`."""
    ids = list(event_ids)
    if not ids:
        return
    values: dict = {"status": status, "error": cap(error, ERROR_CAP)}
    if status in ("done", "ignored", "failed"):
        values["processed_at"] = now
    conn.execute(webhook_event.update().where(webhook_event.c.id.in_(ids)).values(**values))


def open_events(conn: Connection, object_type: str, object_id: int):
    """Events for one object still waiting for their work (pending or queued), oldest first."""
    return _open_events(conn, object_type, webhook_event.c.object_id == object_id)


def open_events_by_owner(conn: Connection, object_type: str, owner_id: int):
    """Events of one type sent for one owner still waiting for their work, oldest first."""
    return _open_events(conn, object_type, webhook_event.c.owner_id == owner_id)


def _open_events(conn: Connection, object_type: str, which):
    table = webhook_event
    query = (
        sa.select(table)
        .where(table.c.object_type == object_type, which, table.c.status.in_(WAITING))
        .order_by(table.c.event_time, table.c.id)
    )
    return conn.execute(query).all()


def waiting_activities(conn: Connection, owner_id: int) -> dict[int, list[int]]:
    """An athlete's activities with events still waiting (pending or queued): id -> event ids."""
    table = webhook_event
    query = sa.select(table.c.object_id, table.c.id).where(
        table.c.status.in_(WAITING),
        table.c.object_type == "activity",
        table.c.owner_id == owner_id,
    )
    waiting: dict[int, list[int]] = {}
    for activity_id, event_id in conn.execute(query):
        waiting.setdefault(activity_id, []).append(event_id)
    return waiting


def count_attempt(conn: Connection, event_ids: Iterable[int]) -> None:
    """Count one more processing attempt on each event."""
    ids = list(event_ids)
    if ids:
        table = webhook_event
        conn.execute(
            table.update().where(table.c.id.in_(ids)).values(attempts=table.c.attempts + 1)
        )


def fail_stale_events(conn: Connection, older_than: datetime, *, now: datetime) -> int:
    """Close events still queued long after they arrived (a job killed on its last try)."""
    table = webhook_event
    result = conn.execute(
        table.update()
        .where(table.c.status == "queued", table.c.received_at < older_than)
        .values(
            status="failed",
            error="no job finished this event; the nightly sweep covers its activity",
            processed_at=now,
        )
    )
    return result.rowcount


def pending_events(conn: Connection, limit: int = 500):
    """Events stored while the queue was unreachable, oldest first."""
    table = webhook_event
    query = sa.select(table).where(table.c.status == "pending").order_by(table.c.id).limit(limit)
    return conn.execute(query).all()


def mark_queued(conn: Connection, event_id: int, job_id: str | None = None) -> None:
    """Record that an event's work is queued (and by which job), unless a job finished it."""
    table = webhook_event
    conn.execute(
        table.update()
        .where(table.c.id == event_id, table.c.status.in_(WAITING))
        .values(status="queued", job_id=job_id)
    )


def unannounced(conn: Connection, last_seen: dict[int, datetime]) -> set[int]:
    """Activities with no webhook event received after we last saw them (id -> that time)."""
    if not last_seen:
        return set()
    table = webhook_event
    query = (
        sa.select(table.c.object_id, sa.func.max(table.c.received_at))
        .where(table.c.object_type == "activity", table.c.object_id.in_(list(last_seen)))
        .group_by(table.c.object_id)
    )
    latest = dict(conn.execute(query).all())
    return {i for i, seen in last_seen.items() if i not in latest or latest[i] <= seen}


def event_counts_since(conn: Connection, since: datetime) -> dict[str, int]:
    """Webhook events received since a time, by status."""
    table = webhook_event
    query = (
        sa.select(table.c.status, sa.func.count())
        .where(table.c.received_at >= since)
        .group_by(table.c.status)
    )
    return dict(conn.execute(query).all())


def count_waiting_events(conn: Connection, received_before: datetime) -> int:
    """Events still `pending` or `queued` that arrived before a time."""
    table = webhook_event
    query = sa.select(sa.func.count()).where(
        table.c.status.in_(WAITING), table.c.received_at < received_before
    )
    return conn.execute(query).scalar()


def queued_events(conn: Connection, received_before: datetime, limit: int = 200):
    """Events marked queued that arrived before a time, oldest first (the recovery pass checks
    that their job still exists)."""
    table = webhook_event
    query = (
        sa.select(table)
        .where(table.c.status == "queued", table.c.received_at < received_before)
        .order_by(table.c.id)
        .limit(limit)
    )
    return conn.execute(query).all()


def prune_events(conn: Connection, done_before: datetime, failed_before: datetime, limit: int):
    """Delete up to `limit` finished events older than their retention; returns how many."""
    table = webhook_event
    old = sa.or_(
        sa.and_(table.c.status.in_(("done", "ignored")), table.c.received_at < done_before),
        sa.and_(table.c.status == "failed", table.c.received_at < failed_before),
    )
    ids = list(conn.execute(sa.select(table.c.id).where(old).limit(limit)).scalars())
    if ids:
        conn.execute(table.delete().where(table.c.id.in_(ids)))
    junk.prune(conn, done_before.date())
    return len(ids)
