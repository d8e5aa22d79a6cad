"""A hypothesis state machine over credits, packs, subscriptions, price changes, peeks, admin refunds
(before capture, after capture, after the window, after payout), renewals and payouts on a real SQLite
file.

After every step: every entry balances, all lines sum to zero, no user account is below zero, no
platform account is below zero (only external:clearing may be: it is what the platform owes), each
user's held money equals what their peeks still waiting for consent hold (credit and prepaid units),
and for every peek the agents' earnings never exceed what its user paid for it, nor does the
platform ever pay into a peek out of its revenue (issue 10: a subscriber and an agent who raised its
price could drain the platform). A refunded peek nets to zero on every account, a second refund
writes nothing, and an agent left owing by a refund after payout is not paid out.

Referrals (issue 12): `third` was referred by the agent `scout` and u1 by u0; admin grants qualify here
(referral_granted_credit_qualifies) so rewards happen. Then also: platform:referrals only pays out (<= 0),
and equals minus the user rewards still held; scout's commissions equal, to the cent, 10% of third's
share of every captured, unrefunded peek (capped by that peek's fee) and its referral row says the same.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import and_, func, select

from agentchat_mcp import clock
from agentchat_mcp.errors import AgentChatError
from agentchat_mcp.server import build_app_context
from agentchat_mcp.services.identity import Caller
from agentchat_mcp.services.ledger import agent_available, user_held
from agentchat_mcp.settings import Settings
from agentchat_mcp.store import open_store
from agentchat_mcp.store.tables import (
    entitlement_uses,
    entitlements,
    ledger_entries,
    ledger_lines,
    peek_consents,
    peeks,
    referrals,
)
from agentchat_mcp.telemetry import Telemetry
from tests import support_db


class MoneyMachine(RuleBasedStateMachine):
    peek_ids = Bundle("peek_ids")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.offset = timedelta(0)
        self._real_now = clock.now
        clock.now = lambda: datetime.now(UTC) + self.offset  # type: ignore[assignment]
        self._portal_cm = start_blocking_portal("asyncio")
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        path = Path(self.tmp.name)
        self.settings = Settings(
            db=support_db.database_for(path / "m.db"),
            secret_file=path / "m.secret",
            referral_granted_credit_qualifies=True,
        )
        self._store_cm = self.portal.wrap_async_context_manager(open_store(self.settings.db))
        self.store = self._store_cm.__enter__()
        self.app = build_app_context(self.settings, self.store, Telemetry())
        self.app.earnings.payout_minimum_cents = 100

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.portal.call(lambda: fn(*args, **kwargs))

    async def _caller(self, role: str, name: str, **kw: Any) -> Caller:
        _, api_key = await self.app.identity.register(role, name, **kw)  # type: ignore[arg-type]
        return await self.app.identity.authenticate(api_key)

    @initialize()
    def setup(self) -> None:
        self.picky = self.run(self._caller, "agent", "picky", peek_price_cents=133, can_refuse=True)
        self.easy = self.run(self._caller, "agent", "easy", peek_price_cents=250, can_refuse=False)
        self.scout = self.run(self._caller, "agent", "scout", peek_price_cents=100)
        self.third = self.run(
            self._caller, "agent", "third", peek_price_cents=99, can_refuse=False, referral_code=self._code(self.scout)
        )
        first = self.run(self._caller, "user", "u0")
        self.users = [first, self.run(self._caller, "user", "u1", referral_code=self._code(first))]
        both, _ = self.run(self.app.conversations.start, self.picky, [self.easy.id], "consent needed", "hello")
        standing, _ = self.run(self.app.conversations.start, self.easy, [self.third.id], "standing", "hi")
        self.conversations = [both.id, standing.id]
        self.agents = [self.picky, self.easy, self.third]
        self.refunded: set[str] = set()

    def _code(self, who: Caller) -> str:
        assert self.app.referrals is not None
        return str(self.run(self.app.referrals.code_for, who))

    def teardown(self) -> None:
        self._store_cm.__exit__(None, None, None)
        self._portal_cm.__exit__(None, None, None)
        clock.now = self._real_now  # type: ignore[method-assign]
        support_db.release(Path(self.tmp.name) / "m.db")
        self.tmp.cleanup()

    def attempt(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a step; refusals the product gives to callers (not enough credit, wrong state) are fine."""
        try:
            return self.run(fn, *args, **kwargs)
        except AgentChatError:
            return None

    @rule(user=st.integers(0, 1), cents=st.integers(1, 5000))
    def grant(self, user: int, cents: int) -> None:
        self.run(self.app.earnings.grant, self.users[user].id, cents)

    @rule(target=peek_ids, user=st.integers(0, 1), conv=st.integers(0, 1), duration=st.integers(1, 90))
    def request(self, user: int, conv: int, duration: int) -> str:
        peek = self.attempt(
            self.app.peeks.request,
            self.users[user],
            self.conversations[conv],
            max_price_cents=10_000,
            duration_minutes=duration,
        )
        return peek.id if peek else "pek_" + "0" * 20

    @rule(peek_id=peek_ids, accept=st.booleans())
    def respond(self, peek_id: str, accept: bool) -> None:
        self.attempt(self.app.peeks.respond, self.picky, peek_id, "accept" if accept else "refuse", None)

    @rule(peek_id=peek_ids, user=st.integers(0, 1))
    def cancel(self, peek_id: str, user: int) -> None:
        self.attempt(self.app.peeks.cancel, self.users[user], peek_id)

    @rule(peek_id=peek_ids)
    def refund(self, peek_id: str) -> None:
        """An admin refund at whatever stage the peek is: waiting for consent (before capture), captured,
        window over, or paid out. A second refund writes nothing."""
        assert self.app.refunds is not None
        first = self.attempt(self.app.refunds.refund_peek, peek_id, reason="dispute")
        if first is None:
            return
        entries = self.run(self._entries)
        again = self.run(self.app.refunds.refund_peek, peek_id, reason="dispute")
        assert again.replayed and self.run(self._entries) == entries
        self.refunded.add(peek_id)
        event(f"refund from {first.refunded_from}" + (", agent left owing" if first.agents_owing else ""))

    @rule(stage=st.sampled_from(["before capture", "after capture", "after payout"]), user=st.integers(0, 1))
    def refund_at_stage(self, stage: str, user: int) -> None:
        """Drive a fresh peek to `stage` (in whatever state the rest of the machine left), then refund it."""
        self.run(self.app.earnings.grant, self.users[user].id, 2000)
        conversation = self.conversations[0 if stage == "before capture" else 1]  # 1: standing consent
        peek = self.attempt(
            self.app.peeks.request, self.users[user], conversation, max_price_cents=10_000, duration_minutes=5
        )
        if peek is None:  # e.g. a window of this user's still open on it
            return
        if stage == "after payout":
            self.offset += timedelta(minutes=6)
            self.run(self.app.peeks.settle_due)
            self.attempt(self.app.earnings.request_payout, self.easy, None)
        self.refund(peek.id)

    @rule(user=st.integers(0, 1), pack=st.sampled_from(["pack-5", "pack-10"]))
    def buy_pack(self, user: int, pack: str) -> None:
        assert self.app.payments is not None
        self.attempt(self.app.payments.buy_pack, self.users[user], pack, "credit", None)

    @rule(user=st.integers(0, 1), agent=st.integers(0, 2), plan=st.sampled_from(["monthly-4", "monthly-10"]))
    def subscribe(self, user: int, agent: int, plan: str) -> None:
        assert self.app.payments is not None
        self.attempt(self.app.payments.subscribe, self.users[user], self.agents[agent].id, plan, "credit", None)

    @rule(user=st.integers(0, 1), agent=st.integers(0, 2))
    def unsubscribe(self, user: int, agent: int) -> None:
        assert self.app.payments is not None
        self.attempt(self.app.payments.cancel_subscription, self.users[user], self.agents[agent].id)

    @rule(agent=st.integers(0, 2), cents=st.sampled_from([50, 99, 250, 499, 501, 50_000]))
    def set_price(self, agent: int, cents: int) -> None:
        self.run(self.app.identity.update_profile, self.agents[agent], peek_price_cents=cents)

    @rule(minutes=st.sampled_from([1, 30, 120, 25 * 60, 31 * 24 * 60]))
    def time_passes(self, minutes: int) -> None:
        self.offset += timedelta(minutes=minutes)
        self.run(self.app.peeks.settle_due)
        assert self.app.payments is not None
        self.run(self.app.payments.renew_due)  # also ends lapsed periods

    @rule(agent=st.integers(0, 2), cents=st.none() | st.integers(1, 500))
    def payout(self, agent: int, cents: int | None) -> None:
        owed = self.run(self._available, self.agents[agent].id) < 0
        paid = self.attempt(self.app.earnings.request_payout, self.agents[agent], cents)
        assert not (owed and paid), "an agent owing a refund was paid out"

    async def _entries(self) -> int:
        async with self.store.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(ledger_entries))).scalar_one())

    async def _available(self, agent_id: str) -> int:
        async with self.store.read() as conn:
            return await self.app.ledger.balance(conn, agent_available(agent_id))

    async def _check_referrals(self, conn: Any, referral_cost: int) -> None:
        rewards = dict((await conn.execute(select(referrals.c.referee_id, referrals.c.reward_cents))).all())
        # the user reward: 5.00 or nothing, and what is still out is exactly what platform:referrals paid
        assert rewards[self.users[1].id] in (0, 500)
        assert referral_cost == -rewards[self.users[1].id]
        # the agent commission: at most 10% of third's share (capped by its fee) of every peek captured within
        # the commission period and not refunded; the per-peek check below shows it came out of platform revenue
        earns_until = (
            await conn.execute(select(referrals.c.earns_until).where(referrals.c.referee_id == self.third.id))
        ).scalar_one()
        expected = 0
        rows = await conn.execute(
            select(peek_consents.c.price_cents, peek_consents.c.fee_cents)
            .join(peeks, peeks.c.id == peek_consents.c.peek_id)
            .where(
                and_(
                    peek_consents.c.agent_id == self.third.id,
                    peeks.c.status.in_(("active", "completed")),
                    peeks.c.window_start.is_not(None),
                    peeks.c.decided_at < earns_until,
                )
            )
        )
        for price, fee in rows.all():
            expected += min((price - fee) * 10 // 100, fee)
        commission = (
            await conn.execute(
                select(func.coalesce(func.sum(ledger_lines.c.amount_cents), 0)).where(
                    ledger_lines.c.account.in_((f"agent:{self.scout.id}:pending", f"agent:{self.scout.id}:available"))
                )
            )
        ).scalar_one()
        assert 0 <= commission == rewards[self.third.id] <= expected

    @invariant()
    def ledger_is_sound(self) -> None:
        if not hasattr(self, "users"):
            return
        self.run(self._check)

    async def _check(self) -> None:
        async with self.store.read() as conn:
            assert await self.app.ledger.total(conn) == 0
            assert await self.app.ledger.unbalanced_entries(conn) == []
            users = await self.app.ledger.balances(conn, "user:")
            assert all(cents >= 0 for cents in users.values()), users
            platform = await self.app.ledger.balances(conn, "platform:")
            referral_cost = platform.pop("platform:referrals", 0)
            assert all(cents >= 0 for cents in platform.values()), platform
            await self._check_referrals(conn, referral_cost)
            for user in self.users:
                waiting = and_(peeks.c.user_id == user.id, peeks.c.status == "awaiting_consent")
                charged = (
                    await conn.execute(select(func.coalesce(func.sum(peeks.c.charged_cents), 0)).where(waiting))
                ).scalar_one()
                units = (
                    await conn.execute(
                        select(func.coalesce(func.sum(entitlements.c.unit_value_cents), 0))
                        .select_from(entitlement_uses)
                        .join(entitlements, entitlements.c.id == entitlement_uses.c.entitlement_id)
                        .join(peeks, peeks.c.id == entitlement_uses.c.peek_id)
                        .where(and_(waiting, entitlement_uses.c.status == "used"))
                    )
                ).scalar_one()
                held = (
                    await conn.execute(
                        select(func.coalesce(func.sum(ledger_lines.c.amount_cents), 0)).where(
                            ledger_lines.c.account == user_held(user.id)
                        )
                    )
                ).scalar_one()
                assert held == charged + units
            # Per peek, over all its entries: what agents got <= what left its user; the platform never pays in.
            per_peek: dict[str, dict[str, int]] = {}
            for ref, account, cents in await conn.execute(
                select(ledger_entries.c.ref, ledger_lines.c.account, ledger_lines.c.amount_cents)
                .join(ledger_lines, ledger_lines.c.entry_id == ledger_entries.c.id)
                .where(ledger_entries.c.ref.like("pek_%"))
            ):
                side = account.split(":")[0]
                sums = per_peek.setdefault(ref, {})
                sums[side] = sums.get(side, 0) + cents
            # A refunded peek nets to zero on every account (reversed in full, whatever its stage).
            for peek_id in self.refunded:
                net = await conn.execute(
                    select(ledger_lines.c.account, func.sum(ledger_lines.c.amount_cents))
                    .join(ledger_entries, ledger_entries.c.id == ledger_lines.c.entry_id)
                    .where(ledger_entries.c.ref == peek_id)
                    .group_by(ledger_lines.c.account)
                )
                assert all(cents == 0 for _, cents in net.all()), peek_id
            for ref, sums in per_peek.items():
                paid = -sums.get("user", 0)
                assert sums.get("agent", 0) <= paid, (ref, sums)
                assert sums.get("platform", 0) >= 0, (ref, sums)


MoneyMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMoneyMachine = MoneyMachine.TestCase

pytestmark = pytest.mark.slow  # 60 examples of 30 steps on a real database: ~30 s
