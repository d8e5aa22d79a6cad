"""v1.1: the double-entry ledger, peeks and their consents, payouts, connect_account_id.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("principals") as batch:
        batch.add_column(sa.Column("connect_account_id", sa.String(64), nullable=True))
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("memo", sa.Text, nullable=False, server_default=""),
        sa.Column("ref", sa.String(64), nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.UniqueConstraint("idempotency_key", name="uq_ledger_entries_idempotency_key"),
    )
    op.create_index("ix_ledger_entries_ref", "ledger_entries", ["ref"])
    op.create_table(
        "ledger_lines",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("entry_id", sa.Integer, sa.ForeignKey("ledger_entries.id"), nullable=False),
        sa.Column("account", sa.String(80), nullable=False),
        sa.Column("amount_cents", sa.Integer, nullable=False),
    )
    op.create_index("ix_ledger_lines_account", "ledger_lines", ["account", "amount_cents"])
    op.create_index("ix_ledger_lines_entry", "ledger_lines", ["entry_id"])
    op.create_table(
        "peeks",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("conversation_id", sa.String(32), sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("price_cents", sa.Integer, nullable=False),
        sa.Column("fee_cents", sa.Integer, nullable=False),
        sa.Column("charged_cents", sa.Integer, nullable=False),
        sa.Column("max_price_cents", sa.Integer, nullable=False),
        sa.Column("duration_minutes", sa.Integer, nullable=False),
        sa.Column("start_at", sa.String(32), nullable=True),
        sa.Column("window_start", sa.String(32), nullable=True),
        sa.Column("window_end", sa.String(32), nullable=True),
        sa.Column("requested_at", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.String(32), nullable=False),
        sa.Column("decided_at", sa.String(32), nullable=True),
        sa.Column("keys_released_at", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("updated_at", sa.String(32), nullable=False),
        sa.UniqueConstraint("user_id", "idempotency_key", name="uq_peeks_user_idempotency_key"),
    )
    op.create_index("ix_peeks_conversation_status", "peeks", ["conversation_id", "status"])
    op.create_index("ix_peeks_user", "peeks", ["user_id", "requested_at"])
    op.create_index("ix_peeks_status_expires", "peeks", ["status", "expires_at"])
    op.create_table(
        "peek_consents",
        sa.Column("peek_id", sa.String(32), sa.ForeignKey("peeks.id"), nullable=False),
        sa.Column("agent_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("price_cents", sa.Integer, nullable=False),
        sa.Column("fee_cents", sa.Integer, nullable=False),
        sa.Column("paid_by", sa.String(16), nullable=False),
        sa.Column("cover_ref", sa.String(64), nullable=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("decided_at", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("peek_id", "agent_id"),
    )
    op.create_index("ix_peek_consents_agent", "peek_consents", ["agent_id", "decision"])
    op.create_table(
        "payouts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("agent_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("amount_cents", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("destination", sa.String(64), nullable=True),
        sa.Column("transfer_id", sa.String(64), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_payouts_agent", "payouts", ["agent_id", "created_at"])
    op.create_index("ix_payouts_status", "payouts", ["status"])


def downgrade() -> None:
    for index, table in (
        ("ix_payouts_status", "payouts"),
        ("ix_payouts_agent", "payouts"),
        ("ix_peek_consents_agent", "peek_consents"),
        ("ix_peeks_status_expires", "peeks"),
        ("ix_peeks_user", "peeks"),
        ("ix_peeks_conversation_status", "peeks"),
        ("ix_ledger_lines_entry", "ledger_lines"),
        ("ix_ledger_lines_account", "ledger_lines"),
        ("ix_ledger_entries_ref", "ledger_entries"),
    ):
        op.drop_index(index, table_name=table)
    for table in ("payouts", "peek_consents", "peeks", "ledger_lines", "ledger_entries"):
        op.drop_table(table)
    with op.batch_alter_table("principals") as batch:
        batch.drop_column("connect_account_id")
