"""Peeks paid in advance: packs and subscription periods, as `EntitlementProvider`s for pricing.

Both work the same way. What the user paid waits in a prepaid account of theirs (`user:{id}:packs`,
`user:{id}:subscriptions`) as units of `unit_value_cents` each: a pack unit is the pack's price per
peek; a subscription unit is the period's price divided by its peeks, the agent's price locked on the
day it was bought. A covered share moves one unit's value into the peek's hold, and back if the peek
is not captured. So a peek is always paid by money that came in for it: see pricing.covered_share
for what the agent earns from a unit (never more than the unit), and the platform never pays a
peek out of its own revenue.

A period's units not used by its end are the platform's (`expire_lapsed`); a refunded purchase takes
its unused units back (`revoke_unused`). A cover's ref is "<entitlement id>:<agent id>", so consume
and restore know which share they are about and are idempotent per (peek, agent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import and_, bindparam, insert, or_, select, update

from agentchat_mcp import clock
from agentchat_mcp.crypto import new_id
from agentchat_mcp.errors import Conflict
from agentchat_mcp.services.ledger import PLATFORM_CLAWBACK, PLATFORM_REVENUE, Ledger, Line
from agentchat_mcp.services.pricing import Cover
from agentchat_mcp.store import DbConnection
from agentchat_mcp.store.tables import entitlement_uses, entitlements, participants, principals

Source = Literal["pack", "subscription"]


def user_packs(user_id: str) -> str:
    """The ledger account holding the value of a user's unused pack peeks."""
    return f"user:{user_id}:packs"


def user_subscriptions(user_id: str) -> str:
    """The ledger account holding the value of a user's unused subscription peeks (current periods)."""
    return f"user:{user_id}:subscriptions"


def prepaid_account(source: str, user_id: str) -> str:
    """Where the value of a user's unused `source` units waits."""
    return user_subscriptions(user_id) if source == "subscription" else user_packs(user_id)


@dataclass(frozen=True)
class Entitlement:
    id: str
    source: str  # pack | subscription
    name: str
    agent_id: str | None
    max_agent_price_cents: int | None
    unit_value_cents: int
    units_total: int
    units_used: int
    valid_from: str
    valid_until: str | None
    status: str  # active | revoked (refunded) | expired (period over; its unused value went to the platform)

    @property
    def units_left(self) -> int:
        return max(0, self.units_total - self.units_used)


def _entitlement(row: object) -> Entitlement:
    r = row._mapping  # type: ignore[attr-defined]
    return Entitlement(
        id=r["id"],
        source=r["source"],
        name=r["name"],
        agent_id=r["agent_id"],
        max_agent_price_cents=r["max_agent_price_cents"],
        unit_value_cents=r["unit_value_cents"],
        units_total=r["units_total"],
        units_used=r["units_used"],
        valid_from=r["valid_from"],
        valid_until=r["valid_until"],
        status=r["status"],
    )


def _live(now: Any) -> object:
    return and_(
        entitlements.c.status == "active",
        entitlements.c.units_used < entitlements.c.units_total,
        entitlements.c.valid_from <= now,
        or_(entitlements.c.valid_until.is_(None), entitlements.c.valid_until > now),
    )


def _split(ref: str) -> tuple[str, str]:
    entitlement_id, _, agent_id = ref.partition(":")
    return entitlement_id, agent_id


# Built once: a statement built per call costs more than running it (~0.3 ms here, four times per
# quote), while a module-level one reuses its memoised cache key and compiled form.
_LIVE_ANY = (
    select(entitlements)
    .where(and_(entitlements.c.user_id == bindparam("user_id"), _live(bindparam("now"))))  # type: ignore[arg-type]
    .order_by(entitlements.c.created_at, entitlements.c.id)
)
_LIVE_FROM = _LIVE_ANY.where(entitlements.c.source == bindparam("source"))


async def live_entitlements(conn: DbConnection, user_id: str, source: str | None = None) -> list[Entitlement]:
    """The user's entitlements with units left now, oldest first (the order they are used in)."""
    now = clock.now_iso()
    if source is None:
        rows = await conn.execute(_LIVE_ANY, {"user_id": user_id, "now": now})
    else:
        rows = await conn.execute(_LIVE_FROM, {"user_id": user_id, "now": now, "source": source})
    return [_entitlement(r) for r in rows]


async def for_payment(conn: DbConnection, payment_id: str) -> Entitlement | None:
    """The entitlement a payment bought, if any."""
    row = (await conn.execute(select(entitlements).where(entitlements.c.payment_id == payment_id))).first()
    return None if row is None else _entitlement(row)


async def grant(
    conn: DbConnection,
    *,
    user_id: str,
    source: str,
    name: str,
    payment_id: str,
    units: int,
    unit_value_cents: int,
    max_agent_price_cents: int | None = None,
    agent_id: str | None = None,
    subscription_id: str | None = None,
    valid_from: str | None = None,
    valid_until: str | None = None,
) -> str:
    """Record an entitlement bought by `payment_id` (once: a second grant for it returns the first)."""
    first = (await conn.execute(select(entitlements.c.id).where(entitlements.c.payment_id == payment_id))).scalar()
    if first is not None:
        return str(first)
    now = clock.now_iso()
    entitlement_id = new_id("ent")
    await conn.execute(
        insert(entitlements).values(
            id=entitlement_id,
            user_id=user_id,
            source=source,
            name=name,
            payment_id=payment_id,
            subscription_id=subscription_id,
            agent_id=agent_id,
            max_agent_price_cents=max_agent_price_cents,
            unit_value_cents=unit_value_cents,
            units_total=units,
            units_used=0,
            valid_from=valid_from or now,
            valid_until=valid_until,
            status="active",
            created_at=now,
            updated_at=now,
        )
    )
    return entitlement_id


async def revoke_unused(conn: DbConnection, payment_id: str, units: int | None = None) -> tuple[int, int]:
    """Take back up to `units` unused units (all when None) of what `payment_id` bought.

    Returns (units revoked, their value in cents). Units held by pending peeks stay theirs; one
    restored later is forfeited (see EntitlementCovers.restore).
    """
    row = (await conn.execute(select(entitlements).where(entitlements.c.payment_id == payment_id))).first()
    if row is None:
        return 0, 0
    ent = _entitlement(row)
    take = ent.units_left if units is None else min(units, ent.units_left)
    remaining = ent.units_total - take
    await conn.execute(
        update(entitlements)
        .where(entitlements.c.id == ent.id)
        .values(
            units_total=remaining,
            status="revoked" if units is None or remaining <= ent.units_used else ent.status,
            updated_at=clock.now_iso(),
        )
    )
    return take, take * ent.unit_value_cents


class EntitlementCovers:
    """Packs or subscriptions (one instance per source), pluggable into Pricing.providers."""

    def __init__(self, source: str, ledger: Ledger) -> None:
        assert source in ("pack", "subscription")
        self.source = source
        self._ledger = ledger

    async def cover(
        self, conn: DbConnection, *, user_id: str, agent_id: str, price_cents: int, conversation_id: str
    ) -> Cover | None:
        """Read-only. Packs are shared out over the conversation's agents in the quote's order, so a
        quote never promises one unit to two agents."""
        if price_cents <= 0:
            return None
        if self.source == "subscription":
            for ent in await live_entitlements(conn, user_id, "subscription"):
                if ent.agent_id == agent_id:
                    return self._cover_from(ent, user_id, agent_id)
            return None
        packs = await live_entitlements(conn, user_id, "pack")
        if not packs:
            return None
        chosen = await self._allocate(conn, user_id, conversation_id, packs)
        pack = chosen.get(agent_id)
        return None if pack is None else self._cover_from(pack, user_id, agent_id)

    def _cover_from(self, ent: Entitlement, user_id: str, agent_id: str) -> Cover:
        return Cover(
            source=self.source,  # type: ignore[arg-type]
            ref=f"{ent.id}:{agent_id}",
            account=prepaid_account(self.source, user_id),
            amount_cents=ent.unit_value_cents,
        )

    async def _allocate(
        self, conn: DbConnection, user_id: str, conversation_id: str, packs: Sequence[Entitlement]
    ) -> dict[str, Entitlement]:
        agents = (
            await conn.execute(
                select(principals.c.id, principals.c.peek_price_cents)
                .join(participants, participants.c.principal_id == principals.c.id)
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
        subscribed = {e.agent_id for e in await live_entitlements(conn, user_id, "subscription")}
        left = {p.id: p.units_left for p in packs}
        chosen: dict[str, Entitlement] = {}
        for agent in agents:
            price = int(agent.peek_price_cents or 0)
            if agent.id in subscribed or price <= 0:
                continue
            for pack in packs:
                if left[pack.id] > 0 and price <= (pack.max_agent_price_cents or 0):
                    chosen[agent.id] = pack
                    left[pack.id] -= 1
                    break
        return chosen

    async def consume(self, conn: DbConnection, *, cover: Cover, peek_id: str) -> None:
        entitlement_id, agent_id = _split(cover.ref)
        used = (
            await conn.execute(
                select(entitlement_uses.c.status).where(
                    and_(entitlement_uses.c.peek_id == peek_id, entitlement_uses.c.agent_id == agent_id)
                )
            )
        ).scalar()
        if used == "used":
            return
        now = clock.now_iso()
        took = await conn.execute(
            update(entitlements)
            .where(and_(entitlements.c.id == entitlement_id, _live(now)))  # type: ignore[arg-type]
            .values(units_used=entitlements.c.units_used + 1, updated_at=now)
        )
        if took.rowcount != 1:
            raise Conflict(f"Your {self.source} has no peeks left for this; quote_peek shows the price now.")
        if used is None:
            await conn.execute(
                insert(entitlement_uses).values(
                    peek_id=peek_id,
                    agent_id=agent_id,
                    entitlement_id=entitlement_id,
                    status="used",
                    created_at=now,
                    updated_at=now,
                )
            )
        else:
            await conn.execute(
                update(entitlement_uses)
                .where(and_(entitlement_uses.c.peek_id == peek_id, entitlement_uses.c.agent_id == agent_id))
                .values(entitlement_id=entitlement_id, status="used", updated_at=now)
            )

    async def restore(self, conn: DbConnection, *, ref: str, peek_id: str) -> None:
        entitlement_id, agent_id = _split(ref)
        now = clock.now_iso()
        back = await conn.execute(
            update(entitlement_uses)
            .where(
                and_(
                    entitlement_uses.c.peek_id == peek_id,
                    entitlement_uses.c.agent_id == agent_id,
                    entitlement_uses.c.status == "used",
                )
            )
            .values(status="restored", updated_at=now)
        )
        if back.rowcount != 1:
            return  # already restored (or never used): nothing to give back twice
        row = (await conn.execute(select(entitlements).where(entitlements.c.id == entitlement_id))).one()
        ent = _entitlement(row)
        if ent.status == "active":
            await conn.execute(
                update(entitlements)
                .where(entitlements.c.id == entitlement_id)
                .values(units_used=entitlements.c.units_used - 1, updated_at=now)
            )
            return
        # Refunded or lapsed meanwhile: the unit is no longer the user's. It leaves the entitlement, and
        # its value (just returned to the prepaid account by the peek's release) goes against the
        # refund, or to the platform like the period's other unused peeks.
        await conn.execute(
            update(entitlements)
            .where(entitlements.c.id == entitlement_id)
            .values(
                units_used=entitlements.c.units_used - 1, units_total=entitlements.c.units_total - 1, updated_at=now
            )
        )
        if ent.unit_value_cents:
            await self._ledger.post(
                conn,
                idempotency_key=f"entitlement:{entitlement_id}:{peek_id}:{agent_id}:forfeit",
                kind=f"{ent.source}_forfeit",
                lines=[
                    Line(prepaid_account(ent.source, row.user_id), -ent.unit_value_cents),
                    Line(PLATFORM_CLAWBACK if ent.status == "revoked" else PLATFORM_REVENUE, ent.unit_value_cents),
                ],
                memo=f"{ent.source} peek returned after the {ent.source} was {ent.status}",
                ref=entitlement_id,
            )


async def expire_lapsed(conn: DbConnection, ledger: Ledger, now: str) -> int:
    """End the subscription periods that are over: their unused peeks' value becomes the platform's
    (the user bought the month). Idempotent per entitlement; returns how many ended."""
    rows = (
        await conn.execute(
            select(entitlements).where(
                and_(
                    entitlements.c.status == "active",
                    entitlements.c.valid_until.is_not(None),
                    entitlements.c.valid_until <= now,
                )
            )
        )
    ).all()
    for row in rows:
        ent = _entitlement(row)
        await conn.execute(
            update(entitlements).where(entitlements.c.id == ent.id).values(status="expired", updated_at=now)
        )
        value = ent.units_left * ent.unit_value_cents
        if value:
            await ledger.post(
                conn,
                idempotency_key=f"entitlement:{ent.id}:expired",
                kind=f"{ent.source}_expired",
                lines=[Line(prepaid_account(ent.source, row.user_id), -value), Line(PLATFORM_REVENUE, value)],
                memo=f"{ent.units_left} unused peeks of {ent.name} at period end",
                ref=ent.id,
            )
    return len(rows)
