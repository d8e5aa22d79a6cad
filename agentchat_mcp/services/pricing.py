"""Peek prices: what each agent charges, the platform fee, and what pays (credit, pack, subscription).

Packs and subscriptions plug in as `EntitlementProvider`s (the payments package implements them and
registers them in `Pricing.providers` under their cover source);
this module only asks them, read-only, whether they would cover an agent's share. The peek
service consumes the cover in the same transaction as the hold, and restores it when the hold
is released.

Fee rounding: the fee is rounded down to the cent, so an agent never earns less than
price * (100 - fee%) / 100.

A share paid by a pack or subscription (a `Cover`) brings in the unit the user paid for it, which
may be less than the agent's price now (a pack's discount; a subscription's price locked when it
was bought, however the agent's price moved since). `covered_share` prices it: the agent earns what
a credit peek would pay it, but never more than the unit; the platform keeps the rest, never below
zero. So no peek is ever paid out of the platform's own revenue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from sqlalchemy import and_, select

from agentchat_mcp.errors import NotFound
from agentchat_mcp.services.ledger import Ledger, user_credit
from agentchat_mcp.store import DbConnection
from agentchat_mcp.store.tables import conversations, participants, principals

PaidBy = Literal["credit", "pack", "subscription"]


@dataclass(frozen=True)
class Cover:
    """A pack or subscription paying one agent's share of one peek.

    `account`: the user's ledger account holding the prepaid value (e.g. f"user:{id}:packs"); the
    hold moves `amount_cents`, one unit's value, from it.
    """

    source: Literal["pack", "subscription"]
    ref: str
    account: str
    amount_cents: int


class EntitlementProvider(Protocol):
    """Something besides credit that can pay for an agent's share of a peek."""

    async def cover(
        self, conn: DbConnection, *, user_id: str, agent_id: str, price_cents: int, conversation_id: str
    ) -> Cover | None:
        """Read-only: the cover this user has for this agent's share, or None."""
        ...

    async def consume(self, conn: DbConnection, *, cover: Cover, peek_id: str) -> None:
        """Use the cover for `peek_id` (same transaction as the hold); Conflict if it is used up."""
        ...

    async def restore(self, conn: DbConnection, *, ref: str, peek_id: str) -> None:
        """Give the cover `ref` back: the peek was refused, expired, cancelled or refunded."""
        ...


@dataclass(frozen=True)
class QuoteLine:
    agent_id: str
    agent_name: str
    can_refuse: bool
    price_cents: int  # the agent's peek price; for a covered share, what its unit brings in (covered_share)
    fee_cents: int  # the platform's part of it
    earns_cents: int  # price less fee: what the agent earns
    paid_by: PaidBy
    charged_cents: int  # taken from the user's credit for this agent
    cover: Cover | None


@dataclass(frozen=True)
class Quote:
    conversation_id: str
    topic: str
    lines: tuple[QuoteLine, ...]
    price_cents: int  # sum of the agents' prices
    fee_cents: int
    charged_cents: int  # the total taken from credit (what max_price bounds)
    balance_cents: int | None  # the user's spendable credit now (None: not asked for)
    fee_percent: int

    @property
    def needs_consent(self) -> list[str]:
        return [line.agent_id for line in self.lines if line.can_refuse]


def fee_of(price_cents: int, fee_percent: int) -> int:
    """The platform's part of a price, rounded down to the cent."""
    return price_cents * fee_percent // 100


def covered_share(price_cents: int, fee_percent: int, paid_cents: int) -> tuple[int, int]:
    """(price, fee) of an agent's share paid by a prepaid unit worth `paid_cents`.

    The share is worth what came in for it, up to the agent's price; the agent earns its usual
    price less fee, capped at that worth; the fee is the rest (>= 0). E.g. a 500.00 agent covered
    by a 0.40 subscription unit: (40, 0), the agent earns 0.40.
    """
    worth = min(price_cents, paid_cents)
    earns = min(price_cents - fee_of(price_cents, fee_percent), worth)
    return worth, worth - earns


class Pricing:
    """Quotes: per-agent price, fee and what pays, from the current profiles and entitlements."""

    def __init__(self, ledger: Ledger, fee_percent: int) -> None:
        self._ledger = ledger
        self.fee_percent = fee_percent
        # By cover source ("subscription", "pack"), consulted in insertion order; the first cover wins.
        self.providers: dict[str, EntitlementProvider] = {}

    async def quote(
        self, conn: DbConnection, user_id: str, conversation_id: str, *, with_balance: bool = True
    ) -> Quote:
        """What peeking at this conversation costs this user now (NotFound if it is not peekable)."""
        agents = (
            await conn.execute(
                select(
                    conversations.c.topic,
                    principals.c.id,
                    principals.c.name,
                    principals.c.peek_price_cents,
                    principals.c.can_refuse,
                )
                .select_from(participants)
                .join(conversations, conversations.c.id == participants.c.conversation_id)
                .join(principals, principals.c.id == participants.c.principal_id)
                .where(
                    and_(
                        participants.c.conversation_id == conversation_id,
                        participants.c.left_at.is_(None),
                        principals.c.role == "agent",
                    )
                )
                .order_by(principals.c.id)
            )
        ).all()
        if not agents:
            raise NotFound(
                f"No conversation {conversation_id} to peek at. list_peekable_conversations(agent_id) lists an "
                "agent's conversations."
            )
        topic = agents[0].topic
        lines = []
        for agent in agents:
            price = int(agent.peek_price_cents or 0)
            cover = await self._cover(conn, user_id, agent.id, price, conversation_id)
            if cover is None:
                fee = fee_of(price, self.fee_percent)
            else:
                price, fee = covered_share(price, self.fee_percent, cover.amount_cents)
            lines.append(
                QuoteLine(
                    agent_id=agent.id,
                    agent_name=agent.name,
                    can_refuse=bool(agent.can_refuse),
                    price_cents=price,
                    fee_cents=fee,
                    earns_cents=price - fee,
                    paid_by=cover.source if cover else "credit",
                    charged_cents=0 if cover else price,
                    cover=cover,
                )
            )
        return Quote(
            conversation_id=conversation_id,
            topic=topic,
            lines=tuple(lines),
            price_cents=sum(line.price_cents for line in lines),
            fee_cents=sum(line.fee_cents for line in lines),
            charged_cents=sum(line.charged_cents for line in lines),
            balance_cents=await self._ledger.balance(conn, user_credit(user_id)) if with_balance else None,
            fee_percent=self.fee_percent,
        )

    async def _cover(
        self, conn: DbConnection, user_id: str, agent_id: str, price: int, conversation_id: str
    ) -> Cover | None:
        for provider in self.providers.values():
            cover = await provider.cover(
                conn, user_id=user_id, agent_id=agent_id, price_cents=price, conversation_id=conversation_id
            )
            if cover is not None:
                return cover
        return None
