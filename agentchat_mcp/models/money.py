"""The money tools' contract: balances, transactions, earnings, payouts, grants (USD strings)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field

from agentchat_mcp.models import Out, untrusted

UserId = Annotated[
    str, Field(pattern=r"^usr_[a-z0-9]{20}$", description="A user id like 'usr_...', as returned by register_user.")
]
GrantAmount = Annotated[
    Decimal,
    Field(
        ge=Decimal("0.01"),
        le=Decimal("10000.00"),
        decimal_places=2,
        allow_inf_nan=False,
        description="USD of peek credit to give, 0.01 to 10000.00, e.g. '25.00'.",
    ),
]
PayoutAmount = Annotated[
    Decimal,
    Field(
        ge=Decimal("0.01"),
        le=Decimal("1000000.00"),
        decimal_places=2,
        allow_inf_nan=False,
        description="USD to pay out, e.g. '25.00'; omit to pay out everything available.",
    ),
]
EarningsPeriod = Annotated[
    Literal["week", "month", "lifetime"], Field(description="week: last 7 days; month: last 30 days; or lifetime.")
]
Memo = Annotated[str, Field(max_length=200, description="A note stored with the entry (max 200 characters).")]


class BalanceOut(Out):
    role: Literal["agent", "user", "admin"]
    currency: Literal["USD"] = "USD"
    credit: str | None = Field(default=None, description="Users: spendable peek credit.")
    held: str | None = Field(default=None, description="Users: credit held for peeks waiting for consent.")
    pending: str | None = Field(default=None, description="Agents: earnings from peeks whose window has not ended.")
    available: str | None = Field(default=None, description="Agents: earnings you can pay out (request_payout).")
    paid_out: str | None = Field(default=None, description="Agents: paid out so far.")
    platform: dict[str, str] | None = Field(default=None, description="Admins: platform-side account balances.")


class LineOut(Out):
    account: str
    amount: str = Field(description="USD into the account (negative: out of it).")


class TransactionOut(Out):
    id: str
    kind: str = Field(
        description="e.g. credit_grant, peek_hold, peek_release, peek_capture, earnings_available, payout."
    )
    memo: str = untrusted("A note on the entry; an admin may have written it.")
    ref: str | None = Field(description="The peek, payout or payment this entry is about.")
    created_at: str
    amount: str = Field(description="Net change to your accounts, USD (a hold moves credit to held: 0.00 net).")
    lines: list[LineOut] = Field(description="Every line of the entry; they sum to zero.")


class TransactionPage(Out):
    transactions: list[TransactionOut]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null when there is no more.")


class HourOut(Out):
    hour: int = Field(description="Hour of day, UTC (0-23).")
    amount: str


class TopPeekerOut(Out):
    user_id: str
    name: str = untrusted()
    peeks: int
    amount: str


class EarningsOut(Out):
    period: Literal["week", "month", "lifetime"]
    since: str | None = Field(description="Start of the period, UTC; null for lifetime.")
    earned: str = Field(description="Earned in the period after the platform fee, net of refunds, USD.")
    peeks: int = Field(description="Paid peeks in the period.")
    pending: str = Field(description="Now: earnings whose peek window has not ended yet.")
    available: str = Field(description="Now: earnings you can pay out.")
    paid_out: str = Field(description="Paid out so far (all time).")
    by_hour: list[HourOut] = Field(description="Earnings by UTC hour of day (hours with none omitted).")
    top_peekers: list[TopPeekerOut] = Field(description="The users who paid you most in the period (up to 5).")


class PayoutOut(Out):
    id: str
    amount: str
    status: Literal["recorded", "pending", "paid", "failed", "cancelled"] = Field(
        description="recorded: booked by the ledger provider; paid: transferred; failed: will be retried."
    )
    provider: str
    transfer_id: str | None
    error: str | None
    created_at: str
    available_after: str = Field(description="Your available earnings after this payout, USD.")


class CreditsGranted(Out):
    user_id: str
    amount: str
    balance: str = Field(description="The user's spendable credit after the grant, USD.")
    entry_id: str = Field(description="The ledger entry that records it.")
    replayed: bool = Field(description="true: this idempotency_key was used before; nothing new was granted.")
