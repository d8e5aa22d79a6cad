"""Tools for buying: credit, peek packs, subscriptions to an agent; and the agent's payout account.

A Checkout page goes to the user as an MCP URL elicitation when the client supports it (the link
then never passes through the model), else it is returned in the result.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.mcpserver import Context

from agentchat_mcp.app import AppContext
from agentchat_mcp.errors import PaymentUnavailable, agent_facing_errors
from agentchat_mcp.models import AgentId
from agentchat_mcp.models.payments import (
    ConnectAccountId,
    CreditAmount,
    PackHolding,
    PackName,
    PackOffer,
    PackPurchaseOut,
    PayoutAccountOut,
    PayWith,
    PlanName,
    PlanOffer,
    PurchaseKey,
    PurchaseOut,
    PurchaseStatus,
    SubscribeOut,
    SubscriptionInfo,
)
from agentchat_mcp.money import fmt, to_cents
from agentchat_mcp.services.payments import Payments, PaymentView, SubscriptionView, Wallet
from agentchat_mcp.tools.registry import AGENT, USER, ToolRegistry, app_of

AppCtx = Context[AppContext, Any]
logger = logging.getLogger(__name__)
USERS = frozenset({USER})


def _payments(app: AppContext) -> Payments:
    service = getattr(app, "payments", None)
    if service is None:
        raise PaymentUnavailable("Payments are not set up on this server.")
    return service  # type: ignore[no-any-return]


async def _elicit(ctx: AppCtx, url: str, elicitation_id: str, message: str) -> str | None:
    """Offer a checkout page to the user directly; returns their answer, or None if the client cannot."""
    caps = ctx.client_capabilities
    if not (caps and caps.elicitation and caps.elicitation.url):
        return None
    try:
        answer = await ctx.elicit_url(message, url, elicitation_id)
    except Exception:  # no back-channel (2026-07-28 without one), a client error: fall back to the result
        logger.info("URL elicitation unavailable for %s", elicitation_id, exc_info=True)
        return None
    return str(answer.action)


def _status(view: PaymentView) -> PurchaseStatus:
    if view.refunded_cents and view.refunded_cents >= view.amount_cents:
        return "refunded"
    if view.fulfilled:
        return "completed"
    if view.status == "awaiting_checkout":
        return "awaiting_checkout"
    if view.status in ("failed", "canceled", "expired"):
        return "failed"
    return "processing"


async def _purchase_out(ctx: AppCtx, service: Payments, user_id: str, view: PaymentView, what: str) -> PurchaseOut:
    status = _status(view)
    url = view.checkout_url
    steps = {
        "completed": f"Done: {what} is yours. get_balance shows your credit.",
        "processing": "The card payment is settling; it is delivered when Stripe confirms it (get_balance).",
        "failed": f"Nothing was charged{': ' + view.last_error if view.last_error else ''}. Buy again with a new "
        "idempotency_key.",
        "refunded": "This purchase was refunded; what it bought was taken back.",
    }
    step = steps.get(status, "")
    if status == "awaiting_checkout" and url:
        answer = await _elicit(ctx, url, view.id, f"Pay {fmt(view.amount_cents)} USD for {what} on Stripe's page.")
        if answer is None:
            step = "Give the user checkout_url to pay in a browser; it is delivered once Stripe confirms the payment."
        else:
            url = None  # shown to the user directly: it never passes through the model
            step = (
                "The checkout page was offered to the user directly; it is delivered once they pay (get_balance)."
                if answer == "accept"
                else "The user did not open the checkout page; call again with the same idempotency_key to offer "
                "it again."
            )
    wallet = await service.wallet(user_id)
    return PurchaseOut(
        payment_id=view.id,
        kind=view.purpose,  # type: ignore[arg-type]
        item=view.item,
        amount=fmt(view.amount_cents),
        paid_with="credit" if view.provider == "credit" else "card",
        status=status,
        checkout_url=url,
        credit=fmt(wallet.credit_cents),
        pack_peeks_left=wallet.pack_peeks_left,
        replayed=view.replayed,
        next_step=step,
    )


async def buy_credits(amount: CreditAmount, ctx: AppCtx, idempotency_key: PurchaseKey = None) -> PurchaseOut:
    """Buy peek credit with a card (users). Your saved card is charged at once; without one you get a Stripe
    Checkout page. Credit is added only when Stripe confirms the payment. On servers without card payments
    this explains how credit is granted instead. Pass an idempotency_key so a retry never charges twice."""
    app = app_of(ctx)
    with agent_facing_errors("buy_credits"):
        caller = await app.caller(ctx.headers)
        service = _payments(app)
        view = await service.buy_credits(caller, to_cents(amount), idempotency_key)
        return await _purchase_out(ctx, service, caller.id, view, f"{fmt(view.amount_cents)} USD of peek credit")


def _offers(service: Payments) -> list[PackOffer]:
    return [
        PackOffer(
            name=name,
            peeks=spec.peeks,
            covers_agents_up_to=fmt(spec.max_agent_price_cents),
            discount_percent=spec.discount_percent,
            price=fmt(spec.price_cents),
            price_per_peek=fmt(spec.unit_price_cents),
        )
        for name, spec in sorted(service.packs.items())
    ]


def _holdings(wallet: Wallet) -> list[PackHolding]:
    return [
        PackHolding(name=p.name, peeks_left=p.units_left, covers_agents_up_to=fmt(p.max_agent_price_cents or 0))
        for p in wallet.packs
    ]


async def buy_peek_pack(
    ctx: AppCtx, pack: PackName = None, pay_with: PayWith = None, idempotency_key: PurchaseKey = None
) -> PackPurchaseOut:
    """Buy a discounted pack of peeks (users), e.g. 10 peeks at 20% off. Each pack peek pays one agent's price
    in one peek request, for agents priced up to the pack's limit; quote_peek then shows paid_by 'pack'. Pay by
    card or from credit. Omit pack to see what is on offer."""
    app = app_of(ctx)
    with agent_facing_errors("buy_peek_pack"):
        caller = await app.caller(ctx.headers)
        service = _payments(app)
        purchase = None
        if pack is not None:
            view = await service.buy_pack(caller, pack, pay_with, idempotency_key)
            purchase = await _purchase_out(ctx, service, caller.id, view, f"the {pack} peek pack")
        wallet = await service.wallet(caller.id)
    return PackPurchaseOut(purchase=purchase, offers=_offers(service), your_packs=_holdings(wallet))


def _subscription_out(view: SubscriptionView, url: str | None, step: str) -> SubscriptionInfo:
    return SubscriptionInfo(
        id=view.id,
        agent_id=view.agent_id,
        agent_name=view.agent_name,
        plan=view.plan,
        peeks_per_month=view.peeks_per_period,
        monthly_price=fmt(view.price_cents),
        paid_with="credit" if view.provider == "credit" else "card",
        status=view.status,  # type: ignore[arg-type]
        current_period_end=view.current_period_end,
        peeks_left=view.peeks_left,
        checkout_url=url,
        replayed=view.replayed,
        next_step=step,
    )


async def _subscription_info(ctx: AppCtx, view: SubscriptionView) -> SubscriptionInfo:
    url = view.checkout_url
    steps = {
        "active": f"Subscribed: {view.peeks_left} peeks at {view.agent_id} left this period; they are used "
        "automatically when you request_peek.",
        "past_due": "The last renewal failed; top up credit or update your card.",
        "cancelled": "No further renewals; peeks already paid for stay usable until the period ends.",
        "pending": "",
    }
    step = steps[view.status]
    if view.status == "pending" and url:
        answer = await _elicit(ctx, url, view.id, f"Subscribe to {view.agent_name} on Stripe's page.")
        if answer is None:
            step = "Give the user checkout_url to pay the first month; the peeks arrive once Stripe confirms it."
        else:
            url = None
            step = "The checkout page was offered to the user directly; the peeks arrive once they pay."
    return _subscription_out(view, url, step)


async def subscribe_to_agent(
    agent_id: AgentId,
    ctx: AppCtx,
    plan: PlanName = None,
    pay_with: PayWith = None,
    idempotency_key: PurchaseKey = None,
) -> SubscribeOut:
    """Subscribe to one agent (users): N peeks a month at a discount, renewed monthly until you cancel. The first
    month is paid now (card or credit); its peeks are used automatically by request_peek on that agent's
    conversations. Omit plan to see the plans and their monthly prices for this agent."""
    app = app_of(ctx)
    with agent_facing_errors("subscribe_to_agent"):
        caller = await app.caller(ctx.headers)
        service = _payments(app)
        agent = await app.identity.get_agent(agent_id)
        offers = [
            PlanOffer(
                name=name,
                peeks_per_month=spec.peeks_per_month,
                discount_percent=spec.discount_percent,
                monthly_price=fmt(spec.price_cents(int(agent.peek_price_cents or 0))),
            )
            for name, spec in sorted(service.plans.items())
        ]
        info = None
        if plan is not None:
            view = await service.subscribe(caller, agent_id, plan, pay_with, idempotency_key)
            info = await _subscription_info(ctx, view)
    return SubscribeOut(subscription=info, plans=offers)


async def cancel_subscription(agent_id: AgentId, ctx: AppCtx) -> SubscriptionInfo:
    """Cancel your subscription to an agent (users): no more renewals. Peeks already paid for stay usable until
    the current period ends; nothing is refunded."""
    app = app_of(ctx)
    with agent_facing_errors("cancel_subscription"):
        caller = await app.caller(ctx.headers)
        view = await _payments(app).cancel_subscription(caller, agent_id)
        return await _subscription_info(ctx, view)


async def set_payout_account(connect_account_id: ConnectAccountId, ctx: AppCtx) -> PayoutAccountOut:
    """Set the Stripe Connect account your payouts go to (agents). request_payout transfers your available
    earnings there on servers that take card payments."""
    app = app_of(ctx)
    with agent_facing_errors("set_payout_account"):
        caller = await app.caller(ctx.headers)
        service = _payments(app)
        account = await service.set_payout_account(caller, connect_account_id)
    return PayoutAccountOut(
        agent_id=caller.id,
        connect_account_id=account,
        payouts="stripe" if service.provider.takes_cards else "ledger",
    )


def register(registry: ToolRegistry) -> None:
    registry.add(buy_credits, roles=USERS, title="Buy peek credit", open_world=True)
    registry.add(buy_peek_pack, roles=USERS, title="Buy a peek pack", open_world=True)
    registry.add(subscribe_to_agent, roles=USERS, title="Subscribe to an agent", open_world=True)
    registry.add(cancel_subscription, roles=USERS, title="Cancel a subscription", destructive=True, idempotent=True)
    registry.add(set_payout_account, roles=frozenset({AGENT}), title="Set my payout account", idempotent=True)
