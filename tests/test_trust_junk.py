"""Forged events for athletes we do not hold cannot fill the database: their storage is bounded."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from conftest import REAL_DATABASE, connect_rider, event, make_app

import models
from jobs import status
from models import junk

WEBHOOK = "/api/strava/webhook"
NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()
FORGED = 10_000
FORGED_ATHLETES = 1_000  # more than JUNK_ATHLETES, so the shared row is exercised too
FIRST_FORGED = 9_000_000


def footprint(conn) -> tuple[int, int]:
    """webhook_event's rows and bytes: on disk (PostgreSQL), or its stored values (SQLite)."""
    table = models.webhook_event
    rows = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    if conn.dialect.name == "postgresql":
        size = sa.text("SELECT pg_total_relation_size('webhook_event')")
        return rows, conn.execute(size).scalar_one()
    text = [table.c[n] for n in ("object_type", "aspect_type", "updates", "identity", "status")]
    lengths = sum(sa.func.length(c) for c in text) + sa.func.length(
        sa.func.coalesce(table.c.error, "")
    )
    stored = conn.execute(sa.select(sa.func.sum(lengths + 8 * 9))).scalar_one() or 0
    return rows, stored


def without_fsync(engine) -> None:
    """SQLite: no fsync per commit, so 10,000 posts take seconds (what is measured is size)."""
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA synchronous=OFF"))
        engine.dispose()


def test_attack_ten_thousand_forged_events_add_a_bounded_number_of_rows(database_url, sim):
    app = make_app(database_url, sim, CLOCK=lambda: NOON)
    svc, client = app.extensions["strava_sync"], app.test_client()
    without_fsync(svc.engine)
    _, athlete = connect_rider(app, sim)
    with svc.engine.connect() as conn:
        rows_before, bytes_before = footprint(conn)

    answers = set()
    for i in range(FORGED):
        owner = FIRST_FORGED + i % FORGED_ATHLETES
        body = event(owner, 10**12 + i, updates={"title": "x" * 1900})
        answers.add(client.post(WEBHOOK, json=body).json["status"])

    assert answers == {"ignored"}
    with svc.engine.connect() as conn:
        rows_after, bytes_after = footprint(conn)
        counters = conn.execute(sa.select(models.webhook_junk)).all()
    grown = rows_after - rows_before
    assert grown == junk.JUNK_ROWS_PER_DAY  # the first few of each athlete counted apart
    # PostgreSQL adds indexes and pages: allow twice the stored values' bound on disk.
    per_row = junk.JUNK_ROW_BYTES * (2 if REAL_DATABASE else 1)
    assert bytes_after - bytes_before <= junk.JUNK_ROWS_PER_DAY * per_row
    assert len(counters) == junk.JUNK_ATHLETES + 1  # the rest share one row
    assert sum(c.events for c in counters) == FORGED
    # The operator still sees what is going on.
    found = status.collect_status(svc)["unconnected_events_today"]
    assert (found["athletes"], found["events"]) == (junk.JUNK_ATHLETES, FORGED)
    # A connected athlete's event is stored and queued as ever.
    assert client.post(WEBHOOK, json=event(athlete, 77)).json["status"] == "queued"


def test_junk_examples_keep_the_duplicate_rule_and_no_updates(database_url, sim):
    app = make_app(database_url, sim, CLOCK=lambda: NOON)
    svc, client = app.extensions["strava_sync"], app.test_client()
    body = event(FIRST_FORGED, 5, updates={"title": "x"})
    assert client.post(WEBHOOK, json=body).json == {
        "status": "ignored",
        "reason": f"athlete {FIRST_FORGED} is not connected to us",
    }
    assert client.post(WEBHOOK, json=body).json["status"] == "duplicate"
    with svc.engine.connect() as conn:
        [row] = conn.execute(sa.select(models.webhook_event)).all()
        [counter] = conn.execute(sa.select(models.webhook_junk)).all()
    assert (row.status, row.updates, counter.events) == ("ignored", "{}", 1)


def test_junk_counters_are_pruned_with_old_events(database_url, sim):
    app = make_app(database_url, sim, CLOCK=lambda: NOON)
    svc = app.extensions["strava_sync"]
    day = datetime.fromtimestamp(NOON, UTC)
    with svc.engine.begin() as conn:
        junk.count(conn, FIRST_FORGED, day.date(), day, "identity")
        models.prune_events(conn, day, day, limit=10)
        assert len(conn.execute(sa.select(models.webhook_junk)).all()) == 1
        models.prune_events(conn, day.replace(day=29), day.replace(day=29), limit=10)
        assert conn.execute(sa.select(models.webhook_junk)).all() == []
