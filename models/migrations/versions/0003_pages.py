"""Pages: the days behind each Eddington number, stored beside it for the leaderboard.

Revision ID: 0003_pages
Revises: 0002_round_two
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_pages"
down_revision = "0002_round_two"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the two nullable columns; the leaderboard computes them while they are NULL."""
    with op.batch_alter_table("strava_connection") as batch:
        batch.add_column(sa.Column("eddington_days_miles", sa.Integer))
        batch.add_column(sa.Column("eddington_days_km", sa.Integer))


def downgrade() -> None:
    """Drop the two columns (they are recomputed by the next sync of each rider)."""
    with op.batch_alter_table("strava_connection") as batch:
        batch.drop_column("eddington_days_km")
        batch.drop_column("eddington_days_miles")
