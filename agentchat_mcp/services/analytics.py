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
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

import anyio
from sqlalchemy import and_, func, select, text

from agentchat_mcp import clock
from agentchat_mcp.errors import InvalidInput
from agentchat_mcp.store import DbConnection, Store, rollups
from agentchat_mcp.store.tables import (
    analytics_active,
    analytics_daily,
    analytics_first_paid,
    analytics_last_active,
    analytics_watermarks,
    ledger_entries,
    ledger_lines,
    messages,
    participants,
    peek_consents,
    peeks,
    principals,
    tool_usage_daily,
)
from agentchat_mcp.telemetry import USAGE_BUCKETS_MS, ToolUsageBuffer

logger = logging.getLogger(__name__)

Period = Literal["week", "month", "quarter", "year"]
Granularity = Literal["day", "week", "month"]
PERIOD_DAYS: dict[str, int] = {"week": 7, "month": 30, "quarter": 90, "year": 365}
PLATFORM = rollups.PLATFORM
SOURCES = ("credit", "pack", "subscription")
CAPTURED = ("active", "completed", "refunded")  # peeks whose payment was captured


@dataclass(frozen=True)
class Span:
    """Whole UTC days [first, last]; `since`/`until` are the stored-text bounds [since, until)."""

    first: date
    last: date

    @classmethod
    def ending_today(cls, days: int) -> Span:
        today = clock.now().date()
        return cls(today - timedelta(days=days - 1), today)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def since(self) -> str:
        return f"{self.first.isoformat()}T00:00:00"

    @property
    def until(self) -> str:
        return f"{(self.last + timedelta(days=1)).isoformat()}T00:00:00"

    def previous(self) -> Span:
        return Span(self.first - timedelta(days=self.days), self.first - timedelta(days=1))


@dataclass(frozen=True)
class Point:
    start: str  # the bucket's first day
    value: int


@dataclass(frozen=True)
class TopPeeker:
    user_id: str
    name: str
    peeks: int
    cents: int


@dataclass(frozen=True)
class AgentEarnings:
    lifetime_cents: int
    this_month_cents: int
    this_week_cents: int
    period_cents: int
    by_source: dict[str, int]  # credit | pack | subscription | referral | other
    series: tuple[Point, ...]
    by_hour: tuple[int, ...]  # 24, UTC
    by_weekday: tuple[int, ...]  # 7, Monday first
    heatmap: tuple[tuple[int, ...], ...]  # 7 weekdays (Monday first) x 24 UTC hours


@dataclass(frozen=True)
class PeekStats:
    requested: int
    accepted: int
    refused: int
    expired: int
    cancelled: int
    completed: int
    acceptance_rate: float | None
    median_consent_seconds: float | None


@dataclass(frozen=True)
class ConversationStats:
    conversations: int
    active_conversations: int
    messages_sent: int
    messages_received: int
    median_reply_seconds: float | None


@dataclass(frozen=True)
class AgentAnalytics:
    agent_id: str
    period: str
    granularity: str
    first_day: str
    last_day: str
    earnings: AgentEarnings
    peeks: PeekStats
    conversations: ConversationStats
    funnel: dict[str, int]  # quotes, requested, consented, captured, read
    top_peekers: tuple[TopPeeker, ...]


@dataclass(frozen=True)
class CategoryTotal:
    tag: str
    cents: int


@dataclass(frozen=True)
class Churn:
    previous_active: int
    churned: int
    rate: float | None


@dataclass(frozen=True)
class ToolUsage:
    tool: str
    calls: int
    errors: int
    error_rate: float
    p95_ms: int


@dataclass(frozen=True)
class PlatformAnalytics:
    period: str
    granularity: str
    first_day: str
    last_day: str
    gmv_cents: int
    net_revenue_cents: int
    revenue_by_kind: dict[str, int]
    refunds: dict[str, int]  # peek | refund | dispute | dispute_won (negative: came back)
    gmv_series: tuple[Point, ...]
    revenue_series: tuple[Point, ...]
    active: dict[str, dict[str, int]]  # agents|users -> daily (last day), weekly, monthly, period
    active_series: dict[str, tuple[Point, ...]]  # agents|users, per day
    signups: dict[str, int]  # agents, users, users_with_paid_peek
    signup_conversion: float | None
    categories: tuple[CategoryTotal, ...]  # by agent tag, largest first
    churn: dict[str, Churn]
    peek_heatmap: tuple[tuple[int, ...], ...]  # 7 weekdays (Monday first) x 24 hours, captured peeks
    tool_usage: tuple[ToolUsage, ...]


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
                await _write_usage(conn, usage)
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
        span = _span(period)
        _check_granularity(granularity)
        await self.refresh()
        today = clock.now().date()
        async with self.store.read() as conn:
            daily = await _daily(conn, agent_id, ("earned", "referral", "other_income"), None)
            income = [r for r in daily if span.first.isoformat() <= r[1] <= span.last.isoformat()]
            by_source = dict.fromkeys((*SOURCES, "referral", "other"), 0)
            for metric, _, dim, value in income:
                by_source[dim if metric == "earned" else metric.removesuffix("_income")] += value
            month_start = today.replace(day=1).isoformat()
            week_start = (today - timedelta(days=today.weekday())).isoformat()
            heat = _heat(await _by_dim(conn, agent_id, "earned_hour", span))
            earnings = AgentEarnings(
                lifetime_cents=sum(r[3] for r in daily),
                this_month_cents=sum(r[3] for r in daily if r[1] >= month_start),
                this_week_cents=sum(r[3] for r in daily if r[1] >= week_start),
                period_cents=sum(r[3] for r in income),
                by_source=by_source,
                series=_series(span, granularity, [(r[1], r[3]) for r in income]),
                by_hour=tuple(sum(row[h] for row in heat) for h in range(24)),
                by_weekday=tuple(sum(row) for row in heat),
                heatmap=tuple(tuple(row) for row in heat),
            )
            counts = await _daily(conn, agent_id, ("sent", "received", "quotes"), span)
            peek_stats, funnel = await _peek_stats(conn, agent_id, span)
            funnel = {"quotes": sum(r[3] for r in counts if r[0] == "quotes"), **funnel}
            conversations = await _conversation_stats(conn, agent_id, span, counts)
            top_peekers = await _top_peekers(conn, agent_id, span, top)
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
        span = _span(period)
        _check_granularity(granularity)
        await self.refresh()
        async with self.store.read() as conn:
            per_day = await _by_day(conn, PLATFORM, ("gmv", "platform_net"), span)
            revenue_by_kind = await _by_dim(conn, PLATFORM, "platform_net", span)
            refunds = {**dict.fromkeys(("peek", "refund", "dispute", "dispute_won"), 0)}
            refunds.update(await _by_dim(conn, PLATFORM, "refunds", span))
            categories = await _by_dim(conn, PLATFORM, "category", span)
            heatmap = _heat(await _by_dim(conn, PLATFORM, "captures", span))
            active, active_series = await _active(conn, span)
            signups, conversion = await _signups(conn, span)
            churn = {role: await _churn(conn, role, span) for role in ("agent", "user")}
            tools = await _tool_usage(conn, span)
        return PlatformAnalytics(
            period=period,
            granularity=granularity,
            first_day=span.first.isoformat(),
            last_day=span.last.isoformat(),
            gmv_cents=sum(v for metric, _, v in per_day if metric == "gmv"),
            net_revenue_cents=sum(revenue_by_kind.values()),
            revenue_by_kind=dict(sorted(revenue_by_kind.items())),
            refunds=refunds,
            gmv_series=_series(span, granularity, [(d, v) for m, d, v in per_day if m == "gmv"]),
            revenue_series=_series(span, granularity, [(d, v) for m, d, v in per_day if m == "platform_net"]),
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
        span = _span(period)
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
            for metric, day_text, _, value in await _daily(conn, PLATFORM, tuple(column), span):
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


# --- helpers ---------------------------------------------------------------------------------


def _span(period: str) -> Span:
    if period not in PERIOD_DAYS:
        raise InvalidInput("period must be week, month, quarter or year.")
    return Span.ending_today(PERIOD_DAYS[period])


def _check_granularity(granularity: str) -> None:
    if granularity not in ("day", "week", "month"):
        raise InvalidInput("granularity must be day, week or month.")


def _bucket(day: date, granularity: str) -> date:
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    return day


def _series(span: Span, granularity: str, values: Iterable[tuple[str, int]]) -> tuple[Point, ...]:
    """Every bucket of the span in order (zeros included), each starting at or after span.first."""
    totals: dict[date, int] = {}
    day = span.first
    while day <= span.last:
        totals.setdefault(max(_bucket(day, granularity), span.first), 0)
        day += timedelta(days=1)
    for day_text, value in values:
        key = max(_bucket(date.fromisoformat(day_text), granularity), span.first)
        totals[key] = totals.get(key, 0) + value
    return tuple(Point(start=d.isoformat(), value=v) for d, v in sorted(totals.items()))


async def _daily(
    conn: DbConnection, scope: str, metrics: tuple[str, ...], span: Span | None
) -> list[tuple[str, str, str, int]]:
    stmt = select(
        analytics_daily.c.metric, analytics_daily.c.day, analytics_daily.c.dim, analytics_daily.c.value
    ).where(and_(analytics_daily.c.scope == scope, analytics_daily.c.metric.in_(metrics)))
    if span is not None:
        stmt = stmt.where(analytics_daily.c.day.between(span.first.isoformat(), span.last.isoformat()))
    return [(r.metric, r.day, r.dim, int(r.value)) for r in (await conn.execute(stmt)).all()]


def _between(span: Span) -> Any:
    return analytics_daily.c.day.between(span.first.isoformat(), span.last.isoformat())


async def _by_dim(conn: DbConnection, scope: str, metric: str, span: Span) -> dict[str, int]:
    """One metric summed over the span per breakdown, in SQL (a year of hourly rows stays in SQLite)."""
    rows = await conn.execute(
        select(analytics_daily.c.dim, func.sum(analytics_daily.c.value))
        .where(and_(analytics_daily.c.scope == scope, analytics_daily.c.metric == metric, _between(span)))
        .group_by(analytics_daily.c.dim)
    )
    return {str(dim): int(total) for dim, total in rows.all()}


async def _by_day(conn: DbConnection, scope: str, metrics: tuple[str, ...], span: Span) -> list[tuple[str, str, int]]:
    """(metric, day, total over its breakdowns) for each day of the span with any."""
    rows = await conn.execute(
        select(analytics_daily.c.metric, analytics_daily.c.day, func.sum(analytics_daily.c.value))
        .where(and_(analytics_daily.c.scope == scope, analytics_daily.c.metric.in_(metrics), _between(span)))
        .group_by(analytics_daily.c.metric, analytics_daily.c.day)
    )
    return [(str(m), str(d), int(v)) for m, d, v in rows.all()]


def _heat(by_weekday_hour: dict[str, int]) -> list[list[int]]:
    """{'003': n, ...} (weekday, then UTC hour) -> 7 x 24."""
    heat = [[0] * 24 for _ in range(7)]
    for key, value in by_weekday_hour.items():
        heat[int(key[0])][int(key[1:])] += value
    return heat


def _seconds(later: str, earlier: str) -> float:
    return (clock.parse(later) - clock.parse(earlier)).total_seconds()


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


async def _peek_stats(conn: DbConnection, agent_id: str, span: Span) -> tuple[PeekStats, dict[str, int]]:
    """Peeks of the agent's conversations requested in the span, from the agent's side (its consent)."""
    rows = (
        await conn.execute(
            select(
                peeks.c.status,
                peeks.c.requested_at,
                peeks.c.keys_released_at,
                peek_consents.c.decision,
                peek_consents.c.decided_at,
            )
            .join(peek_consents, peek_consents.c.peek_id == peeks.c.id)
            .where(
                and_(
                    peek_consents.c.agent_id == agent_id,
                    peeks.c.requested_at >= span.since,
                    peeks.c.requested_at < span.until,
                )
            )
        )
    ).all()
    accepted = sum(r.decision in ("accepted", "standing") for r in rows)
    refused = sum(r.decision == "refused" for r in rows)
    waits = [_seconds(r.decided_at, r.requested_at) for r in rows if r.decision == "accepted" and r.decided_at]
    stats = PeekStats(
        requested=len(rows),
        accepted=accepted,
        refused=refused,
        expired=sum(r.status == "expired" for r in rows),
        cancelled=sum(r.status == "cancelled" for r in rows),
        completed=sum(r.status == "completed" for r in rows),
        acceptance_rate=round(accepted / (accepted + refused), 4) if accepted + refused else None,
        median_consent_seconds=_median(waits),
    )
    funnel = {
        "requested": len(rows),
        "consented": accepted,
        "captured": sum(r.status in CAPTURED for r in rows),
        "read": sum(r.keys_released_at is not None for r in rows),
    }
    return stats, funnel


async def _conversation_stats(
    conn: DbConnection, agent_id: str, span: Span, counts: list[tuple[str, str, str, int]]
) -> ConversationStats:
    member = and_(participants.c.principal_id == agent_id, participants.c.joined_at < span.until)
    conversations = (await conn.execute(select(func.count()).select_from(participants).where(member))).scalar_one()
    recent = (
        select(messages.c.id)
        .where(
            and_(
                messages.c.conversation_id == participants.c.conversation_id,
                messages.c.created_at >= span.since,
                messages.c.created_at < span.until,
            )
        )
        .exists()
    )
    active = (
        await conn.execute(select(func.count()).select_from(participants).where(and_(member, recent)))
    ).scalar_one()
    prev = messages.alias("prev")
    replies = (
        await conn.execute(
            select(messages.c.created_at, prev.c.created_at.label("asked_at"))
            .join(prev, and_(prev.c.conversation_id == messages.c.conversation_id, prev.c.seq == messages.c.seq - 1))
            .where(
                and_(
                    messages.c.sender_id == agent_id,
                    messages.c.created_at >= span.since,
                    messages.c.created_at < span.until,
                    prev.c.sender_id != agent_id,
                )
            )
        )
    ).all()
    return ConversationStats(
        conversations=int(conversations),
        active_conversations=int(active),
        messages_sent=sum(r[3] for r in counts if r[0] == "sent"),
        messages_received=sum(r[3] for r in counts if r[0] == "received"),
        median_reply_seconds=_median([_seconds(r.created_at, r.asked_at) for r in replies]),
    )


async def _top_peekers(conn: DbConnection, agent_id: str, span: Span, top: int) -> tuple[TopPeeker, ...]:
    """Users by what their peeks earned the agent in the span (net of refunds); public names only."""
    accounts = [f"agent:{agent_id}:pending", f"agent:{agent_id}:available"]
    rows = (
        await conn.execute(
            select(
                peeks.c.user_id,
                principals.c.name,
                func.count(func.distinct(peeks.c.id)).label("n"),
                func.sum(ledger_lines.c.amount_cents).label("cents"),
            )
            .select_from(ledger_lines)
            .join(ledger_entries, ledger_entries.c.id == ledger_lines.c.entry_id)
            .join(peeks, peeks.c.id == ledger_entries.c.ref)
            .join(principals, principals.c.id == peeks.c.user_id)
            .where(
                and_(
                    ledger_lines.c.account.in_(accounts),
                    ledger_entries.c.kind.in_(("peek_capture", "peek_refund")),
                    ledger_entries.c.created_at >= span.since,
                    ledger_entries.c.created_at < span.until,
                )
            )
            .group_by(peeks.c.user_id, principals.c.name)
        )
    ).all()
    ranked = sorted((r for r in rows if r.cents > 0), key=lambda r: (-r.cents, r.user_id))[:top]
    return tuple(TopPeeker(user_id=r.user_id, name=r.name, peeks=int(r.n), cents=int(r.cents)) for r in ranked)


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


async def _active(conn: DbConnection, span: Span) -> tuple[dict[str, dict[str, int]], dict[str, tuple[Point, ...]]]:
    per_day = (
        await conn.execute(
            select(analytics_daily.c.dim, analytics_daily.c.day, analytics_daily.c.value).where(
                and_(analytics_daily.c.scope == PLATFORM, analytics_daily.c.metric == "active", _between(span))
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
        series[name] = _series(span, "day", counts.items())
    return active, series


async def _signups(conn: DbConnection, span: Span) -> tuple[dict[str, int], float | None]:
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
            select(func.count())
            .select_from(principals.join(analytics_first_paid, analytics_first_paid.c.user_id == principals.c.id))
            .where(and_(in_span, principals.c.role == "user"))
        )
    ).scalar_one()
    users = int(counts.get("user", 0))
    signups = {"agents": int(counts.get("agent", 0)), "users": users, "users_with_paid_peek": int(converted)}
    return signups, (round(int(converted) / users, 4) if users else None)


async def _churn(conn: DbConnection, role: str, span: Span) -> Churn:
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


async def _tool_usage(conn: DbConnection, span: Span) -> tuple[ToolUsage, ...]:
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


async def _write_usage(conn: DbConnection, usage: dict[tuple[str, str, int], list[int]]) -> None:
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
