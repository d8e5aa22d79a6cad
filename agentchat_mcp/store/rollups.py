"""The analytics rollups (analytics_daily, analytics_active), kept current by an idempotent catch-up.

`catch_up(conn)` folds every ledger line and message past its watermark (analytics_watermarks) into
the rollups and moves the watermark, all in the caller's transaction: run twice, or by two processes
one after the other, it adds each event once. It runs in the migration that creates the tables (the
backfill), before every analytics read (so figures are exact at the moment they are read), and in
the background every few seconds (services/analytics.py), never on the send or capture path.

Watermarks are autoincrement ids, handed out in commit order: SQLite has one writer at a time, and
the PostgreSQL store serializes writers the same way (an advisory lock taken at BEGIN, store/postgres.py),
so a line below the watermark can never commit later. Every statement here runs on both databases.

What is rolled up (scope "platform" or an agent id; day = UTC date; dim "" unless said):
  agent   earned (dim paid_by: credit|pack|subscription), earned_hour (dim weekday+hour, "003": Monday
          03:00), referral, other_income, sent, received, quotes (from quote_peek, via services/analytics.py)
  platform gmv, captures (dim weekday+hour), platform_net (dim entry kind), refunds (dim peek|refund|
          dispute|dispute_won), category (dim agent tag, or "untagged"), messages
           active (dim role: how many were active that day; replaced, not added)
plus analytics_active (who was active each day), analytics_last_active (each principal's last active day)
and analytics_first_paid (each user's first paid peek).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from sqlalchemy import String, bindparam, text
from sqlalchemy.engine import Connection

PLATFORM = "platform"
BATCH = 200_000  # ids per pass: bounds the memory a backfill of a large database needs

Key = tuple[str, str, str, str]  # scope, metric, day, dim

_AGENT_LINES = text(
    """
    SELECT l.account AS account, e.kind AS kind, substr(e.created_at, 1, 10) AS day,
           substr(e.created_at, 12, 2) AS hour, c.paid_by AS paid_by,
           (e.kind LIKE '%referral%' OR e.id IN (
               -- entries funded by platform:referrals; an entry's lines have consecutive ids, so a margin
               -- around the batch catches one that straddles its edge (uncorrelated: computed once a batch)
               -- (account || '': not by the account index, which would walk every referral line ever)
               SELECT r.entry_id FROM ledger_lines r WHERE r.id > :lo - 64 AND r.id <= :hi + 64
               AND r.account || '' = 'platform:referrals' AND r.amount_cents < 0)) AS referral,
           SUM(l.amount_cents) AS cents
    FROM ledger_lines l
    JOIN ledger_entries e ON e.id = l.entry_id
    LEFT JOIN peek_consents c ON c.peek_id = e.ref
         AND (l.account = 'agent:' || c.agent_id || '\\:pending' OR l.account = 'agent:' || c.agent_id || '\\:available')
    WHERE l.id > :lo AND l.id <= :hi AND l.account LIKE 'agent:%'
      AND (l.account LIKE '%\\:pending' OR l.account LIKE '%\\:available')
      AND e.kind NOT IN ('earnings_available', 'payout', 'payout_cancelled')
    GROUP BY l.account, e.kind, day, hour, c.paid_by, referral
    """
)

_PLATFORM_LINES = text(
    """
    SELECT CASE WHEN l.account LIKE 'platform:%' THEN 'platform'
                WHEN e.kind = 'peek_capture' THEN 'gmv'
                WHEN e.kind IN ('peek_refund', 'dispute_won') THEN e.kind
                WHEN e.memo LIKE 'dispute%' THEN 'dispute'
                ELSE 'refund' END AS cls,
           e.kind AS kind, substr(e.created_at, 1, 10) AS day, substr(e.created_at, 12, 2) AS hour,
           SUM(l.amount_cents) AS cents, COUNT(DISTINCT e.id) AS entries
    FROM ledger_lines l JOIN ledger_entries e ON e.id = l.entry_id
    WHERE l.id > :lo AND l.id <= :hi AND (
        l.account LIKE 'platform:%'
        OR (e.kind = 'peek_capture' AND l.account LIKE 'user:%\\:held')
        OR (e.kind = 'peek_refund' AND l.account LIKE 'user:%' AND l.amount_cents > 0)
        OR (e.kind IN ('payment_reversal', 'dispute_won') AND l.account = 'external:clearing'))
    GROUP BY cls, e.kind, day, hour
    """
)

_ACTIVE_USERS = text(
    """
    SELECT DISTINCT substr(e.created_at, 1, 10) AS day, l.account AS account
    FROM ledger_lines l JOIN ledger_entries e ON e.id = l.entry_id
    WHERE l.id > :lo AND l.id <= :hi AND l.account LIKE 'user:%'
      AND e.kind IN ('peek_hold', 'credit_topup', 'pack_purchase', 'subscription_purchase')
    """
)

_FIRST_PAID = text(
    """
    SELECT l.account AS account, MIN(substr(e.created_at, 1, 10)) AS day
    FROM ledger_lines l JOIN ledger_entries e ON e.id = l.entry_id
    WHERE l.id > :lo AND l.id <= :hi AND e.kind = 'peek_capture' AND l.account LIKE 'user:%\\:held'
      AND l.amount_cents < 0
    GROUP BY l.account
    """
)

_FIRST_PAID_UPSERT = text(
    """
    INSERT INTO analytics_first_paid (user_id, day, signed_up_at)
    SELECT :user_id, :day, created_at FROM principals WHERE id = :user_id
    ON CONFLICT (user_id) DO NOTHING
    """
).bindparams(bindparam("user_id", type_=String), bindparam("day", type_=String))  # typed: PostgreSQL infers one type

_SENT = text(
    """
    SELECT sender_id, substr(created_at, 1, 10) AS day, COUNT(*) AS n FROM messages
    WHERE id > :lo AND id <= :hi GROUP BY sender_id, day
    """
)

_RECEIVED = text(
    """
    SELECT p.principal_id AS principal_id, substr(m.created_at, 1, 10) AS day, COUNT(*) AS n
    FROM messages m JOIN participants p ON p.conversation_id = m.conversation_id
         AND p.principal_id != m.sender_id AND p.joined_at <= m.created_at
         AND (p.left_at IS NULL OR p.left_at > m.created_at)
    WHERE m.id > :lo AND m.id <= :hi GROUP BY p.principal_id, day
    """
)

_UPSERT = text(
    """
    INSERT INTO analytics_daily (scope, metric, day, dim, value) VALUES (:scope, :metric, :day, :dim, :value)
    ON CONFLICT (scope, metric, day, dim) DO UPDATE SET value = analytics_daily.value + excluded.value
    """
)

_ACTIVE = text(
    """
    INSERT INTO analytics_active (day, principal_id, role) VALUES (:day, :principal_id, :role)
    ON CONFLICT (day, principal_id) DO NOTHING
    """
)

_LAST_ACTIVE = text(
    """
    INSERT INTO analytics_last_active (principal_id, role, day) VALUES (:principal_id, :role, :day)
    ON CONFLICT (principal_id) DO UPDATE
    SET day = CASE WHEN excluded.day > analytics_last_active.day THEN excluded.day ELSE analytics_last_active.day END
    """
)

# How many were active each touched day, replaced (not added): analytics_daily metric "active", dim role.
_ACTIVE_COUNTS = text(
    """
    SELECT day, role, COUNT(*) AS n FROM analytics_active WHERE day IN :days GROUP BY day, role
    """
).bindparams(bindparam("days", expanding=True))

_SET = text(
    """
    INSERT INTO analytics_daily (scope, metric, day, dim, value) VALUES (:scope, :metric, :day, :dim, :value)
    ON CONFLICT (scope, metric, day, dim) DO UPDATE SET value = excluded.value
    """
)


def catch_up(conn: Connection) -> int:
    """Fold new ledger lines and messages into the rollups; returns how many events were applied."""
    applied = 0
    for source, table, fold in (
        ("ledger_lines", "ledger_lines", _fold_ledger),
        ("messages", "messages", _fold_messages),
    ):
        lo = _watermark(conn, source)
        top = int(conn.execute(text(f"SELECT COALESCE(MAX(id), 0) FROM {table}")).scalar_one())  # noqa: S608 (fixed names)
        while lo < top:
            hi = min(top, lo + BATCH)
            totals: dict[Key, int] = defaultdict(int)
            active: set[tuple[str, str, str]] = set()
            fold(conn, lo, hi, totals, active)
            _write(conn, totals, active)
            applied += hi - lo
            lo = hi
            _set_watermark(conn, source, lo)
    return applied


def add(conn: Connection, totals: dict[Key, int]) -> None:
    """Add counts straight into analytics_daily (quotes, from services/analytics.py)."""
    _write(conn, totals, set())


def _watermark(conn: Connection, source: str) -> int:
    found = conn.execute(text("SELECT last_id FROM analytics_watermarks WHERE source = :s"), {"s": source}).scalar()
    return int(found or 0)


def _set_watermark(conn: Connection, source: str, last_id: int) -> None:
    conn.execute(
        text(
            "INSERT INTO analytics_watermarks (source, last_id) VALUES (:s, :v) "
            "ON CONFLICT (source) DO UPDATE SET last_id = excluded.last_id"
        ),
        {"s": source, "v": last_id},
    )


def _write(conn: Connection, totals: dict[Key, int], active: set[tuple[str, str, str]]) -> None:
    rows = [{"scope": s, "metric": m, "day": d, "dim": x, "value": v} for (s, m, d, x), v in totals.items() if v]
    if rows:
        conn.execute(_UPSERT, rows)
    if active:
        conn.execute(_ACTIVE, [{"day": d, "principal_id": p, "role": r} for d, p, r in sorted(active)])
        last: dict[str, tuple[str, str]] = {}
        for day, principal_id, role in active:
            if principal_id not in last or last[principal_id][1] < day:
                last[principal_id] = (role, day)
        conn.execute(_LAST_ACTIVE, [{"principal_id": p, "role": r, "day": d} for p, (r, d) in sorted(last.items())])
        days = sorted({d for d, _, _ in active})
        for start in range(0, len(days), 500):
            counts = conn.execute(_ACTIVE_COUNTS, {"days": days[start : start + 500]}).all()
            conn.execute(
                _SET,
                [{"scope": PLATFORM, "metric": "active", "day": d, "dim": r, "value": int(n)} for d, r, n in counts],
            )


def _fold_ledger(conn: Connection, lo: int, hi: int, totals: dict[Key, int], active: set[tuple[str, str, str]]) -> None:
    params = {"lo": lo, "hi": hi}
    earned_by_agent: dict[tuple[str, str], int] = defaultdict(int)
    for r in conn.execute(_AGENT_LINES, params):
        agent = r.account.split(":")[1]
        if r.paid_by is not None:
            totals[(agent, "earned", r.day, r.paid_by)] += r.cents
            totals[(agent, "earned_hour", r.day, _weekday_hour(r.day, r.hour))] += r.cents
            earned_by_agent[(agent, r.day)] += r.cents
        elif r.referral:
            totals[(agent, "referral", r.day, "")] += r.cents
        else:
            totals[(agent, "other_income", r.day, "")] += r.cents
    _fold_categories(conn, earned_by_agent, totals)
    for r in conn.execute(_PLATFORM_LINES, params):
        if r.cls == "platform":
            totals[(PLATFORM, "platform_net", r.day, r.kind)] += r.cents
        elif r.cls == "gmv":
            totals[(PLATFORM, "gmv", r.day, "")] -= r.cents  # what left the users' holds
            totals[(PLATFORM, "captures", r.day, _weekday_hour(r.day, r.hour))] += r.entries
        else:  # peek_refund (to users), refund and dispute (out to the card), dispute_won (back in: < 0)
            totals[(PLATFORM, "refunds", r.day, "peek" if r.cls == "peek_refund" else r.cls)] += r.cents
    for r in conn.execute(_ACTIVE_USERS, params):
        active.add((r.day, r.account.split(":")[1], "user"))
    first_paid = [{"user_id": r.account.split(":")[1], "day": r.day} for r in conn.execute(_FIRST_PAID, params)]
    if first_paid:
        conn.execute(_FIRST_PAID_UPSERT, first_paid)


def _weekday_hour(day: str, hour: str) -> str:
    """'2026-12-07', '03' -> '003' (Monday 03:00 UTC): heatmaps and hours of day sum over it in SQL."""
    return f"{date.fromisoformat(day).weekday()}{hour}"


def _fold_categories(conn: Connection, earned: dict[tuple[str, str], int], totals: dict[Key, int]) -> None:
    """Peek earnings by the earning agent's tags (each tag counts the agent's whole amount)."""
    agents = sorted({agent for agent, _ in earned})
    tags: dict[str, list[str]] = defaultdict(list)
    for start in range(0, len(agents), 500):
        chunk = agents[start : start + 500]
        found = conn.execute(
            text("SELECT principal_id, tag FROM agent_tags WHERE principal_id IN :ids").bindparams(
                bindparam("ids", expanding=True)
            ),
            {"ids": chunk},
        )
        for principal_id, tag in found:
            tags[principal_id].append(tag)
    for (agent, day), cents in earned.items():
        for tag in tags.get(agent) or ["untagged"]:
            totals[(PLATFORM, "category", day, tag)] += cents


def _fold_messages(
    conn: Connection, lo: int, hi: int, totals: dict[Key, int], active: set[tuple[str, str, str]]
) -> None:
    params = {"lo": lo, "hi": hi}
    for sender, day, n in conn.execute(_SENT, params):
        totals[(sender, "sent", day, "")] += n
        totals[(PLATFORM, "messages", day, "")] += n
        active.add((day, sender, "agent"))
    for principal_id, day, n in conn.execute(_RECEIVED, params):
        totals[(principal_id, "received", day, "")] += n
