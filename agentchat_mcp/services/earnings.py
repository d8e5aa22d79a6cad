"""Balances, transactions, agent earnings, payouts and admin credit grants, all read from the ledger.

Payouts: `request_payout` locks the amount in the same transaction that records the payout (agent
available -> agent payouts), so the same money cannot be paid twice. With no `sender` (the ledger
provider) the payout is simply recorded. With a sender (Stripe Connect, from the payments
package) the payout starts `pending`, the transfer is made after commit with the idempotency key
`payout:{id}`, and ends `paid`, or `failed` (retryable with `retry_payout`: same key, so a retry
after a lost answer cannot pay twice) or is given back with `cancel_payout`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, Protocol

from sqlalchemy import and_, insert, select, update

from agentchat_mcp import clock
from agentchat_mcp.crypto import new_id
from agentchat_mcp.errors import Conflict, InvalidInput, NotFound, PaymentError
from agentchat_mcp.money import fmt
from agentchat_mcp.services.identity import Caller, require_role
from agentchat_mcp.services.ledger import (
    EXTERNAL_CLEARING,
    Entry,
    Ledger,
    Line,
    agent_available,
    agent_payouts,
    agent_pending,
    user_credit,
    user_held,
)
from agentchat_mcp.services.peeks import Peeks
from agentchat_mcp.store import DbConnection, Store
from agentchat_mcp.store.tables import ledger_entries, ledger_lines, payouts, peeks, principals

Period = Literal["week", "month", "lifetime"]
PERIODS: dict[str, timedelta | None] = {"week": timedelta(days=7), "month": timedelta(days=30), "lifetime": None}
PAYOUT_MINIMUM_CENTS = 1000
MAX_GRANT_CENTS = 1_000_000
EARNING_KINDS = ("peek_capture", "peek_refund")


class PayoutSender(Protocol):
    """Moves a recorded payout to the outside world (e.g. a Stripe Connect transfer)."""

    async def send(
        self, *, payout_id: str, agent_id: str, destination: str, amount_cents: int, idempotency_key: str
    ) -> str:
        """Make the transfer; returns its id. PaymentError when it failed (the payout may be retried)."""
        ...


@dataclass(frozen=True)
class Balance:
    role: str
    accounts: dict[str, int]  # short name -> cents (credit, held | pending, available, paid_out | revenue ...)


@dataclass(frozen=True)
class HourTotal:
    hour: int
    cents: int


@dataclass(frozen=True)
class TopPeeker:
    user_id: str
    name: str
    peeks: int
    cents: int


@dataclass(frozen=True)
class Earnings:
    period: str
    since: str | None
    earned_cents: int
    peeks: int
    pending_cents: int
    available_cents: int
    paid_out_cents: int
    by_hour: tuple[HourTotal, ...]
    top_peekers: tuple[TopPeeker, ...]


@dataclass(frozen=True)
class Payout:
    id: str
    agent_id: str
    amount_cents: int
    status: str
    provider: str
    transfer_id: str | None
    last_error: str | None
    created_at: str
    available_after_cents: int


@dataclass(frozen=True)
class Grant:
    user_id: str
    amount_cents: int
    balance_cents: int
    entry_id: int
    replayed: bool


class EarningsService:
    """Everything about money that is not a peek's own lifecycle."""

    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        peeks_service: Peeks,
        *,
        payout_minimum_cents: int = PAYOUT_MINIMUM_CENTS,
        provider: str = "ledger",
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._peeks = peeks_service
        self.payout_minimum_cents = payout_minimum_cents
        self.provider = provider
        self.sender: PayoutSender | None = None  # set by the payments package in stripe mode

    # --- balances and transactions ------------------------------------------------------------

    async def balance(self, caller: Caller) -> Balance:
        """The caller's accounts: a user's credit and held; an agent's pending, available, paid out."""
        await self._settle(caller)
        async with self._store.read() as conn:
            if caller.role == "user":
                accounts = {
                    "credit": await self._ledger.balance(conn, user_credit(caller.id)),
                    "held": await self._ledger.balance(conn, user_held(caller.id)),
                }
            elif caller.role == "agent":
                accounts = {
                    "pending": await self._ledger.balance(conn, agent_pending(caller.id)),
                    "available": await self._ledger.balance(conn, agent_available(caller.id)),
                    "paid_out": await self._ledger.balance(conn, agent_payouts(caller.id)),
                }
            else:
                found = await self._ledger.balances(conn, "platform:")
                found.update(await self._ledger.balances(conn, "external:"))
                accounts = {name.replace(":", "_"): cents for name, cents in sorted(found.items())}
        return Balance(role=caller.role, accounts=accounts)

    async def transactions(self, caller: Caller, limit: int, cursor: str | None) -> tuple[list[Entry], str | None]:
        """Journal entries touching the caller's accounts (an admin: the platform's), newest first."""
        await self._settle(caller)
        prefix = "platform:" if caller.role == "admin" else f"{caller.role}:{caller.id}:"
        async with self._store.read() as conn:
            return await self._ledger.entries_for(conn, prefix, limit, cursor)

    async def _settle(self, caller: Caller) -> None:
        if caller.role == "user":
            await self._peeks.settle_due(user_id=caller.id)
        elif caller.role == "agent":
            await self._peeks.settle_due(agent_id=caller.id)

    # --- earnings ---------------------------------------------------------------------------

    async def earnings(self, caller: Caller, period: Period) -> Earnings:
        """What the agent earned in the period (net of refunds), by UTC hour of day and by peeker."""
        require_role(caller, "agent")
        if period not in PERIODS:
            raise InvalidInput("period must be week, month or lifetime.")
        await self._settle(caller)
        span = PERIODS[period]
        since = clock.iso(clock.now() - span) if span else None
        accounts = [agent_pending(caller.id), agent_available(caller.id)]
        stmt = (
            select(
                ledger_entries.c.created_at, ledger_lines.c.amount_cents, peeks.c.id, peeks.c.user_id, principals.c.name
            )
            .select_from(ledger_lines)
            .join(ledger_entries, ledger_entries.c.id == ledger_lines.c.entry_id)
            .join(peeks, peeks.c.id == ledger_entries.c.ref)
            .join(principals, principals.c.id == peeks.c.user_id)
            .where(and_(ledger_lines.c.account.in_(accounts), ledger_entries.c.kind.in_(EARNING_KINDS)))
        )
        if since:
            stmt = stmt.where(ledger_entries.c.created_at >= since)
        async with self._store.read() as conn:
            rows = (await conn.execute(stmt)).all()
            pending = await self._ledger.balance(conn, agent_pending(caller.id))
            available = await self._ledger.balance(conn, agent_available(caller.id))
            paid = await self._ledger.balance(conn, agent_payouts(caller.id))
        hours = [0] * 24
        by_user: dict[str, tuple[str, set[str], int]] = {}
        for r in rows:
            hours[clock.parse(r.created_at).hour] += r.amount_cents
            name, seen, cents = by_user.get(r.user_id, (r.name, set(), 0))
            seen.add(r.id)
            by_user[r.user_id] = (name, seen, cents + r.amount_cents)
        peek_count = len({r.id for r in rows if r.amount_cents > 0}) - len({r.id for r in rows if r.amount_cents < 0})
        top = sorted(by_user.items(), key=lambda kv: (-kv[1][2], kv[0]))[:5]
        return Earnings(
            period=period,
            since=since,
            earned_cents=sum(r.amount_cents for r in rows),
            peeks=max(peek_count, 0),
            pending_cents=pending,
            available_cents=available,
            paid_out_cents=paid,
            by_hour=tuple(HourTotal(hour=h, cents=c) for h, c in enumerate(hours) if c),
            top_peekers=tuple(
                TopPeeker(user_id=uid, name=name, peeks=len(seen), cents=cents)
                for uid, (name, seen, cents) in top
                if cents > 0
            ),
        )

    # --- payouts ----------------------------------------------------------------------------

    async def request_payout(
        self, caller: Caller, amount_cents: int | None, idempotency_key: str | None = None
    ) -> Payout:
        """Pay out available earnings (all of them by default); at least the payout minimum."""
        require_role(caller, "agent")
        await self._settle(caller)
        payout_id = new_id("pay")
        now = clock.now_iso()
        async with self._store.write() as conn:
            if idempotency_key:
                first = (
                    await conn.execute(
                        select(payouts.c.id, payouts.c.amount_cents).where(
                            and_(
                                payouts.c.agent_id == caller.id,
                                payouts.c.id == _payout_id_for(caller.id, idempotency_key),
                            )
                        )
                    )
                ).first()
                if first is not None:
                    if amount_cents is not None and amount_cents != first.amount_cents:
                        raise Conflict("idempotency key reused with other parameters.")
                    return await self._payout(conn, first.id)
                payout_id = _payout_id_for(caller.id, idempotency_key)
            available = await self._ledger.balance(conn, agent_available(caller.id))
            if available < 0:  # a peek refunded after it was paid out: owed, settled by future earnings
                raise Conflict(
                    f"You owe {fmt(-available)} for refunded peeks you had already been paid for, so payouts wait "
                    "until new earnings cover it. get_balance shows your available earnings."
                )
            amount = available if amount_cents is None else amount_cents
            if amount < self.payout_minimum_cents:
                raise InvalidInput(
                    f"The payout minimum is {fmt(self.payout_minimum_cents)}; you asked for {fmt(amount)} "
                    f"and have {fmt(available)} available (pending earnings become available when a peek window ends)."
                )
            destination = None
            if self.sender is not None:
                destination = (
                    await conn.execute(select(principals.c.connect_account_id).where(principals.c.id == caller.id))
                ).scalar()
                if not destination:
                    raise InvalidInput("Payouts go to a connected Stripe account; set your connect_account_id first.")
            await self._ledger.post(
                conn,
                idempotency_key=f"payout:{payout_id}",
                kind="payout",
                lines=[Line(agent_available(caller.id), -amount), Line(agent_payouts(caller.id), amount)],
                memo="payout",
                ref=payout_id,
            )
            await conn.execute(
                insert(payouts).values(
                    id=payout_id,
                    agent_id=caller.id,
                    amount_cents=amount,
                    status="recorded" if self.sender is None else "pending",
                    provider=self.provider,
                    destination=destination,
                    created_at=now,
                    updated_at=now,
                )
            )
        if self.sender is not None:
            return await self.retry_payout(payout_id)
        async with self._store.read() as conn:
            return await self._payout(conn, payout_id)

    async def retry_payout(self, payout_id: str) -> Payout:
        """Send a pending or failed payout (again); the same idempotency key every time."""
        async with self._store.read() as conn:
            row = (await conn.execute(select(payouts).where(payouts.c.id == payout_id))).first()
        if row is None:
            raise NotFound(f"No payout {payout_id}.")
        if row.status not in ("pending", "failed") or self.sender is None:
            async with self._store.read() as conn:
                return await self._payout(conn, payout_id)
        status, transfer_id, error = "paid", None, None
        try:
            transfer_id = await self.sender.send(
                payout_id=payout_id,
                agent_id=row.agent_id,
                destination=row.destination or "",
                amount_cents=row.amount_cents,
                idempotency_key=f"payout:{payout_id}",
            )
        except PaymentError as exc:
            status, error = "failed", str(exc)
        async with self._store.write() as conn:
            await conn.execute(
                update(payouts)
                .where(and_(payouts.c.id == payout_id, payouts.c.status.in_(["pending", "failed"])))
                .values(
                    status=status,
                    transfer_id=transfer_id,
                    last_error=error,
                    attempts=payouts.c.attempts + 1,
                    updated_at=clock.now_iso(),
                )
            )
            return await self._payout(conn, payout_id)

    async def cancel_payout(self, payout_id: str) -> Payout:
        """Give a failed payout's amount back to the agent's available earnings."""
        async with self._store.write() as conn:
            row = (await conn.execute(select(payouts).where(payouts.c.id == payout_id))).first()
            if row is None:
                raise NotFound(f"No payout {payout_id}.")
            if row.status == "cancelled":
                return await self._payout(conn, payout_id)
            if row.status != "failed":
                raise Conflict(f"Payout {payout_id} is {row.status}; only a failed payout can be cancelled.")
            await self._ledger.post(
                conn,
                idempotency_key=f"payout:{payout_id}:cancel",
                kind="payout_cancelled",
                lines=[
                    Line(agent_payouts(row.agent_id), -row.amount_cents),
                    Line(agent_available(row.agent_id), row.amount_cents),
                ],
                memo="payout cancelled",
                ref=payout_id,
            )
            await conn.execute(
                update(payouts).where(payouts.c.id == payout_id).values(status="cancelled", updated_at=clock.now_iso())
            )
            return await self._payout(conn, payout_id)

    async def _payout(self, conn: DbConnection, payout_id: str) -> Payout:
        row = (await conn.execute(select(payouts).where(payouts.c.id == payout_id))).one()
        return Payout(
            id=row.id,
            agent_id=row.agent_id,
            amount_cents=row.amount_cents,
            status=row.status,
            provider=row.provider,
            transfer_id=row.transfer_id,
            last_error=row.last_error,
            created_at=row.created_at,
            available_after_cents=await self._ledger.balance(conn, agent_available(row.agent_id)),
        )

    # --- grants -----------------------------------------------------------------------------

    async def grant(
        self, user_id: str, amount_cents: int, *, memo: str = "", idempotency_key: str | None = None
    ) -> Grant:
        """Give a user peek credit from outside (admin tool, `credits grant` CLI)."""
        if not 1 <= amount_cents <= MAX_GRANT_CENTS:
            raise InvalidInput(f"amount must be 0.01 to {fmt(MAX_GRANT_CENTS)}.")
        key = f"grant:{idempotency_key}" if idempotency_key else f"grant:{new_id('grt')}"
        async with self._store.write() as conn:
            role = (await conn.execute(select(principals.c.role).where(principals.c.id == user_id))).scalar()
            if role != "user":
                raise NotFound(f"No user {user_id}. Credits are for user accounts (ids start with usr_).")
            posted = await self._ledger.post(
                conn,
                idempotency_key=key,
                kind="credit_grant",
                lines=[Line(EXTERNAL_CLEARING, -amount_cents), Line(user_credit(user_id), amount_cents)],
                memo=memo or "credit granted by an admin",
                ref=user_id,
            )
            balance = await self._ledger.balance(conn, user_credit(user_id))
        return Grant(
            user_id=user_id,
            amount_cents=amount_cents,
            balance_cents=balance,
            entry_id=posted.entry_id,
            replayed=posted.replayed,
        )


def _payout_id_for(agent_id: str, idempotency_key: str) -> str:
    """A stable payout id per (agent, key), so a retried request finds the first payout."""
    digest = hashlib.sha256(f"{agent_id}|{idempotency_key}".encode()).hexdigest()[:20]
    return f"pay_{digest}"
