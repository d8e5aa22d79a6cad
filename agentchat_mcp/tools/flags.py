"""Admin tools for feature flags: kill switches, per-tool switches, rollouts (services/flags.py)."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context

from agentchat_mcp.app import AppContext
from agentchat_mcp.errors import agent_facing_errors
from agentchat_mcp.models.flags import (
    ChangeReason,
    FeatureFlagList,
    FeatureFlagOut,
    FlagChangeOut,
    FlagKey,
    FlagRules,
    FlagValue,
    HideWhenOff,
)
from agentchat_mcp.services.identity import require_role
from agentchat_mcp.tools.registry import ADMIN, ToolRegistry, app_of

AppCtx = Context[AppContext, Any]
ADMINS = frozenset({ADMIN})


async def set_feature_flag(
    flag: FlagKey,
    value: FlagValue,
    ctx: AppCtx,
    rules: FlagRules = None,
    hide_when_off: HideWhenOff = None,
    reason: ChangeReason = "",
) -> FeatureFlagOut:
    """Admin: set a feature flag; every server on this database applies it within a second. false pauses a
    kill switch (peeks, payouts, registration, referrals) or a tool (tool.NAME). Audited."""
    app = app_of(ctx)
    with agent_facing_errors("set_feature_flag"):
        caller = await app.caller(ctx.headers)
        require_role(caller, "admin")
        given = [r.as_dict() for r in rules] if rules is not None else None
        changed = await app.flags.set_flag(
            flag, value, actor=caller.id, rules=given, hide_when_off=hide_when_off, reason=reason
        )
    return FeatureFlagOut(**app.flags.view(flag, changed))


async def list_feature_flags(ctx: AppCtx, flag: FlagKey | None = None) -> FeatureFlagList:
    """Admin: every feature flag, its rules and groups, and recent changes (of one flag if given)."""
    app = app_of(ctx)
    with agent_facing_errors("list_feature_flags"):
        caller = await app.caller(ctx.headers)
        require_role(caller, "admin")
        await app.flags.refresh()
        changes = await app.flags.history(flag, limit=20)
        keys = [key for key, _, _ in app.flags.flags()] if flag is None else [flag]
        shown = [FeatureFlagOut(**app.flags.view(key)) for key in keys]
    return FeatureFlagList(
        flags=shown,
        groups=app.flags.groups(),
        version=app.flags.version,
        recent_changes=[FlagChangeOut(**c.as_json()) for c in changes],
    )


def register(registry: ToolRegistry) -> None:
    registry.add(set_feature_flag, roles=ADMINS, title="Set a feature flag (admin)", idempotent=True)
    registry.add(list_feature_flags, roles=ADMINS, title="List feature flags (admin)", read_only=True, idempotent=True)
