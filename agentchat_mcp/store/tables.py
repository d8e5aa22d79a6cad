"""SQLAlchemy Core tables: the one description of the schema the code queries.

storage/ holds the Alembic migrations that create them; a test checks the two agree.
Every column is portable to PostgreSQL. Money is integer cents; times are UTC ISO-8601 text
written by the code (never the database's local clock).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# The largest value an Integer column holds on every store (PostgreSQL's INTEGER; SQLite's are 64-bit).
# An argument compared with one is clamped to it first: PostgreSQL refuses a larger bound value outright.
MAX_COLUMN_INT = 2**31 - 1

principals = Table(
    "principals",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("role", String(8), nullable=False),  # agent | user | admin
    Column("name", String(100), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("peek_price_cents", Integer, nullable=True),  # agents only
    Column("can_refuse", Boolean, nullable=True),  # agents only
    Column("verified", Boolean, nullable=False, server_default="0"),
    Column("api_key_hash", String(128), nullable=False, unique=True),
    Column("box_public", LargeBinary, nullable=False),
    Column("sign_public", LargeBinary, nullable=False),
    Column("wrapped_private", LargeBinary, nullable=False),  # sealed under a key derived from the API key
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Column("connect_account_id", String(64), nullable=True),  # v1.1: Stripe Connect payouts
    # v1.4 (storage/versions/0006): referrals, badges, ratings
    Column("referral_code", String(32), nullable=True),  # public, unguessable; one per principal
    Column("registered_from", String(64), nullable=True),  # keyed hash of the registering IP (HTTP only)
    Column("verified_by", String(32), nullable=True),  # the admin who set `verified` last
    Column("verified_at", String(32), nullable=True),
    Column("verified_note", Text, nullable=True),
)
Index("ix_principals_role_name", principals.c.role, principals.c.name)
Index("ix_principals_referral_code", principals.c.referral_code, unique=True)
Index("ix_principals_registered_from", principals.c.registered_from, principals.c.created_at)

agent_tags = Table(
    "agent_tags",
    metadata,
    Column("principal_id", String(32), ForeignKey("principals.id", ondelete="CASCADE"), nullable=False),
    Column("tag", String(40), nullable=False),
    PrimaryKeyConstraint("principal_id", "tag"),
)
Index("ix_agent_tags_tag", agent_tags.c.tag)

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("topic", String(200), nullable=False),
    Column("created_by", String(32), ForeignKey("principals.id"), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("current_epoch", Integer, nullable=False, server_default="0"),
    Column("last_seq", Integer, nullable=False, server_default="0"),
    Column("last_message_at", String(32), nullable=True),
)

participants = Table(
    "participants",
    metadata,
    Column("conversation_id", String(32), ForeignKey("conversations.id"), nullable=False),
    Column("principal_id", String(32), ForeignKey("principals.id"), nullable=False),
    Column("joined_at", String(32), nullable=False),
    Column("left_at", String(32), nullable=True),
    Column("read_seq", Integer, nullable=False, server_default="0"),
    PrimaryKeyConstraint("conversation_id", "principal_id"),
)
Index("ix_participants_principal", participants.c.principal_id)

# One row per reader per epoch: the epoch key sealed to that reader's X25519 public key.
epoch_keys = Table(
    "epoch_keys",
    metadata,
    Column("conversation_id", String(32), ForeignKey("conversations.id"), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("principal_id", String(32), ForeignKey("principals.id"), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    PrimaryKeyConstraint("conversation_id", "epoch", "principal_id"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("conversation_id", String(32), ForeignKey("conversations.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("sender_id", String(32), ForeignKey("principals.id"), nullable=False),
    Column("sealed", LargeBinary, nullable=False),  # nonce || XChaCha20-Poly1305 ciphertext
    Column("signature", LargeBinary, nullable=False),  # Ed25519 over associated data || sealed
    Column("created_at", String(32), nullable=False),
    UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),
)

# --- v1.1: the ledger, peeks, payouts (storage/versions/0002) -------------------------------

# One row per money movement; its lines sum to zero. A replay with the same idempotency key
# returns the first entry; the request hash catches the same key reused for something else.
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(200), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("memo", Text, nullable=False, server_default=""),
    Column("ref", String(64), nullable=True),
    Column("created_at", String(32), nullable=False),
    UniqueConstraint("idempotency_key", name="uq_ledger_entries_idempotency_key"),
)
Index("ix_ledger_entries_ref", ledger_entries.c.ref)

ledger_lines = Table(
    "ledger_lines",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entry_id", Integer, ForeignKey("ledger_entries.id"), nullable=False),
    Column("account", String(80), nullable=False),
    Column("amount_cents", Integer, nullable=False),  # positive: into the account; negative: out of it
)
Index("ix_ledger_lines_account", ledger_lines.c.account, ledger_lines.c.amount_cents)
Index("ix_ledger_lines_entry", ledger_lines.c.entry_id)

peeks = Table(
    "peeks",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("conversation_id", String(32), ForeignKey("conversations.id"), nullable=False),
    Column("user_id", String(32), ForeignKey("principals.id"), nullable=False),
    # awaiting_consent | scheduled | active | completed | refused | expired | cancelled | refunded
    Column("status", String(20), nullable=False),
    Column("price_cents", Integer, nullable=False),  # sum of the agents' prices
    Column("fee_cents", Integer, nullable=False),  # platform fee within price_cents
    Column("charged_cents", Integer, nullable=False),  # held from the user's credit (packs/subscriptions pay the rest)
    Column("max_price_cents", Integer, nullable=False),
    Column("duration_minutes", Integer, nullable=False),
    Column("start_at", String(32), nullable=True),  # requested start (scheduled peeks)
    Column("window_start", String(32), nullable=True),  # set when captured
    Column("window_end", String(32), nullable=True),
    Column("requested_at", String(32), nullable=False),
    Column("expires_at", String(32), nullable=False),  # consent deadline
    Column("decided_at", String(32), nullable=True),
    Column("keys_released_at", String(32), nullable=True),
    Column("reason", Text, nullable=True),
    Column("idempotency_key", String(200), nullable=True),
    Column("request_hash", String(64), nullable=True),
    Column("updated_at", String(32), nullable=False),
    UniqueConstraint("user_id", "idempotency_key", name="uq_peeks_user_idempotency_key"),
)
Index("ix_peeks_conversation_status", peeks.c.conversation_id, peeks.c.status)
Index("ix_peeks_user", peeks.c.user_id, peeks.c.requested_at)
Index("ix_peeks_status_expires", peeks.c.status, peeks.c.expires_at)

peek_consents = Table(
    "peek_consents",
    metadata,
    Column("peek_id", String(32), ForeignKey("peeks.id"), nullable=False),
    Column("agent_id", String(32), ForeignKey("principals.id"), nullable=False),
    Column("price_cents", Integer, nullable=False),
    Column("fee_cents", Integer, nullable=False),
    Column("paid_by", String(16), nullable=False),  # credit | pack | subscription
    Column("cover_ref", String(64), nullable=True),  # the pack or subscription that pays
    Column("decision", String(16), nullable=False),  # pending | accepted | standing | refused
    Column("decided_at", String(32), nullable=True),
    Column("reason", Text, nullable=True),
    PrimaryKeyConstraint("peek_id", "agent_id"),
)
Index("ix_peek_consents_agent", peek_consents.c.agent_id, peek_consents.c.decision)

payouts = Table(
    "payouts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("agent_id", String(32), ForeignKey("principals.id"), nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # recorded | pending | paid | failed
    Column("provider", String(16), nullable=False),  # ledger | stripe
    Column("destination", String(64), nullable=True),  # connected account, stripe mode
    Column("transfer_id", String(64), nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
)
Index("ix_payouts_agent", payouts.c.agent_id, payouts.c.created_at)
Index("ix_payouts_status", payouts.c.status)

# --- v1.2: payments, webhooks, packs and subscriptions, payout batches (storage/versions/0003) ------

# The payment-provider customer of a principal, and the card saved for purchases without a browser.
payment_customers = Table(
    "payment_customers",
    metadata,
    Column("principal_id", String(32), ForeignKey("principals.id"), primary_key=True),
    Column("provider", String(16), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("payment_method_id", String(64), nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
)

# One purchase (credit top-up, pack, one subscription period). Credit is granted once, from a
# verified webhook or a captured intent (fulfilled_at); refunds and disputes are tracked cumulatively.
payments = Table(
    "payments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("principals.id"), nullable=False),
    Column("purpose", String(16), nullable=False),  # credits | pack | subscription
    Column("item", String(40), nullable=True),  # pack or plan name
    Column("amount_cents", Integer, nullable=False),
    Column("currency", String(3), nullable=False, server_default="usd"),
    # pending | awaiting_checkout | authorized | succeeded | failed | canceled | expired
    Column("status", String(20), nullable=False),
    Column("provider", String(16), nullable=False),  # stripe | credit
    Column("intent_id", String(64), nullable=True),
    Column("checkout_id", String(64), nullable=True),
    Column("checkout_url", Text, nullable=True),
    Column("invoice_id", String(64), nullable=True),
    Column("subscription_id", String(32), nullable=True),
    Column("fulfilled_at", String(32), nullable=True),
    Column("refunded_cents", Integer, nullable=False, server_default="0"),
    Column("disputed_cents", Integer, nullable=False, server_default="0"),
    Column("reversed_cents", Integer, nullable=False, server_default="0"),
    Column("idempotency_key", String(200), nullable=True),
    Column("request_hash", String(64), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    UniqueConstraint("user_id", "idempotency_key", name="uq_payments_user_idempotency_key"),
    UniqueConstraint("invoice_id", name="uq_payments_invoice"),
)
Index("ix_payments_intent", payments.c.intent_id)
Index("ix_payments_checkout", payments.c.checkout_id)
Index("ix_payments_user", payments.c.user_id, payments.c.created_at)

# Every verified webhook event, once: the dedupe table (written in the same transaction as its effects).
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("object_id", String(64), nullable=True),
    Column("outcome", String(64), nullable=False),
    Column("received_at", String(32), nullable=False),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("principals.id"), nullable=False),
    Column("agent_id", String(32), ForeignKey("principals.id"), nullable=False),
    Column("plan", String(40), nullable=False),
    Column("peeks_per_period", Integer, nullable=False),
    Column("price_cents", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # pending | active | past_due | cancelled
    Column("provider", String(16), nullable=False),  # stripe | credit
    Column("provider_ref", String(64), nullable=True, unique=True),
    Column("checkout_url", Text, nullable=True),
    Column("current_period_start", String(32), nullable=True),
    Column("current_period_end", String(32), nullable=True),
    Column("idempotency_key", String(200), nullable=True),
    Column("request_hash", String(64), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Column("cancelled_at", String(32), nullable=True),
    UniqueConstraint("user_id", "idempotency_key", name="uq_subscriptions_user_idempotency_key"),
)
Index("ix_subscriptions_user_agent", subscriptions.c.user_id, subscriptions.c.agent_id, subscriptions.c.status)
Index("ix_subscriptions_due", subscriptions.c.status, subscriptions.c.current_period_end)

# Peeks a user has paid for in advance: a pack (any agent priced up to a cap) or one subscription
# period (one agent). Pack value waits in user:{id}:packs until a peek uses a unit.
entitlements = Table(
    "entitlements",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("principals.id"), nullable=False),
    Column("source", String(16), nullable=False),  # pack | subscription
    Column("name", String(40), nullable=False),  # pack or plan name
    Column("payment_id", String(32), ForeignKey("payments.id"), nullable=False, unique=True),
    Column("subscription_id", String(32), ForeignKey("subscriptions.id"), nullable=True),
    Column("agent_id", String(32), ForeignKey("principals.id"), nullable=True),
    Column("max_agent_price_cents", Integer, nullable=True),
    Column("unit_value_cents", Integer, nullable=False),
    Column("units_total", Integer, nullable=False),
    Column("units_used", Integer, nullable=False, server_default="0"),
    Column("valid_from", String(32), nullable=False),
    Column("valid_until", String(32), nullable=True),
    Column("status", String(16), nullable=False),  # active | revoked
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
)
Index("ix_entitlements_user", entitlements.c.user_id, entitlements.c.status, entitlements.c.source)

# Which entitlement pays which agent's share of which peek (one unit each).
entitlement_uses = Table(
    "entitlement_uses",
    metadata,
    Column("peek_id", String(32), ForeignKey("peeks.id"), nullable=False),
    Column("agent_id", String(32), ForeignKey("principals.id"), nullable=False),
    Column("entitlement_id", String(32), ForeignKey("entitlements.id"), nullable=False),
    Column("status", String(16), nullable=False),  # used | restored
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    PrimaryKeyConstraint("peek_id", "agent_id"),
)
Index("ix_entitlement_uses_entitlement", entitlement_uses.c.entitlement_id)

# A payout batch claims (locks) the payouts it pays; a retry re-sends the same transfers with the
# same idempotency keys, so nothing is paid twice.
payout_batches = Table(
    "payout_batches",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("status", String(16), nullable=False),  # processing | paid | partial | failed
    Column("provider", String(16), nullable=False),
    Column("total_cents", Integer, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
)

payout_batch_items = Table(
    "payout_batch_items",
    metadata,
    Column("payout_id", String(32), ForeignKey("payouts.id"), primary_key=True),
    Column("batch_id", String(32), ForeignKey("payout_batches.id"), nullable=False),
)
Index("ix_payout_batch_items_batch", payout_batch_items.c.batch_id)

# --- v1.3: invitation codes (storage/versions/0004) -----------------------------------------------

# An operator's invitation to register (registration = invite). Only the keyed hash of the code is
# stored, as for API keys; each registration it admits takes one use, in the same transaction.
invites = Table(
    "invites",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("code_hash", String(128), nullable=False, unique=True),
    Column("role", String(8), nullable=False),  # agent | user
    Column("uses_left", Integer, nullable=False),
    Column("expires_at", String(32), nullable=False),
    Column("created_by", String(32), nullable=True),  # "cli" or an admin principal id
    Column("created_at", String(32), nullable=False),
    Column("last_used_at", String(32), nullable=True),
)

# --- v1.4: referrals, ratings, agent performance (storage/versions/0006) ---------------------------

# Who brought whom. One row per referee (a principal is referred once, at registration).
# status: pending -> completed (qualified) -> rewarded, or rejected (reason says why).
referrals = Table(
    "referrals",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("referrer_id", String(32), ForeignKey("principals.id"), nullable=False),
    Column("referee_id", String(32), ForeignKey("principals.id"), nullable=False, unique=True),
    Column("code", String(32), nullable=False),
    Column("kind", String(8), nullable=False),  # user (one-off credit) | agent (commission)
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("reward_cents", Integer, nullable=False, server_default="0"),  # paid so far, net of clawbacks
    Column("qualifying_peek_id", String(32), nullable=True),
    Column("earns_until", String(32), nullable=True),  # agent referrals: end of the commission period
    Column("created_at", String(32), nullable=False),
    Column("completed_at", String(32), nullable=True),
    Column("rewarded_at", String(32), nullable=True),
    Column("updated_at", String(32), nullable=False),
)
Index("ix_referrals_referrer", referrals.c.referrer_id, referrals.c.status, referrals.c.rewarded_at)

# One rating per (rater, agent); changing it overwrites. Comments are third-party text.
ratings = Table(
    "ratings",
    metadata,
    Column("rater_id", String(32), ForeignKey("principals.id"), nullable=False),
    Column("agent_id", String(32), ForeignKey("principals.id"), nullable=False),
    Column("stars", Integer, nullable=False),
    Column("comment", Text, nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    PrimaryKeyConstraint("rater_id", "agent_id"),
)
Index("ix_ratings_agent", ratings.c.agent_id)

# Per-agent figures kept current as things happen (never by scanning messages per call).
agent_stats = Table(
    "agent_stats",
    metadata,
    Column("agent_id", String(32), ForeignKey("principals.id"), primary_key=True),
    Column("conversations", Integer, nullable=False, server_default="0"),
    Column("messages", Integer, nullable=False, server_default="0"),
    Column("replies", Integer, nullable=False, server_default="0"),
    # replies by delay bucket (JSON list of counts; bucket bounds in services/ratings.py): the median
    # reply time is read from it without storing every delay
    Column("reply_buckets", Text, nullable=False, server_default="[]"),
    Column("peeks_asked", Integer, nullable=False, server_default="0"),
    Column("peeks_accepted", Integer, nullable=False, server_default="0"),
    Column("peeks_completed", Integer, nullable=False, server_default="0"),
    Column("rating_count", Integer, nullable=False, server_default="0"),
    Column("rating_sum", Integer, nullable=False, server_default="0"),
    Column("rating_score", Integer, nullable=False, server_default="0"),  # Bayesian average x 100, for sorting
    Column("last_active_at", String(32), nullable=True),
    Column("updated_at", String(32), nullable=False),
)
Index("ix_agent_stats_score", agent_stats.c.rating_score)

# --- v1.2 analytics: rollups (storage/versions/0007; kept current by store/rollups.py) ---------------

# One summed figure per (scope, metric, day, dim): scope is an agent id or "platform"; dim a breakdown
# (hour "00".."23", paid_by, kind, tag) or "". A dashboard reads O(days x dims), never the events.
analytics_daily = Table(
    "analytics_daily",
    metadata,
    Column("scope", String(40), nullable=False),
    Column("metric", String(24), nullable=False),
    Column("day", String(10), nullable=False),
    Column("dim", String(48), nullable=False, server_default=""),
    Column("value", Integer, nullable=False),
    PrimaryKeyConstraint("scope", "metric", "day", "dim"),
)

# Who was active on which day (an agent that sent a message; a user whose money moved for a peek or a
# purchase): distinct counts over any window (DAU/WAU/MAU, churn) without scanning the events.
analytics_active = Table(
    "analytics_active",
    metadata,
    Column("day", String(10), nullable=False),
    Column("principal_id", String(32), nullable=False),
    Column("role", String(8), nullable=False),
    PrimaryKeyConstraint("day", "principal_id"),
)
Index("ix_analytics_active_role_day", analytics_active.c.role, analytics_active.c.day, analytics_active.c.principal_id)

# Each principal's last active day: "active in the N days ending today" and churn are range counts on it.
analytics_last_active = Table(
    "analytics_last_active",
    metadata,
    Column("principal_id", String(32), primary_key=True),
    Column("role", String(8), nullable=False),
    Column("day", String(10), nullable=False),
)
Index("ix_analytics_last_active_role_day", analytics_last_active.c.role, analytics_last_active.c.day)

# Each user's first paid (captured, price above zero) peek: sign-up -> first paid peek conversion.
analytics_first_paid = Table(
    "analytics_first_paid",
    metadata,
    Column("user_id", String(32), primary_key=True),
    Column("day", String(10), nullable=False),
    Column("signed_up_at", String(32), nullable=False),  # the user's created_at: conversion is a range count
)
Index("ix_analytics_first_paid_signed_up", analytics_first_paid.c.signed_up_at)

# How far the rollups have folded in each source (the highest ledger_lines.id / messages.id applied).
analytics_watermarks = Table(
    "analytics_watermarks",
    metadata,
    Column("source", String(24), primary_key=True),
    Column("last_id", Integer, nullable=False),
)

# MCP tool calls per day, tool and latency bucket (telemetry.LATENCY_BUCKETS, in ms), shared by processes.
tool_usage_daily = Table(
    "tool_usage_daily",
    metadata,
    Column("day", String(10), nullable=False),
    Column("tool", String(64), nullable=False),
    Column("bucket", Integer, nullable=False),
    Column("calls", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    PrimaryKeyConstraint("day", "tool", "bucket"),
)
Index("ix_messages_sender_created", messages.c.sender_id, messages.c.created_at)
Index("ix_messages_conversation_created", messages.c.conversation_id, messages.c.created_at)
Index("ix_principals_role_created", principals.c.role, principals.c.created_at)
Index("ix_peeks_requested", peeks.c.requested_at)

# --- v1.4: feature flags (storage/versions/0008) --------------------------------------------------

# A flag the operator set: its value (JSON) for everyone the rules (JSON list, first match wins) do not
# pick out. A flag never set answers its built-in default (services/flags.py CATALOGUE).
feature_flags = Table(
    "feature_flags",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("kind", String(8), nullable=False),  # boolean | string | number
    Column("value", Text, nullable=False),
    Column("rules", Text, nullable=False, server_default="[]"),
    Column("hide_when_off", Boolean, nullable=False, server_default="0"),
    Column("updated_by", String(64), nullable=False),
    Column("updated_at", String(32), nullable=False),
)

# Named groups (e.g. beta) that targeting rules name.
feature_flag_groups = Table(
    "feature_flag_groups",
    metadata,
    Column("name", String(40), nullable=False),
    Column("principal_id", String(32), nullable=False),
    Column("added_at", String(32), nullable=False),
    PrimaryKeyConstraint("name", "principal_id"),
)

# The audit of flag and group changes (who, when, old -> new). The newest id is the flags' version.
feature_flag_changes = Table(
    "feature_flag_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject", String(80), nullable=False),  # flag:KEY | group:NAME
    Column("actor", String(64), nullable=False),  # cli:USER | an admin principal id
    Column("changed_at", String(32), nullable=False),
    Column("old", Text, nullable=True),  # JSON, None: did not exist
    Column("new", Text, nullable=True),
    Column("reason", String(200), nullable=False, server_default=""),
)
Index("ix_feature_flag_changes_subject", feature_flag_changes.c.subject, feature_flag_changes.c.id)

# --- v1.4: news about a conversation other than a message (storage/versions/0009) -------------

# Written in the transaction that made the news (a peek request awaiting consent), so every process
# of the hub finds it past its last seen id and wakes that conversation's waiters and subscribers.
# Only the newest rows matter: the writer prunes rows far behind the newest.
conversation_changes = Table(
    "conversation_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("conversation_id", String(32), nullable=False),
    Column("kind", String(16), nullable=False),  # peek_request
    Column("created_at", String(32), nullable=False),
)
