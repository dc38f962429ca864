"""The first landing's schema, as `metadata.create_all` built it before migrations existed.

A database made by that `create_all` (tables, no alembic_version) is stamped with this revision by
`migrate.upgrade`, never run through it. Types are spelled out here rather than imported from
`models`, so a later change to the models cannot rewrite history.

Revision ID: 0001_baseline
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

# SQLite only autoincrements an INTEGER primary key.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)
RUN_COUNTERS = (
    "riders_planned", "riders_deferred", "riders_done", "riders_rescheduled", "requests_used",
    "activities_created", "activities_updated", "activities_deleted", "activities_unannounced",
)  # fmt: skip


def upgrade() -> None:
    """Create the six tables of the first landing."""
    op.create_table(
        "riders",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_table(
        "strava_connection",
        sa.Column(
            "rider_id", BigId, sa.ForeignKey("riders.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("athlete_id", sa.BigInteger, nullable=False, unique=True),
        sa.Column("access_token", sa.Text),
        sa.Column("refresh_token", sa.Text),
        sa.Column("expires_at", sa.BigInteger),
        sa.Column("scope", sa.Text),
        sa.Column("connected_at", Time),
        sa.Column("last_sync", Time),
        sa.Column("last_reconciled_at", Time),
        sa.Column("eddington_number_miles", sa.Integer),
        sa.Column("eddington_number_km", sa.Integer),
        sa.Column("deauthorized_at", Time),
        sa.Column("backfill_before", sa.BigInteger),
    )
    op.create_table(
        "strava_activity",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column(
            "rider_id", BigId, sa.ForeignKey("riders.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("athlete_id", sa.BigInteger, nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("sport_type", sa.Text),
        sa.Column("start_date", Time, nullable=False),
        sa.Column("start_date_local", sa.DateTime(timezone=False), nullable=False),
        sa.Column("timezone", sa.Text),
        sa.Column("distance", sa.Float, nullable=False),
        sa.Column("moving_time", sa.Integer),
        sa.Column("elapsed_time", sa.Integer),
        sa.Column("total_elevation_gain", sa.Float),
        sa.Column("private", sa.Boolean, nullable=False),
        sa.Column("manual", sa.Boolean),
        sa.Column("trainer", sa.Boolean),
        sa.Column("commute", sa.Boolean),
        sa.Column("fetched_at", Time, nullable=False),
    )
    op.create_index("ix_strava_activity_rider_start", "strava_activity", ["rider_id", "start_date"])
    op.create_table(
        "webhook_event",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("received_at", Time, nullable=False),
        sa.Column("subscription_id", sa.BigInteger, nullable=False),
        sa.Column("object_type", sa.Text, nullable=False),
        sa.Column("object_id", sa.BigInteger, nullable=False),
        sa.Column("aspect_type", sa.Text, nullable=False),
        sa.Column("owner_id", sa.BigInteger, nullable=False),
        sa.Column("event_time", sa.BigInteger, nullable=False),
        sa.Column("updates", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("processed_at", Time),
        sa.Column("identity", sa.String(64), nullable=False, unique=True),
    )
    op.create_index(
        "ix_webhook_event_object", "webhook_event", ["object_type", "object_id", "status"]
    )
    op.create_index("ix_webhook_event_status", "webhook_event", ["status", "received_at"])
    op.create_table(
        "sync_run",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("trigger", sa.Text, nullable=False),
        sa.Column("started_at", Time, nullable=False),
        sa.Column("finished_at", Time),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        *[sa.Column(name, sa.Integer, nullable=False) for name in RUN_COUNTERS],
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "strava_sync_setting",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    """Drop every table (children first)."""
    children_first = (
        "strava_sync_setting", "sync_run", "webhook_event", "strava_activity", "strava_connection",
        "riders",
    )  # fmt: skip
    for table in children_first:
        op.drop_table(table)
