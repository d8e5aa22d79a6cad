"""v1.3: invitation codes, for hubs that run with registration = invite.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invites",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("code_hash", sa.String(128), nullable=False, unique=True),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("uses_left", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(32), nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("last_used_at", sa.String(32), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("invites")
