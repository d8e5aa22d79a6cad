"""Payments through real MCP clients on a real SQLite file: the offline ledger provider, packs and
subscriptions paying peeks, Stripe Checkout / Connect requests checked with a recording HTTP client,
and the signed webhook (dedupe, concurrency, refunds, disputes, bad signatures)."""

from __future__ import annotations

import time
from typing import Any

import anyio
import mcp_types
import pytest
import sqlalchemy
from alembic import command
from sqlalchemy import text

from agentchat_mcp.store import migrations
from tests.conftest import Account, Hub, TravelClock, error_text, ledger_total, rows, run_cli, structured
from tests.payments_support import (
    PayHub,
    Recorded,
    RecordingHTTPClient,
    event,
    pay_hub,
    recording_provider,
)

pytestmark = pytest.mark.anyio


def account(hub: Hub, name: str) -> int:
    return int(rows(hub, "SELECT COALESCE(SUM(amount_cents), 0) FROM ledger_lines WHERE account = ?", name)[0][0])


async def grant(p: PayHub, user: Account, amount: str) -> None:
    admin = await p.hub.register_admin(f"admin-{time.time_ns()}")
    await p.call(admin, "grant_credits", user_id=user.id, amount=amount)


async def conversation(p: PayHub, *agents: Account) -> str:
    got = await p.call(agents[0], "start_conversation", participants=[a.id for a in agents[1:]], topic="t")
    return str(got["conversation"]["id"])


# --- the offline ledger provider ------------------------------------------------------------------


async def test_offline_buy_credits_explains_how_credit_is_granted_and_writes_nothing(hub: Hub) -> None:
    async with pay_hub(hub, None, mode="ledger") as p:
        user = await hub.register_user("uma")
        async with p.client(user) as u:
            text = error_text(await u.call_tool("buy_credits", {"amount": "20.00", "idempotency_key": "k1"}))
    assert text == (
        "Error executing tool buy_credits: This server runs the offline ledger provider and takes no card payments. "
        "Credit is granted by the hub's admins: ask one for credit."
    )  # not "grant_credits": a user may not call it (issue 11, point 6)
    assert rows(hub, "SELECT COUNT(*) FROM payments") == [(0,)] and ledger_total(hub) == 0


async def test_a_pack_bought_from_credit_pays_a_peek_and_a_refusal_gives_the_peek_back(hub: Hub) -> None:
    async with pay_hub(hub, None, mode="ledger") as p:
        alice = await hub.register_agent("alice", peek_price="3.00", can_refuse=True)
        bob = await hub.register_agent("bob", peek_price="6.00", can_refuse=False)  # above the pack's 5.00 cap
        user = await hub.register_user("uma")
        await grant(p, user, "50.00")
        conv = await conversation(p, alice, bob)
        async with p.client(user) as u, p.client(alice) as a:
            offers = structured(await u.call_tool("buy_peek_pack", {}))
            assert offers["purchase"] is None and offers["your_packs"] == []
            assert {o["name"]: (o["peeks"], o["price"], o["price_per_peek"]) for o in offers["offers"]}["pack-10"] == (
                10,
                "40.00",
                "4.00",
            )
            bought = structured(await u.call_tool("buy_peek_pack", {"pack": "pack-10", "idempotency_key": "pk-1"}))
            purchase = bought["purchase"]
            assert (purchase["status"], purchase["paid_with"], purchase["amount"]) == ("completed", "credit", "40.00")
            assert (purchase["credit"], purchase["pack_peeks_left"]) == ("10.00", 10)

            quote = structured(await u.call_tool("quote_peek", {"conversation_id": conv}))
            paid_by = {x["agent_id"]: x["paid_by"] for x in quote["agents"]}
            assert paid_by == {alice.id: "pack", bob.id: "credit"} and quote["total"] == "6.00"

            peek = structured(await u.call_tool("request_peek", {"conversation_id": conv, "max_price": "6.00"}))
            assert account(hub, f"user:{user.id}:packs") == 3600  # one 4.00 unit held
            structured(await a.call_tool("respond_to_peek", {"peek_id": peek["id"], "decision": "refuse"}))
            assert account(hub, f"user:{user.id}:packs") == 4000 and account(hub, f"user:{user.id}:credit") == 1000
            again = structured(await u.call_tool("buy_peek_pack", {}))
            assert again["your_packs"] == [{"name": "pack-10", "peeks_left": 10, "covers_agents_up_to": "5.00"}]

            peek = structured(await u.call_tool("request_peek", {"conversation_id": conv, "max_price": "6.00"}))
            structured(await a.call_tool("respond_to_peek", {"peek_id": peek["id"], "decision": "accept"}))
        # alice earns 3.00 less 20%, bob 6.00 less 20%; the platform keeps the rest of the 4.00 unit and bob's fee
        assert account(hub, f"agent:{alice.id}:pending") == 240 and account(hub, f"agent:{bob.id}:pending") == 480
        assert account(hub, "platform:revenue") == (400 - 240) + 120
        assert rows(hub, "SELECT units_used, units_total FROM entitlements") == [(1, 10)]
        assert ledger_total(hub) == 0


async def test_a_purchase_replays_by_key_refuses_a_reused_key_and_never_overdraws(hub: Hub) -> None:
    async with pay_hub(hub, None, mode="ledger") as p:
        user = await hub.register_user("uma")
        await grant(p, user, "25.00")
        async with p.client(user) as u:
            first = structured(await u.call_tool("buy_peek_pack", {"pack": "pack-5", "idempotency_key": "a"}))
            again = structured(await u.call_tool("buy_peek_pack", {"pack": "pack-5", "idempotency_key": "a"}))
            assert again["purchase"]["replayed"] and again["purchase"]["payment_id"] == first["purchase"]["payment_id"]
            reused = error_text(await u.call_tool("buy_peek_pack", {"pack": "pack-10", "idempotency_key": "a"}))
            assert "idempotency key reused" in reused
            broke = error_text(await u.call_tool("buy_peek_pack", {"pack": "pack-10", "idempotency_key": "b"}))
            assert "Not enough funds: 2.50 available, 40.00 needed" in broke
            unknown = error_text(await u.call_tool("buy_peek_pack", {"pack": "pack-99"}))
            assert "pack-10" in unknown and "pack-5" in unknown
    assert account(hub, f"user:{user.id}:credit") == 250  # 25.00 - 22.50, once
    assert rows(hub, "SELECT COUNT(*) FROM payments") == [(1,)] and ledger_total(hub) == 0


async def test_a_subscription_from_credit_covers_peeks_renews_monthly_and_lapses_when_credit_runs_out(
    hub: Hub, travel: TravelClock
) -> None:
    async with pay_hub(hub, None, mode="ledger") as p:
        alice = await hub.register_agent("alice", peek_price="2.00", can_refuse=False)
        bob = await hub.register_agent("bob", peek_price="1.00", can_refuse=False)
        user = await hub.register_user("uma")
        await grant(p, user, "15.00")
        conv = await conversation(p, alice, bob)
        async with p.client(user) as u:
            plans = structured(await u.call_tool("subscribe_to_agent", {"agent_id": alice.id}))
            assert plans["subscription"] is None
            assert {x["name"]: x["monthly_price"] for x in plans["plans"]} == {
                "monthly-10": "16.00",
                "monthly-4": "7.20",
            }
            sub = structured(
                await u.call_tool(
                    "subscribe_to_agent", {"agent_id": alice.id, "plan": "monthly-4", "idempotency_key": "s"}
                )
            )["subscription"]
            assert (sub["status"], sub["peeks_left"], sub["monthly_price"]) == ("active", 4, "7.20")
            twice = error_text(await u.call_tool("subscribe_to_agent", {"agent_id": alice.id, "plan": "monthly-10"}))
            assert "already have subscription" in twice

            quote = structured(await u.call_tool("quote_peek", {"conversation_id": conv}))
            assert {x["agent_id"]: x["paid_by"] for x in quote["agents"]} == {
                alice.id: "subscription",
                bob.id: "credit",
            }
            structured(await u.call_tool("request_peek", {"conversation_id": conv, "max_price": "1.00"}))
        assert account(hub, f"agent:{alice.id}:pending") == 160  # the platform pays alice out of the 7.20
        assert account(hub, f"user:{user.id}:credit") == 1500 - 720 - 100

        # Each server's lifespan also renews in the background: assert the state, not who renewed.
        travel.advance(days=32)
        assert p.context is not None and p.context.payments is not None
        await p.context.payments.renew_due()
        assert rows(hub, "SELECT status FROM subscriptions") == [("past_due",)]  # 6.80 < 7.20: not renewed
        assert account(hub, f"user:{user.id}:credit") == 680
        await grant(p, user, "1.00")
        await p.context.payments.renew_due()
        assert rows(hub, "SELECT status FROM subscriptions") == [("active",)]
        assert account(hub, f"user:{user.id}:credit") == 780 - 720
        async with p.client(user) as u:
            cancelled = structured(await u.call_tool("cancel_subscription", {"agent_id": alice.id}))
            assert (cancelled["status"], cancelled["peeks_left"]) == ("cancelled", 4)
        travel.advance(days=32)
        assert await p.context.payments.renew_due() == 0
        assert account(hub, f"user:{user.id}:credit") == 60  # cancelled: not charged again
    assert ledger_total(hub) == 0


async def test_a_subscriber_and_an_agent_who_raises_its_price_cannot_drain_the_platform(hub: Hub) -> None:
    """Issue 10, defect 1: a subscription's per-peek price is locked when it is bought. A covered peek
    pays the agent at most that, and the platform never pays a peek out of its own revenue."""
    async with pay_hub(hub, None, mode="ledger") as p:
        greedy = await hub.register_agent("greedy", peek_price="0.50", can_refuse=False)
        friend = await hub.register_agent("friend", peek_price="0.50", can_refuse=False)
        user = await hub.register_user("uma")
        await grant(p, user, "10.00")
        sub = await p.call(user, "subscribe_to_agent", agent_id=greedy.id, plan="monthly-10", idempotency_key="s")
        assert sub["subscription"]["monthly_price"] == "4.00"  # 10 peeks at 0.50 less 20%: 0.40 each
        await p.call(greedy, "update_profile", peek_price="500.00")
        for _ in range(3):
            conv = await conversation(p, greedy, friend)
            quote = await p.call(user, "quote_peek", conversation_id=conv)
            shares = {x["agent_id"]: (x["paid_by"], x["price"], x["agent_earns"]) for x in quote["agents"]}
            assert shares[greedy.id] == ("subscription", "0.40", "0.40")
            peek = await p.call(user, "request_peek", conversation_id=conv, max_price=quote["total"])
            assert peek["status"] == "active"
    assert account(hub, f"agent:{greedy.id}:pending") == 3 * 40  # never more than the subscriber paid
    assert account(hub, f"agent:{friend.id}:pending") == 3 * 40  # 0.50 less 20%, from credit
    assert account(hub, f"user:{user.id}:subscriptions") == 7 * 40  # the 7 unused peeks, still the user's
    assert account(hub, "platform:revenue") == 3 * 10  # friend's fees; the subscription's peeks cost nothing
    assert ledger_total(hub) == 0


async def test_a_pack_peek_never_pays_an_agent_more_than_the_unit_cost_whatever_the_fee(hub: Hub) -> None:
    """With a fee below the pack's discount, a pack unit (4.00) covering a 5.00 agent pays the agent the
    4.00 it brought in, not 5.00 less a 10% fee (4.50): the platform does not make up the difference."""
    async with pay_hub(hub, None, mode="ledger", platform_fee_percent=10) as p:
        alice = await hub.register_agent("alice", peek_price="5.00", can_refuse=False)
        bob = await hub.register_agent("bob", peek_price="1.00", can_refuse=False)
        user = await hub.register_user("uma")
        await grant(p, user, "40.00")
        await p.call(user, "buy_peek_pack", pack="pack-10", idempotency_key="p")
        conv = await conversation(p, alice, bob)
        quote = await p.call(user, "quote_peek", conversation_id=conv)
        shares = {x["agent_id"]: (x["paid_by"], x["price"], x["agent_earns"]) for x in quote["agents"]}
        assert shares == {alice.id: ("pack", "4.00", "4.00"), bob.id: ("pack", "1.00", "0.90")}
        await p.call(user, "request_peek", conversation_id=conv, max_price="0.00")
    assert account(hub, f"agent:{alice.id}:pending") == 400
    assert account(hub, f"agent:{bob.id}:pending") == 90
    assert account(hub, "platform:revenue") == 400 - 90  # bob's unit less his earnings; alice's unit costs nothing
    assert ledger_total(hub) == 0


def _migrate_to(hub: Hub, revision: str) -> None:
    engine = sqlalchemy.create_engine(f"sqlite:///{hub.settings.db}")
    try:
        with engine.begin() as conn:
            config = migrations.alembic_config()
            config.attributes["connection"] = conn
            if revision == "head":
                command.upgrade(config, "head")
            else:
                command.downgrade(config, revision)
    finally:
        engine.dispose()


@pytest.mark.sqlite_only("steps the SQLite file down and up through Alembic's batch migrations")
async def test_migration_0005_gives_subscriptions_bought_before_it_their_prepaid_value_and_back(hub: Hub) -> None:
    async with pay_hub(hub, None, mode="ledger") as p:
        alice = await hub.register_agent("alice", peek_price="2.00", can_refuse=False)
        bob = await hub.register_agent("bob", peek_price="1.00", can_refuse=False)
        user = await hub.register_user("uma")
        await grant(p, user, "15.00")
        await p.call(user, "subscribe_to_agent", agent_id=alice.id, plan="monthly-4", idempotency_key="s")
        conv = await conversation(p, alice, bob)
        await p.call(user, "request_peek", conversation_id=conv, max_price="1.00")
    prepaid = f"user:{user.id}:subscriptions"
    assert (account(hub, prepaid), account(hub, "platform:revenue")) == (3 * 180, 180 - 160 + 20)

    _migrate_to(hub, "0004")  # the shape before: the period's money in revenue, units worth nothing
    assert (account(hub, prepaid), account(hub, "platform:revenue")) == (0, 3 * 180 + 40)
    assert rows(hub, "SELECT unit_value_cents FROM entitlements") == [(0,)] and ledger_total(hub) == 0

    _migrate_to(hub, "head")
    assert (account(hub, prepaid), account(hub, "platform:revenue")) == (3 * 180, 40)
    assert rows(hub, "SELECT unit_value_cents FROM entitlements") == [(180,)] and ledger_total(hub) == 0
    async with pay_hub(hub, None, mode="ledger") as p:  # and a covered peek after it pays from the units
        await p.call(alice, "update_profile", peek_price="90.00")
        again = await conversation(p, alice, bob)
        await p.call(user, "request_peek", conversation_id=again, max_price="1.00")
    assert account(hub, f"agent:{alice.id}:pending") == 160 + 180 and account(hub, prepaid) == 2 * 180
    assert account(hub, "platform:revenue") == 40 + 20 and ledger_total(hub) == 0


# --- Stripe Checkout and Connect, checked with a recording HTTP client ---------------------------


def stripe_stub() -> RecordingHTTPClient:
    client = RecordingHTTPClient()
    client.on("post", "/v1/customers", lambda r: (200, {"id": "cus_rec", "object": "customer"}))
    client.on(
        "post",
        "/v1/checkout/sessions",
        lambda r: (
            200,
            {"id": "cs_test_1", "object": "checkout.session", "url": "https://checkout.stripe.com/c/pay/cs_test_1"},
        ),
    )
    return client


async def test_without_a_saved_card_buy_credits_hands_back_checkout_and_only_the_webhook_credits(hub: Hub) -> None:
    stub = stripe_stub()
    async with pay_hub(hub, recording_provider(stub)) as p:
        user = await hub.register_user("uma")
        async with p.http_client(user) as u:  # over the hub's Streamable HTTP endpoint
            got = structured(await u.call_tool("buy_credits", {"amount": "20.00", "idempotency_key": "buy-1"}))
            assert (got["status"], got["checkout_url"]) == (
                "awaiting_checkout",
                "https://checkout.stripe.com/c/pay/cs_test_1",
            )
            replay = structured(await u.call_tool("buy_credits", {"amount": "20.00", "idempotency_key": "buy-1"}))
            assert replay["replayed"] and replay["payment_id"] == got["payment_id"]
        pid = got["payment_id"]
        (customer,) = stub.to("post", "/v1/customers")
        assert customer.idempotency_key == f"customer:{user.id}:create"
        (session,) = stub.to("post", "/v1/checkout/sessions")  # the replay sent nothing
        assert session.idempotency_key == f"credits:{pid}:checkout"
        assert {
            k: session.params[k]
            for k in (
                "mode",
                "customer",
                "line_items[0][price_data][unit_amount]",
                "line_items[0][price_data][currency]",
                "metadata[agentchat_payment_id]",
                "payment_intent_data[metadata][agentchat_payment_id]",
                "payment_intent_data[setup_future_usage]",
                "client_reference_id",
            )
        } == {
            "mode": "payment",
            "customer": "cus_rec",
            "line_items[0][price_data][unit_amount]": "2000",
            "line_items[0][price_data][currency]": "usd",
            "metadata[agentchat_payment_id]": pid,
            "payment_intent_data[metadata][agentchat_payment_id]": pid,
            "payment_intent_data[setup_future_usage]": "off_session",
            "client_reference_id": pid,
        }
        assert session.params["success_url"].endswith("/payments/return?result=success")

        assert p.http is not None
        back = await p.http.get("/payments/return", params={"result": "success"})
        assert back.status_code == 200 and "confirming" in back.text
        assert account(hub, f"user:{user.id}:credit") == 0  # the redirect granted nothing

        completed = {
            "id": "cs_test_1",
            "object": "checkout.session",
            "mode": "payment",
            "payment_status": "paid",
            "amount_total": 2000,
            "client_reference_id": pid,
            "metadata": {"agentchat_payment_id": pid},
            "payment_intent": "pi_from_checkout",
        }
        stub.on(
            "get",
            "/v1/payment_intents/pi_from_checkout",
            lambda r: (
                200,
                {
                    "id": "pi_from_checkout",
                    "object": "payment_intent",
                    "status": "succeeded",
                    "amount": 2000,
                    "amount_received": 2000,
                    "payment_method": "pm_saved",
                    "metadata": {"agentchat_payment_id": pid},
                },
            ),
        )
        stub.on(
            "post",
            "/v1/payment_methods/pm_saved/attach",
            lambda r: (200, {"id": "pm_saved", "object": "payment_method"}),
        )
        stub.on("post", "/v1/customers/cus_rec", lambda r: (200, {"id": "cus_rec", "object": "customer"}))
        evt = event("checkout.session.completed", completed)
        first = await p.post_event(evt)
        assert first.status_code == 200 and first.json()["outcome"] == "fulfilled"
        assert (await p.post_event(evt)).json()["outcome"] == "duplicate"
        other = await p.post_event(event("checkout.session.completed", completed))  # same session, new event id
        assert other.json()["outcome"] == "already fulfilled"
        assert account(hub, f"user:{user.id}:credit") == 2000
        # the card used at checkout is saved: the next purchase needs no browser
        assert rows(hub, "SELECT payment_method_id FROM payment_customers") == [("pm_saved",)]
        (default,) = stub.to("post", "/v1/customers/cus_rec")
        assert default.params == {"invoice_settings[default_payment_method]": "pm_saved"}
        async with p.client(user) as u:
            assert structured(await u.call_tool("get_balance", {}))["credit"] == "20.00"
    assert ledger_total(hub) == 0


async def test_a_client_with_url_elicitation_gets_the_checkout_page_directly(hub: Hub) -> None:
    stub = stripe_stub()
    offered: list[str] = []

    async def on_elicit(context: Any, params: Any) -> mcp_types.ElicitResult:
        offered.append(params.url)
        return mcp_types.ElicitResult(action="accept")

    async with pay_hub(hub, recording_provider(stub)) as p:
        user = await hub.register_user("uma")
        async with p.client(user, mode="legacy", elicitation_callback=on_elicit) as u:
            got = structured(await u.call_tool("buy_peek_pack", {"pack": "pack-10"}))["purchase"]
    assert offered == ["https://checkout.stripe.com/c/pay/cs_test_1"]
    assert got["status"] == "awaiting_checkout" and got["checkout_url"] is None  # never through the model
    assert "offered to the user directly" in got["next_step"]


async def test_a_payout_is_a_connect_transfer_with_our_key_and_a_failed_one_retries_with_the_same_key(
    hub: Hub, travel: TravelClock
) -> None:
    stub = stripe_stub()
    answers = iter([(500, {"error": {"type": "api_error", "message": "boom"}})])

    def transfer(r: Recorded) -> tuple[int, dict[str, Any]]:
        return next(answers, (200, {"id": "tr_1", "object": "transfer", "amount": int(r.params["amount"])}))

    stub.on("post", "/v1/transfers", transfer)
    async with pay_hub(hub, recording_provider(stub)) as p:
        alice = await hub.register_agent("alice", peek_price="15.00", can_refuse=False)
        bob = await hub.register_agent("bob", peek_price="5.00", can_refuse=False)
        user = await hub.register_user("uma")
        await grant(p, user, "20.00")
        conv = await conversation(p, alice, bob)
        async with p.client(user) as u, p.client(alice) as a:
            structured(
                await u.call_tool(
                    "request_peek", {"conversation_id": conv, "max_price": "20.00", "duration_minutes": 1}
                )
            )
            travel.advance(minutes=2)
            missing = error_text(await a.call_tool("request_payout", {}))
            assert "connect_account_id" in missing or "set_payout_account" in missing
            bad = error_text(await a.call_tool("set_payout_account", {"connect_account_id": "acct 1"}))
            assert "connect_account_id" in bad
            set_to = structured(await a.call_tool("set_payout_account", {"connect_account_id": "acct_1AgentAlice"}))
            assert set_to["payouts"] == "stripe"
            failed = structured(await a.call_tool("request_payout", {"idempotency_key": "po-1"}))
            assert (failed["status"], failed["amount"]) == ("failed", "12.00")
        assert p.context is not None
        paid = await p.context.earnings.retry_payout(failed["id"])
        assert (paid.status, paid.transfer_id) == ("paid", "tr_1")
    first, second = stub.to("post", "/v1/transfers")
    assert first.idempotency_key == second.idempotency_key == f"payout:{failed['id']}"
    assert (
        first.params
        == second.params
        == {
            "amount": "1200",
            "currency": "usd",
            "destination": "acct_1AgentAlice",
            "transfer_group": failed["id"],
            "metadata[agentchat_payout_id]": failed["id"],
            "metadata[agentchat_agent_id]": alice.id,
        }
    )
    assert account(hub, f"agent:{alice.id}:available") == 0 and ledger_total(hub) == 0


# --- the webhook: signatures, dedupe, concurrency, refunds, disputes ------------------------------


async def checkout_payment(p: PayHub, user: Account, amount: str = "20.00") -> str:
    async with p.client(user) as u:
        got = structured(await u.call_tool("buy_credits", {"amount": amount}))
    return str(got["payment_id"])


def paid_session(pid: str, amount: int, intent: str = "pi_x") -> dict[str, Any]:
    return {
        "id": f"cs_{pid}",
        "object": "checkout.session",
        "mode": "payment",
        "payment_status": "paid",
        "amount_total": amount,
        "metadata": {"agentchat_payment_id": pid},
        "payment_intent": intent,
    }


async def test_a_bad_signature_or_a_stale_timestamp_gets_400_and_writes_nothing(hub: Hub) -> None:
    async with pay_hub(hub, recording_provider(stripe_stub())) as p:
        user = await hub.register_user("uma")
        pid = await checkout_payment(p, user)
        evt = event("checkout.session.completed", paid_session(pid, 2000))
        before = rows(hub, "SELECT COUNT(*) FROM ledger_entries")
        assert (await p.post_event(evt, secret="whsec_someone_else")).status_code == 400
        assert (await p.post_event(evt, at=int(time.time()) - 3600)).status_code == 400
        assert p.http is not None
        unsigned = await p.http.post("/webhooks/stripe", content=b'{"id": "evt_1"}')
        assert unsigned.status_code == 400
        garbled = await p.http.post("/webhooks/stripe", content=b"{", headers={"Stripe-Signature": "t=1,v1=00"})
        assert garbled.status_code == 400
        assert rows(hub, "SELECT COUNT(*) FROM webhook_events") == [(0,)]
        assert rows(hub, "SELECT COUNT(*) FROM ledger_entries") == before
        assert rows(hub, "SELECT status, fulfilled_at FROM payments") == [("awaiting_checkout", None)]


async def test_one_event_delivered_50_times_at_once_credits_once(hub: Hub) -> None:
    async with pay_hub(hub, recording_provider(stripe_stub())) as p:
        user = await hub.register_user("uma")
        pid = await checkout_payment(p, user)
        evt = event("checkout.session.completed", paid_session(pid, 2000))
        statuses: list[int] = []

        async def deliver() -> None:
            statuses.append((await p.post_event(evt)).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(deliver)
    assert statuses == [200] * 50
    assert account(hub, f"user:{user.id}:credit") == 2000
    assert rows(hub, "SELECT COUNT(*) FROM webhook_events") == [(1,)]
    assert rows(hub, "SELECT COUNT(*) FROM ledger_entries WHERE ref = ?", pid) == [(1,)]


def charge(pid: str, amount: int, refunded: int, intent: str = "pi_x") -> dict[str, Any]:
    return {
        "id": "ch_1",
        "object": "charge",
        "amount": amount,
        "amount_refunded": refunded,
        "captured": True,
        "paid": True,
        "payment_intent": intent,
        "refunded": refunded >= amount,
    }


async def test_refunds_reverse_credit_once_in_any_order_and_never_overdraw(hub: Hub) -> None:
    async with pay_hub(hub, recording_provider(stripe_stub())) as p:
        alice = await hub.register_agent("alice", peek_price="5.00", can_refuse=False)
        bob = await hub.register_agent("bob", peek_price="1.00", can_refuse=False)
        user = await hub.register_user("uma")
        pid = await checkout_payment(p, user)
        assert (await p.post_event(event("checkout.session.completed", paid_session(pid, 2000)))).status_code == 200
        conv = await conversation(p, alice, bob)
        async with p.client(user) as u:  # spend 6.00 of the 20.00
            structured(await u.call_tool("request_peek", {"conversation_id": conv, "max_price": "6.00"}))
        # the full refund arrives before the partial one that preceded it
        full = await p.post_event(event("charge.refunded", charge(pid, 2000, 2000)))
        assert full.json()["outcome"] == "reversed 2000"
        partial = await p.post_event(event("charge.refunded", charge(pid, 2000, 500)))
        assert partial.json()["outcome"] == "already reversed"
    assert account(hub, f"user:{user.id}:credit") == 0  # 14.00 taken back, never below zero
    assert account(hub, "platform:clawback") == -600  # the 6.00 already spent: absorbed by the platform
    assert rows(hub, "SELECT status, refunded_cents, reversed_cents FROM payments") == [("refunded", 2000, 2000)]
    assert ledger_total(hub) == 0


async def test_a_refund_that_overtakes_the_payment_event_grants_then_reverses(hub: Hub) -> None:
    async with pay_hub(hub, recording_provider(stripe_stub())) as p:
        user = await hub.register_user("uma")
        pid = await checkout_payment(p, user)
        async with p.context.store.write() as conn:  # type: ignore[union-attr]
            await conn.execute(text("UPDATE payments SET intent_id = 'pi_x' WHERE id = :id"), {"id": pid})
        out = await p.post_event(event("charge.refunded", charge(pid, 2000, 800)))
        assert out.json()["outcome"] == "reversed 800"
        late = await p.post_event(event("checkout.session.completed", paid_session(pid, 2000)))
        assert late.json()["outcome"] == "already fulfilled"
    assert account(hub, f"user:{user.id}:credit") == 1200 and ledger_total(hub) == 0


async def test_a_dispute_takes_credit_back_and_a_won_dispute_restores_it(hub: Hub) -> None:
    async with pay_hub(hub, recording_provider(stripe_stub())) as p:
        user = await hub.register_user("uma")
        pid = await checkout_payment(p, user)
        await p.post_event(event("checkout.session.completed", paid_session(pid, 2000)))
        dispute = {
            "id": "dp_1",
            "object": "dispute",
            "amount": 2000,
            "payment_intent": "pi_x",
            "status": "needs_response",
        }
        opened = event("charge.dispute.created", dispute)
        assert (await p.post_event(opened)).json()["outcome"] == "reversed 2000"
        assert (await p.post_event(event("charge.dispute.created", dispute))).json()["outcome"] == "already reversed"
        assert account(hub, f"user:{user.id}:credit") == 0
        won = await p.post_event(event("charge.dispute.closed", {**dispute, "status": "won"}))
        assert won.json()["outcome"] == "dispute won: restored"
    assert account(hub, f"user:{user.id}:credit") == 2000 and ledger_total(hub) == 0


async def test_a_stripe_subscription_is_created_with_our_keys_and_renewed_by_invoice_events(hub: Hub) -> None:
    stub = stripe_stub()
    now = int(time.time())
    stub.on(
        "get",
        "/v1/plans/",
        lambda r: (
            404,
            {"error": {"type": "invalid_request_error", "message": "No such plan", "code": "resource_missing"}},
        ),
    )
    stub.on(
        "post",
        "/v1/plans",
        lambda r: (200, {"id": r.params["id"], "object": "plan", "amount": int(r.params["amount"])}),
    )
    stub.on(
        "post",
        "/v1/subscriptions",
        lambda r: (
            200,
            {
                "id": "sub_1",
                "object": "subscription",
                "status": "active",
                "current_period_start": now,
                "current_period_end": now + 30 * 86400,
                "latest_invoice": {"id": "in_1", "object": "invoice", "status": "paid"},
            },
        ),
    )
    stub.on(
        "delete",
        "/v1/subscriptions/sub_1",
        lambda r: (200, {"id": "sub_1", "object": "subscription", "status": "canceled"}),
    )
    async with pay_hub(hub, recording_provider(stub)) as p:
        alice = await hub.register_agent("alice", peek_price="2.50")
        user = await hub.register_user("uma")
        async with p.context.store.write() as conn:  # type: ignore[union-attr]
            await conn.execute(
                text("INSERT INTO payment_customers VALUES (:user, 'stripe', 'cus_rec', 'pm_card', 'x', 'x')"),
                {"user": user.id},
            )
        async with p.client(user) as u:
            sub = structured(
                await u.call_tool(
                    "subscribe_to_agent", {"agent_id": alice.id, "plan": "monthly-4", "idempotency_key": "s1"}
                )
            )["subscription"]
            assert (sub["status"], sub["paid_with"], sub["peeks_left"], sub["monthly_price"]) == (
                "active",
                "card",
                4,
                "9.00",
            )
        (plan,) = stub.to("post", "/v1/plans")
        assert plan.params["amount"] == "900" and plan.params["interval"] == "month"
        (created,) = stub.to("post", "/v1/subscriptions")
        assert created.idempotency_key == f"subscription:{sub['id']}:create"
        assert created.params["items[0][plan]"] == plan.params["id"]
        assert created.params["metadata[agentchat_subscription_id]"] == sub["id"]

        first_period = {"start": now, "end": now + 30 * 86400}
        same = {
            "id": "in_1",
            "object": "invoice",
            "subscription": "sub_1",
            "amount_paid": 900,
            "lines": {"data": [{"period": first_period}]},
            "payment_intent": "pi_in_1",
        }
        assert (await p.post_event(event("invoice.paid", same))).json()["outcome"] == "period already granted"
        renewal = {
            **same,
            "id": "in_2",
            "payment_intent": "pi_in_2",
            "lines": {"data": [{"period": {"start": now + 30 * 86400, "end": now + 60 * 86400}}]},
        }
        assert (await p.post_event(event("invoice.paid", renewal))).json()["outcome"] == "period granted"
        assert rows(hub, "SELECT COUNT(*), SUM(units_total) FROM entitlements") == [(2, 8)]
        # two periods of 4 peeks at 2.25, prepaid: the platform earns only as they are used
        assert account(hub, f"user:{user.id}:subscriptions") == 1800 and account(hub, "platform:revenue") == 0
        async with p.client(user) as u:
            done = structured(await u.call_tool("cancel_subscription", {"agent_id": alice.id}))
        assert done["status"] == "cancelled" and len(stub.to("delete", "/v1/subscriptions/sub_1")) == 1
        gone = await p.post_event(
            event("customer.subscription.deleted", {"id": "sub_1", "object": "subscription", "status": "canceled"})
        )
        assert gone.json()["outcome"] == "subscription cancelled"
    assert ledger_total(hub) == 0


async def test_a_payout_batch_locks_its_payouts_and_a_rerun_pays_only_what_is_unpaid(
    hub: Hub, travel: TravelClock
) -> None:
    stub = stripe_stub()
    down = {"acct_1AgentBobbb"}  # bob's connected account refuses transfers until it is fixed

    def transfer(r: Recorded) -> tuple[int, dict[str, Any]]:
        if r.params["destination"] in down:
            return 500, {"error": {"type": "api_error", "message": "try later"}}
        return 200, {"id": f"tr_{r.params['metadata[agentchat_payout_id]']}", "object": "transfer", "amount": 1}

    stub.on("post", "/v1/transfers", transfer)
    async with pay_hub(hub, recording_provider(stub)) as p:
        alice = await hub.register_agent("alice", peek_price="15.00", can_refuse=False)
        bob = await hub.register_agent("bob", peek_price="15.00", can_refuse=False)
        user = await hub.register_user("uma")
        await grant(p, user, "30.00")
        conv = await conversation(p, alice, bob)
        await p.call(user, "request_peek", conversation_id=conv, max_price="30.00", duration_minutes=1)
        travel.advance(minutes=2)
        payouts = {}
        for agent, acct in ((alice, "acct_1AgentAlice"), (bob, "acct_1AgentBobbb")):
            await p.call(agent, "set_payout_account", connect_account_id=acct)
            down.add(acct)  # the immediate attempt fails for both
            payouts[agent.id] = await p.call(agent, "request_payout", idempotency_key="po")
            assert payouts[agent.id]["status"] == "failed"
        down.discard("acct_1AgentAlice")

        batch = await p.context.payments.run_payout_batch(min_age_seconds=0)  # type: ignore[union-attr]
        assert batch is not None and (batch.status, batch.paid, batch.unpaid, batch.total_cents) == (
            "partial",
            1,
            1,
            2400,
        )
        assert await p.context.payments.run_payout_batch(min_age_seconds=0) is None  # type: ignore[union-attr]
        down.clear()
        rerun = await p.context.payments.run_payout_batch(batch.id)  # type: ignore[union-attr]
        assert rerun is not None and (rerun.status, rerun.paid) == ("paid", 2)
    sent = stub.to("post", "/v1/transfers")
    by_payout: dict[str, set[str | None]] = {}
    for r in sent:
        by_payout.setdefault(r.params["metadata[agentchat_payout_id]"], set()).add(r.idempotency_key)
    assert by_payout == {pid["id"]: {f"payout:{pid['id']}"} for pid in payouts.values()}
    successes = [r for r in sent if r.params["destination"] == "acct_1AgentAlice"]
    assert len(successes) == 2  # the failed first try, then the batch; the re-run did not pay alice again
    assert rows(hub, "SELECT status FROM payouts ORDER BY agent_id") == [("paid",), ("paid",)]
    assert ledger_total(hub) == 0


def test_offline_payout_batches_explain_they_need_stripe(tmp_path: Any) -> None:
    done = run_cli(
        "--db",
        str(tmp_path / "a.db"),
        "payouts",
        "run",
        timeout=60,
        env={"PATH": "", "AGENTCHAT_SECRET_FILE": str(tmp_path / "s.secret")},
    )
    assert done.returncode == 2 and "need the stripe provider" in done.stderr and "Traceback" not in done.stderr


async def test_a_refunded_pack_takes_back_its_unused_peeks_and_one_held_by_a_pending_peek(hub: Hub) -> None:
    async with pay_hub(hub, recording_provider(stripe_stub())) as p:
        alice = await hub.register_agent("alice", peek_price="2.00", can_refuse=False)
        carl = await hub.register_agent("carl", peek_price="2.00", can_refuse=True)
        bob = await hub.register_agent("bob", peek_price="1.00", can_refuse=False)
        user = await hub.register_user("uma")
        async with p.client(user) as u:
            pid = structured(await u.call_tool("buy_peek_pack", {"pack": "pack-10"}))["purchase"]["payment_id"]
        assert (await p.post_event(event("checkout.session.completed", paid_session(pid, 4000)))).status_code == 200
        used = await conversation(p, alice, bob)  # both covered by the pack: 2 units, captured at once
        pending = await conversation(p, carl, bob)  # carl must consent: 2 units held
        await p.call(user, "request_peek", conversation_id=used, max_price="0.00")
        peek = await p.call(user, "request_peek", conversation_id=pending, max_price="0.00")
        assert account(hub, f"user:{user.id}:packs") == 4000 - 4 * 400
        refund = await p.post_event(event("charge.refunded", charge(pid, 4000, 4000)))
        assert refund.json()["outcome"] == "reversed 4000"
        assert account(hub, f"user:{user.id}:packs") == 0  # the 6 unused units went back with the refund
        assert account(hub, "platform:clawback") == 6 * 400 - 4000
        await p.call(carl, "respond_to_peek", peek_id=peek["id"], decision="refuse")
        # the 2 held units come back to a refunded pack: forfeited against the refund, not usable
        assert account(hub, f"user:{user.id}:packs") == 0 and account(hub, "platform:clawback") == 8 * 400 - 4000
        async with p.client(user) as u:
            assert structured(await u.call_tool("buy_peek_pack", {}))["your_packs"] == []
            quote = structured(await u.call_tool("quote_peek", {"conversation_id": pending}))
            assert {x["paid_by"] for x in quote["agents"]} == {"credit"}
    assert ledger_total(hub) == 0


async def test_stripe_webhooks_are_not_found_on_an_offline_server(hub: Hub) -> None:
    async with pay_hub(hub, None, mode="ledger") as p:
        reply = await p.post_event(event("payment_intent.succeeded", {"id": "pi_1", "object": "payment_intent"}))
    assert reply.status_code == 404 and rows(hub, "SELECT COUNT(*) FROM webhook_events") == [(0,)]


async def test_a_subscription_paid_at_checkout_is_linked_and_granted_whatever_order_the_events_come_in(
    hub: Hub,
) -> None:
    stub = stripe_stub()
    async with pay_hub(hub, recording_provider(stub)) as p:
        alice = await hub.register_agent("alice", peek_price="2.50")
        user = await hub.register_user("uma")
        async with p.client(user) as u:
            sub = structured(await u.call_tool("subscribe_to_agent", {"agent_id": alice.id, "plan": "monthly-10"}))
            sub = sub["subscription"]
        assert (sub["status"], sub["checkout_url"]) == ("pending", "https://checkout.stripe.com/c/pay/cs_test_1")
        (session,) = stub.to("post", "/v1/checkout/sessions")
        assert session.idempotency_key == f"subscription:{sub['id']}:checkout"
        assert {k: session.params[k] for k in ("mode", "line_items[0][price_data][unit_amount]")} == {
            "mode": "subscription",
            "line_items[0][price_data][unit_amount]": "2000",
        }
        assert session.params["line_items[0][price_data][recurring][interval]"] == "month"
        assert session.params["subscription_data[metadata][agentchat_subscription_id]"] == sub["id"]

        now = int(time.time())
        invoice = {
            "id": "in_9",
            "object": "invoice",
            "subscription": "sub_remote",
            "amount_paid": 2000,
            "payment_intent": "pi_in_9",
            "lines": {"data": [{"period": {"start": now, "end": now + 2592000}}]},
        }
        early = await p.post_event(event("invoice.paid", invoice, "evt_invoice_first"))
        assert early.status_code == 503  # not linked yet: Stripe will deliver it again
        assert rows(hub, "SELECT COUNT(*) FROM webhook_events") == [(0,)]
        linked = await p.post_event(
            event(
                "checkout.session.completed",
                {
                    "id": "cs_test_1",
                    "object": "checkout.session",
                    "mode": "subscription",
                    "subscription": "sub_remote",
                    "metadata": {"agentchat_subscription_id": sub["id"]},
                },
            )
        )
        assert linked.json()["outcome"] == "subscription linked"
        again = await p.post_event(event("invoice.paid", invoice, "evt_invoice_first"))
        assert again.json()["outcome"] == "period granted"
        async with p.client(user) as u:
            listed = structured(await u.call_tool("cancel_subscription", {"agent_id": alice.id}))
        assert (listed["status"], listed["peeks_left"]) == ("cancelled", 10)
        failed = await p.post_event(event("invoice.payment_failed", {**invoice, "id": "in_10"}))
        assert failed.json()["outcome"] == "ignored"  # cancelled already: nothing to mark
    assert account(hub, f"user:{user.id}:subscriptions") == 2000 and ledger_total(hub) == 0


async def test_an_abandoned_checkout_ends_the_purchase_unpaid(hub: Hub) -> None:
    async with pay_hub(hub, recording_provider(stripe_stub())) as p:
        user = await hub.register_user("uma")
        async with p.client(user) as u:
            got = structured(await u.call_tool("buy_credits", {"amount": "20.00", "idempotency_key": "k"}))
            expired = {**paid_session(got["payment_id"], 2000), "payment_status": "unpaid"}
            out = await p.post_event(event("checkout.session.expired", expired))
            assert out.json()["outcome"] == "checkout ended unpaid"
            replay = structured(await u.call_tool("buy_credits", {"amount": "20.00", "idempotency_key": "k"}))
            assert (replay["status"], replay["checkout_url"]) == ("failed", None)
            failed = await p.post_event(
                event("payment_intent.payment_failed", {"id": "pi_zz", "object": "payment_intent", "metadata": {}})
            )
            assert failed.json()["outcome"] == "ignored"
    assert account(hub, f"user:{user.id}:credit") == 0 and ledger_total(hub) == 0
