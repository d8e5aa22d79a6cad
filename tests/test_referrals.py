"""Referrals through real MCP clients on a real SQLite file: codes, attribution, rewards to the cent,
and every fraud check trying to cheat and failing to get paid (issue 12)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio
import httpx2
import pytest
import sqlalchemy
from alembic import command
from alembic.script import ScriptDirectory
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from agentchat_mcp import clock
from agentchat_mcp.app import AppContext
from agentchat_mcp.server import build_app_context
from agentchat_mcp.services.identity import RegistrationFacts
from agentchat_mcp.services.referrals import PAUSED, add_months
from agentchat_mcp.store import migrations, open_store
from tests.conftest import Account, Hub, TravelClock, error_text, ledger_total, rows, structured
from tests.payments_support import event, pay_hub
from tests.support_http import serving_app
from tests.test_payments import account, checkout_payment, paid_session, stripe_stub
from tests.test_payments import recording_provider as recording

pytestmark = pytest.mark.anyio


def configure(hub: Hub, **settings: Any) -> None:
    hub.settings = hub.settings.model_copy(update=settings)


async def code_of(hub: Hub, who: Account) -> str:
    async with hub.client(who) as c:
        return str(structured(await c.call_tool("get_referral_code", {}))["code"])


async def register(hub: Hub, role: str, name: str, code: str | None, **extra: Any) -> Account:
    """Register through a fresh anonymous in-memory session, with a referral code."""
    args: dict[str, Any] = {"referral_code": code} if code else {}
    if role == "agent":
        args |= {"name": name, "peek_price": extra.get("peek_price", "10.00"), "can_refuse": False}
        tool = "register_agent"
    else:
        args |= {"display_name": name}
        tool = "register_user"
    async with hub.client() as c:
        got = structured(await c.call_tool(tool, args))
    return Account(id=got["id"], role=role, name=name, api_key=got["api_key"])


async def grant(hub: Hub, user: Account, amount: str) -> None:
    admin = await hub.register_admin(f"admin-{user.name}")
    async with hub.client(admin) as c:
        structured(await c.call_tool("grant_credits", {"user_id": user.id, "amount": amount}))


async def stats(hub: Hub, who: Account) -> dict[str, Any]:
    async with hub.client(who) as c:
        return structured(await c.call_tool("get_referral_stats", {}))


async def peek(hub: Hub, user: Account, conversation_id: str, max_price: str, minutes: int = 5) -> str:
    async with hub.client(user) as u:
        got = structured(
            await u.call_tool(
                "request_peek",
                {"conversation_id": conversation_id, "max_price": max_price, "duration_minutes": minutes},
            )
        )
    assert got["status"] in ("active", "scheduled"), got
    return str(got["id"])


async def talk(hub: Hub, starter: Account, *others: Account) -> str:
    async with hub.client(starter) as c:
        got = structured(
            await c.call_tool("start_conversation", {"participants": [o.id for o in others], "topic": "t"})
        )
    return str(got["conversation"]["id"])


@asynccontextmanager
async def service(hub: Hub) -> AsyncIterator[AppContext]:
    """The hub's services in this process (what an admin tool or a webhook would call)."""
    async with open_store(hub.settings.db) as store:
        yield build_app_context(hub.settings, store, hub.telemetry)


async def settle(hub: Hub) -> None:
    async with service(hub) as app:
        await app.peeks.settle_due()


def accounts_in_range(hub: Hub) -> None:
    """The ledger balances and no user, agent or platform account is below zero (only clearing may be)."""
    assert ledger_total(hub) == 0
    negative = rows(
        hub,
        "SELECT account, SUM(amount_cents) FROM ledger_lines GROUP BY account "
        "HAVING SUM(amount_cents) < 0 AND account NOT IN ('external:clearing', 'platform:referrals', "
        "'platform:clawback')",
    )
    assert negative == []


# --- codes and attribution ---------------------------------------------------------------------------


async def test_every_principal_has_one_stable_unguessable_code_and_a_bad_code_registers_nobody(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    uma = await hub.register_user("uma")
    codes = {await code_of(hub, alice), await code_of(hub, alice), await code_of(hub, uma)}
    assert len(codes) == 2 and all(re.fullmatch(r"ref_[A-Za-z0-9_-]{16}", c) for c in codes)
    async with hub.client(alice) as a:
        got = structured(await a.call_tool("get_referral_code", {}))
    assert "10% of the peek earnings" in got["rewards"] and "6 months" in got["rewards"]
    before = rows(hub, "SELECT COUNT(*) FROM principals")
    async with hub.client() as c:
        bad = error_text(
            await c.call_tool(
                "register_agent", {"name": "mallory", "peek_price": "1.00", "referral_code": "ref_" + "A" * 16}
            )
        )
        malformed = error_text(await c.call_tool("register_user", {"display_name": "m", "referral_code": "nope"}))
    assert "referral code is not valid" in bad and "nobody was registered" in bad
    assert "referral_code" in malformed
    assert rows(hub, "SELECT COUNT(*) FROM principals") == before


async def test_a_referral_is_recorded_pending_with_the_referees_public_name(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    bob = await register(hub, "agent", "bob", await code_of(hub, alice))
    got = await stats(hub, alice)
    assert (got["pending"], got["rewarded"], got["rejected"], got["earned_lifetime"]) == (1, 0, 0, "0.00")
    (item,) = got["referrals"]
    assert (item["referee_id"], item["referee_name"], item["kind"], item["status"]) == (
        bob.id,
        "bob",
        "agent",
        "pending",
    )
    async with hub.client(alice) as a:  # the same dashboard as a resource
        read = await a.read_resource("agentchat://referrals")
    assert '"referee_name":"bob"' in read.contents[0].text.replace(" ", "")


# --- agent -> agent commission ------------------------------------------------------------------------


async def test_an_agent_earns_ten_percent_of_a_referees_share_for_six_months_out_of_platform_revenue(
    hub: Hub, travel: TravelClock
) -> None:
    configure(hub, referral_granted_credit_qualifies=True)
    alice = await hub.register_agent("alice")
    bob = await register(hub, "agent", "bob", await code_of(hub, alice), peek_price="10.00")
    carl = await hub.register_agent("carl", peek_price="1.00", can_refuse=False)
    uma = await hub.register_user("uma")
    await grant(hub, uma, "100.00")
    conv = await talk(hub, bob, carl)
    for _ in range(3):  # month 1
        await peek(hub, uma, conv, "11.00")
        travel.advance(minutes=10)
    await settle(hub)
    # bob's share of a 10.00 peek is 8.00 (fee 2.00): 10% is 0.80, three times, from the platform's fees
    assert account(hub, f"agent:{alice.id}:available") == 240
    assert account(hub, f"agent:{bob.id}:available") == 3 * 800  # never out of the referee's share
    assert account(hub, "platform:revenue") == 3 * (200 + 20) - 240
    travel.advance(days=200)  # month 7: the commission period is over
    await peek(hub, uma, conv, "11.00")
    travel.advance(minutes=10)
    await settle(hub)
    assert account(hub, f"agent:{alice.id}:available") == 240
    assert account(hub, f"agent:{bob.id}:available") == 4 * 800
    assert account(hub, "platform:revenue") == 4 * 220 - 240
    got = await stats(hub, alice)
    assert (got["rewarded"], got["earned_lifetime"], got["pending_rewards"]) == (1, "2.40", "0.00")
    accounts_in_range(hub)


async def test_a_refunded_peek_takes_its_commission_back_with_it(hub: Hub) -> None:
    configure(hub, referral_granted_credit_qualifies=True)
    alice = await hub.register_agent("alice")
    bob = await register(hub, "agent", "bob", await code_of(hub, alice), peek_price="10.00")
    carl = await hub.register_agent("carl", peek_price="1.00", can_refuse=False)
    uma = await hub.register_user("uma")
    await grant(hub, uma, "30.00")
    conv = await talk(hub, bob, carl)
    kept, refunded = await peek(hub, uma, conv, "11.00"), await peek(hub, uma, await talk(hub, bob, carl), "11.00")
    assert account(hub, f"agent:{alice.id}:pending") == 160
    assert (await stats(hub, alice))["pending_rewards"] == "1.60"
    root = await hub.register_admin("root")
    async with hub.client(root) as r:  # the admin's refund_peek (issue 14), twice: a replay changes nothing
        first = structured(await r.call_tool("refund_peek", {"peek_id": refunded, "reason": "dispute"}))
        again = structured(await r.call_tool("refund_peek", {"peek_id": refunded, "reason": "dispute"}))
    assert (first["replayed"], again["replayed"]) == (False, True)
    assert account(hub, f"agent:{alice.id}:pending") == 80
    assert rows(hub, "SELECT reward_cents FROM referrals") == [(80,)]
    got = await stats(hub, alice)
    assert (got["earned_lifetime"], got["earned_this_month"]) == ("0.80", "0.80")
    assert kept != refunded
    accounts_in_range(hub)


async def switch_referrals(hub: Hub, on: bool) -> None:
    root = await hub.register_admin("root-on" if on else "root-off")
    async with hub.client(root) as r:
        structured(await r.call_tool("set_feature_flag", {"flag": "referrals", "value": on, "reason": "test"}))


async def settle_as_a_server_does(hub: Hub) -> None:
    """settle() with the feature flags loaded, as a running server's sweeper has them."""
    async with service(hub) as app:
        await app.flags.load()
        await app.peeks.settle_due()
        app.flags.close()


async def test_while_the_referrals_switch_is_off_nobody_is_attributed_and_nothing_is_paid(
    hub: Hub, travel: TravelClock
) -> None:
    configure(hub, referral_granted_credit_qualifies=True)
    alice, ann = await hub.register_agent("alice"), await hub.register_user("ann")
    bob = await register(hub, "agent", "bob", await code_of(hub, alice), peek_price="10.00")
    uma = await register(hub, "user", "uma", await code_of(hub, ann))
    carl = await hub.register_agent("carl", peek_price="1.00", can_refuse=False)
    await grant(hub, uma, "100.00")
    conv = await talk(hub, bob, carl)
    code = await code_of(hub, alice)

    await switch_referrals(hub, False)
    before = rows(hub, "SELECT COUNT(*) FROM principals")
    async with hub.client() as c:
        args = {"name": "dan", "peek_price": "1.00", "referral_code": code}
        refused = error_text(await c.call_tool("register_agent", args))
    assert refused == f"Error executing tool register_agent: {PAUSED}"
    assert rows(hub, "SELECT COUNT(*) FROM principals") == before
    await peek(hub, uma, conv, "11.00")  # captured and ended while paused: no commission, no reward
    travel.advance(minutes=10)
    await settle_as_a_server_does(hub)
    assert account(hub, f"agent:{alice.id}:available") == 0
    assert account(hub, f"user:{ann.id}:credit") == 0
    assert rows(hub, "SELECT kind, status FROM referrals ORDER BY kind") == [("agent", "pending"), ("user", "pending")]

    await switch_referrals(hub, True)
    await peek(hub, uma, conv, "11.00")
    travel.advance(minutes=10)
    await settle_as_a_server_does(hub)
    assert account(hub, f"agent:{alice.id}:available") == 80  # 10% of bob's 8.00, this peek only
    assert account(hub, f"user:{ann.id}:credit") == 500  # the next qualifying peek paid the reward
    accounts_in_range(hub)


async def test_commissions_are_capped_per_referrer_per_day_and_month(hub: Hub) -> None:
    configure(hub, referral_granted_credit_qualifies=True, referral_daily_cap=1, referral_monthly_cap=30)
    alice = await hub.register_agent("alice")
    code = await code_of(hub, alice)
    bob = await register(hub, "agent", "bob", code)
    dave = await register(hub, "agent", "dave", code)
    carl = await hub.register_agent("carl", peek_price="1.00", can_refuse=False)
    uma = await hub.register_user("uma")
    await grant(hub, uma, "50.00")
    await peek(hub, uma, await talk(hub, bob, carl), "11.00")
    await peek(hub, uma, await talk(hub, dave, carl), "11.00")  # a second rewarded referral today: over the cap
    assert account(hub, f"agent:{alice.id}:pending") == 80
    got = await stats(hub, alice)
    assert (got["rewarded"], got["rejected"]) == (1, 1)
    (rejected,) = [r for r in got["referrals"] if r["status"] == "rejected"]
    assert (
        rejected["referee_name"] == "dave" and "cap of 1 rewarded referrals per referrer per day" in rejected["reason"]
    )
    accounts_in_range(hub)


async def test_the_monthly_cap_holds_across_days(hub: Hub, travel: TravelClock) -> None:
    configure(hub, referral_granted_credit_qualifies=True, referral_daily_cap=5, referral_monthly_cap=1)
    travel.offset = clock.now().replace(day=1, hour=1) - clock.now() + timedelta(days=31)  # early in a month
    alice = await hub.register_agent("alice")
    code = await code_of(hub, alice)
    bob, dave = await register(hub, "agent", "bob", code), await register(hub, "agent", "dave", code)
    carl = await hub.register_agent("carl", peek_price="1.00", can_refuse=False)
    uma = await hub.register_user("uma")
    await grant(hub, uma, "50.00")
    await peek(hub, uma, await talk(hub, bob, carl), "11.00")
    travel.advance(days=2)
    await peek(hub, uma, await talk(hub, dave, carl), "11.00")
    assert account(hub, f"agent:{alice.id}:pending") + account(hub, f"agent:{alice.id}:available") == 80
    rejected = next(r for r in (await stats(hub, alice))["referrals"] if r["status"] == "rejected")
    assert "per month" in rejected["reason"]


async def test_peeks_paid_with_granted_credit_earn_no_commission(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    bob = await register(hub, "agent", "bob", await code_of(hub, alice))
    carl = await hub.register_agent("carl", peek_price="1.00", can_refuse=False)
    uma = await hub.register_user("uma")
    await grant(hub, uma, "50.00")  # an admin's credit to a fresh account: no money came in
    await peek(hub, uma, await talk(hub, bob, carl), "11.00")
    assert account(hub, f"agent:{alice.id}:pending") == 0
    assert (await stats(hub, alice))["pending"] == 1


# --- user -> user reward, with money that really came in ---------------------------------------------


async def test_a_user_who_refers_a_paying_user_gets_exactly_five_once_and_loses_it_on_refund(
    hub: Hub, travel: TravelClock
) -> None:
    async with pay_hub(hub, recording(stripe_stub())) as p:
        ann = await hub.register_user("ann")
        alice = await hub.register_agent("alice", peek_price="2.00", can_refuse=False)
        bob = await hub.register_agent("bob", peek_price="1.00", can_refuse=False)
        zed = await register(hub, "user", "zed", await code_of(hub, ann))
        pid = await checkout_payment(p, zed)
        assert (await p.post_event(event("checkout.session.completed", paid_session(pid, 2000)))).status_code == 200
        conv = await talk(hub, alice, bob)
        first = await peek(hub, zed, conv, "3.00")
        await peek(hub, zed, await talk(hub, alice, bob), "3.00", minutes=6)
        await peek(hub, zed, await talk(hub, bob, alice), "3.00", minutes=7)
        assert account(hub, f"user:{ann.id}:credit") == 0  # captured, but the window is still open
        waiting = await stats(hub, ann)
        assert (waiting["completed"], waiting["pending_rewards"]) == (1, "5.00")
        travel.advance(minutes=10)

        async def settle_from(who: Account) -> None:  # every participant's request settles due peeks
            async with hub.client(who) as c:
                structured(await c.call_tool("get_balance", {}))

        async with anyio.create_task_group() as tg:  # concurrent settlements and retries
            for who in (zed, zed, alice, bob, zed):
                tg.start_soon(settle_from, who)
        await settle(hub)
        assert account(hub, f"user:{ann.id}:credit") == 500
        assert rows(hub, "SELECT status, reward_cents FROM referrals") == [("rewarded", 500)]
        got = await stats(hub, ann)
        assert (got["rewarded"], got["earned_lifetime"], got["earned_this_month"]) == (1, "5.00", "5.00")
        assert rows(hub, "SELECT qualifying_peek_id FROM referrals") == [(first,)]
        # the qualifying peek is refunded: the reward is clawed back and the referral says why
        await p.context.peeks.refund(first, reason="chargeback")
        assert account(hub, f"user:{ann.id}:credit") == 0
        (item,) = (await stats(hub, ann))["referrals"]
        assert item["status"] == "rejected" and f"qualifying peek {first} was refunded" in item["reason"]
        accounts_in_range(hub)


async def test_a_disputed_payment_claws_the_user_reward_back(hub: Hub, travel: TravelClock) -> None:
    async with pay_hub(hub, recording(stripe_stub())) as p:
        ann = await hub.register_user("ann")
        alice = await hub.register_agent("alice", peek_price="2.00", can_refuse=False)
        bob = await hub.register_agent("bob", peek_price="1.00", can_refuse=False)
        zed = await register(hub, "user", "zed", await code_of(hub, ann))
        pid = await checkout_payment(p, zed)
        await p.post_event(event("checkout.session.completed", paid_session(pid, 2000)))
        await peek(hub, zed, await talk(hub, alice, bob), "3.00")
        travel.advance(minutes=10)
        await settle(hub)
        assert account(hub, f"user:{ann.id}:credit") == 500
        async with hub.client(ann) as a:  # ann spends 2.00 of it before the dispute
            await a.call_tool("request_peek", {"conversation_id": await talk(hub, bob, alice), "max_price": "3.00"})
        dispute = {"id": "dp_1", "object": "dispute", "amount": 2000, "payment_intent": "pi_x", "status": "lost"}
        assert (await p.post_event(event("charge.dispute.created", dispute))).json()["outcome"] == "reversed 2000"
    assert account(hub, f"user:{ann.id}:credit") == 0  # what was left of the reward is taken back
    (item,) = (await stats(hub, ann))["referrals"]
    assert item["status"] == "rejected" and "refunded or disputed" in item["reason"] and item["reward"] == "3.00"
    accounts_in_range(hub)


async def test_admin_credit_does_not_qualify_a_user_referral_unless_a_setting_says_so(
    hub: Hub, travel: TravelClock
) -> None:
    ann = await hub.register_user("ann")
    alice = await hub.register_agent("alice", peek_price="2.00", can_refuse=False)
    bob = await hub.register_agent("bob", peek_price="1.00", can_refuse=False)
    zed = await register(hub, "user", "zed", await code_of(hub, ann))
    await grant(hub, zed, "20.00")
    await peek(hub, zed, await talk(hub, alice, bob), "3.00")
    travel.advance(minutes=10)
    await settle(hub)
    assert account(hub, f"user:{ann.id}:credit") == 0
    assert (await stats(hub, ann))["pending"] == 1  # still pending: a peek paid with real money may qualify
    configure(hub, referral_granted_credit_qualifies=True)
    await peek(hub, zed, await talk(hub, alice, bob), "3.00")
    travel.advance(minutes=10)
    await settle(hub)
    assert account(hub, f"user:{ann.id}:credit") == 500
    accounts_in_range(hub)


async def test_a_qualifying_peek_refunded_inside_its_window_pays_nothing_and_the_next_one_qualifies(
    hub: Hub, travel: TravelClock
) -> None:
    configure(hub, referral_granted_credit_qualifies=True)
    ann = await hub.register_user("ann")
    alice = await hub.register_agent("alice", peek_price="2.00", can_refuse=False)
    bob = await hub.register_agent("bob", peek_price="1.00", can_refuse=False)
    zed = await register(hub, "user", "zed", await code_of(hub, ann))
    await grant(hub, zed, "20.00")
    first = await peek(hub, zed, await talk(hub, alice, bob), "3.00")
    assert rows(hub, "SELECT status, qualifying_peek_id FROM referrals") == [("completed", first)]
    async with service(hub) as app:
        await app.peeks.refund(first, reason="refund")
    assert rows(hub, "SELECT status, qualifying_peek_id FROM referrals") == [("pending", None)]
    second = await peek(hub, zed, await talk(hub, alice, bob), "3.00")
    travel.advance(minutes=10)
    await settle(hub)
    assert rows(hub, "SELECT status, qualifying_peek_id FROM referrals") == [("rewarded", second)]
    assert account(hub, f"user:{ann.id}:credit") == 500
    accounts_in_range(hub)


# --- fraud checks at attribution ----------------------------------------------------------------------


async def test_a_signed_in_holder_cannot_register_another_principal_with_its_own_code(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    code = await code_of(hub, alice)
    async with hub.client(alice) as a:  # the same API-key holder tries to make a second identity
        refused = error_text(
            await a.call_tool("register_agent", {"name": "alt", "peek_price": "1.00", "referral_code": code})
        )
    assert "already" in refused
    async with hub.client() as c:  # a session that registered acts as its principal: no second registration
        structured(await c.call_tool("register_user", {"display_name": "first"}))
        again = error_text(await c.call_tool("register_user", {"display_name": "alt", "referral_code": code}))
    assert "already" in again
    assert rows(hub, "SELECT COUNT(*) FROM referrals") == [(0,)]


async def test_self_referrals_and_cycles_are_rejected_at_attribution_with_a_reason(hub: Hub) -> None:
    """Registration makes both impossible through the tools (the referee is always new); the service
    checks anyway, so a later way to attach a code (or a bug) cannot pay for one."""
    alice = await hub.register_agent("alice")
    bob = await register(hub, "agent", "bob", await code_of(hub, alice))
    carl = await hub.register_agent("carl")
    bob_code, carl_code = await code_of(hub, bob), await code_of(hub, carl)
    async with service(hub) as app, app.store.write() as conn:
        assert app.referrals is not None
        now = clock.now_iso()
        await app.referrals.attach(conn, RegistrationFacts(alice.id, "agent", now, bob_code, None))  # A->B->A
        await app.referrals.attach(conn, RegistrationFacts(carl.id, "agent", now, carl_code, None))  # itself
    reasons = dict(rows(hub, "SELECT referee_id, COALESCE(reason, '') FROM referrals"))
    assert reasons[bob.id] == ""
    assert reasons[alice.id].startswith("referral cycle")
    assert reasons[carl.id].startswith("self-referral")
    assert (await stats(hub, bob))["rejected"] == 1 and (await stats(hub, carl))["rejected"] == 1


async def test_a_user_registered_with_an_agents_code_is_rejected_and_says_why(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    await register(hub, "user", "uma", await code_of(hub, alice))
    (item,) = (await stats(hub, alice))["referrals"]
    assert item["status"] == "rejected" and "earns only on agents" in item["reason"]
    root = await hub.register_admin("root")
    async with hub.client(root) as r:
        admin_code = structured(await r.call_tool("get_referral_code", {}))
    assert "earn no referral rewards" in admin_code["rewards"]
    await register(hub, "agent", "bot", admin_code["code"])
    (item,) = (await stats(hub, root))["referrals"]
    assert item["status"] == "rejected" and item["reason"] == "admin accounts earn no referral rewards"


async def test_registrations_from_the_referrers_address_within_the_window_earn_nothing(hub: Hub) -> None:
    async with serving_app(hub) as (base, _):

        async def register_over_http(tool: str, args: dict[str, Any]) -> dict[str, Any]:
            async with (
                httpx2.AsyncClient(timeout=30) as http,
                Client(streamable_http_client(f"{base}/mcp", http_client=http)) as c,  # type: ignore[arg-type]
            ):
                return structured(await c.call_tool(tool, args))

        ann = await register_over_http("register_user", {"display_name": "ann"})
        ann_account = Account(id=ann["id"], role="user", name="ann", api_key=ann["api_key"])
        code = await code_of(hub, ann_account)
        await register_over_http("register_user", {"display_name": "sock", "referral_code": code})
    (item,) = (await stats(hub, ann_account))["referrals"]
    assert item["status"] == "rejected" and "same network address" in item["reason"]


# --- the schema ---------------------------------------------------------------------------------------


def _migrate(hub: Hub, down: bool) -> None:
    engine = sqlalchemy.create_engine(f"sqlite:///{hub.settings.db}")
    try:
        with engine.begin() as conn:
            config = migrations.alembic_config()
            config.attributes["connection"] = conn
            if down:  # to the revision before this feature's, whatever number it has after merges
                script = ScriptDirectory.from_config(config)
                ours = next(r for r in script.walk_revisions() if r.path.endswith("_referrals_ratings.py"))
                command.downgrade(config, str(ours.down_revision))
            else:
                command.upgrade(config, "head")
    finally:
        engine.dispose()


@pytest.mark.sqlite_only("downgrades through SQLite's batch migrations, and reads PRAGMA table_info and sqlite_master")
async def test_the_referrals_migration_downgrades_and_upgrades_a_database_holding_data(
    hub: Hub, travel: TravelClock
) -> None:
    configure(hub, referral_granted_credit_qualifies=True)
    alice = await hub.register_agent("alice")
    bob = await register(hub, "agent", "bob", await code_of(hub, alice))
    carl = await hub.register_agent("carl", peek_price="1.00", can_refuse=False)
    uma = await hub.register_user("uma")
    await grant(hub, uma, "20.00")
    await peek(hub, uma, await talk(hub, bob, carl), "11.00")
    async with hub.client(uma) as u:
        travel.advance(minutes=10)
        structured(await u.call_tool("rate_agent", {"agent_id": bob.id, "stars": 5}))
    _migrate(hub, down=True)
    columns = [r[1] for r in rows(hub, "PRAGMA table_info(principals)")]
    assert "referral_code" not in columns and rows(hub, "SELECT name FROM sqlite_master WHERE name = 'referrals'") == []
    assert ledger_total(hub) == 0 and rows(hub, "SELECT COUNT(*) FROM principals") == [(5,)]
    _migrate(hub, down=False)
    codes = rows(hub, "SELECT referral_code FROM principals")
    assert len({c for (c,) in codes}) == 5 and all(c.startswith("ref_") for (c,) in codes)
    assert rows(hub, "SELECT conversations FROM agent_stats WHERE agent_id = ?", bob.id) == [(1,)]
    async with hub.client(alice) as a:  # and the hub works on: alice's code is new, bob is still hers in the books
        assert structured(await a.call_tool("get_referral_stats", {}))["pending"] == 0
    assert account(hub, f"agent:{alice.id}:pending") + account(hub, f"agent:{alice.id}:available") == 80


def test_add_months_keeps_the_day_or_takes_the_last_day_of_a_shorter_month() -> None:
    start = clock.parse("2026-08-31T10:00:00.000000Z")
    assert clock.iso(add_months(start, 6)) == "2027-02-28T10:00:00.000000Z"
    assert clock.iso(add_months(start, 1)) == "2026-09-30T10:00:00.000000Z"
    assert clock.iso(add_months(clock.parse("2026-01-15T00:00:00.000000Z"), 13)) == "2027-02-15T00:00:00.000000Z"
