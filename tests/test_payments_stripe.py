"""The stripe provider against localstripe (a stateful Stripe stand-in started for this session):
a saved card charged with a manual-capture PaymentIntent, a decline, a refund, and a signed webhook
delivered by localstripe itself crediting once after the capture's answer was lost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
import stripe

from agentchat_mcp.errors import InvalidInput, PaymentUnavailable
from agentchat_mcp.payments.provider import Intent
from agentchat_mcp.payments.stripe_provider import UNAVAILABLE, AsyncHTTPXClient, StripeProvider
from tests.conftest import Account, Hub, error_text, ledger_total, rows, structured
from tests.payments_support import (
    WEBHOOK_SECRET,
    PayHub,
    event,
    localstripe_fixture,  # noqa: F401 (the session fixture `localstripe`)
    localstripe_post,
    pay_hub,
)

pytestmark = pytest.mark.anyio


def credit(hub: Hub, user: Account) -> int:
    sql = "SELECT COALESCE(SUM(amount_cents), 0) FROM ledger_lines WHERE account = ?"
    return int(rows(hub, sql, f"user:{user.id}:credit")[0][0])


@asynccontextmanager
async def sdk(base: str) -> AsyncIterator[stripe.StripeClient]:
    """A plain Stripe client on localstripe, to look at what our server did there."""
    http = AsyncHTTPXClient()
    try:
        yield stripe.StripeClient("sk_test_x", base_addresses={"api": base}, http_client=http)
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]


async def user_with_card(p: PayHub, name: str, card: str | None = None) -> Account:
    """A registered user whose customer at localstripe has a saved card (pm_card_visa, or this number)."""
    user = await p.hub.register_user(name)
    assert p.context is not None and p.context.payments is not None
    caller = await p.context.identity.authenticate(user.api_key)
    customer = await p.context.payments.ensure_customer(caller)
    method = "pm_card_visa"
    if card is not None:
        async with sdk(p.context.settings.stripe_api_base or "") as client:
            pm = await client.v1.payment_methods.create_async(
                {"type": "card", "card": {"number": card, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
            )
        method = pm.id
    await p.context.payments.save_card(user.id, method)
    assert customer.startswith("cus_")
    return user


@asynccontextmanager
async def stripe_hub(hub: Hub, base: str, provider: StripeProvider | None = None) -> AsyncIterator[PayHub]:
    hub.settings = hub.settings.model_copy(update={"stripe_api_base": base})
    provider = provider or StripeProvider("sk_test_x", api_base=base)
    try:
        async with pay_hub(hub, provider) as p:
            yield p
    finally:
        await provider.aclose()


async def test_a_saved_card_is_charged_with_a_manual_capture_intent_and_credited_once(
    hub: Hub, localstripe: str
) -> None:
    async with stripe_hub(hub, localstripe) as p:
        user = await user_with_card(p, "uma")
        async with p.client(user) as u:
            got = structured(await u.call_tool("buy_credits", {"amount": "25.00", "idempotency_key": "t-1"}))
            assert (got["status"], got["credit"], got["paid_with"], got["checkout_url"]) == (
                "completed",
                "25.00",
                "card",
                None,
            )
            again = structured(await u.call_tool("buy_credits", {"amount": "25.00", "idempotency_key": "t-1"}))
            assert again["replayed"] and again["credit"] == "25.00"
        ((intent_id,),) = rows(hub, "SELECT intent_id FROM payments")
        async with sdk(localstripe) as client:
            intent = await client.v1.payment_intents.retrieve_async(intent_id)
        assert (intent.capture_method, intent.status, intent.amount) == ("manual", "succeeded", 2500)
        assert intent.metadata["agentchat_payment_id"] == got["payment_id"]
    assert credit(hub, user) == 2500 and ledger_total(hub) == 0


async def test_a_declined_card_charges_nothing_and_is_set_aside(hub: Hub, localstripe: str) -> None:
    async with stripe_hub(hub, localstripe) as p:
        user = await user_with_card(p, "dee", card="4000000000000341")
        async with p.client(user) as u:
            text = error_text(await u.call_tool("buy_credits", {"amount": "10.00", "idempotency_key": "d-1"}))
            assert "declined" in text and "Nothing was charged" in text and "checkout link" in text
            replay = structured(await u.call_tool("buy_credits", {"amount": "10.00", "idempotency_key": "d-1"}))
            assert (replay["status"], replay["replayed"]) == ("failed", True)
    assert rows(hub, "SELECT status FROM payments") == [("failed",)]
    assert rows(hub, "SELECT payment_method_id FROM payment_customers") == [(None,)]
    assert credit(hub, user) == 0 and rows(hub, "SELECT COUNT(*) FROM ledger_entries") == [(0,)]


async def test_a_refund_at_stripe_reverses_exactly_that_much_credit(hub: Hub, localstripe: str) -> None:
    async with stripe_hub(hub, localstripe) as p:
        user = await user_with_card(p, "rae")
        async with p.client(user) as u:
            got = structured(await u.call_tool("buy_credits", {"amount": "25.00", "idempotency_key": "r-1"}))
        assert p.context is not None and p.context.payments is not None
        await p.context.payments.refund(got["payment_id"], 1000)
        with pytest.raises(InvalidInput):  # localstripe would accept an over-refund; we do not ask for one
            await p.context.payments.refund(got["payment_id"], 5000)
        ((intent_id,),) = rows(hub, "SELECT intent_id FROM payments")
        async with sdk(localstripe) as client:
            intent = await client.v1.payment_intents.retrieve_async(intent_id, {"expand": ["latest_charge"]})
        charge = intent.to_dict()["latest_charge"]
        assert charge["amount_refunded"] == 1000
        # localstripe sends no charge.refunded event: deliver the real charge, signed, as Stripe would
        reply = await p.post_event(event("charge.refunded", charge))
        assert reply.json()["outcome"] == "reversed 1000"
    assert credit(hub, user) == 1500 and ledger_total(hub) == 0


class LosesCaptureAnswer(StripeProvider):
    """Captures at Stripe, then 'loses the answer' once: as if the connection dropped after the charge."""

    lost = False

    async def capture(self, *, intent_id: str, idempotency_key: str) -> Intent:
        captured = await super().capture(intent_id=intent_id, idempotency_key=idempotency_key)
        if not self.lost:
            self.lost = True
            raise PaymentUnavailable(UNAVAILABLE)
        return captured


async def test_a_signed_webhook_from_localstripe_credits_once_when_the_capture_answer_was_lost(
    hub: Hub, localstripe: str
) -> None:
    provider = LosesCaptureAnswer("sk_test_x", api_base=localstripe)
    async with stripe_hub(hub, localstripe, provider) as p:
        await localstripe_post(
            localstripe,
            "/_config/webhooks/agentchat_test",
            [
                ("url", f"{p.base}/webhooks/stripe"),  # the hub's real HTTP app
                ("secret", WEBHOOK_SECRET),
                ("events[]", "payment_intent.succeeded"),
            ],
        )
        user = await user_with_card(p, "wes")
        async with p.http_client(user) as u:
            lost = error_text(await u.call_tool("buy_credits", {"amount": "25.00", "idempotency_key": "w-1"}))
            assert "retrying the same call with the same idempotency_key is safe" in lost
            assert credit(hub, user) == 0  # charged at Stripe, not credited by us yet
            with anyio.fail_after(10):  # localstripe delivers about 1 s after the capture
                while credit(hub, user) == 0:
                    await anyio.sleep(0.05)
            retry = structured(await u.call_tool("buy_credits", {"amount": "25.00", "idempotency_key": "w-1"}))
            assert (retry["status"], retry["credit"]) == ("completed", "25.00")
    assert credit(hub, user) == 2500
    # (events of earlier tests' payments may arrive too: they are recognised as not ours)
    outcomes = [o for (o,) in rows(hub, "SELECT outcome FROM webhook_events")]
    assert outcomes.count("fulfilled") == 1 and set(outcomes) <= {"fulfilled", "ignored: not ours"}
    assert rows(hub, "SELECT COUNT(*) FROM ledger_entries") == [(1,)] and ledger_total(hub) == 0


async def test_a_subscription_is_a_stripe_subscription_on_a_legacy_plan_and_cancels_there(
    hub: Hub, localstripe: str
) -> None:
    async with stripe_hub(hub, localstripe) as p:
        alice = await hub.register_agent("alice", peek_price="2.50")
        user = await user_with_card(p, "sue")
        async with p.client(user) as u:
            sub = structured(
                await u.call_tool(
                    "subscribe_to_agent", {"agent_id": alice.id, "plan": "monthly-4", "idempotency_key": "s"}
                )
            )["subscription"]
            assert (sub["status"], sub["paid_with"], sub["peeks_left"], sub["monthly_price"]) == (
                "active",
                "card",
                4,
                "9.00",
            )
            ((remote_id,),) = rows(hub, "SELECT provider_ref FROM subscriptions")
            async with sdk(localstripe) as client:
                remote = (await client.v1.subscriptions.retrieve_async(remote_id)).to_dict()
            assert remote["status"] == "active" and remote["plan"]["amount"] == 900
            assert remote["metadata"]["agentchat_subscription_id"] == sub["id"]
            done = structured(await u.call_tool("cancel_subscription", {"agent_id": alice.id}))
            assert (done["status"], done["peeks_left"]) == ("cancelled", 4)  # paid peeks stay for the period
        async with sdk(localstripe) as client:
            assert (await client.v1.subscriptions.retrieve_async(remote_id)).status == "canceled"
    sql = "SELECT COALESCE(SUM(amount_cents), 0) FROM ledger_lines WHERE account = ?"
    # the period's 4 peeks wait prepaid in the user's account; the platform earns only as they are used
    assert rows(hub, sql, f"user:{user.id}:subscriptions") == [(900,)] and ledger_total(hub) == 0


async def test_a_peek_refund_sends_the_credit_back_to_the_card_once(hub: Hub, localstripe: str) -> None:
    async with stripe_hub(hub, localstripe) as p:
        user = await user_with_card(p, "pia")
        ada = await hub.register_agent("ada", peek_price="4.00", can_refuse=False)
        bo = await hub.register_agent("bo", peek_price="0.50", can_refuse=False)
        admin = await hub.register_admin("root")
        async with p.client(ada) as a:
            got = structured(await a.call_tool("start_conversation", {"participants": [bo.id], "topic": "t"}))
        async with p.client(user) as u:
            bought = structured(await u.call_tool("buy_credits", {"amount": "25.00", "idempotency_key": "pk-1"}))
            peek = structured(
                await u.call_tool("request_peek", {"conversation_id": got["conversation"]["id"], "max_price": "4.50"})
            )
        async with p.client(admin) as root:
            done = structured(await root.call_tool("refund_peek", {"peek_id": peek["id"], "reason": "dispute"}))
            again = structured(await root.call_tool("refund_peek", {"peek_id": peek["id"], "reason": "dispute"}))
        card = [{"payment_id": bought["payment_id"], "amount": "4.50", "status": "sent"}]
        assert (done["returned"], done["to_card"], again["to_card"], again["replayed"]) == ("4.50", card, card, True)
        ((intent_id,),) = rows(hub, "SELECT intent_id FROM payments")
        async with sdk(localstripe) as client:
            intent = await client.v1.payment_intents.retrieve_async(intent_id, {"expand": ["latest_charge"]})
        charge = intent.to_dict()["latest_charge"]
        assert charge["amount_refunded"] == 450  # once, though refund_peek ran twice
        # Stripe's charge.refunded event then finds the refund already booked
        reply = await p.post_event(event("charge.refunded", charge))
        assert reply.json()["outcome"] == "already reversed"
    assert credit(hub, user) == 2050 and ledger_total(hub) == 0
