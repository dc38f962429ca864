"""Round two: reconnects, leaderboard privacy, history checks, job ids, run progress, invites.

Revision ID: 0002_round_two
Revises: 0001_baseline
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_round_two"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add the new columns (all nullable or defaulted, so existing rows stay valid) and invites."""
    with op.batch_alter_table("strava_connection") as batch:
        batch.add_column(sa.Column("needs_reconnect_since", Time))
        batch.add_column(
            sa.Column("leaderboard_hidden", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("history_verified_at", Time))
    with op.batch_alter_table("webhook_event") as batch:
        batch.add_column(sa.Column("job_id", sa.Text))
    with op.batch_alter_table("sync_run") as batch:
        batch.add_column(sa.Column("progress_at", Time))
    op.create_table(
        "strava_invite",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column(
            "rider_id", BigId, sa.ForeignKey("riders.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("expires_at", Time, nullable=False),
        sa.Column("used_at", Time),
    )


def downgrade() -> None:
    """Drop what `upgrade` added; the data in those columns is lost."""
    op.drop_table("strava_invite")
    with op.batch_alter_table("sync_run") as batch:
        batch.drop_column("progress_at")
    with op.batch_alter_table("webhook_event") as batch:
        batch.drop_column("job_id")
    with op.batch_alter_table("strava_connection") as batch:
        batch.drop_column("history_verified_at")
        batch.drop_column("leaderboard_hidden")
        batch.drop_column("needs_reconnect_since")
