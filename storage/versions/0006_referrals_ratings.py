"""v1.4: referrals (codes, attribution, rewards), ratings, verified badges, agent performance.

Every existing principal gets its referral code here (new ones get it at registration). Downgrade
drops the referral, rating and statistics tables and the new principal columns; ledger entries
posted for referral rewards stay (the ledger is append-only and balanced whatever the schema).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NEW_PRINCIPAL_COLUMNS = (
    ("referral_code", sa.String(32)),
    ("registered_from", sa.String(64)),
    ("verified_by", sa.String(32)),
    ("verified_at", sa.String(32)),
    ("verified_note", sa.Text),
)


def upgrade() -> None:
    for name, kind in NEW_PRINCIPAL_COLUMNS:
        op.add_column("principals", sa.Column(name, kind, nullable=True))
    conn = op.get_bind()
    for (principal_id,) in conn.execute(sa.text("SELECT id FROM principals WHERE referral_code IS NULL")).all():
        conn.execute(
            sa.text("UPDATE principals SET referral_code = :code WHERE id = :id"),
            {"code": "ref_" + secrets.token_urlsafe(12), "id": principal_id},
        )
    op.create_index("ix_principals_referral_code", "principals", ["referral_code"], unique=True)
    op.create_index("ix_principals_registered_from", "principals", ["registered_from", "created_at"])
    op.create_table(
        "referrals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("referrer_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("referee_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=False, unique=True),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("reward_cents", sa.Integer, nullable=False, server_default="0"),
        sa.Column("qualifying_peek_id", sa.String(32), nullable=True),
        sa.Column("earns_until", sa.String(32), nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("completed_at", sa.String(32), nullable=True),
        sa.Column("rewarded_at", sa.String(32), nullable=True),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_referrals_referrer", "referrals", ["referrer_id", "status", "rewarded_at"])
    op.create_table(
        "ratings",
        sa.Column("rater_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("agent_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("stars", sa.Integer, nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("rater_id", "agent_id"),
    )
    op.create_index("ix_ratings_agent", "ratings", ["agent_id"])
    op.create_table(
        "agent_stats",
        sa.Column("agent_id", sa.String(32), sa.ForeignKey("principals.id"), primary_key=True),
        sa.Column("conversations", sa.Integer, nullable=False, server_default="0"),
        sa.Column("messages", sa.Integer, nullable=False, server_default="0"),
        sa.Column("replies", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reply_buckets", sa.Text, nullable=False, server_default="[]"),
        sa.Column("peeks_asked", sa.Integer, nullable=False, server_default="0"),
        sa.Column("peeks_accepted", sa.Integer, nullable=False, server_default="0"),
        sa.Column("peeks_completed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rating_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rating_sum", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rating_score", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_active_at", sa.String(32), nullable=True),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_agent_stats_score", "agent_stats", ["rating_score"])
    _backfill_stats(conn)


def _backfill_stats(conn: sa.Connection) -> None:
    """Figures for agents that existed before: counted once here, kept current by the code after."""
    now = datetime.now(UTC).isoformat(timespec="microseconds").removesuffix("+00:00") + "Z"
    conn.execute(
        sa.text(
            "INSERT INTO agent_stats (agent_id, conversations, messages, last_active_at, updated_at) "
            "SELECT p.id, "
            "(SELECT COUNT(*) FROM participants pa WHERE pa.principal_id = p.id), "
            "(SELECT COUNT(*) FROM messages m WHERE m.sender_id = p.id), "
            "(SELECT MAX(m.created_at) FROM messages m WHERE m.sender_id = p.id), :now "
            "FROM principals p WHERE p.role = 'agent'"
        ),
        {"now": now},
    )


def downgrade() -> None:
    op.drop_index("ix_agent_stats_score", table_name="agent_stats")
    op.drop_table("agent_stats")
    op.drop_index("ix_ratings_agent", table_name="ratings")
    op.drop_table("ratings")
    op.drop_index("ix_referrals_referrer", table_name="referrals")
    op.drop_table("referrals")
    op.drop_index("ix_principals_registered_from", table_name="principals")
    op.drop_index("ix_principals_referral_code", table_name="principals")
    for name, _ in reversed(NEW_PRINCIPAL_COLUMNS):
        op.drop_column("principals", name)
