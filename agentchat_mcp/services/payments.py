"""Buying credit, packs and subscriptions; applying verified Stripe events; reversing refunds.

Rules (architecture.md section 7, payments.md):
- Credit is granted only from a verified webhook or an intent this server captured itself, never
  from a redirect. Each purchase is one `payments` row; its fulfilment is one ledger entry keyed
  `payment:{id}:fulfil`, so a webhook and the server-side capture can both try and only one counts.
- Provider calls happen outside database transactions (a slow network never holds the write lock);
  each carries an idempotency key built from the purchase id, and a retry of the same purchase
  (same idempotency_key from the caller) resumes where it stopped instead of charging again.
- Webhook events are deduplicated by event id in the same transaction as their effects. Effects
  are monotonic (cumulative refund totals, once-only keys), so order does not matter.
- A refund or dispute takes back what is still there; what the user already spent is booked to
  `platform:clawback` (the platform absorbs it), and a user balance never goes negative.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import anyio
from sqlalchemy import and_, insert, select, update

from agentchat_mcp import clock
from agentchat_mcp.crypto import new_id
from agentchat_mcp.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PaymentDeclined,
    PaymentUnavailable,
)
from agentchat_mcp.money import fmt
from agentchat_mcp.payments.catalogue import PackSpec, PlanSpec
from agentchat_mcp.payments.provider import OFFLINE, Intent, PaymentProvider, RemoteSubscription, RequestRejected
from agentchat_mcp.services import entitlements as ents
from agentchat_mcp.services.earnings import EarningsService
from agentchat_mcp.services.entitlements import user_packs
from agentchat_mcp.services.identity import Caller, Identity, require_role
from agentchat_mcp.services.ledger import (
    EXTERNAL_CLEARING,
    PLATFORM_CLAWBACK,
    PLATFORM_REVENUE,
    Ledger,
    Line,
    user_credit,
)
from agentchat_mcp.services.pricing import Pricing
from agentchat_mcp.settings import Settings
from agentchat_mcp.store import DbConnection, Store
from agentchat_mcp.store.tables import (
    payment_customers,
    payments,
    payout_batch_items,
    payout_batches,
    payouts,
    principals,
    subscriptions,
    webhook_events,
)

logger = logging.getLogger(__name__)

Purpose = Literal["credits", "pack", "subscription"]
PayWith = Literal["card", "credit"]
MIN_TOPUP_CENTS = 500
MAX_TOPUP_CENTS = 100_000
RENEW_SECONDS = 300.0
FAILED = frozenset({"failed", "canceled", "expired"})


class RetryLater(Exception):
    """A verified event we cannot apply yet (it refers to something not recorded so far): answer 5xx
    so Stripe delivers it again later. Nothing was written."""


@dataclass(frozen=True)
class PaymentView:
    id: str
    purpose: str
    item: str | None
    amount_cents: int
    status: str
    provider: str
    fulfilled: bool
    checkout_url: str | None
    refunded_cents: int
    last_error: str | None
    created_at: str
    replayed: bool = False


@dataclass(frozen=True)
class PayoutBatch:
    id: str
    status: str  # paid | partial | failed
    paid: int
    unpaid: int
    total_cents: int
    errors: tuple[str, ...]


@dataclass(frozen=True)
class Wallet:
    credit_cents: int
    packs: tuple[ents.Entitlement, ...]

    @property
    def pack_peeks_left(self) -> int:
        return sum(p.units_left for p in self.packs)


@dataclass(frozen=True)
class SubscriptionView:
    id: str
    agent_id: str
    agent_name: str
    plan: str
    peeks_per_period: int
    price_cents: int
    status: str
    provider: str
    current_period_start: str | None
    current_period_end: str | None
    peeks_left: int
    checkout_url: str | None
    replayed: bool = False


def _hash(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()


def _iso_from_unix(seconds: int) -> str:
    return clock.iso(datetime.fromtimestamp(seconds, UTC))


def add_month(moment: datetime) -> datetime:
    """The same day and time next month (clamped to the month's last day)."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    for day in (moment.day, 30, 29, 28):
        try:
            return moment.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _view(row: Any, replayed: bool = False) -> PaymentView:
    return PaymentView(
        id=row.id,
        purpose=row.purpose,
        item=row.item,
        amount_cents=row.amount_cents,
        status=row.status,
        provider=row.provider,
        fulfilled=row.fulfilled_at is not None,
        checkout_url=row.checkout_url if row.status == "awaiting_checkout" else None,
        refunded_cents=row.refunded_cents,
        last_error=row.last_error,
        created_at=row.created_at,
        replayed=replayed,
    )


class ConnectPayouts:
    """Payouts as Stripe Connect transfers to the agent's connected account (EarningsService.sender)."""

    def __init__(self, provider: PaymentProvider) -> None:
        self._provider = provider

    async def send(
        self, *, payout_id: str, agent_id: str, destination: str, amount_cents: int, idempotency_key: str
    ) -> str:
        if not destination.startswith("acct_"):
            raise RequestRejected("No connected Stripe account to pay; set one with set_payout_account.")
        transfer = await self._provider.transfer(
            amount_cents=amount_cents,
            destination=destination,
            transfer_group=payout_id,
            metadata={"agentchat_payout_id": payout_id, "agentchat_agent_id": agent_id},
            idempotency_key=idempotency_key,
        )
        return transfer.id


class PaymentReversalHook(Protocol):
    """Told, in the reversal's transaction, that a user's payment was refunded or disputed."""

    async def on_payment_reversed(self, conn: DbConnection, user_id: str, payment_id: str) -> None: ...


class Payments:
    """Purchases, subscriptions, webhook events and Stripe payouts, over one PaymentProvider."""

    def __init__(
        self, store: Store, ledger: Ledger, identity: Identity, provider: PaymentProvider, settings: Settings
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._identity = identity
        self.provider = provider
        self._settings = settings
        self._earnings: EarningsService | None = None
        self.referrals: PaymentReversalHook | None = None  # services/referrals.py, set by build_app_context

    def install(self, pricing: Pricing, earnings: EarningsService) -> None:
        """Plug packs and subscriptions into peek pricing (subscriptions first: they cost the user
        nothing more), and Stripe Connect transfers into payouts when cards are taken."""
        pricing.providers["subscription"] = ents.EntitlementCovers("subscription", self._ledger)
        pricing.providers["pack"] = ents.EntitlementCovers("pack", self._ledger)
        self._earnings = earnings
        if self.provider.takes_cards:
            earnings.sender = ConnectPayouts(self.provider)

    # --- catalogue --------------------------------------------------------------------------

    @property
    def packs(self) -> dict[str, PackSpec]:
        return self._settings.peek_packs

    @property
    def plans(self) -> dict[str, PlanSpec]:
        return self._settings.subscription_plans

    def _pack(self, name: str) -> PackSpec:
        spec = self.packs.get(name)
        if spec is None:
            known = ", ".join(sorted(self.packs)) or "none"
            raise NotFound(f"No pack named {name!r}. Packs on this server: {known}. Omit pack to see their prices.")
        return spec

    def _plan(self, name: str) -> PlanSpec:
        spec = self.plans.get(name)
        if spec is None:
            known = ", ".join(sorted(self.plans)) or "none"
            raise NotFound(f"No plan named {name!r}. Plans on this server: {known}. Omit plan to see their prices.")
        return spec

    def _pay_with(self, pay_with: PayWith | None) -> PayWith:
        method: PayWith = pay_with or ("card" if self.provider.takes_cards else "credit")
        if method == "card" and not self.provider.takes_cards:
            raise self._no_cards(OFFLINE)
        return method

    def _no_cards(self, offline: str) -> PaymentUnavailable:
        if self.provider.name == "ledger":
            return PaymentUnavailable(offline)
        return PaymentUnavailable(
            "Card payments are not configured on this server (STRIPE_API_KEY); tell its operator."
        )

    # --- purchases --------------------------------------------------------------------------

    async def buy_credits(self, caller: Caller, amount_cents: int, idempotency_key: str | None) -> PaymentView:
        """Top up the caller's credit with a card: the saved one at once, else a Checkout link."""
        require_role(caller, "user")
        if not self.provider.takes_cards:
            raise self._no_cards(
                "This server runs the offline ledger provider and takes no card payments. Credit is granted by "
                "the hub's admins: ask one for credit."
            )
        if not MIN_TOPUP_CENTS <= amount_cents <= MAX_TOPUP_CENTS:
            raise InvalidInput(f"amount must be {fmt(MIN_TOPUP_CENTS)} to {fmt(MAX_TOPUP_CENTS)}.")
        return await self._card_purchase(
            caller, "credits", None, amount_cents, idempotency_key, "AgentChat peek credit"
        )

    async def buy_pack(
        self, caller: Caller, pack: str, pay_with: PayWith | None, idempotency_key: str | None
    ) -> PaymentView:
        """Buy a peek pack with a card (saved, or a Checkout link) or from credit."""
        require_role(caller, "user")
        spec = self._pack(pack)
        if self._pay_with(pay_with) == "credit":
            return await self._credit_purchase(caller, "pack", pack, spec.price_cents, idempotency_key)
        name = f"AgentChat {pack}: {spec.peeks} peeks (agents up to {fmt(spec.max_agent_price_cents)})"
        return await self._card_purchase(caller, "pack", pack, spec.price_cents, idempotency_key, name)

    async def _open_payment(
        self,
        conn: DbConnection,
        user_id: str,
        *,
        purpose: Purpose,
        item: str | None,
        amount_cents: int,
        provider: str,
        idempotency_key: str | None,
        subscription_id: str | None = None,
    ) -> tuple[Any, bool]:
        """The purchase row for this request: the first one for a repeated idempotency key."""
        digest = _hash(purpose, item, amount_cents, provider, subscription_id)
        if idempotency_key:
            first = (
                await conn.execute(
                    select(payments).where(
                        and_(payments.c.user_id == user_id, payments.c.idempotency_key == idempotency_key)
                    )
                )
            ).first()
            if first is not None:
                if first.request_hash != digest:
                    raise Conflict(
                        f"idempotency key reused with other parameters: it already paid for {first.purpose} "
                        f"{first.item or ''} {fmt(first.amount_cents)} ({first.id}). Use a new key for a new purchase."
                    )
                return first, True
        now = clock.now_iso()
        payment_id = new_id("pmt")
        await conn.execute(
            insert(payments).values(
                id=payment_id,
                user_id=user_id,
                purpose=purpose,
                item=item,
                amount_cents=amount_cents,
                status="pending",
                provider=provider,
                subscription_id=subscription_id,
                idempotency_key=idempotency_key,
                request_hash=digest,
                created_at=now,
                updated_at=now,
            )
        )
        return (await conn.execute(select(payments).where(payments.c.id == payment_id))).one(), False

    async def _credit_purchase(
        self,
        caller: Caller,
        purpose: Purpose,
        item: str,
        amount_cents: int,
        idempotency_key: str | None,
        *,
        subscription: Any = None,
    ) -> PaymentView:
        async with self._store.write() as conn:
            row, replayed = await self._open_payment(
                conn,
                caller.id,
                purpose=purpose,
                item=item,
                amount_cents=amount_cents,
                provider="credit",
                idempotency_key=idempotency_key,
                subscription_id=subscription.id if subscription is not None else None,
            )
            if row.fulfilled_at is None:
                await self._fulfil(conn, row.id, source=user_credit(caller.id), received_cents=amount_cents)
            row = (await conn.execute(select(payments).where(payments.c.id == row.id))).one()
            return _view(row, replayed)

    async def _card_purchase(
        self,
        caller: Caller,
        purpose: Purpose,
        item: str | None,
        amount_cents: int,
        idempotency_key: str | None,
        product_name: str,
    ) -> PaymentView:
        async with self._store.write() as conn:
            row, replayed = await self._open_payment(
                conn,
                caller.id,
                purpose=purpose,
                item=item,
                amount_cents=amount_cents,
                provider="stripe",
                idempotency_key=idempotency_key,
            )
        if row.fulfilled_at is not None or row.status in FAILED or row.status == "awaiting_checkout":
            return _view(row, replayed)  # a replay: the first answer, charged (or not) once
        customer_id, saved_method = await self._customer(caller)
        if row.intent_id:
            intent = await self.provider.retrieve_intent(row.intent_id)  # resume after a crash or timeout
        elif saved_method is None:
            return await self._checkout(row, customer_id, product_name, replayed)
        else:
            intent = await self._authorize(row, caller, customer_id, saved_method)
        if intent.status == "requires_action":  # the bank wants the buyer present (3-D Secure)
            await self.provider.cancel(intent_id=intent.id, idempotency_key=f"{purpose}:{row.id}:cancel")
            return await self._checkout(row, customer_id, product_name, replayed)
        if intent.status == "requires_capture":
            intent = await self.provider.capture(intent_id=intent.id, idempotency_key=f"{purpose}:{row.id}:capture")
        async with self._store.write() as conn:
            if intent.status == "succeeded":
                await self._fulfil(conn, row.id, source=EXTERNAL_CLEARING, received_cents=intent.amount_received_cents)
            elif intent.status in ("requires_payment_method", "canceled"):
                await self._set(conn, row.id, status="failed", last_error=f"payment {intent.status}")
            row = (await conn.execute(select(payments).where(payments.c.id == row.id))).one()
        if row.status == "failed":
            raise PaymentDeclined("The card was declined. Nothing was charged.")
        return _view(row, replayed)

    async def _authorize(self, row: Any, caller: Caller, customer_id: str, method: str) -> Intent:
        try:
            intent = await self.provider.authorize(
                customer_id=customer_id,
                payment_method_id=method,
                amount_cents=row.amount_cents,
                metadata={"agentchat_payment_id": row.id, "agentchat_purpose": row.purpose},
                idempotency_key=f"{row.purpose}:{row.id}:authorize",
            )
        except PaymentDeclined as exc:
            async with self._store.write() as conn:
                await self._set(conn, row.id, status="failed", last_error=str(exc))
                # A declined card stops being the default, so the next purchase offers a checkout page.
                await conn.execute(
                    update(payment_customers)
                    .where(payment_customers.c.principal_id == caller.id)
                    .values(payment_method_id=None, updated_at=clock.now_iso())
                )
            raise PaymentDeclined(
                f"{exc} Your saved card was set aside: buy again with a new idempotency_key to get a checkout link "
                "for another card."
            ) from exc
        async with self._store.write() as conn:
            await self._set(conn, row.id, intent_id=intent.id, status="authorized")
        return intent

    async def _checkout(self, row: Any, customer_id: str, product_name: str, replayed: bool) -> PaymentView:
        link = await self.provider.checkout(
            mode="payment",
            customer_id=customer_id,
            amount_cents=row.amount_cents,
            product_name=product_name,
            metadata={"agentchat_payment_id": row.id, "agentchat_purpose": row.purpose},
            success_url=f"{self._settings.checkout_return_url}?result=success",
            cancel_url=f"{self._settings.checkout_return_url}?result=cancel",
            idempotency_key=f"{row.purpose}:{row.id}:checkout",
        )
        async with self._store.write() as conn:
            await self._set(
                conn, row.id, status="awaiting_checkout", checkout_id=link.id, checkout_url=link.url, intent_id=None
            )
            return _view((await conn.execute(select(payments).where(payments.c.id == row.id))).one(), replayed)

    async def _customer(self, caller: Caller) -> tuple[str, str | None]:
        """The caller's customer at the provider (created once) and the saved payment method, if any."""
        async with self._store.read() as conn:
            row = (
                await conn.execute(select(payment_customers).where(payment_customers.c.principal_id == caller.id))
            ).first()
        if row is not None:
            return row.customer_id, row.payment_method_id
        customer_id = await self.provider.create_customer(
            principal_id=caller.id, name=caller.name, idempotency_key=f"customer:{caller.id}:create"
        )
        now = clock.now_iso()
        async with self._store.write() as conn:
            row = (
                await conn.execute(select(payment_customers).where(payment_customers.c.principal_id == caller.id))
            ).first()
            if row is not None:  # a concurrent request got there first (same key: same customer)
                return row.customer_id, row.payment_method_id
            await conn.execute(
                insert(payment_customers).values(
                    principal_id=caller.id,
                    provider=self.provider.name,
                    customer_id=customer_id,
                    created_at=now,
                    updated_at=now,
                )
            )
        return customer_id, None

    async def save_card(self, user_id: str, payment_method_id: str) -> None:
        """Make a payment method the user's default (from a completed checkout; tests and admins too)."""
        async with self._store.read() as conn:
            row = (
                await conn.execute(select(payment_customers).where(payment_customers.c.principal_id == user_id))
            ).first()
        if row is None:
            raise NotFound(f"No payment customer for {user_id}.")
        await self.provider.save_payment_method(
            customer_id=row.customer_id,
            payment_method_id=payment_method_id,
            idempotency_key=f"customer:{user_id}:method:{payment_method_id}",
        )
        async with self._store.write() as conn:
            await conn.execute(
                update(payment_customers)
                .where(payment_customers.c.principal_id == user_id)
                .values(payment_method_id=payment_method_id, updated_at=clock.now_iso())
            )

    async def ensure_customer(self, caller: Caller) -> str:
        """The caller's provider customer id (created on first use)."""
        customer_id, _ = await self._customer(caller)
        return customer_id

    async def _set(self, conn: DbConnection, payment_id: str, **values: Any) -> None:
        await conn.execute(
            update(payments).where(payments.c.id == payment_id).values(**values, updated_at=clock.now_iso())
        )

    # --- fulfilment and reversal (inside the caller's transaction) ------------------------------

    async def _fulfil(
        self,
        conn: DbConnection,
        payment_id: str,
        *,
        source: str,
        received_cents: int,
        period: tuple[str, str] | None = None,
    ) -> bool:
        """Grant what `payment_id` bought, once. `source` is where the money comes from (clearing or credit);
        `period`: the subscription period paid for (default: the subscription's current one)."""
        row = (await conn.execute(select(payments).where(payments.c.id == payment_id))).one()
        if row.fulfilled_at is not None:
            return False
        if received_cents < row.amount_cents:
            logger.error("payment %s received %s of %s cents; not fulfilled", row.id, received_cents, row.amount_cents)
            await self._set(conn, row.id, last_error="received less than the price; needs review")
            return False
        amount = row.amount_cents
        memo = {"credits": "credit top-up", "pack": f"pack {row.item}", "subscription": f"subscription {row.item}"}
        pack = self.packs.get(row.item or "") if row.purpose == "pack" else None
        lines = [Line(source, -amount)]
        if row.purpose == "credits" or (row.purpose == "pack" and pack is None):
            # (a pack withdrawn from the catalogue since it was paid for arrives as credit instead)
            lines.append(Line(user_credit(row.user_id), amount))
        elif row.purpose == "pack":
            lines.append(Line(user_packs(row.user_id), amount))
        else:  # the period's peeks wait as units in the user's prepaid account; a rounding rest is the fee's
            sub = (await conn.execute(select(subscriptions).where(subscriptions.c.id == row.subscription_id))).one()
            units_value = amount // sub.peeks_per_period * sub.peeks_per_period
            lines += [
                Line(ents.user_subscriptions(row.user_id), units_value),
                Line(PLATFORM_REVENUE, amount - units_value),
            ]
        await self._ledger.post(
            conn,
            idempotency_key=f"payment:{row.id}:fulfil",
            kind=f"{row.purpose}_purchase" if row.purpose != "credits" else "credit_topup",
            lines=lines,
            memo=memo[row.purpose],
            ref=row.id,
        )
        if pack is not None:
            await ents.grant(
                conn,
                user_id=row.user_id,
                source="pack",
                name=row.item,
                payment_id=row.id,
                units=pack.peeks,
                unit_value_cents=pack.unit_price_cents,
                max_agent_price_cents=pack.max_agent_price_cents,
            )
        elif row.purpose == "subscription":
            await self._grant_period_entitlement(conn, row, period)
        await self._set(conn, row.id, status="succeeded", fulfilled_at=clock.now_iso())
        return True

    async def _grant_period_entitlement(self, conn: DbConnection, row: Any, period: tuple[str, str] | None) -> None:
        sub = (await conn.execute(select(subscriptions).where(subscriptions.c.id == row.subscription_id))).one()
        start, end = period or (sub.current_period_start, sub.current_period_end)
        await ents.grant(
            conn,
            user_id=row.user_id,
            source="subscription",
            name=sub.plan,
            payment_id=row.id,
            units=sub.peeks_per_period,
            unit_value_cents=row.amount_cents // sub.peeks_per_period,  # the price locked when bought
            agent_id=sub.agent_id,
            subscription_id=sub.id,
            valid_from=start,
            valid_until=end,
        )

    async def _reverse(self, conn: DbConnection, row: Any, delta: int, *, key: str, why: str) -> int:
        """Take back `delta` cents of what `row` bought (refund or dispute); returns what was reversed."""
        delta = min(delta, row.amount_cents - row.reversed_cents)
        if delta <= 0 or row.fulfilled_at is None:
            return 0
        refund_out = Line(EXTERNAL_CLEARING, delta)  # the money goes back out to the card
        prepaid = await ents.for_payment(conn, row.id) if row.purpose in ("pack", "subscription") else None
        if prepaid is not None:  # unused peeks go back (a subscription's: all of them, the period ends)
            whole = row.purpose == "subscription" or delta >= row.amount_cents - row.reversed_cents
            units = None if whole else math.ceil(delta / max(1, prepaid.unit_value_cents))
            _, taken = await ents.revoke_unused(conn, row.id, units)
            lines = [refund_out, Line(ents.prepaid_account(prepaid.source, row.user_id), -taken)]
        else:  # credit (or a withdrawn pack that arrived as credit)
            taken = min(delta, await self._ledger.balance(conn, user_credit(row.user_id)))
            lines = [refund_out, Line(user_credit(row.user_id), -taken)]
        lines.append(Line(PLATFORM_CLAWBACK, taken - delta))  # +: kept beyond the refund; -: absorbed
        await self._ledger.post(conn, idempotency_key=key, kind="payment_reversal", lines=lines, memo=why, ref=row.id)
        await self._set(conn, row.id, reversed_cents=row.reversed_cents + delta)
        if self.referrals is not None:  # a referral reward earned on this money is taken back
            await self.referrals.on_payment_reversed(conn, row.user_id, row.id)
        return delta

    # --- webhook events ---------------------------------------------------------------------

    async def handle_event(self, event: dict[str, Any]) -> str:
        """Apply one verified Stripe event, once. Returns what happened (for the log and the reply)."""
        event_id = str(event.get("id") or "")
        kind = str(event.get("type") or "")
        obj = (event.get("data") or {}).get("object") or {}
        if not event_id.startswith("evt_") or not isinstance(obj, dict):
            raise InvalidInput("not a Stripe event")
        async with self._store.read() as conn:
            if await self._seen(conn, event_id):
                return "duplicate"
        hint = await self._lookup(kind, obj)  # network lookups before the transaction, never inside it
        async with self._store.write() as conn:
            if await self._seen(conn, event_id):
                return "duplicate"
            outcome = await self._apply(conn, kind, obj, hint)
            await conn.execute(
                insert(webhook_events).values(
                    id=event_id,
                    type=kind[:64],
                    object_id=str(obj.get("id") or "")[:64] or None,
                    outcome=outcome[:64],
                    received_at=clock.now_iso(),
                )
            )
        await self._after(kind, obj, outcome)
        return outcome

    async def _seen(self, conn: DbConnection, event_id: str) -> bool:
        found = await conn.execute(select(webhook_events.c.id).where(webhook_events.c.id == event_id))
        return found.first() is not None

    async def _lookup(self, kind: str, obj: dict[str, Any]) -> Intent | None:
        """The PaymentIntent behind a charge or dispute we cannot place from our own records."""
        if not (kind.startswith("charge.") and self.provider.takes_cards):
            return None
        intent_id = obj.get("payment_intent")
        if not isinstance(intent_id, str):
            return None
        async with self._store.read() as conn:
            known = (await conn.execute(select(payments.c.id).where(payments.c.intent_id == intent_id))).first()
        if known is not None:
            return None
        return await self.provider.retrieve_intent(intent_id)

    async def _payment_for(self, conn: DbConnection, *, payment_id: Any = None, intent_id: Any = None) -> Any:
        if isinstance(payment_id, str) and payment_id:
            row = (await conn.execute(select(payments).where(payments.c.id == payment_id))).first()
            if row is not None:
                return row
        if isinstance(intent_id, str) and intent_id:
            return (await conn.execute(select(payments).where(payments.c.intent_id == intent_id))).first()
        return None

    async def _apply(self, conn: DbConnection, kind: str, obj: dict[str, Any], hint: Intent | None) -> str:
        metadata = obj.get("metadata") or {}
        if kind == "payment_intent.succeeded":
            row = await self._payment_for(
                conn, payment_id=metadata.get("agentchat_payment_id"), intent_id=obj.get("id")
            )
            if row is None:
                return "ignored: not ours"
            if obj.get("status") != "succeeded":
                return "ignored: not succeeded"
            if row.intent_id is None:
                await self._set(conn, row.id, intent_id=obj.get("id"))
            received = int(obj.get("amount_received") or obj.get("amount") or 0)
            done = await self._fulfil(conn, row.id, source=EXTERNAL_CLEARING, received_cents=received)
            return "fulfilled" if done else "already fulfilled"
        if kind in ("payment_intent.payment_failed", "payment_intent.canceled"):
            row = await self._payment_for(
                conn, payment_id=metadata.get("agentchat_payment_id"), intent_id=obj.get("id")
            )
            if row is None or row.fulfilled_at is not None or row.status == "awaiting_checkout":
                return "ignored"
            await self._set(conn, row.id, status="failed", last_error=kind)
            return "marked failed"
        if kind.startswith("checkout.session."):
            return await self._apply_checkout(conn, kind, obj)
        if kind == "charge.refunded":
            return await self._apply_refund(conn, obj, hint)
        if kind.startswith("charge.dispute."):
            return await self._apply_dispute(conn, kind, obj, hint)
        if kind in ("invoice.paid", "invoice.payment_succeeded"):
            return await self._apply_invoice_paid(conn, obj)
        if kind == "invoice.payment_failed":
            sub = await self._subscription_for(conn, obj)
            if sub is not None and sub.status == "active":
                await self._set_sub(conn, sub.id, status="past_due", last_error="invoice payment failed")
                return "subscription past due"
            return "ignored"
        if kind in ("customer.subscription.deleted", "customer.subscription.updated"):
            sub = (
                await conn.execute(select(subscriptions).where(subscriptions.c.provider_ref == obj.get("id")))
            ).first()
            if sub is None:
                return "ignored: not ours"
            status = str(obj.get("status") or "")
            if kind.endswith("deleted") or status in ("canceled", "incomplete_expired"):
                await self._set_sub(conn, sub.id, status="cancelled", cancelled_at=sub.cancelled_at or clock.now_iso())
                return "subscription cancelled"
            if status in ("past_due", "unpaid") and sub.status == "active":
                await self._set_sub(conn, sub.id, status="past_due")
                return "subscription past due"
            return "noted"
        return "ignored: type"

    async def _apply_checkout(self, conn: DbConnection, kind: str, obj: dict[str, Any]) -> str:
        metadata = obj.get("metadata") or {}
        if obj.get("mode") == "subscription":
            sub_id = metadata.get("agentchat_subscription_id") or obj.get("client_reference_id")
            sub = (await conn.execute(select(subscriptions).where(subscriptions.c.id == sub_id))).first()
            if sub is None:
                return "ignored: not ours"
            if kind == "checkout.session.completed" and isinstance(obj.get("subscription"), str):
                await self._set_sub(conn, sub.id, provider_ref=obj["subscription"], checkout_url=None)
                return "subscription linked"
            if kind == "checkout.session.expired" and sub.status == "pending":
                await self._set_sub(conn, sub.id, status="cancelled", checkout_url=None, cancelled_at=clock.now_iso())
                return "subscription checkout expired"
            return "noted"
        row = await self._payment_for(
            conn, payment_id=metadata.get("agentchat_payment_id") or obj.get("client_reference_id")
        )
        if row is None:
            return "ignored: not ours"
        intent_id = obj.get("payment_intent") if isinstance(obj.get("payment_intent"), str) else None
        if intent_id and row.intent_id != intent_id:
            await self._set(conn, row.id, intent_id=intent_id)
        paid = kind == "checkout.session.async_payment_succeeded" or (
            kind == "checkout.session.completed" and obj.get("payment_status") == "paid"
        )
        if paid:
            received = int(obj.get("amount_total") or 0)
            done = await self._fulfil(conn, row.id, source=EXTERNAL_CLEARING, received_cents=received)
            return "fulfilled" if done else "already fulfilled"
        if kind in ("checkout.session.expired", "checkout.session.async_payment_failed") and row.fulfilled_at is None:
            await self._set(conn, row.id, status="expired" if kind.endswith("expired") else "failed")
            return "checkout ended unpaid"
        return "noted"

    async def _apply_refund(self, conn: DbConnection, charge: dict[str, Any], hint: Intent | None) -> str:
        row = await self._payment_for(
            conn,
            payment_id=hint.metadata.get("agentchat_payment_id") if hint else None,
            intent_id=charge.get("payment_intent"),
        )
        if row is None:
            return "ignored: not ours"
        if row.fulfilled_at is None and charge.get("captured", True) and charge.get("paid", True):
            # The refund overtook the success event: a refunded charge had succeeded, so grant first.
            await self._fulfil(conn, row.id, source=EXTERNAL_CLEARING, received_cents=int(charge.get("amount") or 0))
            row = (await conn.execute(select(payments).where(payments.c.id == row.id))).one()
        total = int(charge.get("amount_refunded") or 0)  # cumulative: an older event shows less, and changes nothing
        before = row.refunded_cents
        if total <= before:
            return "already reversed"
        await self._set(
            conn, row.id, refunded_cents=total, status="refunded" if total >= row.amount_cents else row.status
        )
        row = (await conn.execute(select(payments).where(payments.c.id == row.id))).one()
        done = await self._reverse(conn, row, total - before, key=f"payment:{row.id}:refunded:{total}", why="refund")
        return f"reversed {done}"

    async def _apply_dispute(self, conn: DbConnection, kind: str, dispute: dict[str, Any], hint: Intent | None) -> str:
        row = await self._payment_for(
            conn,
            payment_id=hint.metadata.get("agentchat_payment_id") if hint else None,
            intent_id=dispute.get("payment_intent"),
        )
        if row is None:
            return "ignored: not ours"
        dispute_id = str(dispute.get("id"))
        opened = f"payment:{row.id}:dispute:{dispute_id}"
        if kind == "charge.dispute.created" or (kind == "charge.dispute.closed" and dispute.get("status") == "lost"):
            if await self._ledger.entry_by_key(conn, opened) is not None:
                return "already reversed"
            amount = int(dispute.get("amount") or 0)
            done = await self._reverse(conn, row, amount, key=opened, why=f"dispute {dispute_id}")
            await self._set(conn, row.id, disputed_cents=row.disputed_cents + done)
            return f"reversed {done}"
        if kind == "charge.dispute.closed" and dispute.get("status") == "won":
            entry_id = await self._ledger.entry_by_key(conn, opened)
            if entry_id is None:
                return "nothing to restore"
            lines = next(ls for i, _, ls in await self._ledger.entries_with_ref(conn, row.id) if i == entry_id)
            # Undo the reversal; prepaid value comes back as credit (the revoked peeks stay revoked).
            prepaid = {user_packs(row.user_id), ents.user_subscriptions(row.user_id)}
            back = [
                Line(user_credit(row.user_id) if x.account in prepaid else x.account, -x.amount_cents) for x in lines
            ]
            await self._ledger.post(
                conn, idempotency_key=f"{opened}:won", kind="dispute_won", lines=back, memo="dispute won", ref=row.id
            )
            restored = sum(x.amount_cents for x in lines if x.account == EXTERNAL_CLEARING)
            await self._set(
                conn,
                row.id,
                disputed_cents=max(0, row.disputed_cents - restored),
                reversed_cents=max(0, row.reversed_cents - restored),
            )
            return "dispute won: restored"
        return "noted"

    async def _after(self, kind: str, obj: dict[str, Any], outcome: str) -> None:
        """Best-effort follow-ups after an event committed (a failure here loses no money)."""
        if kind != "checkout.session.completed" or obj.get("mode") != "payment" or outcome != "fulfilled":
            return
        intent_id = obj.get("payment_intent")
        metadata = obj.get("metadata") or {}
        if not isinstance(intent_id, str):
            return
        try:
            intent = await self.provider.retrieve_intent(intent_id)
            async with self._store.read() as conn:
                row = await self._payment_for(conn, payment_id=metadata.get("agentchat_payment_id"))
            if row is not None and intent.payment_method:
                await self.save_card(row.user_id, intent.payment_method)  # next purchase needs no browser
        except Exception:
            logger.warning("could not save the card of checkout %s", obj.get("id"), exc_info=True)

    # --- subscriptions ----------------------------------------------------------------------

    async def subscribe(
        self, caller: Caller, agent_id: str, plan: str, pay_with: PayWith | None, idempotency_key: str | None
    ) -> SubscriptionView:
        """N peeks a month at one agent; the first month is paid now (card or credit)."""
        require_role(caller, "user")
        spec = self._plan(plan)
        agent = await self._identity.get_agent(agent_id)
        price = spec.price_cents(int(agent.peek_price_cents or 0))
        method = self._pay_with(pay_with)
        provider = "credit" if method == "credit" else "stripe"
        digest = _hash(agent_id, plan, price, provider)
        now_dt = clock.now()
        now = clock.iso(now_dt)
        async with self._store.write() as conn:
            if idempotency_key:
                first = (
                    await conn.execute(
                        select(subscriptions).where(
                            and_(
                                subscriptions.c.user_id == caller.id, subscriptions.c.idempotency_key == idempotency_key
                            )
                        )
                    )
                ).first()
                if first is not None:
                    if first.request_hash != digest:
                        raise Conflict(
                            f"idempotency key reused with other parameters (it created subscription {first.id}). "
                            "Use a new key for a new subscription."
                        )
                    return await self._sub_view(conn, first.id, replayed=True)
            live = (
                await conn.execute(
                    select(subscriptions.c.id, subscriptions.c.status).where(
                        and_(
                            subscriptions.c.user_id == caller.id,
                            subscriptions.c.agent_id == agent_id,
                            subscriptions.c.status.in_(["pending", "active", "past_due"]),
                        )
                    )
                )
            ).first()
            if live is not None:
                raise Conflict(
                    f"You already have subscription {live.id} to this agent ({live.status}). cancel_subscription "
                    "ends it; then subscribe again to change plan."
                )
            sub_id = new_id("sbs")
            await conn.execute(
                insert(subscriptions).values(
                    id=sub_id,
                    user_id=caller.id,
                    agent_id=agent_id,
                    plan=plan,
                    peeks_per_period=spec.peeks_per_month,
                    price_cents=price,
                    status="pending",
                    provider=provider,
                    current_period_start=now if provider == "credit" else None,
                    current_period_end=clock.iso(add_month(now_dt)) if provider == "credit" else None,
                    idempotency_key=idempotency_key,
                    request_hash=digest,
                    created_at=now,
                    updated_at=now,
                )
            )
            if provider == "credit":
                sub = (await conn.execute(select(subscriptions).where(subscriptions.c.id == sub_id))).one()
                await self._charge_period_from_credit(conn, sub, key=f"subscription:{sub_id}:period:1")
                await self._set_sub(conn, sub_id, status="active")
                return await self._sub_view(conn, sub_id)
        return await self._subscribe_stripe(caller, sub_id, agent.name, plan, price)

    async def _charge_period_from_credit(self, conn: DbConnection, sub: Any, *, key: str) -> None:
        row, _ = await self._open_payment(
            conn,
            sub.user_id,
            purpose="subscription",
            item=sub.plan,
            amount_cents=sub.price_cents,
            provider="credit",
            idempotency_key=key,
            subscription_id=sub.id,
        )
        await self._fulfil(conn, row.id, source=user_credit(sub.user_id), received_cents=sub.price_cents)

    async def _subscribe_stripe(
        self, caller: Caller, sub_id: str, agent_name: str, plan: str, price: int
    ) -> SubscriptionView:
        product = f"AgentChat {plan}: peeks at {agent_name}"
        try:
            customer_id, saved = await self._customer(caller)
            if saved is None:
                link = await self.provider.checkout(
                    mode="subscription",
                    customer_id=customer_id,
                    amount_cents=price,
                    product_name=product,
                    metadata={"agentchat_subscription_id": sub_id},
                    success_url=f"{self._settings.checkout_return_url}?result=success",
                    cancel_url=f"{self._settings.checkout_return_url}?result=cancel",
                    idempotency_key=f"subscription:{sub_id}:checkout",
                )
                async with self._store.write() as conn:
                    await self._set_sub(conn, sub_id, checkout_url=link.url)
                    return await self._sub_view(conn, sub_id)
            async with self._store.read() as conn:
                sub = (await conn.execute(select(subscriptions).where(subscriptions.c.id == sub_id))).one()
            plan_id = await self.provider.ensure_plan(
                plan_id=f"agentchat-{sub.agent_id}-{plan}-{price}",
                amount_cents=price,
                product_name=product,
                idempotency_key=f"plan:{sub.agent_id}:{plan}:{price}",
            )
            remote = await self.provider.subscribe(
                customer_id=customer_id,
                plan_id=plan_id,
                metadata={"agentchat_subscription_id": sub_id},
                idempotency_key=f"subscription:{sub_id}:create",
            )
        except Exception as exc:
            async with self._store.write() as conn:
                await self._set_sub(
                    conn, sub_id, status="cancelled", last_error=str(exc)[:500], cancelled_at=clock.now_iso()
                )
            raise
        async with self._store.write() as conn:
            await self._set_sub(conn, sub_id, provider_ref=remote.id)
            if remote.latest_invoice_paid:  # confirmed server-side: grant the first period now
                await self._grant_remote_period(conn, sub_id, remote)
            elif remote.status in ("incomplete", "incomplete_expired"):
                await self._set_sub(conn, sub_id, status="cancelled", last_error="first payment failed")
                raise PaymentDeclined("The first month's payment was declined; nothing was charged.")
            return await self._sub_view(conn, sub_id)

    async def _grant_remote_period(self, conn: DbConnection, sub_id: str, remote: RemoteSubscription) -> None:
        start, end = _iso_from_unix(remote.current_period_start), _iso_from_unix(remote.current_period_end)
        await self._grant_period(
            conn,
            sub_id,
            invoice_id=remote.latest_invoice_id or f"{remote.id}:first",
            intent_id=remote.latest_invoice_intent,
            start=start,
            end=end,
        )

    async def _grant_period(
        self,
        conn: DbConnection,
        sub_id: str,
        *,
        invoice_id: str,
        intent_id: str | None,
        start: str,
        end: str,
        amount_cents: int | None = None,
    ) -> bool:
        """One paid period (a Stripe invoice): its payment row, ledger entry and peeks, once per period."""
        sub = (await conn.execute(select(subscriptions).where(subscriptions.c.id == sub_id))).one()
        period_key = f"subscription:{sub_id}:period:{start}"
        first = (
            await conn.execute(
                select(payments.c.id).where(
                    and_(payments.c.user_id == sub.user_id, payments.c.idempotency_key == period_key)
                )
            )
        ).first()
        if first is not None:  # the same period, told twice (server-side and by its invoice event)
            if intent_id:
                await conn.execute(
                    update(payments)
                    .where(and_(payments.c.id == first.id, payments.c.intent_id.is_(None)))
                    .values(intent_id=intent_id)
                )
            return False
        now = clock.now_iso()
        payment_id = new_id("pmt")
        await conn.execute(
            insert(payments).values(
                id=payment_id,
                user_id=sub.user_id,
                purpose="subscription",
                item=sub.plan,
                amount_cents=sub.price_cents if amount_cents is None else amount_cents,
                status="pending",
                provider="stripe",
                intent_id=intent_id,
                invoice_id=invoice_id,
                subscription_id=sub.id,
                idempotency_key=period_key,
                request_hash=_hash("subscription", sub.plan, sub.price_cents, "stripe", sub.id),
                created_at=now,
                updated_at=now,
            )
        )
        if not sub.current_period_end or end > sub.current_period_end:
            await self._set_sub(conn, sub.id, current_period_start=start, current_period_end=end)
        if sub.status in ("pending", "past_due"):
            await self._set_sub(conn, sub.id, status="active", checkout_url=None)
        amount = sub.price_cents if amount_cents is None else amount_cents
        await self._fulfil(conn, payment_id, source=EXTERNAL_CLEARING, received_cents=amount, period=(start, end))
        return True

    async def _subscription_for(self, conn: DbConnection, invoice: dict[str, Any]) -> Any:
        ref = invoice.get("subscription")
        if isinstance(ref, dict):
            ref = ref.get("id")
        meta: dict[str, Any] = {}
        for holder in (invoice.get("subscription_details"), (invoice.get("parent") or {}).get("subscription_details")):
            if isinstance(holder, dict):
                meta = holder.get("metadata") or meta
                ref = ref or holder.get("subscription")
        if isinstance(ref, str):
            found = (await conn.execute(select(subscriptions).where(subscriptions.c.provider_ref == ref))).first()
            if found is not None:
                return found
        ours = meta.get("agentchat_subscription_id")
        if isinstance(ours, str):
            found = (await conn.execute(select(subscriptions).where(subscriptions.c.id == ours))).first()
            if found is not None and isinstance(ref, str) and found.provider_ref is None:
                await self._set_sub(conn, found.id, provider_ref=ref)
            return found
        return None

    async def _apply_invoice_paid(self, conn: DbConnection, invoice: dict[str, Any]) -> str:
        if not invoice.get("subscription") and not invoice.get("subscription_details") and not invoice.get("parent"):
            return "ignored: not a subscription invoice"
        sub = await self._subscription_for(conn, invoice)
        if sub is None:
            raise RetryLater("invoice for a subscription not linked yet")
        lines = ((invoice.get("lines") or {}).get("data")) or [{}]
        period = lines[0].get("period") or {}
        start = int(period.get("start") or invoice.get("period_start") or 0)
        end = int(period.get("end") or invoice.get("period_end") or 0)
        if start == 0 or end <= start:
            return "ignored: no period"
        intent = invoice.get("payment_intent")
        done = await self._grant_period(
            conn,
            sub.id,
            invoice_id=str(invoice.get("id")),
            intent_id=intent if isinstance(intent, str) else None,
            start=_iso_from_unix(start),
            end=_iso_from_unix(end),
            amount_cents=int(invoice.get("amount_paid") or sub.price_cents),
        )
        return "period granted" if done else "period already granted"

    async def _set_sub(self, conn: DbConnection, sub_id: str, **values: Any) -> None:
        await conn.execute(
            update(subscriptions).where(subscriptions.c.id == sub_id).values(**values, updated_at=clock.now_iso())
        )

    async def cancel_subscription(self, caller: Caller, agent_id: str) -> SubscriptionView:
        """Stop renewals; peeks already paid for stay usable until the period ends."""
        require_role(caller, "user")
        async with self._store.read() as conn:
            sub = (
                await conn.execute(
                    select(subscriptions)
                    .where(and_(subscriptions.c.user_id == caller.id, subscriptions.c.agent_id == agent_id))
                    .order_by(subscriptions.c.created_at.desc())
                    .limit(1)
                )
            ).first()
        if sub is None:
            raise NotFound(f"You have no subscription to {agent_id}.")
        if sub.status != "cancelled":
            if sub.provider == "stripe" and sub.provider_ref:
                try:
                    await self.provider.cancel_subscription(subscription_id=sub.provider_ref)
                except RequestRejected:  # already cancelled (or gone) at Stripe: nothing will renew
                    logger.info("subscription %s was already cancelled at Stripe", sub.id)
            async with self._store.write() as conn:
                await self._set_sub(conn, sub.id, status="cancelled", cancelled_at=clock.now_iso())
        async with self._store.read() as conn:
            return await self._sub_view(conn, sub.id)

    async def _sub_view(self, conn: DbConnection, sub_id: str, *, replayed: bool = False) -> SubscriptionView:
        sub = (await conn.execute(select(subscriptions).where(subscriptions.c.id == sub_id))).one()
        agent = await self._identity.get(sub.agent_id)
        left = sum(
            e.units_left
            for e in await ents.live_entitlements(conn, sub.user_id, "subscription")
            if e.agent_id == sub.agent_id
        )
        return SubscriptionView(
            id=sub.id,
            agent_id=sub.agent_id,
            agent_name=agent.name,
            plan=sub.plan,
            peeks_per_period=sub.peeks_per_period,
            price_cents=sub.price_cents,
            status=sub.status,
            provider=sub.provider,
            current_period_start=sub.current_period_start,
            current_period_end=sub.current_period_end,
            peeks_left=left,
            checkout_url=sub.checkout_url if sub.status == "pending" else None,
            replayed=replayed,
        )

    async def renew_due(self, now: datetime | None = None) -> int:
        """Renew credit-paid subscriptions whose period ended (Stripe renews its own and tells us by
        invoice events). A balance that does not cover the month leaves the subscription past_due."""
        now_dt = now or clock.now()
        now_iso = clock.iso(now_dt)
        await self.expire_lapsed(now_iso)
        async with self._store.read() as conn:
            due = (
                await conn.execute(
                    select(subscriptions.c.id).where(
                        and_(
                            subscriptions.c.provider == "credit",
                            subscriptions.c.status.in_(["active", "past_due"]),
                            subscriptions.c.current_period_end <= now_iso,
                        )
                    )
                )
            ).scalars()
            due_ids = list(due)
        renewed = 0
        for sub_id in due_ids:
            async with self._store.write() as conn:
                sub = (await conn.execute(select(subscriptions).where(subscriptions.c.id == sub_id))).one()
                if sub.current_period_end > now_iso or sub.status not in ("active", "past_due"):
                    continue
                end = clock.parse(sub.current_period_end)
                start = end if now_dt - end < timedelta(days=1) else now_dt  # after a long pause: from now
                balance = await self._ledger.balance(conn, user_credit(sub.user_id))
                if balance < sub.price_cents:
                    if sub.status != "past_due":
                        await self._set_sub(
                            conn, sub.id, status="past_due", last_error="credit did not cover the renewal"
                        )
                    continue
                await self._set_sub(
                    conn,
                    sub.id,
                    status="active",
                    current_period_start=clock.iso(start),
                    current_period_end=clock.iso(add_month(start)),
                    last_error=None,
                )
                sub = (await conn.execute(select(subscriptions).where(subscriptions.c.id == sub_id))).one()
                await self._charge_period_from_credit(
                    conn, sub, key=f"subscription:{sub.id}:period:{sub.current_period_start}"
                )
                renewed += 1
        return renewed

    async def expire_lapsed(self, now: str | None = None) -> int:
        """End subscription periods that are over; their unused peeks' value becomes the platform's."""
        async with self._store.write() as conn:
            return await ents.expire_lapsed(conn, self._ledger, now or clock.now_iso())

    async def run_renewals(self, every: float = RENEW_SECONDS) -> None:
        """Renew due subscriptions periodically until cancelled (the server lifespan runs this)."""
        while True:
            try:
                await self.renew_due()
            except Exception:  # one bad pass must not end renewals; the next pass retries
                logger.exception("subscription renewal pass failed")
            await anyio.sleep(every)

    # --- payout batches ---------------------------------------------------------------------

    async def run_payout_batch(
        self, batch_id: str | None = None, *, min_age_seconds: float = 60.0
    ) -> PayoutBatch | None:
        """Pay Stripe payouts in one batch. Without `batch_id`: claim every pending or failed payout older
        than `min_age_seconds` that no batch holds yet (the claim is one transaction, so two runners never
        pay the same payout). With it: re-send that batch's unpaid payouts. A transfer always carries the
        payout's own idempotency key, so a re-run after a lost answer never pays twice."""
        if self._earnings is None or self._earnings.sender is None:
            raise PaymentUnavailable("Payout batches need the stripe provider; offline, payouts are only recorded.")
        now = clock.now()
        if batch_id is None:
            cutoff = clock.iso(now - timedelta(seconds=min_age_seconds))
            async with self._store.write() as conn:
                claimed = (
                    await conn.execute(
                        select(payouts.c.id, payouts.c.amount_cents).where(
                            and_(
                                payouts.c.provider == "stripe",
                                payouts.c.status.in_(["pending", "failed"]),
                                payouts.c.created_at <= cutoff,
                                payouts.c.id.not_in(select(payout_batch_items.c.payout_id)),
                            )
                        )
                    )
                ).all()
                if not claimed:
                    return None
                batch_id = new_id("pob")
                stamp = clock.iso(now)
                await conn.execute(
                    insert(payout_batches).values(
                        id=batch_id,
                        status="processing",
                        provider="stripe",
                        total_cents=sum(r.amount_cents for r in claimed),
                        created_at=stamp,
                        updated_at=stamp,
                    )
                )
                await conn.execute(
                    insert(payout_batch_items), [{"payout_id": r.id, "batch_id": batch_id} for r in claimed]
                )
        async with self._store.read() as conn:
            if (await conn.execute(select(payout_batches.c.id).where(payout_batches.c.id == batch_id))).first() is None:
                raise NotFound(f"No payout batch {batch_id}.")
            ids = list(
                (
                    await conn.execute(
                        select(payout_batch_items.c.payout_id).where(payout_batch_items.c.batch_id == batch_id)
                    )
                ).scalars()
            )
        results = [await self._earnings.retry_payout(payout_id) for payout_id in sorted(ids)]
        paid = sum(1 for r in results if r.status == "paid")
        status = "paid" if paid == len(results) else "failed" if paid == 0 else "partial"
        async with self._store.write() as conn:
            await conn.execute(
                update(payout_batches)
                .where(payout_batches.c.id == batch_id)
                .values(status=status, attempts=payout_batches.c.attempts + 1, updated_at=clock.now_iso())
            )
        return PayoutBatch(
            id=batch_id,
            status=status,
            paid=paid,
            unpaid=len(results) - paid,
            total_cents=sum(r.amount_cents for r in results),
            errors=tuple(f"{r.id}: {r.last_error}" for r in results if r.status != "paid" and r.last_error),
        )

    # --- reading ------------------------------------------------------------------------------

    async def refund(self, payment_id: str, amount_cents: int | None = None) -> str:
        """Refund a card payment at the provider (admin action); the charge.refunded event then reverses
        the credit, exactly as for a refund made in the Stripe dashboard."""
        async with self._store.read() as conn:
            row = (await conn.execute(select(payments).where(payments.c.id == payment_id))).first()
        if row is None or row.intent_id is None:
            raise NotFound(f"No card payment {payment_id} to refund.")
        left = row.amount_cents - row.refunded_cents
        amount = left if amount_cents is None else amount_cents
        if not 0 < amount <= left:  # the provider may accept over-refunds (localstripe does): we do not
            raise InvalidInput(f"Refund must be 0.01 to {fmt(left)} (what is left of the payment).")
        return await self.provider.refund(
            intent_id=row.intent_id,
            amount_cents=amount,
            idempotency_key=f"refund:{row.id}:{row.refunded_cents + amount}",
        )

    async def wallet(self, user_id: str) -> Wallet:
        """The user's spendable credit and live packs."""
        async with self._store.read() as conn:
            credit = await self._ledger.balance(conn, user_credit(user_id))
            packs = await ents.live_entitlements(conn, user_id, "pack")
        return Wallet(credit_cents=credit, packs=tuple(packs))

    async def set_payout_account(self, caller: Caller, connect_account_id: str) -> str:
        """Where this agent's payouts go (a Stripe Connect account id)."""
        require_role(caller, "agent")
        if not connect_account_id.startswith("acct_"):
            raise InvalidInput("A Stripe Connect account id starts with 'acct_'.")
        async with self._store.write() as conn:
            await conn.execute(
                update(principals)
                .where(principals.c.id == caller.id)
                .values(connect_account_id=connect_account_id, updated_at=clock.now_iso())
            )
        return connect_account_id
