"""v1.3.1: subscription peeks hold their prepaid value (no schema change; data only).

Before, a subscription period's price went straight to platform:revenue and each covered peek paid
its agent out of revenue at the agent's price of the day, so an agent could raise its price and
drain the platform (issue 10). Now each period's units carry the price locked when it was bought
(`unit_value_cents` = period price // peeks) and their value waits in `user:{id}:subscriptions`.

This revision brings live periods bought before it into that shape: each active subscription
entitlement gets its unit value, and the value of its units left moves from platform:revenue to the
user's subscriptions account in one ledger entry per entitlement (idempotency key
`migration:0005:<entitlement id>`). Downgrade returns to the old shape: whatever the users'
subscriptions accounts hold goes back to platform:revenue, and the units lose their value.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import hashlib
import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

KIND = "subscription_prepaid_migration"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").removesuffix("+00:00") + "Z"


def _post(conn: sa.Connection, key: str, ref: str, lines: list[tuple[str, int]], memo: str) -> None:
    """One balanced ledger entry, hashed as services.ledger does (lines merged and sorted by account)."""
    merged = sorted(lines)
    body = json.dumps([KIND, ref, [[a, c] for a, c in merged]], separators=(",", ":"))
    entry_id = conn.execute(
        sa.text(
            "INSERT INTO ledger_entries (idempotency_key, request_hash, kind, memo, ref, created_at) "
            "VALUES (:key, :hash, :kind, :memo, :ref, :at) RETURNING id"
        ),
        {
            "key": key,
            "hash": hashlib.sha256(body.encode()).hexdigest(),
            "kind": KIND,
            "memo": memo,
            "ref": ref,
            "at": _now(),
        },
    ).scalar_one()
    for account, cents in merged:
        conn.execute(
            sa.text("INSERT INTO ledger_lines (entry_id, account, amount_cents) VALUES (:e, :a, :c)"),
            {"e": entry_id, "a": account, "c": cents},
        )


def upgrade() -> None:
    conn = op.get_bind()
    legacy = conn.execute(
        sa.text(
            "SELECT e.id, e.user_id, e.units_total, e.units_used, p.amount_cents, e.status FROM entitlements e "
            "JOIN payments p ON p.id = e.payment_id "
            "WHERE e.source = 'subscription' AND e.unit_value_cents = 0 AND e.units_total > 0"
        )
    ).all()
    for ent_id, user_id, units_total, units_used, paid, status in legacy:
        unit = paid // units_total
        conn.execute(sa.text("UPDATE entitlements SET unit_value_cents = :u WHERE id = :id"), {"u": unit, "id": ent_id})
        value = max(0, units_total - units_used) * unit
        if status == "active" and value:
            _post(
                conn,
                f"migration:0005:{ent_id}",
                ent_id,
                [("platform:revenue", -value), (f"user:{user_id}:subscriptions", value)],
                "unused subscription peeks become prepaid value",
            )


def downgrade() -> None:
    conn = op.get_bind()
    balances = conn.execute(
        sa.text(
            "SELECT account, SUM(amount_cents) FROM ledger_lines WHERE account LIKE :pattern "
            "GROUP BY account HAVING SUM(amount_cents) > 0"
        ),
        {"pattern": "user:%:subscriptions"},
    ).all()
    for account, cents in balances:
        _post(
            conn,
            f"migration:0005:down:{account}:{_now()}",
            account.split(":")[1],
            [(account, -cents), ("platform:revenue", cents)],
            "schema downgrade: prepaid subscription value back to revenue",
        )
    conn.execute(sa.text("UPDATE entitlements SET unit_value_cents = 0 WHERE source = 'subscription'"))
