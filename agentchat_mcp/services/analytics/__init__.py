"""Agent and platform analytics, read from the rollups (store/rollups.py) plus a few indexed base-table
queries for figures that do not sum across days (medians, distinct counts of conversations).

Every figure is defined in docs/analytics.md. Periods are whole UTC days ending today: `week` the last
7, `month` 30, `quarter` 90, `year` 365. Money is integer cents, and every money figure is a sum of
ledger lines (the rollups only pre-add them by day).

Rollups stay current through `refresh()`: the tool-usage and quote counters buffered in memory are
written, then the idempotent catch-up folds in new ledger lines and messages. It runs before every read
and in the background (`run`, every `interval` seconds), never on the path of a send or a capture.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

import anyio
from sqlalchemy import and_, func, select

from agentchat_mcp import clock
from agentchat_mcp.services.analytics.agent import conversation_figures, peek_figures, top_peekers_of
from agentchat_mcp.services.analytics.common import (
    PLATFORM,
    check_granularity,
    daily_rows,
    heat_grid,
    period_span,
    series_of,
    sum_by_day,
    sum_by_dim,
)
from agentchat_mcp.services.analytics.figures import (
    PERIOD_DAYS,
    AgentAnalytics,
    AgentEarnings,
    CategoryTotal,
    Churn,
    ConversationStats,
    Granularity,
    PeekStats,
    Period,
    PlatformAnalytics,
    Point,
    Span,
    ToolUsage,
    TopPeeker,
)
from agentchat_mcp.services.analytics.platform import (
    active_figures,
    churn_of,
    signup_figures,
    tool_usage_figures,
    write_usage,
)
from agentchat_mcp.store import Store, rollups
from agentchat_mcp.store.tables import analytics_active, analytics_watermarks, ledger_lines, messages, principals
from agentchat_mcp.telemetry import ToolUsageBuffer

__all__ = [
    "DAILY_COLUMNS",
    "PERIOD_DAYS",
    "AgentAnalytics",
    "AgentEarnings",
    "Analytics",
    "CategoryTotal",
    "Churn",
    "ConversationStats",
    "Granularity",
    "PeekStats",
    "Period",
    "PlatformAnalytics",
    "Point",
    "Span",
    "ToolUsage",
    "TopPeeker",
]

logger = logging.getLogger(__name__)
SOURCES = ("credit", "pack", "subscription")


@dataclass
class Analytics:
    """The analytics service: `refresh` keeps rollups current; `agent` and `platform` read them."""

    store: Store
    usage: ToolUsageBuffer
    interval: float = 5.0  # background refresh; 0 turns it off (reads still catch up)
    _quotes: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    # --- keeping the rollups current ----------------------------------------------------------

    def count_quote(self, agent_ids: Iterable[str]) -> None:
        """quote_peek answered for these agents (the funnel's first step); written at the next refresh."""
        day = clock.now().date().isoformat()
        for agent_id in agent_ids:
            self._quotes[(agent_id, day)] += 1

    async def refresh(self) -> int:
        """Write buffered counters, then fold new events into the rollups; returns events folded."""
        usage = self.usage.drain()
        quotes, self._quotes = self._quotes, defaultdict(int)
        if not usage and not quotes and not await self._behind():
            return 0
        try:
            async with self.store.write() as conn:
                await write_usage(conn, usage)
                if quotes:
                    totals = {(a, "quotes", d, ""): n for (a, d), n in quotes.items()}
                    await conn.run_sync(rollups.add, totals)
                return await conn.run_sync(rollups.catch_up)
        except BaseException:
            self.usage.restore(usage)
            for key, n in quotes.items():
                self._quotes[key] += n
            raise

    async def _behind(self) -> bool:
        async with self.store.read() as conn:
            marks = {str(k): int(v) for k, v in (await conn.execute(select(analytics_watermarks))).all()}
            top_line = int((await conn.execute(select(func.max(ledger_lines.c.id)))).scalar() or 0)
            top_message = int((await conn.execute(select(func.max(messages.c.id)))).scalar() or 0)
        return top_line > marks.get("ledger_lines", 0) or top_message > marks.get("messages", 0)

    async def run(self) -> None:
        """Refresh every `interval` seconds until cancelled (a failure is logged and retried)."""
        if self.interval <= 0:
            return
        while True:
            await anyio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception:
                logger.exception("analytics refresh failed; retrying in %s s", self.interval)

    # --- agent ------------------------------------------------------------------------------

    async def agent(
        self, agent_id: str, period: Period = "month", granularity: Granularity = "day", top: int = 5
    ) -> AgentAnalytics:
        """One agent's analytics over the period (caller checks that it is this agent, or an admin)."""
        span = period_span(period)
        check_granularity(granularity)
        await self.refresh()
        today = clock.now().date()
        async with self.store.read() as conn:
            daily = await daily_rows(conn, agent_id, ("earned", "referral", "other_income"), None)
            income = [r for r in daily if span.first.isoformat() <= r[1] <= span.last.isoformat()]
            by_source = dict.fromkeys((*SOURCES, "referral", "other"), 0)
            for metric, _, dim, value in income:
                by_source[dim if metric == "earned" else metric.removesuffix("_income")] += value
            month_start = today.replace(day=1).isoformat()
            week_start = (today - timedelta(days=today.weekday())).isoformat()
            heat = heat_grid(await sum_by_dim(conn, agent_id, "earned_hour", span))
            earnings = AgentEarnings(
                lifetime_cents=sum(r[3] for r in daily),
                this_month_cents=sum(r[3] for r in daily if r[1] >= month_start),
                this_week_cents=sum(r[3] for r in daily if r[1] >= week_start),
                period_cents=sum(r[3] for r in income),
                by_source=by_source,
                series=series_of(span, granularity, [(r[1], r[3]) for r in income]),
                by_hour=tuple(sum(row[h] for row in heat) for h in range(24)),
                by_weekday=tuple(sum(row) for row in heat),
                heatmap=tuple(tuple(row) for row in heat),
            )
            counts = await daily_rows(conn, agent_id, ("sent", "received", "quotes"), span)
            peek_stats, funnel = await peek_figures(conn, agent_id, span)
            funnel = {"quotes": sum(r[3] for r in counts if r[0] == "quotes"), **funnel}
            conversations = await conversation_figures(conn, agent_id, span, counts)
            top_peekers = await top_peekers_of(conn, agent_id, span, top)
        return AgentAnalytics(
            agent_id=agent_id,
            period=period,
            granularity=granularity,
            first_day=span.first.isoformat(),
            last_day=span.last.isoformat(),
            earnings=earnings,
            peeks=peek_stats,
            conversations=conversations,
            funnel=funnel,
            top_peekers=top_peekers,
        )

    # --- platform ---------------------------------------------------------------------------

    async def platform(self, period: Period = "month", granularity: Granularity = "day") -> PlatformAnalytics:
        """The whole platform's analytics over the period (caller checks for an admin)."""
        span = period_span(period)
        check_granularity(granularity)
        await self.refresh()
        async with self.store.read() as conn:
            per_day = await sum_by_day(conn, PLATFORM, ("gmv", "platform_net"), span)
            revenue_by_kind = await sum_by_dim(conn, PLATFORM, "platform_net", span)
            refunds = {**dict.fromkeys(("peek", "refund", "dispute", "dispute_won"), 0)}
            refunds.update(await sum_by_dim(conn, PLATFORM, "refunds", span))
            categories = await sum_by_dim(conn, PLATFORM, "category", span)
            heatmap = heat_grid(await sum_by_dim(conn, PLATFORM, "captures", span))
            active, active_series = await active_figures(conn, span)
            signups, conversion = await signup_figures(conn, span)
            churn = {role: await churn_of(conn, role, span) for role in ("agent", "user")}
            tools = await tool_usage_figures(conn, span)
        return PlatformAnalytics(
            period=period,
            granularity=granularity,
            first_day=span.first.isoformat(),
            last_day=span.last.isoformat(),
            gmv_cents=sum(v for metric, _, v in per_day if metric == "gmv"),
            net_revenue_cents=sum(revenue_by_kind.values()),
            revenue_by_kind=dict(sorted(revenue_by_kind.items())),
            refunds=refunds,
            gmv_series=series_of(span, granularity, [(d, v) for m, d, v in per_day if m == "gmv"]),
            revenue_series=series_of(span, granularity, [(d, v) for m, d, v in per_day if m == "platform_net"]),
            active=active,
            active_series=active_series,
            signups=signups,
            signup_conversion=conversion,
            categories=tuple(
                CategoryTotal(tag, cents) for tag, cents in sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))
            ),
            churn={"agents": churn["agent"], "users": churn["user"]},
            peek_heatmap=tuple(tuple(row) for row in heatmap),
            tool_usage=tools,
        )

    # --- export -----------------------------------------------------------------------------

    async def daily(self, period: Period = "month") -> list[dict[str, int | str]]:
        """One row per UTC day of the period with the platform's daily figures (the CSV export)."""
        span = period_span(period)
        await self.refresh()
        first, last = span.first.isoformat(), span.last.isoformat()
        table: dict[str, dict[str, int | str]] = {}
        day = span.first
        while day <= span.last:
            table[day.isoformat()] = {"day": day.isoformat(), **dict.fromkeys(DAILY_COLUMNS, 0)}
            day += timedelta(days=1)
        column = {"gmv": "gmv_cents", "platform_net": "net_revenue_cents", "refunds": "refunds_cents"}
        column |= {"captures": "captured_peeks", "messages": "messages"}
        async with self.store.read() as conn:
            for metric, day_text, _, value in await daily_rows(conn, PLATFORM, tuple(column), span):
                row = table[day_text]
                row[column[metric]] = int(row[column[metric]]) + value
            active = await conn.execute(
                select(analytics_active.c.day, analytics_active.c.role, func.count())
                .where(analytics_active.c.day.between(first, last))
                .group_by(analytics_active.c.day, analytics_active.c.role)
            )
            for day_text, role, n in active.all():
                table[day_text][f"active_{role}s"] = int(n)
            signups = await conn.execute(
                select(func.substr(principals.c.created_at, 1, 10).label("day"), principals.c.role, func.count())
                .where(and_(principals.c.created_at >= span.since, principals.c.created_at < span.until))
                .where(principals.c.role.in_(("agent", "user")))
                .group_by("day", principals.c.role)
            )
            for day_text, role, n in signups.all():
                table[day_text][f"new_{role}s"] = int(n)
        return list(table.values())


DAILY_COLUMNS = (
    "gmv_cents",
    "net_revenue_cents",
    "refunds_cents",
    "captured_peeks",
    "messages",
    "active_agents",
    "active_users",
    "new_agents",
    "new_users",
)
