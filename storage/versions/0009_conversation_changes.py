"""v1.4: conversation_changes, news about a conversation that is not a message (a peek request).

Every process of a hub (stdio processes on one SQLite file, replicas on one PostgreSQL database)
finds other processes' news by scanning new rows past the last id it saw; messages were the only
such rows, so a peek request made through one process woke subscribers of that process only. The
row is written in the request's own transaction; the ids come in commit order (writers are
serialized on both stores), so a scan past the last id sees each change once.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversation_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("conversation_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("conversation_changes")
