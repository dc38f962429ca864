"""Sweep and backfill runs, and stored settings."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import kv, sync_run


def create_run(
    conn: Connection, kind: str, trigger: str, *, now: datetime, dry_run: bool = False
) -> int:
    """Start a sync_run row (started `now`) and return its id."""
    result = conn.execute(
        sync_run.insert().values(
            kind=kind, trigger=trigger, started_at=now, status="running", dry_run=dry_run
        )
    )
    return result.inserted_primary_key[0]


def get_run(conn: Connection, run_id: int):
    """One sync_run row."""
    return conn.execute(sa.select(sync_run).where(sync_run.c.id == run_id)).first()


def update_run(conn: Connection, run_id: int, **values) -> None:
    """Set columns of a sync_run row."""
    conn.execute(sync_run.update().where(sync_run.c.id == run_id).values(**values))


def add_to_run(conn: Connection, run_id: int, *, now: datetime, **increments: int) -> None:
    """Add to a sync_run's counters atomically (many rider jobs report into one run)."""
    values = {name: getattr(sync_run.c, name) + n for name, n in increments.items()}
    values["progress_at"] = now  # the recovery pass closes runs that stop reporting
    conn.execute(sync_run.update().where(sync_run.c.id == run_id).values(**values))


def finish_run_if_complete(conn: Connection, run_id: int, *, now: datetime) -> None:
    """Close a run once every planned rider is done: 'partial' if any was deferred or waited."""
    run = get_run(conn, run_id)
    if run is None or run.status != "running" or run.riders_done < run.riders_planned:
        return
    partial = run.riders_deferred or run.riders_rescheduled
    update_run(conn, run_id, status="partial" if partial else "done", finished_at=now)


def running_runs(conn: Connection):
    """Runs still marked running, oldest first."""
    query = sa.select(sync_run).where(sync_run.c.status == "running").order_by(sync_run.c.id)
    return conn.execute(query).all()


def recent_runs(conn: Connection, kind: str = "reconcile", limit: int = 7):
    """The latest sync runs of a kind, newest first."""
    query = sa.select(sync_run).where(sync_run.c.kind == kind).order_by(sync_run.c.id.desc())
    return conn.execute(query.limit(limit)).all()


def get_setting(conn: Connection, key: str) -> str | None:
    """A stored setting (e.g. our subscription id), or None."""
    return conn.execute(sa.select(kv.c.value).where(kv.c.key == key)).scalar()


def set_setting(conn: Connection, key: str, value: str | None) -> None:
    """Store or (with None) remove a setting."""
    conn.execute(kv.delete().where(kv.c.key == key))
    if value is not None:
        conn.execute(kv.insert().values(key=key, value=value))
