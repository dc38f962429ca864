"""The tables (SQLAlchemy Core) and the engine."""

from __future__ import annotations

from datetime import UTC

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from models import revision

METRES_PER_MILE = 1609.344  # distances are stored in metres
METRES_PER_KM = 1000.0

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
    # Sessions carry the generation they were signed in at: sign-out and Disconnect raise it,
    # so every copy of an older cookie stops working.
    sa.Column("session_generation", sa.Integer, nullable=False, server_default="0"),
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
    # A refused refresh without proof of revocation: syncing stops until the rider reconnects.
    sa.Column("needs_reconnect_since", UTCDateTime),
    sa.Column("leaderboard_hidden", sa.Boolean, nullable=False, server_default=sa.false()),
    # When the rotating full-history check last compared this rider's history with Strava's.
    sa.Column("history_verified_at", UTCDateTime),
    # Days that reached each Eddington number (the leaderboard's "qualifying days"; 0003_pages).
    sa.Column("eddington_days_miles", sa.Integer),
    sa.Column("eddington_days_km", sa.Integer),
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
    # The RQ job carrying the event: the recovery pass re-queues events whose job vanished.
    sa.Column("job_id", sa.Text),
    sa.Index("ix_webhook_event_object", "object_type", "object_id", "status"),
    sa.Index("ix_webhook_event_status", "status", "received_at"),
)


# Events for athletes who are not connected: counted per athlete and UTC day, never kept whole
# (a few examples stay in webhook_event), so forged events cannot fill the database.
webhook_junk = sa.Table(
    "webhook_junk",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("owner_id", sa.BigInteger, primary_key=True),
    sa.Column("events", sa.Integer, nullable=False),
    sa.Column("last_received_at", UTCDateTime, nullable=False),
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
    # Runs that make no progress for too long are closed "abandoned".
    sa.Column("progress_at", UTCDateTime),
)


kv = sa.Table(
    "strava_sync_setting",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


# Single-use connect invites; the id is a random nonce.
strava_invite = sa.Table(
    "strava_invite",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("rider_id", BigId, sa.ForeignKey("riders.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("used_at", UTCDateTime),
)


ACTIVITY_FIELDS = (
    "name", "sport_type", "start_date", "start_date_local", "timezone", "distance", "moving_time",
    "elapsed_time", "total_elevation_gain", "private", "manual", "trainer", "commute",
)  # fmt: skip


def make_engine(url: str) -> Engine:
    """Create the engine; PostgreSQL goes through psycopg 3 with server-side prepares off."""
    if url.startswith("sqlite"):
        return sa.create_engine(url, connect_args={"timeout": 30})
    # Supabase's transaction pooler (PgBouncer) cannot keep prepared statements between requests.
    return sa.create_engine(url, pool_pre_ping=True, connect_args={"prepare_threshold": None})


def init_db(engine: Engine) -> None:
    """Create the database at the newest schema, or upgrade it (Alembic); safe to run again."""
    from models import migrate  # Alembic loads only where migrations run, never at a cold start

    migrate.upgrade(engine)


def drop_all(engine: Engine) -> None:
    """Drop every table and the migration record (tests start each time from nothing)."""
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {revision.VERSION_TABLE}"))


def dialect_insert(dialect: str, table: sa.Table):
    """An INSERT with ON CONFLICT clauses for `dialect` ("postgresql", else SQLite's).

    The dialect's module loads here, at the first write, not at import: a serverless cold start
    imports the models before it answers anything, and the engine loads its own dialect anyway.
    """
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql as module
    else:
        from sqlalchemy.dialects import sqlite as module
    return module.insert(table)
