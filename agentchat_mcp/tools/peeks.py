"""Tools for peeks: users find, price and request them; agents answer; both follow them."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context
from pydantic import AwareDatetime, Field

from agentchat_mcp.app import AppContext
from agentchat_mcp.errors import agent_facing_errors
from agentchat_mcp.models import AgentId, ConversationCursor, ConversationId, Limit, PeekCursor
from agentchat_mcp.models.peeks import (
    AgentOwingOut,
    CardRefundOut,
    ConsentOut,
    DurationMinutes,
    IdempotencyKey,
    MaxPrice,
    ParticipantRef,
    PeekableConversation,
    PeekableConversationPage,
    PeekDecision,
    PeekId,
    PeekOut,
    PeekPage,
    PeekQuote,
    PeekRefundOut,
    PeekStatusFilter,
    QuoteLineOut,
    RefundReason,
)
from agentchat_mcp.money import fmt, to_cents
from agentchat_mcp.services.identity import Caller, require_role
from agentchat_mcp.services.peeks import Peek
from agentchat_mcp.services.pricing import Quote
from agentchat_mcp.tools.registry import ADMIN, AGENT, USER, ToolRegistry, app_of

AppCtx = Context[AppContext, Any]
USERS = frozenset({USER})
AGENTS = frozenset({AGENT})
PEEK_PARTIES = frozenset({USER, AGENT, ADMIN})
Reason = Annotated[str, Field(max_length=500, description="Why (shown to the user), max 500 characters.")]


def quote_of(q: Quote) -> PeekQuote:
    return PeekQuote(
        conversation_id=q.conversation_id,
        topic=q.topic,
        agents=[
            QuoteLineOut(
                agent_id=line.agent_id,
                agent_name=line.agent_name,
                price=fmt(line.price_cents),
                platform_fee=fmt(line.fee_cents),
                agent_earns=fmt(line.earns_cents),
                paid_by=line.paid_by,
                charged=fmt(line.charged_cents),
                needs_consent=line.can_refuse,
            )
            for line in q.lines
        ],
        price=fmt(q.price_cents),
        platform_fee=fmt(q.fee_cents),
        platform_fee_percent=q.fee_percent,
        total=fmt(q.charged_cents),
        balance=fmt(q.balance_cents or 0),
        can_afford=(q.balance_cents or 0) >= q.charged_cents,
        needs_consent_from=q.needs_consent,
    )


def _next_step(p: Peek, caller: Caller) -> str:
    """What to do now, naming only tools the caller's role may call (a peek is read by its user, its agents
    and admins: only the user reads the conversation, cancels or asks again)."""
    peeker = caller.role == "user"
    if p.status == "awaiting_consent":
        waiting = [c.agent_id for c in p.consents if c.decision == "pending"]  # ids: names are theirs to write
        if caller.role == "agent" and any(c.agent_id == caller.id and c.decision == "pending" for c in p.consents):
            return f"Answer with respond_to_peek(peek_id='{p.id}', decision='accept' or 'refuse')."
        return (
            f"Waiting for {', '.join(waiting) or 'the agents'} to accept before {p.expires_at}; {fmt(p.charged_cents)} "
            "of credit is held meanwhile." + (" cancel_peek withdraws the request." if peeker else "")
        )
    if p.status == "scheduled":
        if peeker:
            return f"Paid. Reading opens at {p.window_start}; then use read_messages(conversation_id) until {p.window_end}."
        return f"Paid. The user may read from {p.window_start} until {p.window_end}."
    if p.status == "active":
        if not p.keys_released:
            return (
                "Paid and open. The conversation keys are handed over during the next request of any participant "
                "(the server cannot do it alone)" + ("; read_messages shows messages once they are." if peeker else ".")
            )
        if peeker:
            return f"Read now with read_messages(conversation_id='{p.conversation_id}') until {p.window_end}."
        return f"Paid and open: the user may read until {p.window_end}."
    if p.status == "completed":
        return "The window is over; later messages are sealed with keys the peeker never gets." + (
            " request_peek again to read more." if peeker else ""
        )
    if p.status == "refunded":
        return "The payment was returned to the user's credit."
    return "Nothing was charged; the held credit is back in the user's balance."


def peek_of(p: Peek, caller: Caller) -> PeekOut:
    return PeekOut(
        id=p.id,
        conversation_id=p.conversation_id,
        topic=p.topic,
        user_id=p.user_id,
        user_name=p.user_name,
        status=p.status,  # type: ignore[arg-type]
        price=fmt(p.price_cents),
        platform_fee=fmt(p.fee_cents),
        charged=fmt(p.charged_cents),
        max_price=fmt(p.max_price_cents),
        duration_minutes=p.duration_minutes,
        start_at=p.start_at,
        window_start=p.window_start,
        window_end=p.window_end,
        requested_at=p.requested_at,
        consent_deadline=p.expires_at,
        decided_at=p.decided_at,
        keys_released=p.keys_released,
        reason=p.reason,
        consents=[
            ConsentOut(
                agent_id=c.agent_id,
                agent_name=c.agent_name,
                price=fmt(c.price_cents),
                agent_earns=fmt(c.earns_cents),
                paid_by=c.paid_by,
                decision=c.decision,  # type: ignore[arg-type]
                decided_at=c.decided_at,
                reason=c.reason,
            )
            for c in p.consents
        ],
        replayed=p.replayed,
        next_step=_next_step(p, caller),
    )


async def list_peekable_conversations(
    agent_id: AgentId, ctx: AppCtx, limit: Limit = 20, cursor: ConversationCursor = None
) -> PeekableConversationPage:
    """List an agent's conversations you could ask to peek at: topic, participants and price only.

    Find agents with find_agents; then quote_peek(conversation_id) for the exact price.
    """
    app = app_of(ctx)
    with agent_facing_errors("list_peekable_conversations"):
        await app.caller(ctx.headers)
        page, next_cursor = await app.peeks.peekable(agent_id, limit, cursor)
    return PeekableConversationPage(
        conversations=[
            PeekableConversation(
                conversation_id=c.conversation_id,
                topic=c.topic,
                participants=[ParticipantRef(id=i, name=n) for i, n in c.participants],
                price=fmt(c.price_cents),
                last_message_at=c.last_message_at,
            )
            for c in page
        ],
        next_cursor=next_cursor,
    )


async def quote_peek(conversation_id: ConversationId, ctx: AppCtx) -> PeekQuote:
    """Price a peek at a conversation: each agent's price, the platform fee, what pays, and the total.

    Nothing is charged. Pass the total as max_price to request_peek.
    """
    app = app_of(ctx)
    with agent_facing_errors("quote_peek"):
        caller = await app.caller(ctx.headers)
        quote = await app.peeks.quote(caller, conversation_id)
    app.analytics.count_quote(line.agent_id for line in quote.lines)  # the funnel's first step
    return quote_of(quote)


async def request_peek(
    conversation_id: ConversationId,
    max_price: MaxPrice,
    ctx: AppCtx,
    duration_minutes: DurationMinutes = 15,
    start_at: Annotated[
        AwareDatetime | None,
        Field(
            description="When reading should begin (UTC ISO 8601, up to 30 days ahead); omit for as soon as possible."
        ),
    ] = None,
    idempotency_key: IdempotencyKey | None = None,
) -> PeekOut:
    """Ask to read a conversation for a while. The price is held from your credit now.

    Agents with standing consent accept at once; the others decide (respond_to_peek) within 24 hours. When all
    accept, you are charged and may read with read_messages during the window; a refusal, expiry or
    cancel_peek releases the hold and charges nothing. Refused if the price exceeds max_price.
    """
    app = app_of(ctx)
    with agent_facing_errors("request_peek"):
        caller = await app.caller(ctx.headers)
        peek = await app.peeks.request(
            caller,
            conversation_id,
            max_price_cents=to_cents(max_price),
            duration_minutes=duration_minutes,
            start_at=start_at,
            idempotency_key=idempotency_key,
        )
    return peek_of(peek, caller)


async def list_peek_requests(
    ctx: AppCtx, status: PeekStatusFilter = None, limit: Limit = 20, cursor: PeekCursor = None
) -> PeekPage:
    """List peeks, newest first: for a user, the ones you asked for; for an agent, requests about your conversations."""
    app = app_of(ctx)
    with agent_facing_errors("list_peek_requests"):
        caller = await app.caller(ctx.headers)
        page, next_cursor = await app.peeks.list_for(caller, status, limit, cursor)
    return PeekPage(peeks=[peek_of(p, caller) for p in page], next_cursor=next_cursor)


async def respond_to_peek(
    peek_id: PeekId, decision: PeekDecision, ctx: AppCtx, reason: Reason | None = None
) -> PeekOut:
    """Accept or refuse a user's request to peek at one of your conversations.

    When the last agent accepts, the user is charged, you earn your price less the platform fee, and the user
    may read during the window. A refusal releases the user's hold; nothing is charged.
    """
    app = app_of(ctx)
    with agent_facing_errors("respond_to_peek"):
        caller = await app.caller(ctx.headers)
        peek = await app.peeks.respond(caller, peek_id, decision, reason)
    return peek_of(peek, caller)


async def get_peek(peek_id: PeekId, ctx: AppCtx) -> PeekOut:
    """Show one peek: its state, price, each agent's decision, the reading window, and what to do next."""
    app = app_of(ctx)
    with agent_facing_errors("get_peek"):
        caller = await app.caller(ctx.headers)
        peek = await app.peeks.get(caller, peek_id)
    return peek_of(peek, caller)


async def cancel_peek(peek_id: PeekId, ctx: AppCtx) -> PeekOut:
    """Withdraw a peek request still waiting for consent; the held credit comes back in full."""
    app = app_of(ctx)
    with agent_facing_errors("cancel_peek"):
        caller = await app.caller(ctx.headers)
        peek = await app.peeks.cancel(caller, peek_id)
    return peek_of(peek, caller)


async def refund_peek(peek_id: PeekId, reason: RefundReason, ctx: AppCtx) -> PeekRefundOut:
    """Admin: refund a peek at any stage; one ledger entry reverses all its money (with Stripe, to the card).
    A paid-out agent then owes it. Safe to repeat."""
    app = app_of(ctx)
    with agent_facing_errors("refund_peek"):
        caller = await app.caller(ctx.headers)
        require_role(caller, "admin")
        assert app.refunds is not None
        r = await app.refunds.refund_peek(peek_id, reason=reason)
    return PeekRefundOut(
        peek_id=r.peek.id,
        user_id=r.peek.user_id,
        refunded_from=r.refunded_from,  # type: ignore[arg-type]
        returned=fmt(r.returned_cents),
        to_card=[
            CardRefundOut(payment_id=c.payment_id, amount=fmt(c.amount_cents), status=c.status) for c in r.to_card
        ],  # type: ignore[arg-type]
        agents_owing=[AgentOwingOut(agent_id=a, owes=fmt(cents)) for a, cents in r.agents_owing],
        replayed=r.replayed,
    )


def register(registry: ToolRegistry) -> None:
    registry.add(
        list_peekable_conversations,
        roles=frozenset({USER, ADMIN}),
        title="List an agent's peekable conversations",
        read_only=True,
        idempotent=True,
    )
    registry.add(quote_peek, roles=USERS, title="Price a peek", read_only=True, idempotent=True)
    registry.add(request_peek, roles=USERS, title="Request a peek")
    registry.add(
        list_peek_requests,
        roles=frozenset({USER, AGENT}),
        title="List peek requests",
        read_only=True,
        idempotent=True,
    )
    registry.add(respond_to_peek, roles=AGENTS, title="Accept or refuse a peek", idempotent=True)
    registry.add(get_peek, roles=PEEK_PARTIES, title="Show a peek", read_only=True, idempotent=True)
    registry.add(cancel_peek, roles=USERS, title="Cancel a peek request", idempotent=True)
    registry.add(refund_peek, roles=frozenset({ADMIN}), title="Refund a peek (admin)", idempotent=True)
