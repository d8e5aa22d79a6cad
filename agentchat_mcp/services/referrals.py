"""Referrals: codes, attribution at registration, rewards through the ledger, fraud checks, clawbacks.

Rules (docs/peeks-and-money.md, "Referrals"):
- Every principal has one public, unguessable code (`ref_` + 96 random bits). A registration may name
  one; an unknown code is refused and registers nobody. A principal is referred once, at registration,
  so the referrer is always older than the referee.
- user -> user: `user_reward_cents` of peek credit to the referrer, once, when the referee's first peek
  paid with money that really came in (not admin-granted credit, unless a setting says so) completes
  (captured, window over, not refunded). Entry `referral:{id}:reward`, from `platform:referrals`.
- agent -> agent: `commission_percent` of the referee agent's share of each peek captured within
  `commission_months` of its registration, out of that peek's platform revenue (never the referee's
  share). Entry `peek:{peek_id}:referral:{referral_id}`, kind `referral_commission`, ref = the peek id,
  posted in the capture's transaction: anything that reverses a peek's entries (refunds) reverses it.
- Fraud checks: a referrer of another role, an admin, a cycle, or one registered from the same IP
  (keyed hash) within `same_ip_hours` makes the referral `rejected` with its reason; rewards beyond
  `daily_cap` / `monthly_cap` rewarded referrals per referrer are rejected; a refunded qualifying peek,
  or a refunded or disputed payment of the referee, claws the user reward back (as much as the
  referrer's credit still holds) and rejects the referral.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, select, update

from agentchat_mcp import clock
from agentchat_mcp.crypto import new_id
from agentchat_mcp.errors import Forbidden, InvalidInput
from agentchat_mcp.services.identity import Caller, RegistrationFacts
from agentchat_mcp.services.ledger import (
    PLATFORM_REFERRALS,
    PLATFORM_REVENUE,
    Ledger,
    Line,
    agent_available,
    agent_pending,
    user_credit,
    user_held,
)
from agentchat_mcp.store import DbConnection, Store
from agentchat_mcp.store.tables import ledger_entries, ledger_lines, payments, peeks, principals, referrals

logger = logging.getLogger(__name__)

CODE_PREFIX = "ref_"
CODE_PATTERN = r"^ref_[A-Za-z0-9_-]{16}$"
COMMISSION_KIND = "referral_commission"
REWARD_KIND = "referral_reward"
CLAWBACK_KIND = "referral_clawback"
PAUSED = (
    "The referral programme is paused on this server (feature flag 'referrals' is off); nobody was registered. "
    "Register without referral_code, or try again later."
)
BAD_CODE = (
    "This referral code is not valid on this hub (check it with whoever gave it to you); nobody was "
    "registered. Register again with the right referral_code, or without one."
)


def new_referral_code() -> str:
    """A fresh code: 96 random bits, so codes cannot be guessed or enumerated."""
    return CODE_PREFIX + secrets.token_urlsafe(12)


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time `months` calendar months later (the last day of a shorter month)."""
    month0 = moment.month - 1 + months
    year, month = moment.year + month0 // 12, month0 % 12 + 1
    for day in range(moment.day, 27, -1):
        try:
            return moment.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    return moment.replace(year=year, month=month, day=min(moment.day, 28))


@dataclass(frozen=True)
class ReferralRules:
    """The amounts, durations and caps (settings `referral_*`)."""

    user_reward_cents: int = 500
    commission_percent: int = 10
    commission_months: int = 6
    daily_cap: int = 5
    monthly_cap: int = 30
    same_ip_hours: int = 72
    granted_credit_qualifies: bool = False


@dataclass(frozen=True)
class ReferralItem:
    referee_id: str
    referee_name: str
    kind: str
    status: str
    reason: str | None
    reward_cents: int
    created_at: str
    rewarded_at: str | None


@dataclass(frozen=True)
class ReferralStats:
    code: str
    counts: dict[str, int]
    earned_this_month_cents: int
    earned_lifetime_cents: int
    pending_cents: int  # commissions on peeks whose window is still open
    referrals: list[ReferralItem]


def _month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


class Referrals:
    """The referral service; Identity, Peeks and Payments call its hooks inside their transactions."""

    def __init__(self, store: Store, ledger: Ledger, rules: ReferralRules | None = None) -> None:
        self._store = store
        self._ledger = ledger
        self.rules = rules or ReferralRules()
        # Whether the programme is on for a referrer (principal id, role): the `referrals` feature flag,
        # wired by build_app_context. While off: no new attributions, commissions or rewards.
        self.switched_on: Callable[[str, str], bool] = lambda _principal, _role: True

    # --- attribution (Identity.register's transaction) -------------------------------------------

    async def attach(self, conn: DbConnection, facts: RegistrationFacts) -> None:
        """Record who referred the new principal, or refuse an unknown code (the registration rolls back)."""
        if facts.referral_code is None:
            return
        referrer = (
            await conn.execute(select(principals).where(principals.c.referral_code == facts.referral_code))
        ).first()
        if referrer is None:
            raise InvalidInput(BAD_CODE)
        if not self.switched_on(referrer.id, referrer.role):
            raise Forbidden(PAUSED)
        now = clock.parse(facts.created_at)
        reason = await self._refusal(conn, referrer, facts, now)
        earns_until = None
        if facts.role == "agent" and reason is None:
            earns_until = clock.iso(add_months(now, self.rules.commission_months))
        await conn.execute(
            insert(referrals).values(
                id=new_id("rfl"),
                referrer_id=referrer.id,
                referee_id=facts.principal_id,
                code=facts.referral_code,
                kind=facts.role,
                status="rejected" if reason else "pending",
                reason=reason,
                earns_until=earns_until,
                created_at=facts.created_at,
                updated_at=facts.created_at,
            )
        )

    async def _refusal(self, conn: DbConnection, referrer: Any, facts: RegistrationFacts, now: datetime) -> str | None:
        """Why this referral can never earn (stored as its reason), or None."""
        if referrer.id == facts.principal_id:
            return "self-referral: a principal cannot refer itself"
        if referrer.role == "admin":
            return "admin accounts earn no referral rewards"
        if referrer.role != facts.role:
            return f"a {referrer.role}'s code earns only on {referrer.role}s it refers; this was a {facts.role}"
        if await self._is_ancestor(conn, facts.principal_id, referrer.id):
            return "referral cycle: the referee already referred the referrer, directly or through others"
        window = timedelta(hours=self.rules.same_ip_hours)
        if (
            facts.registered_from is not None
            and referrer.registered_from == facts.registered_from
            and abs(now - clock.parse(referrer.created_at)) <= window
        ):
            return "self-referral: registered from the same network address as the referrer"
        return None

    async def _is_ancestor(self, conn: DbConnection, candidate: str, start: str) -> bool:
        """Whether `candidate` referred `start`, directly or up the chain."""
        seen: set[str] = set()
        current: str | None = start
        while current is not None and current not in seen:
            if current == candidate:
                return True
            seen.add(current)
            current = (
                await conn.execute(select(referrals.c.referrer_id).where(referrals.c.referee_id == current))
            ).scalar()
        return False

    # --- money hooks (inside Peeks' and Payments' transactions) -----------------------------------

    async def on_capture(self, conn: DbConnection, peek: Any, consents: Any, now_dt: datetime) -> None:
        """Commissions for the referrers of the peek's agents, out of the revenue this capture posted."""
        capture = await self._entry_lines(conn, f"peek:{peek.id}:capture")
        revenue = sum(x.amount_cents for x in capture if x.account == PLATFORM_REVENUE)
        paid = -sum(x.amount_cents for x in capture if x.account == user_held(peek.user_id))
        now = clock.iso(now_dt)
        if not await self._real_money(conn, peek.user_id, paid):
            return
        # a referee user's first peek paid with real money: the referral is completed, rewarded when it ends
        await conn.execute(
            update(referrals)
            .where(
                and_(
                    referrals.c.referee_id == peek.user_id,
                    referrals.c.kind == "user",
                    referrals.c.status == "pending",
                )
            )
            .values(status="completed", completed_at=now, qualifying_peek_id=peek.id, updated_at=now)
        )
        if revenue <= 0:
            return
        for consent in consents:
            row = (
                await conn.execute(
                    select(referrals).where(
                        and_(
                            referrals.c.referee_id == consent.agent_id,
                            referrals.c.kind == "agent",
                            referrals.c.status.in_(("pending", "rewarded")),
                            referrals.c.earns_until > now,
                        )
                    )
                )
            ).first()
            if row is None or not self.switched_on(row.referrer_id, row.kind):
                continue  # not referred, or the programme is paused for its referrer: no commission on this one
            share = consent.price_cents - consent.fee_cents
            commission = min(share * self.rules.commission_percent // 100, consent.fee_cents, revenue)
            if commission <= 0:
                continue
            if row.status == "pending" and not await self._within_caps(conn, row, now_dt):
                continue
            posted = await self._ledger.post(
                conn,
                idempotency_key=f"peek:{peek.id}:referral:{row.id}",
                kind=COMMISSION_KIND,
                lines=[Line(PLATFORM_REVENUE, -commission), Line(agent_pending(row.referrer_id), commission)],
                memo=f"referral commission on peek {peek.id}",
                ref=peek.id,
            )
            revenue -= commission
            if posted.replayed:  # counted when it was first posted
                continue
            values: dict[str, Any] = {"reward_cents": row.reward_cents + commission, "updated_at": now}
            if row.status == "pending":
                values.update(status="rewarded", completed_at=now, rewarded_at=now, qualifying_peek_id=peek.id)
            await conn.execute(update(referrals).where(referrals.c.id == row.id).values(**values))

    async def on_complete(self, conn: DbConnection, peek_id: str, user_id: str, now: str) -> None:
        """The peek's window is over: its commissions become available; a referee user's reward is paid."""
        moves: list[Line] = []
        for _, _, lines in await self._commissions(conn, peek_id):
            for x in lines:
                if x.amount_cents > 0:
                    referrer = x.account.split(":")[1]
                    moves += [Line(x.account, -x.amount_cents), Line(agent_available(referrer), x.amount_cents)]
        if moves:
            await self._ledger.post(
                conn,
                idempotency_key=f"peek:{peek_id}:referral_available",
                kind="earnings_available",
                lines=moves,
                memo="referral commission: peek window ended",
                ref=peek_id,
            )
        await self._reward_user_referral(conn, peek_id, user_id, now)

    async def _reward_user_referral(self, conn: DbConnection, peek_id: str, user_id: str, now: str) -> None:
        row = (
            await conn.execute(
                select(referrals).where(
                    and_(
                        referrals.c.referee_id == user_id,
                        referrals.c.kind == "user",
                        referrals.c.status.in_(("pending", "completed")),
                    )
                )
            )
        ).first()
        if row is None or (row.status == "completed" and row.qualifying_peek_id != peek_id):
            return  # not referred, or another peek qualified it and its window is still open
        if not self.switched_on(row.referrer_id, row.kind):  # paused: the referee's next peek may qualify it
            await conn.execute(
                update(referrals)
                .where(referrals.c.id == row.id)
                .values(status="pending", completed_at=None, qualifying_peek_id=None, updated_at=now)
            )
            return
        if row.status == "pending":  # qualified before this schema, or by a setting changed since
            capture = await self._entry_lines(conn, f"peek:{peek_id}:capture")
            paid = -sum(x.amount_cents for x in capture if x.account == user_held(user_id))
            if not await self._real_money(conn, user_id, paid):
                return  # stays pending: a later peek paid with money that came in may qualify
        if not await self._within_caps(conn, row, clock.parse(now)):
            return
        amount = self.rules.user_reward_cents
        done = await conn.execute(
            update(referrals)
            .where(and_(referrals.c.id == row.id, referrals.c.status == row.status))
            .values(
                status="rewarded",
                completed_at=row.completed_at or now,
                rewarded_at=now,
                qualifying_peek_id=peek_id,
                reward_cents=amount,
                updated_at=now,
            )
        )
        if done.rowcount != 1 or amount <= 0:
            return
        await self._ledger.post(
            conn,
            idempotency_key=f"referral:{row.id}:reward",
            kind=REWARD_KIND,
            lines=[Line(PLATFORM_REFERRALS, -amount), Line(user_credit(row.referrer_id), amount)],
            memo="referral reward: your referee completed a first paid peek",
            ref=row.id,
        )

    async def on_peek_refunded(self, conn: DbConnection, peek_id: str, now: str) -> None:
        """After the peek's entries were reversed: commissions shrink; a reward it qualified is clawed back."""
        for key, _, lines in await self._commissions(conn, peek_id):
            referral_id = key.rsplit(":", 1)[1]
            amount = sum(x.amount_cents for x in lines if x.amount_cents > 0)
            await conn.execute(
                update(referrals)
                .where(referrals.c.id == referral_id)
                .values(reward_cents=referrals.c.reward_cents - amount, updated_at=now)
            )
        rewarded = (
            await conn.execute(
                select(referrals).where(and_(referrals.c.qualifying_peek_id == peek_id, referrals.c.kind == "user"))
            )
        ).first()
        if rewarded is not None and rewarded.status == "completed":  # not paid yet: another peek may qualify
            await conn.execute(
                update(referrals)
                .where(referrals.c.id == rewarded.id)
                .values(status="pending", completed_at=None, qualifying_peek_id=None, updated_at=now)
            )
        elif rewarded is not None:
            await self._claw_back(conn, rewarded, f"the qualifying peek {peek_id} was refunded", now)

    async def on_payment_reversed(self, conn: DbConnection, user_id: str, payment_id: str) -> None:
        """A payment of a referee user was refunded or disputed: its reward was not earned with real money."""
        row = (
            await conn.execute(
                select(referrals).where(
                    and_(
                        referrals.c.referee_id == user_id, referrals.c.kind == "user", referrals.c.status == "rewarded"
                    )
                )
            )
        ).first()
        if row is not None:
            why = f"the referee's payment {payment_id} was refunded or disputed"
            await self._claw_back(conn, row, why, clock.now_iso())

    async def _claw_back(self, conn: DbConnection, row: Any, why: str, now: str) -> None:
        """Take the user reward back from what the referrer's credit still holds; the referral is rejected."""
        if row.status != "rewarded":
            return
        taken = min(row.reward_cents, await self._ledger.balance(conn, user_credit(row.referrer_id)))
        if taken > 0:
            await self._ledger.post(
                conn,
                idempotency_key=f"referral:{row.id}:clawback",
                kind=CLAWBACK_KIND,
                lines=[Line(user_credit(row.referrer_id), -taken), Line(PLATFORM_REFERRALS, taken)],
                memo=f"referral reward taken back: {why}",
                ref=row.id,
            )
        if taken < row.reward_cents:
            logger.warning("referral %s: %s cents of its reward were already spent", row.id, row.reward_cents - taken)
        await conn.execute(
            update(referrals)
            .where(referrals.c.id == row.id)
            .values(status="rejected", reason=why, reward_cents=row.reward_cents - taken, updated_at=now)
        )

    async def _within_caps(self, conn: DbConnection, row: Any, now_dt: datetime) -> bool:
        """Whether the referrer may have one more rewarded referral now; if not, the referral is rejected."""
        for cap, since, period in (
            (self.rules.daily_cap, _day_start(now_dt), "day"),
            (self.rules.monthly_cap, _month_start(now_dt), "month"),
        ):
            count = (
                await conn.execute(
                    select(func.count())
                    .select_from(referrals)
                    .where(
                        and_(referrals.c.referrer_id == row.referrer_id, referrals.c.rewarded_at >= clock.iso(since))
                    )
                )
            ).scalar_one()
            if count >= cap:
                await conn.execute(
                    update(referrals)
                    .where(referrals.c.id == row.id)
                    .values(
                        status="rejected",
                        reason=f"over the cap of {cap} rewarded referrals per referrer per {period}",
                        updated_at=clock.iso(now_dt),
                    )
                )
                return False
        return True

    async def _real_money(self, conn: DbConnection, user_id: str, paid_cents: int) -> bool:
        """Whether the user paid in (and kept paid in) at least `paid_cents` of outside money."""
        if self.rules.granted_credit_qualifies:
            return True
        paid_in = (
            await conn.execute(
                select(func.coalesce(func.sum(payments.c.amount_cents - payments.c.reversed_cents), 0)).where(
                    and_(
                        payments.c.user_id == user_id,
                        payments.c.provider != "credit",
                        payments.c.fulfilled_at.is_not(None),
                    )
                )
            )
        ).scalar_one()
        return int(paid_in) >= paid_cents > 0

    async def _entry_lines(self, conn: DbConnection, key: str) -> list[Line]:
        rows = await conn.execute(
            select(ledger_lines.c.account, ledger_lines.c.amount_cents)
            .join(ledger_entries, ledger_entries.c.id == ledger_lines.c.entry_id)
            .where(ledger_entries.c.idempotency_key == key)
        )
        return [Line(r.account, r.amount_cents) for r in rows]

    async def _commissions(self, conn: DbConnection, peek_id: str) -> list[tuple[str, str, list[Line]]]:
        """(idempotency key, created_at, lines) of the commission entries of one peek."""
        rows = (
            await conn.execute(
                select(
                    ledger_entries.c.idempotency_key,
                    ledger_entries.c.created_at,
                    ledger_lines.c.account,
                    ledger_lines.c.amount_cents,
                )
                .join(ledger_lines, ledger_lines.c.entry_id == ledger_entries.c.id)
                .where(and_(ledger_entries.c.ref == peek_id, ledger_entries.c.kind == COMMISSION_KIND))
                .order_by(ledger_entries.c.id)
            )
        ).all()
        grouped: dict[str, tuple[str, list[Line]]] = {}
        for r in rows:
            if r.account.startswith("agent:"):
                grouped.setdefault(r.idempotency_key, (r.created_at, []))[1].append(Line(r.account, r.amount_cents))
        return [(k, at, lines) for k, (at, lines) in grouped.items()]

    # --- reading ---------------------------------------------------------------------------------

    async def code_for(self, caller: Caller) -> str:
        """The caller's referral code (made now for a principal that somehow has none)."""
        async with self._store.read() as conn:
            code = (await conn.execute(select(principals.c.referral_code).where(principals.c.id == caller.id))).scalar()
        if code:
            return str(code)
        code = new_referral_code()
        async with self._store.write() as conn:
            await conn.execute(
                update(principals)
                .where(and_(principals.c.id == caller.id, principals.c.referral_code.is_(None)))
                .values(referral_code=code)
            )
            return str(
                (await conn.execute(select(principals.c.referral_code).where(principals.c.id == caller.id))).scalar()
            )

    async def stats(self, caller: Caller, *, limit: int = 50) -> ReferralStats:
        """The caller's dashboard: counts by status, rewards (this month, lifetime, pending), referees."""
        code = await self.code_for(caller)
        month = clock.iso(_month_start(clock.now()))
        async with self._store.read() as conn:
            counts = {
                status: int(n)
                for status, n in (
                    await conn.execute(
                        select(referrals.c.status, func.count())
                        .where(referrals.c.referrer_id == caller.id)
                        .group_by(referrals.c.status)
                    )
                ).all()
            }
            lifetime = (
                await conn.execute(
                    select(func.coalesce(func.sum(referrals.c.reward_cents), 0)).where(
                        referrals.c.referrer_id == caller.id
                    )
                )
            ).scalar_one()
            this_month, pending = await self._recent(conn, caller.id, month)
            pending += counts.get("completed", 0) * self.rules.user_reward_cents if caller.role == "user" else 0
            rows = (
                await conn.execute(
                    select(referrals, principals.c.name)
                    .join(principals, principals.c.id == referrals.c.referee_id)
                    .where(referrals.c.referrer_id == caller.id)
                    .order_by(referrals.c.created_at.desc())
                    .limit(limit)
                )
            ).all()
        for status in ("pending", "completed", "rewarded", "rejected"):
            counts.setdefault(status, 0)
        items = [
            ReferralItem(
                referee_id=r.referee_id,
                referee_name=r.name,
                kind=r.kind,
                status=r.status,
                reason=r.reason,
                reward_cents=r.reward_cents,
                created_at=r.created_at,
                rewarded_at=r.rewarded_at,
            )
            for r in rows
        ]
        return ReferralStats(code, counts, this_month, int(lifetime), pending, items)

    async def _recent(self, conn: DbConnection, referrer_id: str, month: str) -> tuple[int, int]:
        """(earned since `month`, still pending): user rewards net of clawbacks, and commissions on peeks
        not refunded (pending: their window is still open)."""
        accounts = (user_credit(referrer_id), agent_pending(referrer_id))
        rows = (
            await conn.execute(
                select(ledger_entries.c.kind, ledger_entries.c.created_at, ledger_lines.c.amount_cents, peeks.c.status)
                .select_from(ledger_entries)
                .join(ledger_lines, ledger_lines.c.entry_id == ledger_entries.c.id)
                .outerjoin(peeks, peeks.c.id == ledger_entries.c.ref)
                .where(
                    and_(
                        ledger_entries.c.kind.in_((REWARD_KIND, CLAWBACK_KIND, COMMISSION_KIND)),
                        ledger_lines.c.account.in_(accounts),
                    )
                )
            )
        ).all()
        earned = pending = 0
        for kind, created_at, amount, peek_status in rows:
            if kind == COMMISSION_KIND and peek_status == "refunded":
                continue
            if kind == COMMISSION_KIND and peek_status == "active":
                pending += amount
            if created_at >= month:
                earned += amount
        return earned, pending
