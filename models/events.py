"""The webhook inbox: events as Strava sent them, and what became of each."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import _insert, now, webhook_event


def event_identity(fields: dict) -> str:
    """A stable digest of the fields that make an event the same event."""
    keys = ("subscription_id", "object_type", "object_id", "aspect_type", "owner_id", "event_time")
    canonical = json.dumps(
        [fields[k] for k in keys] + [fields["updates"]], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def insert_event(conn: Connection, fields: dict, status: str, error: str | None = None):
    """Store an event; returns its id, or None if this exact event was stored before."""
    values = dict(
        fields,
        updates=json.dumps(fields["updates"], sort_keys=True),
        identity=event_identity(fields),
        received_at=now(),
        status=status,
        attempts=0,
        error=error,
        processed_at=now() if status == "ignored" else None,
    )
    stmt = _insert(conn, webhook_event).values(**values)
    stmt = stmt.on_conflict_do_nothing(index_elements=["identity"]).returning(webhook_event.c.id)
    return conn.execute(stmt).scalar()


def set_event_status(conn: Connection, event_ids: Iterable[int], status: str, error=None) -> None:
    """Move events to a status; a final status stamps processed_at."""
    ids = list(event_ids)
    if not ids:
        return
    values: dict = {"status": status, "error": error}
    if status in ("done", "ignored", "failed"):
        values["processed_at"] = now()
    conn.execute(webhook_event.update().where(webhook_event.c.id.in_(ids)).values(**values))


def open_events(conn: Connection, object_type: str, object_id: int):
    """Events for one object still waiting for their work (pending or queued), oldest first."""
    table = webhook_event
    query = (
        sa.select(table)
        .where(
            table.c.object_type == object_type,
            table.c.object_id == object_id,
            table.c.status.in_(("pending", "queued")),
        )
        .order_by(table.c.event_time, table.c.id)
    )
    return conn.execute(query).all()


def count_attempt(conn: Connection, event_ids: Iterable[int]) -> None:
    """Count one more processing attempt on each event."""
    ids = list(event_ids)
    if ids:
        table = webhook_event
        conn.execute(
            table.update().where(table.c.id.in_(ids)).values(attempts=table.c.attempts + 1)
        )


def fail_stale_events(conn: Connection, older_than: datetime) -> int:
    """Close events still queued long after they arrived (a job killed on its last try)."""
    table = webhook_event
    result = conn.execute(
        table.update()
        .where(table.c.status == "queued", table.c.received_at < older_than)
        .values(
            status="failed",
            error="no job finished this event; the nightly sweep covers its activity",
            processed_at=now(),
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
        .where(table.c.id == event_id, table.c.status.in_(("pending", "queued")))
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
    return len(ids)
