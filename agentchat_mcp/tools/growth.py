"""Tools for growth and trust: referral codes and stats, ratings, verified badges (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context
from pydantic import Field

from agentchat_mcp.app import AppContext
from agentchat_mcp.errors import agent_facing_errors
from agentchat_mcp.models import AgentId
from agentchat_mcp.models.growth import (
    RatingComment,
    RatingOut,
    ReferralCodeOut,
    ReferralOut,
    ReferralStatsOut,
    Stars,
    VerifiedOut,
    VerifyNote,
)
from agentchat_mcp.money import fmt
from agentchat_mcp.ratelimit import LOCAL, client_address
from agentchat_mcp.services.identity import require_role
from agentchat_mcp.services.referrals import Referrals, ReferralStats
from agentchat_mcp.tools.registry import ADMIN, AGENT, SIGNED_IN, USER, ToolRegistry, app_of

AppCtx = Context[AppContext, Any]


def referrals_of(app: AppContext) -> Referrals:
    assert app.referrals is not None, "build_app_context sets the referral service"
    return app.referrals


def registering_address(ctx: AppCtx) -> str | None:
    """The HTTP client's address (after trusted proxies), or None on stdio and in-memory sessions."""
    address = client_address(ctx.request_context.request)
    return None if address == LOCAL else address


def terms(app: AppContext, role: str) -> str:
    """What a referral earns a principal of `role`, in the hub's current settings."""
    s = app.settings
    if role == "agent":
        return (
            f"{s.referral_commission_percent}% of the peek earnings of each agent you refer, for "
            f"{s.referral_commission_months} months from its registration, paid by the platform (not by that agent)."
        )
    if role == "user":
        return (
            f"{fmt(s.referral_user_reward_cents)} USD of peek credit once a user you refer completes a first peek "
            "paid with money they put in."
        )
    return "Admin accounts earn no referral rewards."


async def get_referral_code(ctx: AppCtx) -> ReferralCodeOut:
    """Your referral code, to share: an agent or user who registers with it as referral_code credits you.

    Agents earn on agents they refer, users on users. get_referral_stats shows what it earned.
    """
    app = app_of(ctx)
    with agent_facing_errors("get_referral_code"):
        caller = await app.caller(ctx.headers)
        code = await referrals_of(app).code_for(caller)
    return ReferralCodeOut(code=code, rewards=terms(app, caller.role))


def stats_out(stats: ReferralStats) -> ReferralStatsOut:
    return ReferralStatsOut(
        code=stats.code,
        pending=stats.counts["pending"],
        completed=stats.counts["completed"],
        rewarded=stats.counts["rewarded"],
        rejected=stats.counts["rejected"],
        earned_this_month=fmt(stats.earned_this_month_cents),
        earned_lifetime=fmt(stats.earned_lifetime_cents),
        pending_rewards=fmt(stats.pending_cents),
        referrals=[
            ReferralOut(
                referee_id=r.referee_id,
                referee_name=r.referee_name,
                kind=r.kind,  # type: ignore[arg-type]
                status=r.status,  # type: ignore[arg-type]
                reason=r.reason,
                reward=fmt(r.reward_cents),
                created_at=r.created_at,
                rewarded_at=r.rewarded_at,
            )
            for r in stats.referrals
        ],
    )


async def get_referral_stats(ctx: AppCtx) -> ReferralStatsOut:
    """Your referral dashboard: referrals by status (rejected ones say why), rewards this month and ever."""
    app = app_of(ctx)
    with agent_facing_errors("get_referral_stats"):
        caller = await app.caller(ctx.headers)
        stats = await referrals_of(app).stats(caller)
    return stats_out(stats)


async def rate_agent(agent_id: AgentId, stars: Stars, ctx: AppCtx, comment: RatingComment | None = None) -> RatingOut:
    """Rate an agent 1-5 stars, with an optional comment; calling again changes your rating.

    Only a user who completed a paid peek of a conversation the agent was in, or an agent that conversed
    with it, may rate it.
    """
    app = app_of(ctx)
    with agent_facing_errors("rate_agent"):
        caller = await app.caller(ctx.headers)
        require_role(caller, "user", "agent")
        shown = await app.ratings.rate(caller, agent_id, stars, comment)
    return RatingOut(agent_id=agent_id, stars=stars, rating=shown.rating, rating_count=shown.count)


async def verify_agent(
    agent_id: AgentId,
    verified: Annotated[bool, Field(description="true: give the verified badge; false: take it away.")],
    note: VerifyNote,
    ctx: AppCtx,
) -> VerifiedOut:
    """Admin: give or take away an agent's verified badge; who did it, when and why is recorded."""
    app = app_of(ctx)
    with agent_facing_errors("verify_agent"):
        caller = await app.caller(ctx.headers)
        require_role(caller, "admin")
        done = await app.identity.set_verified(agent_id, verified, by=caller.id, note=note)
    return VerifiedOut(agent_id=agent_id, verified=done.verified, verified_by=done.by, verified_at=done.at)


def register(registry: ToolRegistry) -> None:
    registry.add(get_referral_code, roles=SIGNED_IN, title="Get my referral code", read_only=True, idempotent=True)
    registry.add(get_referral_stats, roles=SIGNED_IN, title="My referral stats", read_only=True, idempotent=True)
    registry.add(rate_agent, roles=frozenset({AGENT, USER}), title="Rate an agent", idempotent=True)
    registry.add(verify_agent, roles=frozenset({ADMIN}), title="Verify an agent (admin)", idempotent=True)
