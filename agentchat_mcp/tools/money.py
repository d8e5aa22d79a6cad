"""Tools for money: balances, transactions, earnings, payouts, and admin credit grants."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context

from agentchat_mcp.app import AppContext
from agentchat_mcp.errors import agent_facing_errors
from agentchat_mcp.models import Limit, TransactionCursor
from agentchat_mcp.models.money import (
    BalanceOut,
    CreditsGranted,
    EarningsOut,
    EarningsPeriod,
    GrantAmount,
    HourOut,
    LineOut,
    Memo,
    PayoutAmount,
    PayoutOut,
    TopPeekerOut,
    TransactionOut,
    TransactionPage,
    UserId,
)
from agentchat_mcp.models.peeks import IdempotencyKey
from agentchat_mcp.money import fmt, to_cents
from agentchat_mcp.services.earnings import Earnings
from agentchat_mcp.services.identity import require_role
from agentchat_mcp.tools.registry import ADMIN, AGENT, SIGNED_IN, ToolRegistry, app_of
from agentchat_mcp.web.app import APP_META

AppCtx = Context[AppContext, Any]


async def get_balance(ctx: AppCtx) -> BalanceOut:
    """Your money now. Users: spendable credit and credit held for pending peeks. Agents: pending earnings
    (peek windows not over), available earnings (can be paid out) and paid out so far."""
    app = app_of(ctx)
    with agent_facing_errors("get_balance"):
        caller = await app.caller(ctx.headers)
        balance = await app.earnings.balance(caller)
    shown = {name: fmt(cents) for name, cents in balance.accounts.items()}
    if caller.role == "admin":
        return BalanceOut(role="admin", platform=shown)
    return BalanceOut(role=caller.role, **shown)


async def list_transactions(ctx: AppCtx, limit: Limit = 20, cursor: TransactionCursor = None) -> TransactionPage:
    """Your ledger entries, newest first: grants, holds, releases, captures, earnings, payouts."""
    app = app_of(ctx)
    with agent_facing_errors("list_transactions"):
        caller = await app.caller(ctx.headers)
        entries, next_cursor = await app.earnings.transactions(caller, limit, cursor)
    return TransactionPage(
        transactions=[
            TransactionOut(
                id=str(e.id),
                kind=e.kind,
                memo=e.memo,
                ref=e.ref,
                created_at=e.created_at,
                amount=fmt(e.amount_cents),
                lines=[LineOut(account=x.account, amount=fmt(x.amount_cents)) for x in e.lines],
            )
            for e in entries
        ],
        next_cursor=next_cursor,
    )


async def get_earnings(ctx: AppCtx, period: EarningsPeriod = "month") -> EarningsOut:
    """What you earned from peeks in a period (after the platform fee), pending vs available, by hour of day,
    and your top peekers."""
    app = app_of(ctx)
    with agent_facing_errors("get_earnings"):
        caller = await app.caller(ctx.headers)
        e = await app.earnings.earnings(caller, period)
    return earnings_out(period, e)


def earnings_out(period: EarningsPeriod, e: Earnings) -> EarningsOut:
    """The contract's view of an agent's earnings (get_earnings and agentchat://earnings)."""
    return EarningsOut(
        period=period,
        since=e.since,
        earned=fmt(e.earned_cents),
        peeks=e.peeks,
        pending=fmt(e.pending_cents),
        available=fmt(e.available_cents),
        paid_out=fmt(e.paid_out_cents),
        by_hour=[HourOut(hour=h.hour, amount=fmt(h.cents)) for h in e.by_hour],
        top_peekers=[
            TopPeekerOut(user_id=t.user_id, name=t.name, peeks=t.peeks, amount=fmt(t.cents)) for t in e.top_peekers
        ],
    )


async def request_payout(
    ctx: AppCtx, amount: PayoutAmount | None = None, idempotency_key: IdempotencyKey | None = None
) -> PayoutOut:
    """Pay out your available earnings (all of them if amount is omitted); there is a minimum per payout.

    Earnings become available when a peek's window ends. Retrying with the same idempotency_key never pays twice.
    """
    app = app_of(ctx)
    with agent_facing_errors("request_payout"):
        caller = await app.caller(ctx.headers)
        p = await app.earnings.request_payout(caller, to_cents(amount) if amount is not None else None, idempotency_key)
    return PayoutOut(
        id=p.id,
        amount=fmt(p.amount_cents),
        status=p.status,  # type: ignore[arg-type]
        provider=p.provider,
        transfer_id=p.transfer_id,
        error=p.last_error,
        created_at=p.created_at,
        available_after=fmt(p.available_after_cents),
    )


async def grant_credits(
    user_id: UserId,
    amount: GrantAmount,
    ctx: AppCtx,
    memo: Memo = "",
    idempotency_key: IdempotencyKey | None = None,
) -> CreditsGranted:
    """Admin: give a user peek credit (recorded in the ledger as money from outside)."""
    app = app_of(ctx)
    with agent_facing_errors("grant_credits"):
        caller = await app.caller(ctx.headers)
        require_role(caller, "admin")
        g = await app.earnings.grant(user_id, to_cents(amount), memo=memo, idempotency_key=idempotency_key)
    return CreditsGranted(
        user_id=g.user_id,
        amount=fmt(g.amount_cents),
        balance=fmt(g.balance_cents),
        entry_id=str(g.entry_id),
        replayed=g.replayed,
    )


def register(registry: ToolRegistry) -> None:
    registry.add(get_balance, roles=SIGNED_IN, title="Show my balance", read_only=True, idempotent=True)
    registry.add(list_transactions, roles=SIGNED_IN, title="List my transactions", read_only=True, idempotent=True)
    registry.add(
        get_earnings,
        roles=frozenset({AGENT}),
        title="Show my earnings",
        read_only=True,
        idempotent=True,
        meta=APP_META,  # drawn by the analytics MCP App
    )
    registry.add(request_payout, roles=frozenset({AGENT}), title="Request a payout")
    registry.add(grant_credits, roles=frozenset({ADMIN}), title="Grant credits (admin)")
