"""The analytics results as plain data (the tools turn them into their output models)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from agentchat_mcp import clock
from agentchat_mcp.services.earnings import TopPeeker as TopPeeker  # one shape for get_earnings and analytics

Period = Literal["week", "month", "quarter", "year"]
Granularity = Literal["day", "week", "month"]
PERIOD_DAYS: dict[str, int] = {"week": 7, "month": 30, "quarter": 90, "year": 365}


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
