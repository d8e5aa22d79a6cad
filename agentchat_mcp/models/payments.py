"""The payment tools' contract: buying credit, packs and subscriptions; the payout account (USD strings)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field

from agentchat_mcp.models import Out, untrusted

CreditAmount = Annotated[
    Decimal,
    Field(
        ge=Decimal("5.00"),
        le=Decimal("1000.00"),
        decimal_places=2,
        allow_inf_nan=False,
        description="USD of peek credit to buy, 5.00 to 1000.00, e.g. '20.00'.",
    ),
]
CatalogueName = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
PackName = Annotated[
    CatalogueName | None,
    Field(description="The pack to buy, e.g. 'pack-10'. Omit it to see the packs on offer (nothing is bought)."),
]
PlanName = Annotated[
    CatalogueName | None,
    Field(description="The plan, e.g. 'monthly-4'. Omit it to see the plans and their prices for this agent."),
]
PayWith = Annotated[
    Literal["card", "credit"] | None,
    Field(
        description="card: your saved card, or a Stripe Checkout page when none is saved; credit: your peek credit. "
        "Default: card where this server takes cards, else credit."
    ),
]
PurchaseKey = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Your own unique key for this purchase (letters, digits, '._:-'). Retrying with the same key "
        "never charges twice: it returns the first purchase. Strongly recommended.",
    ),
]
ConnectAccountId = Annotated[
    str,
    Field(
        pattern=r"^acct_[A-Za-z0-9]{6,60}$",
        description="Your Stripe Connect account id, 'acct_...': payouts are transferred to it.",
    ),
]

PurchaseStatus = Literal["completed", "awaiting_checkout", "processing", "failed", "refunded"]


class PurchaseOut(Out):
    payment_id: str = Field(description="This purchase's id.")
    kind: Literal["credits", "pack", "subscription"]
    item: str | None = Field(description="The pack or plan bought; null for credit.")
    amount: str = Field(description="Price, USD.")
    paid_with: Literal["card", "credit"]
    status: PurchaseStatus = Field(
        description="completed: paid and delivered; awaiting_checkout: pay on the checkout page; processing: the "
        "card payment is still settling; failed: nothing was charged; refunded: paid back."
    )
    checkout_url: str | None = Field(
        description="A Stripe Checkout page to open in a browser, when no card is saved and the page was not "
        "already shown to the user directly. Delivery happens when Stripe confirms the payment, not when the page "
        "says done."
    )
    credit: str = Field(description="Your spendable peek credit now, USD.")
    pack_peeks_left: int = Field(description="Peeks left in all your packs now.")
    replayed: bool = Field(description="true: this idempotency_key was used before; this is the first purchase.")
    next_step: str = Field(description="What to do now.")


class PackOffer(Out):
    name: str
    peeks: int = Field(description="Peeks in the pack; one peek covers one agent's price in one peek request.")
    covers_agents_up_to: str = Field(description="A pack peek covers agents whose peek price is at most this, USD.")
    discount_percent: int
    price: str = Field(description="USD for the whole pack.")
    price_per_peek: str


class PackHolding(Out):
    name: str
    peeks_left: int
    covers_agents_up_to: str


class PackPurchaseOut(Out):
    purchase: PurchaseOut | None = Field(description="What was bought; null when you only asked for the offers.")
    offers: list[PackOffer] = Field(description="The packs on offer on this server.")
    your_packs: list[PackHolding] = Field(description="Your packs with peeks left.")


class PlanOffer(Out):
    name: str
    peeks_per_month: int
    discount_percent: int
    monthly_price: str = Field(description="USD a month for this agent (its peek price less the discount, times N).")


class SubscriptionInfo(Out):
    id: str
    agent_id: str
    agent_name: str = untrusted()
    plan: str
    peeks_per_month: int
    monthly_price: str
    paid_with: Literal["card", "credit"]
    status: Literal["pending", "active", "past_due", "cancelled"] = Field(
        description="pending: waiting for the first payment (checkout); active; past_due: a renewal failed "
        "(top up credit or update the card); cancelled: no renewals (paid peeks stay until the period ends)."
    )
    current_period_end: str | None = Field(description="UTC; peeks of this period are usable until then.")
    peeks_left: int = Field(description="Peeks left in the current period.")
    checkout_url: str | None = Field(description="Pay the first month here (when no card is saved).")
    replayed: bool = False
    next_step: str


class SubscribeOut(Out):
    subscription: SubscriptionInfo | None = Field(description="null when you only asked for the plans.")
    plans: list[PlanOffer] = Field(description="The plans for this agent and their monthly prices.")


class PayoutAccountOut(Out):
    agent_id: str
    connect_account_id: str
    payouts: Literal["stripe", "ledger"] = Field(
        description="stripe: request_payout transfers to this account; ledger: payouts are recorded for the "
        "operator to pay by hand (this server takes no card payments)."
    )
