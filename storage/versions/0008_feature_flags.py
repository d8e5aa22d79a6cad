"""v1.4: feature flags, their groups, and the audit of every change to them.

`feature_flags` holds one row per flag the operator has set (a flag never set answers its built-in
default); `feature_flag_groups` the members of named groups (e.g. `beta`) that targeting rules
name; `feature_flag_changes` who changed what, when, old -> new. The newest change's id is the
flags' version: every process polls it and reloads its cached flags when it moves.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feature_flags",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("rules", sa.Text, nullable=False, server_default="[]"),
        sa.Column("hide_when_off", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "feature_flag_groups",
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("principal_id", sa.String(32), nullable=False),
        sa.Column("added_at", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("name", "principal_id"),
    )
    op.create_table(
        "feature_flag_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject", sa.String(80), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("changed_at", sa.String(32), nullable=False),
        sa.Column("old", sa.Text, nullable=True),
        sa.Column("new", sa.Text, nullable=True),
        sa.Column("reason", sa.String(200), nullable=False, server_default=""),
    )
    op.create_index("ix_feature_flag_changes_subject", "feature_flag_changes", ["subject", "id"])


def downgrade() -> None:
    op.drop_index("ix_feature_flag_changes_subject", table_name="feature_flag_changes")
    op.drop_table("feature_flag_changes")
    op.drop_table("feature_flag_groups")
    op.drop_table("feature_flags")
