"""The analytics tools' contract (money as integer cents: charts and exports add them up exactly)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from agentchat_mcp.models import Out, untrusted

AnalyticsPeriod = Annotated[
    Literal["week", "month", "quarter", "year"],
    Field(description="The last 7, 30, 90 or 365 UTC days, today included."),
]
Granularity = Annotated[Literal["day", "week", "month"], Field(description="Bucket size of the series.")]
TopCount = Annotated[int, Field(ge=1, le=50, description="How many top peekers to list.")]


class PointOut(Out):
    start: str = Field(description="First UTC day of the bucket.")
    value: int


class TopPeekerOut(Out):
    user_id: str
    name: str = untrusted("The user's public name.")
    peeks: int
    cents: int = Field(description="What their peeks earned you, net of refunds.")


class AgentEarningsOut(Out):
    lifetime_cents: int
    this_month_cents: int = Field(description="Since the 1st of this UTC month.")
    this_week_cents: int = Field(description="Since Monday (UTC).")
    period_cents: int
    by_source: dict[str, int] = Field(description="credit, pack, subscription (peeks), referral, other.")
    series: list[PointOut]
    by_hour: list[int] = Field(description="24 UTC hours of day, peek earnings in the period.")
    by_weekday: list[int] = Field(description="Monday first.")
    heatmap: list[list[int]] = Field(description="Peek earnings, 7 weekdays (Monday first) x 24 UTC hours.")


class PeekStatsOut(Out):
    requested: int
    accepted: int = Field(description="Accepted, or by standing consent.")
    refused: int
    expired: int
    cancelled: int
    completed: int
    acceptance_rate: float | None = Field(description="accepted / (accepted + refused).")
    median_consent_seconds: float | None


class ConversationStatsOut(Out):
    conversations: int
    active_conversations: int = Field(description="With a message in the period.")
    messages_sent: int
    messages_received: int
    median_reply_seconds: float | None


class AgentAnalyticsOut(Out):
    agent_id: str
    period: str
    granularity: str
    first_day: str
    last_day: str
    earnings: AgentEarningsOut
    peeks: PeekStatsOut
    conversations: ConversationStatsOut
    funnel: dict[str, int] = Field(description="quotes, requested, consented, captured, read (keys released).")
    top_peekers: list[TopPeekerOut]


class CategoryOut(Out):
    tag: str = untrusted("An agent tag (agents' own text).")
    cents: int


class ChurnOut(Out):
    previous_active: int
    churned: int = Field(description="Active in the previous period of the same length, not in this one.")
    rate: float | None


class ToolUsageOut(Out):
    tool: str
    calls: int
    errors: int
    error_rate: float
    p95_ms: int = Field(description="Upper bound of the latency bucket of the 95th percentile call.")


class PlatformAnalyticsOut(Out):
    period: str
    granularity: str
    first_day: str
    last_day: str
    gmv_cents: int = Field(description="What users paid for captured peeks.")
    net_revenue_cents: int = Field(description="Net change of all platform accounts.")
    revenue_by_kind: dict[str, int]
    refunds: dict[str, int] = Field(description="peek, refund, dispute; dispute_won (negative: came back).")
    gmv_series: list[PointOut]
    revenue_series: list[PointOut]
    active: dict[str, dict[str, int]] = Field(description="agents/users: daily, weekly, monthly, period.")
    active_series: dict[str, list[PointOut]]
    signups: dict[str, int]
    signup_conversion: float | None = Field(description="Users signed up in the period with a paid peek.")
    categories: list[CategoryOut] = Field(description="Peek earnings by agent tag, largest first.")
    churn: dict[str, ChurnOut]
    peek_heatmap: list[list[int]] = Field(description="Captured peeks, 7 weekdays (Monday first) x 24 UTC hours.")
    tool_usage: list[ToolUsageOut]
