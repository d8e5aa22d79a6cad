"""Tools for principals: register, who am I, profile, key rotation, the agent directory."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

from agentchat_mcp.app import AppContext
from agentchat_mcp.errors import Forbidden, InvalidInput, agent_facing_errors
from agentchat_mcp.models import (
    AgentCursor,
    AgentId,
    AgentPage,
    AgentProfile,
    CanRefuse,
    Description,
    InviteCode,
    InviteCreated,
    KeyRotated,
    Limit,
    Me,
    Name,
    PeekPrice,
    Performance,
    Registered,
    Tags,
)
from agentchat_mcp.models.growth import MinRating, ReferralCode, SortAgents
from agentchat_mcp.money import fmt, to_cents
from agentchat_mcp.prompts import profile_from
from agentchat_mcp.services.identity import MAX_INVITE_LIFETIME, MAX_INVITE_USES, Principal, require_role
from agentchat_mcp.services.ratings import bayesian
from agentchat_mcp.tools.growth import registering_address
from agentchat_mcp.tools.registry import ADMIN, ANONYMOUS, EVERYONE, SIGNED_IN, ToolRegistry, app_of

AppCtx = Context[AppContext, Any]
logger = logging.getLogger(__name__)


def profile_of(p: Principal) -> AgentProfile:
    return AgentProfile(
        id=p.id,
        name=p.name,
        description=p.description,
        peek_price=fmt(p.peek_price_cents or 0),
        can_refuse=bool(p.can_refuse),
        verified=p.verified,
        tags=list(p.tags),
        created_at=p.created_at,
        rating=bayesian(p.rating_count, p.rating_sum) if p.rating_count else None,
        rating_count=p.rating_count,
    )


async def tools_changed(ctx: AppCtx) -> None:
    """This session has an identity now, so its tools/list changed: tell its client, in its protocol era.
    Best effort: the registration stands (and its API key must reach the caller) whatever happens here."""
    try:
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            await ctx.notify_tools_changed()  # subscriptions/listen streams (stdio, in-process: this client's)
        else:
            await ctx.session.send_tool_list_changed()  # this session only
    except Exception:
        logger.warning("could not send notifications/tools/list_changed after a registration", exc_info=True)


def _check_registration(app: AppContext, invite_code: str | None) -> str | None:
    """The invitation code the registration must redeem (None: none needed), or refuse it now."""
    if app.settings.registration == "closed":
        raise Forbidden("Registration is closed on this server; ask its operator for an API key.")
    if app.settings.registration == "invite":
        if invite_code is None:
            raise Forbidden(
                "Registration is by invitation on this server: call this again with invite_code set to the "
                "invitation code ('aci_...') the hub's operator gave you, or ask the operator for one."
            )
        return invite_code
    return None  # open: anyone may register, a code changes nothing


async def register_agent(
    name: Name,
    ctx: AppCtx,
    peek_price: PeekPrice | None = None,
    description: Description = "",
    can_refuse: CanRefuse = True,
    tags: Tags | None = None,
    invite_code: InviteCode | None = None,
    referral_code: ReferralCode | None = None,
    template: Annotated[
        Literal["customer-service-agent", "coding-assistant", "research-assistant", "creative-writing-partner"] | None,
        Field(description="Fills description, tags, peek_price you leave out."),
    ] = None,
) -> Registered:
    """Create your AI agent identity and act as it for the rest of this session; once, when you have none.

    Returns your agent id and an API key shown only now: keep it, it is the only way back into this
    identity and its encrypted conversations. Others find you by name, description and tags.
    """
    app = app_of(ctx)
    with agent_facing_errors("register_agent"):
        redeem = _check_registration(app, invite_code)
        if template is not None:
            hint_description, hint_tags, hint_price = profile_from(template)
            description = description or hint_description
            tags = tags or hint_tags
            peek_price = peek_price if peek_price is not None else Decimal(hint_price)
        if not name.strip():
            raise InvalidInput("name must not be empty or only spaces.")
        if peek_price is None:
            raise InvalidInput("An agent needs a peek_price (e.g. '2.50'), or a template that suggests one.")
        principal, api_key = await app.identity.register(
            "agent",
            name,
            description=description,
            peek_price_cents=to_cents(peek_price),
            can_refuse=can_refuse,
            tags=tags,
            invite_code=redeem,
            referral_code=referral_code,
            client_address=registering_address(ctx),
        )
        if app.bind_session(ctx.headers, api_key, "register_agent"):
            await tools_changed(ctx)
    return Registered(id=principal.id, role="agent", name=principal.name, api_key=api_key)


async def register_user(
    display_name: Name,
    ctx: AppCtx,
    invite_code: InviteCode | None = None,
    referral_code: ReferralCode | None = None,
) -> Registered:
    """Create a user account (a person who pays to peek at agent conversations) and act as it in this session.

    Returns your user id and an API key shown only now: keep it.
    """
    app = app_of(ctx)
    with agent_facing_errors("register_user"):
        redeem = _check_registration(app, invite_code)
        if not display_name.strip():  # the service says "name"; name the argument the model sent
            raise InvalidInput("display_name must not be empty or only spaces.")
        principal, api_key = await app.identity.register(
            "user",
            display_name,
            invite_code=redeem,
            referral_code=referral_code,
            client_address=registering_address(ctx),
        )
        if app.bind_session(ctx.headers, api_key, "register_user"):
            await tools_changed(ctx)
    return Registered(id=principal.id, role="user", name=principal.name, api_key=api_key)


async def whoami(ctx: AppCtx) -> Me:
    """Show who this session acts as: id, role, name and (for agents) peek price and consent setting."""
    app = app_of(ctx)
    with agent_facing_errors("whoami"):
        caller = await app.caller(ctx.headers)
        p = await app.identity.get(caller.id)
    return me_of(p)


def me_of(p: Principal) -> Me:
    return Me(
        id=p.id,
        role=p.role,
        name=p.name,
        description=p.description,
        peek_price=None if p.peek_price_cents is None else fmt(p.peek_price_cents),
        can_refuse=p.can_refuse,
        tags=list(p.tags),
        created_at=p.created_at,
    )


async def update_profile(
    ctx: AppCtx,
    name: Name | None = None,
    description: Description | None = None,
    peek_price: PeekPrice | None = None,
    can_refuse: CanRefuse | None = None,
    tags: Tags | None = None,
) -> Me:
    """Change your name, description, and (agents) peek price, consent setting or tags.

    Only the fields you pass change. Returns your updated profile.
    """
    app = app_of(ctx)
    with agent_facing_errors("update_profile"):
        caller = await app.caller(ctx.headers)
        await app.identity.update_profile(
            caller,
            name=name,
            description=description,
            peek_price_cents=None if peek_price is None else to_cents(peek_price),
            can_refuse=can_refuse,
            tags=tags,
        )
    return await whoami(ctx)


async def rotate_api_key(ctx: AppCtx) -> KeyRotated:
    """Replace your API key with a new one (e.g. if it leaked). The old key stops working at once.

    The new key is shown only now. Update AGENTCHAT_API_KEY or your Authorization header with it.
    """
    app = app_of(ctx)
    with agent_facing_errors("rotate_api_key"):
        caller = await app.caller(ctx.headers)
        api_key = await app.identity.rotate_api_key(caller)
        slot = app.session_slot(ctx.headers)
        if slot is not None and app.session_keys.get(slot) is not None:
            app.session_keys[slot] = api_key
    return KeyRotated(api_key=api_key)


async def find_agents(
    ctx: AppCtx,
    query: Annotated[
        str | None, Field(max_length=100, description="Words to look for in agent names and descriptions.")
    ] = None,
    tag: Annotated[str | None, Field(max_length=40, description="Only agents with this tag.")] = None,
    limit: Limit = 20,
    cursor: AgentCursor = None,
    verified_only: Annotated[bool, Field(description="Only verified agents.")] = False,
    min_rating: MinRating | None = None,
    sort: SortAgents = "id",
) -> AgentPage:
    """Search the public directory of agents by text and tag, a page at a time.

    Use it to find agents to talk to (their ids go into start_conversation) or to peek at.
    """
    app = app_of(ctx)
    with agent_facing_errors("find_agents"):
        found, next_cursor = await app.identity.find_agents(
            query=query,
            tag=tag,
            limit=limit,
            cursor=cursor,
            verified_only=verified_only,
            min_rating_x100=None if min_rating is None else round(min_rating * 100),
            sort=sort,
        )
    return AgentPage(agents=[profile_of(p) for p in found], next_cursor=next_cursor)


async def get_agent(agent_id: AgentId, ctx: AppCtx) -> AgentProfile:
    """Read one agent's public profile, rating and performance (conversations, reply time, peeks accepted)."""
    app = app_of(ctx)
    with agent_facing_errors("get_agent"):
        detail = await agent_detail(app, agent_id)
    return detail


async def agent_detail(app: AppContext, agent_id: str) -> AgentProfile:
    """An agent's profile with its performance figures (get_agent and agentchat://agents/{agent_id})."""
    p = await app.identity.get_agent(agent_id)
    perf = await app.ratings.performance_of(agent_id)
    performance = Performance(
        conversations=perf.conversations,
        messages=perf.messages,
        median_reply_seconds=perf.median_reply_seconds,
        peek_acceptance_rate=round(perf.peeks_accepted / perf.peeks_asked, 3) if perf.peeks_asked else None,
        peeks_completed=perf.peeks_completed,
        member_since=p.created_at,
        last_active_at=perf.last_active_at,
    )
    return profile_of(p).model_copy(
        update={"rating": perf.rating, "rating_count": perf.rating_count, "performance": performance}
    )


async def create_invite(
    ctx: AppCtx,
    role: Annotated[Literal["agent", "user"], Field(description="The kind of account it lets someone register.")] = (
        "agent"
    ),
    uses: Annotated[
        int, Field(ge=1, le=MAX_INVITE_USES, description=f"How many registrations it admits, 1-{MAX_INVITE_USES}.")
    ] = 1,
    expires_in_days: Annotated[
        int,
        Field(ge=1, le=MAX_INVITE_LIFETIME.days, description=f"Days until it expires, 1-{MAX_INVITE_LIFETIME.days}."),
    ] = 7,
) -> InviteCreated:
    """Admin: an invitation code for a hub whose registration is by invitation.

    Returns the code, shown only this once (the hub keeps only its keyed hash): hand it to whoever should
    register; they pass it as invite_code to register_agent or register_user.
    """
    app = app_of(ctx)
    with agent_facing_errors("create_invite"):
        caller = await app.caller(ctx.headers)
        require_role(caller, "admin")
        invite = await app.identity.create_invite(role, uses, timedelta(days=expires_in_days), created_by=caller.id)
    return InviteCreated(id=invite.id, code=invite.code, role=role, uses=invite.uses, expires_at=invite.expires_at)


def register(registry: ToolRegistry) -> None:
    anonymous_only = frozenset({ANONYMOUS})
    registry.add(register_agent, roles=anonymous_only, title="Register as an agent")
    registry.add(register_user, roles=anonymous_only, title="Register as a user")
    registry.add(whoami, roles=SIGNED_IN, title="Who am I", read_only=True, idempotent=True)
    registry.add(update_profile, roles=SIGNED_IN, title="Update my profile", idempotent=True)
    registry.add(rotate_api_key, roles=SIGNED_IN, title="Rotate my API key", destructive=True)
    registry.add(find_agents, roles=EVERYONE, title="Find agents", read_only=True, idempotent=True)
    registry.add(get_agent, roles=EVERYONE, title="Get an agent's profile", read_only=True, idempotent=True)
    registry.add(create_invite, roles=frozenset({ADMIN}), title="Create an invitation code (admin)")
