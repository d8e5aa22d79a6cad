"""Periods, series and the rollup reads shared by the agent and the platform figures."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from sqlalchemy import and_, func, select

from agentchat_mcp import clock
from agentchat_mcp.errors import InvalidInput
from agentchat_mcp.services.analytics.figures import PERIOD_DAYS, Point, Span
from agentchat_mcp.store import DbConnection, rollups
from agentchat_mcp.store.tables import analytics_daily

PLATFORM = rollups.PLATFORM


def period_span(period: str) -> Span:
    if period not in PERIOD_DAYS:
        raise InvalidInput("period must be week, month, quarter or year.")
    return Span.ending_today(PERIOD_DAYS[period])


def check_granularity(granularity: str) -> None:
    if granularity not in ("day", "week", "month"):
        raise InvalidInput("granularity must be day, week or month.")


def _bucket(day: date, granularity: str) -> date:
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    return day


def series_of(span: Span, granularity: str, values: Iterable[tuple[str, int]]) -> tuple[Point, ...]:
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


async def daily_rows(
    conn: DbConnection, scope: str, metrics: tuple[str, ...], span: Span | None
) -> list[tuple[str, str, str, int]]:
    stmt = select(
        analytics_daily.c.metric, analytics_daily.c.day, analytics_daily.c.dim, analytics_daily.c.value
    ).where(and_(analytics_daily.c.scope == scope, analytics_daily.c.metric.in_(metrics)))
    if span is not None:
        stmt = stmt.where(analytics_daily.c.day.between(span.first.isoformat(), span.last.isoformat()))
    return [(r.metric, r.day, r.dim, int(r.value)) for r in (await conn.execute(stmt)).all()]


def day_between(span: Span) -> Any:
    return analytics_daily.c.day.between(span.first.isoformat(), span.last.isoformat())


async def sum_by_dim(conn: DbConnection, scope: str, metric: str, span: Span) -> dict[str, int]:
    """One metric summed over the span per breakdown, in SQL (a year of hourly rows stays in SQLite)."""
    rows = await conn.execute(
        select(analytics_daily.c.dim, func.sum(analytics_daily.c.value))
        .where(and_(analytics_daily.c.scope == scope, analytics_daily.c.metric == metric, day_between(span)))
        .group_by(analytics_daily.c.dim)
    )
    return {str(dim): int(total) for dim, total in rows.all()}


async def sum_by_day(
    conn: DbConnection, scope: str, metrics: tuple[str, ...], span: Span
) -> list[tuple[str, str, int]]:
    """(metric, day, total over its breakdowns) for each day of the span with any."""
    rows = await conn.execute(
        select(analytics_daily.c.metric, analytics_daily.c.day, func.sum(analytics_daily.c.value))
        .where(and_(analytics_daily.c.scope == scope, analytics_daily.c.metric.in_(metrics), day_between(span)))
        .group_by(analytics_daily.c.metric, analytics_daily.c.day)
    )
    return [(str(m), str(d), int(v)) for m, d, v in rows.all()]


def heat_grid(by_weekday_hour: dict[str, int]) -> list[list[int]]:
    """{'003': n, ...} (weekday, then UTC hour) -> 7 x 24."""
    heat = [[0] * 24 for _ in range(7)]
    for key, value in by_weekday_hour.items():
        heat[int(key[0])][int(key[1:])] += value
    return heat


def seconds_between(later: str, earlier: str) -> float:
    return (clock.parse(later) - clock.parse(earlier)).total_seconds()


def median_of(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None
