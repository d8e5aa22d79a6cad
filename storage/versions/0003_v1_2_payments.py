"""v1.2: payments (customers, purchases, webhook dedupe), packs and subscriptions, payout batches.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _times() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "payment_customers",
        sa.Column("principal_id", sa.String(32), sa.ForeignKey("principals.id"), primary_key=True),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("payment_method_id", sa.String(64), nullable=True),
        *_times(),
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("item", sa.String(40), nullable=True),
        sa.Column("amount_cents", sa.Integer, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False, server_default="usd"),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("intent_id", sa.String(64), nullable=True),
        sa.Column("checkout_id", sa.String(64), nullable=True),
        sa.Column("checkout_url", sa.Text, nullable=True),
        sa.Column("invoice_id", sa.String(64), nullable=True),
        sa.Column("subscription_id", sa.String(32), nullable=True),
        sa.Column("fulfilled_at", sa.String(32), nullable=True),
        sa.Column("refunded_cents", sa.Integer, nullable=False, server_default="0"),
        sa.Column("disputed_cents", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reversed_cents", sa.Integer, nullable=False, server_default="0"),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        *_times(),
        sa.UniqueConstraint("user_id", "idempotency_key", name="uq_payments_user_idempotency_key"),
        sa.UniqueConstraint("invoice_id", name="uq_payments_invoice"),
    )
    op.create_index("ix_payments_intent", "payments", ["intent_id"])
    op.create_index("ix_payments_checkout", "payments", ["checkout_id"])
    op.create_index("ix_payments_user", "payments", ["user_id", "created_at"])
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("object_id", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("received_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("agent_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("plan", sa.String(40), nullable=False),
        sa.Column("peeks_per_period", sa.Integer, nullable=False),
        sa.Column("price_cents", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("provider_ref", sa.String(64), nullable=True, unique=True),
        sa.Column("checkout_url", sa.Text, nullable=True),
        sa.Column("current_period_start", sa.String(32), nullable=True),
        sa.Column("current_period_end", sa.String(32), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        *_times(),
        sa.Column("cancelled_at", sa.String(32), nullable=True),
        sa.UniqueConstraint("user_id", "idempotency_key", name="uq_subscriptions_user_idempotency_key"),
    )
    op.create_index("ix_subscriptions_user_agent", "subscriptions", ["user_id", "agent_id", "status"])
    op.create_index("ix_subscriptions_due", "subscriptions", ["status", "current_period_end"])
    op.create_table(
        "entitlements",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("payment_id", sa.String(32), sa.ForeignKey("payments.id"), nullable=False, unique=True),
        sa.Column("subscription_id", sa.String(32), sa.ForeignKey("subscriptions.id"), nullable=True),
        sa.Column("agent_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=True),
        sa.Column("max_agent_price_cents", sa.Integer, nullable=True),
        sa.Column("unit_value_cents", sa.Integer, nullable=False),
        sa.Column("units_total", sa.Integer, nullable=False),
        sa.Column("units_used", sa.Integer, nullable=False, server_default="0"),
        sa.Column("valid_from", sa.String(32), nullable=False),
        sa.Column("valid_until", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        *_times(),
    )
    op.create_index("ix_entitlements_user", "entitlements", ["user_id", "status", "source"])
    op.create_table(
        "entitlement_uses",
        sa.Column("peek_id", sa.String(32), sa.ForeignKey("peeks.id"), nullable=False),
        sa.Column("agent_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("entitlement_id", sa.String(32), sa.ForeignKey("entitlements.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *_times(),
        sa.PrimaryKeyConstraint("peek_id", "agent_id"),
    )
    op.create_index("ix_entitlement_uses_entitlement", "entitlement_uses", ["entitlement_id"])
    op.create_table(
        "payout_batches",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("total_cents", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        *_times(),
    )
    op.create_table(
        "payout_batch_items",
        sa.Column("payout_id", sa.String(32), sa.ForeignKey("payouts.id"), primary_key=True),
        sa.Column("batch_id", sa.String(32), sa.ForeignKey("payout_batches.id"), nullable=False),
    )
    op.create_index("ix_payout_batch_items_batch", "payout_batch_items", ["batch_id"])


def downgrade() -> None:
    op.drop_index("ix_payout_batch_items_batch", table_name="payout_batch_items")
    op.drop_table("payout_batch_items")
    op.drop_table("payout_batches")
    op.drop_index("ix_entitlement_uses_entitlement", table_name="entitlement_uses")
    op.drop_table("entitlement_uses")
    op.drop_index("ix_entitlements_user", table_name="entitlements")
    op.drop_table("entitlements")
    op.drop_index("ix_subscriptions_due", table_name="subscriptions")
    op.drop_index("ix_subscriptions_user_agent", table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_table("webhook_events")
    for index in ("ix_payments_user", "ix_payments_checkout", "ix_payments_intent"):
        op.drop_index(index, table_name="payments")
    op.drop_table("payments")
    op.drop_table("payment_customers")
