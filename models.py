"""Tables (SQLAlchemy Core) and every query strava-sync makes.

The same code runs on SQLite (development, the demo, fast tests) and PostgreSQL through psycopg 3
(production, e.g. Supabase). Strava ids are the keys of upserts, so replaying any write is harmless.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, date, datetime

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from eddington import eddington_numbers

metadata = sa.MetaData()
# SQLite only autoincrements an INTEGER primary key.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value if dialect.name != "sqlite" or value is None else value.replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


riders = sa.Table(
    "riders",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

strava_connection = sa.Table(
    "strava_connection",
    metadata,
    sa.Column("rider_id", BigId, sa.ForeignKey("riders.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("athlete_id", sa.BigInteger, nullable=False, unique=True),
    sa.Column("access_token", sa.Text),
    sa.Column("refresh_token", sa.Text),
    sa.Column("expires_at", sa.BigInteger),  # epoch seconds, as Strava sends it
    sa.Column("scope", sa.Text),
    sa.Column("connected_at", UTCDateTime),
    sa.Column("last_sync", UTCDateTime),
    sa.Column("last_reconciled_at", UTCDateTime),
    sa.Column("eddington_number_miles", sa.Integer),
    sa.Column("eddington_number_km", sa.Integer),
    sa.Column("deauthorized_at", UTCDateTime),
    # Backfill cursor: the next page reads activities before this epoch (NULL: from now).
    sa.Column("backfill_before", sa.BigInteger),
)

strava_activity = sa.Table(
    "strava_activity",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("rider_id", BigId, sa.ForeignKey("riders.id", ondelete="CASCADE"), nullable=False),
    sa.Column("athlete_id", sa.BigInteger, nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("sport_type", sa.Text),
    sa.Column("start_date", UTCDateTime, nullable=False),
    # Local wall-clock time; Strava writes it with a "Z" that does not mean UTC.
    sa.Column("start_date_local", sa.DateTime(timezone=False), nullable=False),
    sa.Column("timezone", sa.Text),
    sa.Column("distance", sa.Float, nullable=False, default=0.0),
    sa.Column("moving_time", sa.Integer),
    sa.Column("elapsed_time", sa.Integer),
    sa.Column("total_elevation_gain", sa.Float),
    sa.Column("private", sa.Boolean, nullable=False, default=False),
    sa.Column("manual", sa.Boolean),
    sa.Column("trainer", sa.Boolean),
    sa.Column("commute", sa.Boolean),
    sa.Column("fetched_at", UTCDateTime, nullable=False),
    sa.Index("ix_strava_activity_rider_start", "rider_id", "start_date"),
)

webhook_event = sa.Table(
    "webhook_event",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("subscription_id", sa.BigInteger, nullable=False),
    sa.Column("object_type", sa.Text, nullable=False),
    sa.Column("object_id", sa.BigInteger, nullable=False),
    sa.Column("aspect_type", sa.Text, nullable=False),
    sa.Column("owner_id", sa.BigInteger, nullable=False),
    sa.Column("event_time", sa.BigInteger, nullable=False),
    sa.Column("updates", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text),
    sa.Column("processed_at", UTCDateTime),
    # Strava sends no event id: a digest of every field is the event's identity.
    sa.Column("identity", sa.String(64), nullable=False, unique=True),
    sa.Index("ix_webhook_event_object", "object_type", "object_id", "status"),
    sa.Index("ix_webhook_event_status", "status", "received_at"),
)

sync_run = sa.Table(
    "sync_run",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("trigger", sa.Text, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False, default=False),
    sa.Column("riders_planned", sa.Integer, nullable=False, default=0),
    sa.Column("riders_deferred", sa.Integer, nullable=False, default=0),
    sa.Column("riders_done", sa.Integer, nullable=False, default=0),
    # Rider jobs that waited for the next rate window at least once (the run ends "partial").
    sa.Column("riders_rescheduled", sa.Integer, nullable=False, default=0),
    sa.Column("requests_used", sa.Integer, nullable=False, default=0),
    sa.Column("activities_created", sa.Integer, nullable=False, default=0),
    sa.Column("activities_updated", sa.Integer, nullable=False, default=0),
    sa.Column("activities_deleted", sa.Integer, nullable=False, default=0),
    # Changes the sweep found that no webhook event had announced: tells whether events arrive.
    sa.Column("activities_unannounced", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text),
)

kv = sa.Table(
    "strava_sync_setting",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

ACTIVITY_FIELDS = (
    "name", "sport_type", "start_date", "start_date_local", "timezone", "distance", "moving_time",
    "elapsed_time", "total_elevation_gain", "private", "manual", "trainer", "commute",
)  # fmt: skip


def now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def make_engine(url: str) -> Engine:
    """Create the engine; PostgreSQL goes through psycopg 3 with server-side prepares off."""
    if url.startswith("sqlite"):
        return sa.create_engine(url, connect_args={"timeout": 30})
    # Supabase's transaction pooler (PgBouncer) cannot keep prepared statements between requests.
    return sa.create_engine(url, pool_pre_ping=True, connect_args={"prepare_threshold": None})


def init_db(engine: Engine) -> None:
    """Create any missing tables; safe to run again."""
    metadata.create_all(engine)


def _insert(conn: Connection, table: sa.Table):
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


# -- tokens at rest -------------------------------------------------------------------------------


class TokenCipher:
    """Encrypts OAuth tokens with MultiFernet when keys are configured (newest key first)."""

    PREFIX = "fernet:"

    def __init__(self, keys: str | None):
        self._fernet = (
            MultiFernet([Fernet(k.strip()) for k in keys.split(",") if k.strip()]) if keys else None
        )

    @property
    def enabled(self) -> bool:
        """Whether tokens are encrypted at rest."""
        return self._fernet is not None

    def encrypt(self, token: str | None) -> str | None:
        """Encrypt a token for storage (stored as is when no key is configured)."""
        if token is None or self._fernet is None:
            return token
        return self.PREFIX + self._fernet.encrypt(token.encode()).decode()

    def decrypt(self, stored: str | None) -> str | None:
        """Decrypt a stored token; plaintext stored before a key was configured is read as is."""
        if stored is None or not stored.startswith(self.PREFIX):
            return stored
        if self._fernet is None:
            raise RuntimeError("a token is encrypted but TOKEN_ENCRYPTION_KEY is not set")
        try:
            return self._fernet.decrypt(stored[len(self.PREFIX) :].encode()).decode()
        except InvalidToken:
            raise RuntimeError(
                "a token cannot be decrypted with any TOKEN_ENCRYPTION_KEY"
            ) from None


# -- riders and connections -----------------------------------------------------------------------


def create_rider(conn: Connection, name: str) -> int:
    """Insert a rider and return its id."""
    result = conn.execute(riders.insert().values(name=name, created_at=now()))
    return result.inserted_primary_key[0]


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


def save_connection(conn: Connection, rider_id: int, athlete_id: int, tokens: dict, scope: str):
    """Create or replace a rider's connection with fresh tokens (tokens already encrypted)."""
    values = dict(
        athlete_id=athlete_id,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        expires_at=tokens["expires_at"],
        scope=scope,
        connected_at=now(),
        deauthorized_at=None,
        backfill_before=None,
    )
    stmt = _insert(conn, strava_connection).values(rider_id=rider_id, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["rider_id"], set_=values))


def store_tokens(conn: Connection, rider_id: int, tokens: dict) -> None:
    """Store a refreshed token pair (already encrypted)."""
    conn.execute(
        strava_connection.update()
        .where(strava_connection.c.rider_id == rider_id)
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


def deauthorize(conn: Connection, rider_id: int) -> int:
    """Remove a rider's Strava data after a confirmed revocation; returns activities deleted."""
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
        deauthorized_at=now(),
        backfill_before=None,
    )
    return deleted


# -- activities -----------------------------------------------------------------------------------


def upsert_activity(conn: Connection, rider_id: int, values: dict, write: bool = True) -> str:
    """Insert or update one activity; returns 'created', 'updated' or 'unchanged'.

    With write=False nothing is written: the answer says what a write would do (dry runs).
    """
    table = strava_activity
    existing = conn.execute(sa.select(table).where(table.c.id == values["id"])).first()
    if existing is not None:
        row = existing._mapping
        if all(row[f] == values[f] for f in ACTIVITY_FIELDS) and row["rider_id"] == rider_id:
            return "unchanged"
    if not write:
        return "created" if existing is None else "updated"
    full = dict(values, rider_id=rider_id, fetched_at=now())
    stmt = _insert(conn, table).values(**full)
    changed = {k: v for k, v in full.items() if k != "id"}
    conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=changed))
    return "created" if existing is None else "updated"


def delete_activity(conn: Connection, activity_id: int) -> int:
    """Delete one activity; returns the owning rider id, or None when we did not hold it."""
    table = strava_activity
    rider_id = conn.execute(sa.select(table.c.rider_id).where(table.c.id == activity_id)).scalar()
    if rider_id is not None:
        conn.execute(table.delete().where(table.c.id == activity_id))
    return rider_id


def fetched_between(conn: Connection, rider_id: int, after: datetime, before: datetime):
    """{id: fetched_at} of a rider's activities starting in (after, before)."""
    table = strava_activity
    # Strava's `after` is exclusive; so is ours, so both sides describe the same window.
    query = sa.select(table.c.id, table.c.fetched_at).where(
        table.c.rider_id == rider_id, table.c.start_date > after, table.c.start_date < before
    )
    return dict(conn.execute(query).all())


def rider_activities(conn: Connection, rider_id: int):
    """A rider's activities, newest first."""
    table = strava_activity
    query = sa.select(table).where(table.c.rider_id == rider_id).order_by(table.c.start_date.desc())
    return conn.execute(query).all()


def daily_distances(conn: Connection, rider_id: int, sport_types: Iterable[str]) -> list[float]:
    """Metres ridden per local calendar day, counting only the given sport types."""
    table = strava_activity
    query = sa.select(table.c.start_date_local, table.c.distance).where(
        table.c.rider_id == rider_id, table.c.sport_type.in_(sorted(sport_types))
    )
    per_day: dict[date, float] = {}
    for start_local, distance in conn.execute(query):
        per_day[start_local.date()] = per_day.get(start_local.date(), 0.0) + (distance or 0.0)
    return list(per_day.values())


# -- webhook events -------------------------------------------------------------------------------


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


# -- settings -------------------------------------------------------------------------------------


def get_setting(conn: Connection, key: str) -> str | None:
    """A stored setting (e.g. our subscription id), or None."""
    return conn.execute(sa.select(kv.c.value).where(kv.c.key == key)).scalar()


def set_setting(conn: Connection, key: str, value: str | None) -> None:
    """Store or (with None) remove a setting."""
    conn.execute(kv.delete().where(kv.c.key == key))
    if value is not None:
        conn.execute(kv.insert().values(key=key, value=value))


def update_eddington(conn: Connection, rider_id: int, sport_types: Iterable[str]) -> None:
    """Recompute and store the rider's Eddington numbers from the activities we hold."""
    miles, km = eddington_numbers(daily_distances(conn, rider_id, sport_types))
    update_connection(conn, rider_id, eddington_number_miles=miles, eddington_number_km=km)


def mark_queued(conn: Connection, event_id: int) -> None:
    """Record that an event's work is queued, unless a job already finished it."""
    table = webhook_event
    conn.execute(
        table.update()
        .where(table.c.id == event_id, table.c.status == "pending")
        .values(status="queued")
    )


# -- sweeps and backfills -------------------------------------------------------------------------


def riders_to_reconcile(conn: Connection, rider_id: int | None = None):
    """Connected riders, least recently reconciled first (never reconciled before all)."""
    table = strava_connection
    query = (
        sa.select(table.c.rider_id, table.c.last_reconciled_at)
        .where(table.c.deauthorized_at.is_(None), table.c.refresh_token.is_not(None))
        .order_by(
            table.c.last_reconciled_at.is_not(None), table.c.last_reconciled_at, table.c.rider_id
        )
    )
    if rider_id is not None:
        query = query.where(table.c.rider_id == rider_id)
    return conn.execute(query).all()


def create_run(conn: Connection, kind: str, trigger: str, dry_run: bool = False) -> int:
    """Start a sync_run row and return its id."""
    result = conn.execute(
        sync_run.insert().values(
            kind=kind, trigger=trigger, started_at=now(), status="running", dry_run=dry_run
        )
    )
    return result.inserted_primary_key[0]


def get_run(conn: Connection, run_id: int):
    """One sync_run row."""
    return conn.execute(sa.select(sync_run).where(sync_run.c.id == run_id)).first()


def update_run(conn: Connection, run_id: int, **values) -> None:
    """Set columns of a sync_run row."""
    conn.execute(sync_run.update().where(sync_run.c.id == run_id).values(**values))


def add_to_run(conn: Connection, run_id: int, **increments: int) -> None:
    """Add to a sync_run's counters atomically (many rider jobs report into one run)."""
    values = {name: getattr(sync_run.c, name) + n for name, n in increments.items()}
    conn.execute(sync_run.update().where(sync_run.c.id == run_id).values(**values))


def finish_run_if_complete(conn: Connection, run_id: int) -> None:
    """Close a run once every planned rider is done: 'partial' if any was deferred or waited."""
    run = get_run(conn, run_id)
    if run is None or run.status != "running" or run.riders_done < run.riders_planned:
        return
    partial = run.riders_deferred or run.riders_rescheduled
    update_run(conn, run_id, status="partial" if partial else "done", finished_at=now())


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


def latest_run(conn: Connection, kind: str = "reconcile"):
    """The most recent sync_run of a kind, or None."""
    query = sa.select(sync_run).where(sync_run.c.kind == kind).order_by(sync_run.c.id.desc())
    return conn.execute(query.limit(1)).first()


# -- operator's view ------------------------------------------------------------------------------


def event_counts_since(conn: Connection, since: datetime) -> dict[str, int]:
    """Webhook events received since a time, by status."""
    table = webhook_event
    query = (
        sa.select(table.c.status, sa.func.count())
        .where(table.c.received_at >= since)
        .group_by(table.c.status)
    )
    return dict(conn.execute(query).all())


def stale_riders(conn: Connection, older_than: datetime):
    """Connected riders not reconciled since a time (or never)."""
    table = strava_connection
    query = sa.select(table.c.rider_id, table.c.last_reconciled_at).where(
        table.c.deauthorized_at.is_(None),
        sa.or_(table.c.last_reconciled_at.is_(None), table.c.last_reconciled_at < older_than),
    )
    return conn.execute(query.order_by(table.c.rider_id)).all()


def deauthorized_riders(conn: Connection):
    """Riders whose Strava access was revoked."""
    table = strava_connection
    query = sa.select(table.c.rider_id, table.c.deauthorized_at).where(
        table.c.deauthorized_at.is_not(None)
    )
    return conn.execute(query.order_by(table.c.rider_id)).all()


def recent_runs(conn: Connection, kind: str = "reconcile", limit: int = 7):
    """The latest sync runs of a kind, newest first."""
    query = sa.select(sync_run).where(sync_run.c.kind == kind).order_by(sync_run.c.id.desc())
    return conn.execute(query.limit(limit)).all()
