"""Trust: session generations (sign-out ends every copy of a cookie) and counted junk events.

Revision ID: 0004_trust
Revises: 0003_pages
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_trust"
down_revision = "0003_pages"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the riders' session generation (0 for everyone) and the junk-event counters."""
    with op.batch_alter_table("riders") as batch:
        batch.add_column(
            sa.Column("session_generation", sa.Integer, nullable=False, server_default="0")
        )
    op.create_table(
        "webhook_junk",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("owner_id", sa.BigInteger, primary_key=True),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("last_received_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop what `upgrade` added: sessions signed in before it stay valid, the counts are lost."""
    op.drop_table("webhook_junk")
    with op.batch_alter_table("riders") as batch:
        batch.drop_column("session_generation")
