"""Tools for analytics: an agent's own figures and (admin) the platform's, with a text summary for hosts
that show no charts; hosts with MCP Apps draw them (agentchat_mcp/web/app.py)."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, TextContent

from agentchat_mcp.app import AppContext
from agentchat_mcp.errors import agent_facing_errors
from agentchat_mcp.models.analytics import (
    AgentAnalyticsOut,
    AnalyticsPeriod,
    Granularity,
    PlatformAnalyticsOut,
    TopCount,
)
from agentchat_mcp.money import fmt
from agentchat_mcp.services.analytics import AgentAnalytics, PlatformAnalytics
from agentchat_mcp.services.identity import require_role
from agentchat_mcp.tools.registry import ADMIN, AGENT, ToolRegistry, app_of
from agentchat_mcp.web.app import APP_META

AppCtx = Context[AppContext, Any]


def agent_out(a: AgentAnalytics) -> AgentAnalyticsOut:
    return AgentAnalyticsOut.model_validate(dataclasses.asdict(a))


def platform_out(p: PlatformAnalytics) -> PlatformAnalyticsOut:
    return PlatformAnalyticsOut.model_validate(dataclasses.asdict(p))


def agent_summary(a: AgentAnalyticsOut) -> str:
    e, p, c = a.earnings, a.peeks, a.conversations
    rate = f"{p.acceptance_rate:.0%}" if p.acceptance_rate is not None else "n/a"
    top = ", ".join(f"{t.name} ({fmt(t.cents)})" for t in a.top_peekers) or "none"
    return (
        f"Agent analytics {a.first_day}..{a.last_day} (USD): earned {fmt(e.period_cents)} "
        f"(this week {fmt(e.this_week_cents)}, this month {fmt(e.this_month_cents)}, lifetime {fmt(e.lifetime_cents)}; "
        f"referrals {fmt(e.by_source['referral'])}). Peeks: {p.requested} requested, {p.accepted} accepted, "
        f"{p.refused} refused, {p.expired} expired, {p.completed} completed, acceptance {rate}. "
        f"Messages: {c.messages_sent} sent, {c.messages_received} received in {c.active_conversations} active "
        f"conversations. Funnel: " + " -> ".join(f"{k} {v}" for k, v in a.funnel.items()) + f". Top peekers: {top}."
    )


def platform_summary(p: PlatformAnalyticsOut) -> str:
    tools = ", ".join(f"{t.tool} {t.calls} calls p95 {t.p95_ms} ms" for t in p.tool_usage[:3]) or "none"
    return (
        f"Platform analytics {p.first_day}..{p.last_day} (USD): GMV {fmt(p.gmv_cents)}, net revenue "
        f"{fmt(p.net_revenue_cents)}, refunds {fmt(sum(p.refunds.values()))}. Active agents "
        f"{p.active['agents']['period']}, users {p.active['users']['period']}; sign-ups {p.signups['agents']} agents, "
        f"{p.signups['users']} users. Busiest tools: {tools}."
    )


def _result(summary: str, out: Any) -> CallToolResult:
    data = out.model_dump(mode="json")
    return CallToolResult(
        content=[TextContent(type="text", text=summary), TextContent(type="text", text=json.dumps(data))],
        structured_content=data,
    )


async def get_agent_analytics(
    ctx: AppCtx, period: AnalyticsPeriod = "month", granularity: Granularity = "day", top: TopCount = 5
) -> Annotated[CallToolResult, AgentAnalyticsOut]:
    """Your analytics: earnings (series, by hour and weekday, by source incl. referrals), peek and conversation
    statistics, the quote-to-read funnel and top peekers. Money in cents."""
    app = app_of(ctx)
    with agent_facing_errors("get_agent_analytics"):
        caller = await app.caller(ctx.headers)
        require_role(caller, "agent")
        out = agent_out(await app.analytics.agent(caller.id, period, granularity, top))
    return _result(agent_summary(out), out)


async def get_platform_analytics(
    ctx: AppCtx, period: AnalyticsPeriod = "month", granularity: Granularity = "day"
) -> Annotated[CallToolResult, PlatformAnalyticsOut]:
    """Admin: platform analytics: GMV, net revenue, refunds, active agents and users, sign-ups and conversion,
    revenue by category, churn, peek times, MCP tool usage. Money in cents."""
    app = app_of(ctx)
    with agent_facing_errors("get_platform_analytics"):
        caller = await app.caller(ctx.headers)
        require_role(caller, "admin")
        out = platform_out(await app.analytics.platform(period, granularity))
    return _result(platform_summary(out), out)


def register(registry: ToolRegistry) -> None:
    registry.add(
        get_agent_analytics,
        roles=frozenset({AGENT}),
        title="Show my analytics",
        read_only=True,
        idempotent=True,
        meta=APP_META,
    )
    registry.add(
        get_platform_analytics,
        roles=frozenset({ADMIN}),
        title="Show platform analytics (admin)",
        read_only=True,
        idempotent=True,
        meta=APP_META,
    )
