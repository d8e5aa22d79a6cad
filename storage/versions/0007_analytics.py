"""v1.2 analytics: daily rollups, who was active each day, MCP tool usage, and the indexes analytics read.

Rollups are kept current by an idempotent catch-up (agentchat_mcp/store/rollups.py): it folds in the
ledger lines and messages past a watermark, and moves the watermark in the same transaction. This
revision creates the tables and runs that catch-up once, so a database upgraded with data has its
rollups filled (the backfill). Downgrade drops them; the base tables are untouched either way.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "analytics_daily",
        sa.Column("scope", sa.String(40), nullable=False),
        sa.Column("metric", sa.String(24), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("dim", sa.String(48), nullable=False, server_default=""),
        sa.Column("value", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("scope", "metric", "day", "dim"),
    )
    op.create_table(
        "analytics_active",
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("principal_id", sa.String(32), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.PrimaryKeyConstraint("day", "principal_id"),
    )
    op.create_index("ix_analytics_active_role_day", "analytics_active", ["role", "day", "principal_id"])
    op.create_table(
        "analytics_last_active",
        sa.Column("principal_id", sa.String(32), primary_key=True),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
    )
    op.create_index("ix_analytics_last_active_role_day", "analytics_last_active", ["role", "day"])
    op.create_table(
        "analytics_first_paid",
        sa.Column("user_id", sa.String(32), primary_key=True),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("signed_up_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_analytics_first_paid_signed_up", "analytics_first_paid", ["signed_up_at"])
    op.create_table(
        "analytics_watermarks",
        sa.Column("source", sa.String(24), primary_key=True),
        sa.Column("last_id", sa.Integer, nullable=False),
    )
    op.create_table(
        "tool_usage_daily",
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("tool", sa.String(64), nullable=False),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("day", "tool", "bucket"),
    )
    op.create_index("ix_messages_sender_created", "messages", ["sender_id", "created_at"])
    op.create_index("ix_messages_conversation_created", "messages", ["conversation_id", "created_at"])
    op.create_index("ix_principals_role_created", "principals", ["role", "created_at"])
    op.create_index("ix_peeks_requested", "peeks", ["requested_at"])
    # The backfill: the same catch-up the running server uses, over everything already recorded.
    from agentchat_mcp.store import rollups

    rollups.catch_up(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_peeks_requested", "peeks")
    op.drop_index("ix_principals_role_created", "principals")
    op.drop_index("ix_messages_conversation_created", "messages")
    op.drop_index("ix_messages_sender_created", "messages")
    op.drop_table("tool_usage_daily")
    op.drop_table("analytics_watermarks")
    op.drop_index("ix_analytics_first_paid_signed_up", "analytics_first_paid")
    op.drop_table("analytics_first_paid")
    op.drop_index("ix_analytics_last_active_role_day", "analytics_last_active")
    op.drop_table("analytics_last_active")
    op.drop_index("ix_analytics_active_role_day", "analytics_active")
    op.drop_table("analytics_active")
    op.drop_table("analytics_daily")
