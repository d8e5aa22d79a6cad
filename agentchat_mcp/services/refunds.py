"""Refunding a peek (admin tool `refund_peek`, CLI `agentchat-mcp peeks refund`).

One write transaction: `Peeks.refund_in` posts one entry reversing every ledger line tied to the
peek (the user's hold or charge, the agents' pending or available earnings, the platform fee, and
any referral commission posted about the peek), and the peek becomes `refunded`. A second refund
is a replay: nothing new is written.

Stripe mode (the provider takes cards): the credit the refund gave back goes on to the user's card
payments (credit top-ups, newest first, up to what is left of each) in the same transaction: an
entry `peek:{id}:to_card:{payment}` moves it from `user:{id}:credit` to `external:clearing`, and the
payment's refunded total grows, so Stripe's later `charge.refunded` event finds nothing left to
reverse. Stripe is called after the commit (never inside a transaction); each call first reads the
charge's refunded total, so a replay after a crash or an unreachable Stripe sends only what Stripe
has not refunded yet. Credit that came from admin grants, and prepaid units (packs,
subscriptions), go back where they came from and stay on the platform.

An agent already paid out for the peek owes it: its available earnings go below zero, future
earnings settle it, and `request_payout` refuses until they have (services/earnings.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import and_, desc, select, update

from agentchat_mcp import clock
from agentchat_mcp.errors import InvalidInput, PaymentUnavailable
from agentchat_mcp.services.ledger import EXTERNAL_CLEARING, Ledger, Line, agent_available, user_credit
from agentchat_mcp.services.payments import Payments
from agentchat_mcp.services.peeks import Peek, Peeks, Refunded
from agentchat_mcp.store import DbConnection, Store
from agentchat_mcp.store.tables import payments, peek_consents

logger = logging.getLogger(__name__)

TO_CARD = "to_card"


@dataclass(frozen=True)
class CardRefund:
    """Credit sent back to one card payment: `sent` once Stripe has it, else `pending` (refund again)."""

    payment_id: str
    amount_cents: int
    status: str


@dataclass(frozen=True)
class PeekRefund:
    peek: Peek
    replayed: bool
    refunded_from: str  # awaiting_consent (before capture) | active | completed | refunded (a replay)
    returned_cents: int  # back to the user's credit, packs or subscriptions
    to_card: tuple[CardRefund, ...]
    agents_owing: tuple[tuple[str, int], ...]  # (agent id, cents owed) for agents now below zero


class Refunds:
    """Admin refunds of peeks, over the peek service and (in stripe mode) the card provider."""

    def __init__(self, store: Store, ledger: Ledger, peeks: Peeks, payments_service: Payments | None) -> None:
        self._store = store
        self._ledger = ledger
        self._peeks = peeks
        self._payments = payments_service

    @property
    def _takes_cards(self) -> bool:
        return self._payments is not None and self._payments.provider.takes_cards

    async def refund_peek(self, peek_id: str, *, reason: str) -> PeekRefund:
        """Refund a peek at any stage; safe to repeat (a replay also resends a card refund Stripe lacks)."""
        reason = reason.strip()
        if not reason:
            raise InvalidInput("reason must say why the peek is refunded (it is shown to the user).")
        async with self._store.write() as conn:
            done = await self._peeks.refund_in(conn, peek_id, reason=reason)
            if not done.replayed and self._takes_cards:
                await self._book_to_card(conn, peek_id, done)
            owing = await self._agents_owing(conn, peek_id)
            booked = await self._booked_to_card(conn, peek_id)
        to_card = tuple([await self._send(peek_id, payment_id, cents) for payment_id, cents in booked])
        user_id = done.peek.user_id
        returned = sum(
            x.amount_cents
            for x in done.lines
            if x.account.startswith(f"user:{user_id}:") and not x.account.endswith(":held") and x.amount_cents > 0
        )
        return PeekRefund(
            peek=done.peek,
            replayed=done.replayed,
            refunded_from=done.was,
            returned_cents=returned,
            to_card=to_card,
            agents_owing=owing,
        )

    async def _book_to_card(self, conn: DbConnection, peek_id: str, done: Refunded) -> None:
        """Move the credit just given back on to the user's card payments (newest first)."""
        user_id = done.peek.user_id
        credit_back = sum(x.amount_cents for x in done.lines if x.account == user_credit(user_id))
        left = min(credit_back, await self._ledger.balance(conn, user_credit(user_id)))
        if left <= 0:
            return
        refundable = await conn.execute(
            select(payments)
            .where(
                and_(
                    payments.c.user_id == user_id,
                    payments.c.purpose == "credits",
                    payments.c.provider == "stripe",
                    payments.c.fulfilled_at.is_not(None),
                    payments.c.intent_id.is_not(None),
                )
            )
            .order_by(desc(payments.c.created_at), desc(payments.c.id))
        )
        for row in refundable.all():
            room = row.amount_cents - max(row.refunded_cents, row.reversed_cents)
            cents = min(left, room)
            if cents <= 0:
                continue
            await self._ledger.post(
                conn,
                idempotency_key=f"peek:{peek_id}:{TO_CARD}:{row.id}",
                kind="peek_refund_to_card",
                lines=[Line(user_credit(user_id), -cents), Line(EXTERNAL_CLEARING, cents)],
                memo=f"peek refund sent back to the card of payment {row.id}",
                ref=peek_id,
            )
            refunded = row.refunded_cents + cents
            await conn.execute(
                update(payments)
                .where(payments.c.id == row.id)
                .values(
                    refunded_cents=refunded,
                    reversed_cents=row.reversed_cents + cents,
                    status="refunded" if refunded >= row.amount_cents else row.status,
                    updated_at=clock.now_iso(),
                )
            )
            left -= cents
            if left == 0:
                return

    async def _booked_to_card(self, conn: DbConnection, peek_id: str) -> list[tuple[str, int]]:
        """(payment id, cents) of the card refunds this peek's refund booked."""
        prefix = f"peek:{peek_id}:{TO_CARD}:"
        return [
            (key.removeprefix(prefix), sum(x.amount_cents for x in lines if x.account == EXTERNAL_CLEARING))
            for key, lines in await self._ledger.entries_by_key_prefix(conn, prefix)
        ]

    async def _send(self, peek_id: str, payment_id: str, cents: int) -> CardRefund:
        """Make Stripe hold what we booked: send what its charge has not refunded yet (none: already sent)."""
        assert self._payments is not None
        provider = self._payments.provider
        async with self._store.read() as conn:
            row = (await conn.execute(select(payments).where(payments.c.id == payment_id))).one()
        try:
            intent = await provider.retrieve_intent(row.intent_id)
            missing = min(cents, row.refunded_cents - intent.amount_refunded_cents)
            if missing > 0:
                await provider.refund(
                    intent_id=row.intent_id,
                    amount_cents=missing,
                    idempotency_key=f"peek:{peek_id}:{TO_CARD}:{payment_id}:{intent.amount_refunded_cents}",
                )
        except PaymentUnavailable:
            logger.warning("card refund of peek %s to payment %s not sent yet", peek_id, payment_id)
            return CardRefund(payment_id, cents, "pending")
        return CardRefund(payment_id, cents, "sent")

    async def _agents_owing(self, conn: DbConnection, peek_id: str) -> tuple[tuple[str, int], ...]:
        agents = (
            (await conn.execute(select(peek_consents.c.agent_id).where(peek_consents.c.peek_id == peek_id)))
            .scalars()
            .all()
        )
        owing: list[tuple[str, int]] = []
        for agent_id in sorted(agents):
            available = await self._ledger.balance(conn, agent_available(agent_id))
            if available < 0:
                owing.append((agent_id, -available))
        return tuple(owing)
