"""The platform's figures beyond the summed rollups: who was active, sign-ups, churn, tool usage."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta

from sqlalchemy import and_, func, select, text

from agentchat_mcp import clock
from agentchat_mcp.services.analytics.common import PLATFORM, day_between, series_of
from agentchat_mcp.services.analytics.figures import Churn, Point, Span, ToolUsage
from agentchat_mcp.store import DbConnection
from agentchat_mcp.store.tables import (
    analytics_active,
    analytics_daily,
    analytics_first_paid,
    analytics_last_active,
    principals,
    tool_usage_daily,
)
from agentchat_mcp.telemetry import USAGE_BUCKETS_MS


async def _distinct_active(conn: DbConnection, role: str, first: date, last: date) -> int:
    """Principals of `role` active on any day in [first, last]. A window that ends today (every period
    does) is a range count on each principal's last active day; any other window counts the days' rows."""
    if last >= clock.now().date():
        stmt = select(func.count()).where(
            and_(analytics_last_active.c.role == role, analytics_last_active.c.day >= first.isoformat())
        )
    else:
        stmt = select(func.count(func.distinct(analytics_active.c.principal_id))).where(
            and_(analytics_active.c.role == role, analytics_active.c.day.between(first.isoformat(), last.isoformat()))
        )
    return int((await conn.execute(stmt)).scalar_one())


async def active_figures(
    conn: DbConnection, span: Span
) -> tuple[dict[str, dict[str, int]], dict[str, tuple[Point, ...]]]:
    per_day = (
        await conn.execute(
            select(analytics_daily.c.dim, analytics_daily.c.day, analytics_daily.c.value).where(
                and_(analytics_daily.c.scope == PLATFORM, analytics_daily.c.metric == "active", day_between(span))
            )
        )
    ).all()
    active: dict[str, dict[str, int]] = {}
    series: dict[str, tuple[Point, ...]] = {}
    for role, name in (("agent", "agents"), ("user", "users")):
        counts = {str(day): int(n) for dim, day, n in per_day if dim == role}
        active[name] = {
            "daily": counts.get(span.last.isoformat(), 0),
            "weekly": await _distinct_active(conn, role, span.last - timedelta(days=6), span.last),
            "monthly": await _distinct_active(conn, role, span.last - timedelta(days=29), span.last),
            "period": await _distinct_active(conn, role, span.first, span.last),
        }
        series[name] = series_of(span, "day", counts.items())
    return active, series


async def signup_figures(conn: DbConnection, span: Span) -> tuple[dict[str, int], float | None]:
    in_span = and_(principals.c.created_at >= span.since, principals.c.created_at < span.until)
    counts = dict(
        (
            await conn.execute(
                select(principals.c.role, func.count())
                .where(and_(in_span, principals.c.role.in_(("agent", "user"))))
                .group_by(principals.c.role)
            )
        ).all()
    )
    converted = (
        await conn.execute(
            select(func.count()).where(
                and_(
                    analytics_first_paid.c.signed_up_at >= span.since, analytics_first_paid.c.signed_up_at < span.until
                )
            )
        )
    ).scalar_one()
    users = int(counts.get("user", 0))
    signups = {"agents": int(counts.get("agent", 0)), "users": users, "users_with_paid_peek": int(converted)}
    return signups, (round(int(converted) / users, 4) if users else None)


async def churn_of(conn: DbConnection, role: str, span: Span) -> Churn:
    """Active in the period before this one and not in this one (same length, back to back). Periods end
    today, so "not active since" is "last active day within the previous period"."""
    before = span.previous()
    previous = await _distinct_active(conn, role, before.first, before.last)
    churned_stmt = select(func.count()).where(
        and_(
            analytics_last_active.c.role == role,
            analytics_last_active.c.day.between(before.first.isoformat(), before.last.isoformat()),
        )
    )
    churned = int((await conn.execute(churned_stmt)).scalar_one())
    return Churn(previous_active=previous, churned=churned, rate=round(churned / previous, 4) if previous else None)


async def tool_usage_figures(conn: DbConnection, span: Span) -> tuple[ToolUsage, ...]:
    rows = (
        await conn.execute(
            select(
                tool_usage_daily.c.tool,
                tool_usage_daily.c.bucket,
                func.sum(tool_usage_daily.c.calls),
                func.sum(tool_usage_daily.c.errors),
            )
            .where(tool_usage_daily.c.day.between(span.first.isoformat(), span.last.isoformat()))
            .group_by(tool_usage_daily.c.tool, tool_usage_daily.c.bucket)
        )
    ).all()
    per_tool: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for tool, bucket, calls, errors in rows:
        per_tool[tool].append((int(bucket), int(calls), int(errors)))
    found = []
    for tool, buckets in per_tool.items():
        calls = sum(b[1] for b in buckets)
        errors = sum(b[2] for b in buckets)
        found.append(
            ToolUsage(tool=tool, calls=calls, errors=errors, error_rate=round(errors / calls, 4), p95_ms=_p95(buckets))
        )
    return tuple(sorted(found, key=lambda t: (-t.calls, t.tool)))


def _p95(buckets: list[tuple[int, int, int]]) -> int:
    """The upper bound (ms) of the latency bucket holding the 95th percentile call."""
    calls = sum(b[1] for b in buckets)
    seen = 0
    for bound, n, _ in sorted(buckets):
        seen += n
        if seen >= 0.95 * calls:
            return bound
    return USAGE_BUCKETS_MS[-1]


async def write_usage(conn: DbConnection, usage: dict[tuple[str, str, int], list[int]]) -> None:
    if not usage:
        return
    await conn.execute(
        text(
            "INSERT INTO tool_usage_daily (day, tool, bucket, calls, errors) VALUES (:day, :tool, :bucket, :calls, :errors) "
            "ON CONFLICT (day, tool, bucket) DO UPDATE SET calls = tool_usage_daily.calls + excluded.calls, "
            "errors = tool_usage_daily.errors + excluded.errors"
        ),
        [
            {"day": day, "tool": tool, "bucket": bucket, "calls": calls, "errors": errors}
            for (day, tool, bucket), (calls, errors) in usage.items()
        ],
    )
