"""Peeks through real MCP clients on a real SQLite file: money to the cent, consent, windows, keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError

from agentchat_mcp import clock
from agentchat_mcp.crypto import EpochKey, KeyBundle, MessageContext
from agentchat_mcp.errors import DecryptionFailed
from agentchat_mcp.store import open_store
from tests.conftest import Account, Hub, TravelClock, error_text, ledger_total, rows, structured

pytestmark = pytest.mark.anyio


async def grant(hub: Hub, user: Account, amount: str) -> None:
    admin = await hub.register_admin(f"admin-{user.name}")
    async with hub.client(admin) as c:
        structured(await c.call_tool("grant_credits", {"user_id": user.id, "amount": amount}))


async def call(c: Client, tool: str, **args: Any) -> dict[str, Any]:
    return structured(await c.call_tool(tool, args))


async def balance(c: Client) -> dict[str, Any]:
    return await call(c, "get_balance")


@dataclass
class Scene:
    alice: Account  # can_refuse, 2.50
    bob: Account  # standing consent, 1.33
    user: Account
    conversation_id: str


async def scene(hub: Hub, credit: str = "10.00") -> Scene:
    alice = await hub.register_agent("alice", peek_price="2.50", can_refuse=True)
    bob = await hub.register_agent("bob", peek_price="1.33", can_refuse=False)
    user = await hub.register_user("uma")
    await grant(hub, user, credit)
    async with hub.client(alice) as a:
        got = await call(a, "start_conversation", participants=[bob.id], topic="pricing", first_message="hi bob")
    return Scene(alice, bob, user, got["conversation"]["id"])


async def test_the_happy_path_is_exact_to_the_cent(hub: Hub) -> None:
    s = await scene(hub)
    async with hub.client(s.user) as u, hub.client(s.alice) as a, hub.client(s.bob) as b:
        quote = await call(u, "quote_peek", conversation_id=s.conversation_id)
        assert quote["total"] == "3.83" and quote["price"] == "3.83"
        # fees rounded down per agent: 2.50 -> 0.50; 1.33 -> 0.26 (26.6)
        assert [(x["price"], x["platform_fee"], x["agent_earns"]) for x in quote["agents"]] == sorted(
            [("2.50", "0.50", "2.00"), ("1.33", "0.26", "1.07")],
            key=lambda t: {"2.50": s.alice.id, "1.33": s.bob.id}[t[0]],
        )
        assert quote["needs_consent_from"] == [s.alice.id] and quote["can_afford"]

        peek = await call(u, "request_peek", conversation_id=s.conversation_id, max_price=quote["total"])
        assert peek["status"] == "awaiting_consent"
        assert await balance(u) == {**(await balance(u)), "credit": "6.17", "held": "3.83"}
        inbox = await call(a, "check_inbox")
        assert [p["peek_id"] for p in inbox["pending_peeks"]] == [peek["id"]]
        assert inbox["pending_peeks"][0]["you_earn"] == "2.00"
        assert (await call(b, "check_inbox"))["pending_peeks"] == []  # standing consent: nothing to answer

        granted = await call(a, "respond_to_peek", peek_id=peek["id"], decision="accept")
        assert granted["status"] == "active" and granted["keys_released"]
        page = await call(u, "read_messages", conversation_id=s.conversation_id)
        assert [m["text"] for m in page["messages"]] == ["hi bob"]

        user_balance = await balance(u)
        assert (user_balance["credit"], user_balance["held"]) == ("6.17", "0.00")
        assert (await balance(a))["pending"] == "2.00"
        assert (await balance(b))["pending"] == "1.07"
    admin = await hub.register_admin("root")
    async with hub.client(admin) as root:
        platform = (await balance(root))["platform"]
        assert platform["platform_revenue"] == "0.76" and platform["external_clearing"] == "-10.00"
    assert ledger_total(hub) == 0
    assert hub.counter("peek_initiated_total") == 1
    assert hub.counter("agent_earnings_usd") == 3  # 3.07 recorded; the test reader truncates to int


async def test_earnings_become_available_when_the_window_ends_and_can_be_paid_out(
    hub: Hub, travel: TravelClock
) -> None:
    alice = await hub.register_agent("alice", peek_price="6.00", can_refuse=False)
    bob = await hub.register_agent("bob", peek_price="7.00", can_refuse=False)
    user = await hub.register_user("uma")
    await grant(hub, user, "50.00")
    async with hub.client(alice) as a, hub.client(user) as u:
        conv = (await call(a, "start_conversation", participants=[bob.id], topic="t"))["conversation"]["id"]
        for _ in range(2):
            await call(u, "request_peek", conversation_id=conv, max_price="13.00", duration_minutes=5)
            travel.advance(minutes=6)
        earnings = await call(a, "get_earnings", period="week")
        assert (earnings["earned"], earnings["pending"], earnings["available"], earnings["peeks"]) == (
            "9.60",
            "0.00",
            "9.60",
            2,
        )
        assert earnings["top_peekers"] == [{"user_id": user.id, "name": "uma", "peeks": 2, "amount": "9.60"}]
        assert sum(float(h["amount"]) for h in earnings["by_hour"]) == pytest.approx(9.60)
        as_resource = json.loads((await a.read_resource("agentchat://earnings")).contents[0].text)  # this month
        as_tool = await call(a, "get_earnings", period="month")
        assert {**as_resource, "since": None} == {**as_tool, "since": None}  # `since`: 30 days before each read
        assert as_resource["earned"] == "9.60" and as_resource["top_peekers"] == earnings["top_peekers"]
        with pytest.raises(MCPError, match="This is for agent accounts"):  # a user has no earnings
            await u.read_resource("agentchat://earnings")
        too_much = await a.call_tool("request_payout", {"amount": "20.00"})
        assert "Not enough funds: 9.60 available, 20.00 needed" in error_text(too_much)
        below = await a.call_tool("request_payout", {"amount": "5.00"})
        assert "minimum is 10.00" in error_text(below)
        await call(u, "request_peek", conversation_id=conv, max_price="13.00", duration_minutes=5)
        travel.advance(minutes=6)
        payout = await call(a, "request_payout", idempotency_key="p-1")
        assert (payout["amount"], payout["status"], payout["available_after"]) == ("14.40", "recorded", "0.00")
        again = await call(a, "request_payout", idempotency_key="p-1")
        assert again["id"] == payout["id"]
        after = await balance(a)
        assert (after["available"], after["paid_out"]) == ("0.00", "14.40")
        kinds = [t["kind"] for t in (await call(a, "list_transactions", limit=3))["transactions"]]
        assert kinds == ["payout", "earnings_available", "peek_capture"]
    assert hub.counter("peek_completed_total") == 3
    assert ledger_total(hub) == 0


async def test_a_refusal_charges_nothing_and_the_user_cannot_read(hub: Hub) -> None:
    s = await scene(hub)
    async with hub.client(s.user) as u, hub.client(s.alice) as a:
        peek = await call(u, "request_peek", conversation_id=s.conversation_id, max_price="3.83")
        refused = await call(a, "respond_to_peek", peek_id=peek["id"], decision="refuse", reason="private")
        assert (refused["status"], refused["reason"]) == ("refused", "private")
        assert (await balance(u))["credit"] == "10.00" and (await balance(u))["held"] == "0.00"
        assert f"Your peek {peek['id']} on {s.conversation_id} was refused" in error_text(
            await u.call_tool("read_messages", {"conversation_id": s.conversation_id})
        )  # the peeker is told about its own peek (issue 11, point 6)
        late = await a.call_tool("respond_to_peek", {"peek_id": peek["id"], "decision": "accept"})
        assert "cannot change now" in error_text(late)
        assert (await call(u, "get_peek", peek_id=peek["id"]))["next_step"].startswith("Nothing was charged")
    assert hub.counter("peek_refused_total") == 1


async def test_expiry_and_cancel_release_the_hold(hub: Hub, travel: TravelClock) -> None:
    s = await scene(hub)
    async with hub.client(s.user) as u, hub.client(s.alice) as a:
        first = await call(u, "request_peek", conversation_id=s.conversation_id, max_price="3.83")
        again = await u.call_tool("request_peek", {"conversation_id": s.conversation_id, "max_price": "3.83"})
        assert "already have peek" in error_text(again)
        cancelled = await call(u, "cancel_peek", peek_id=first["id"])
        assert cancelled["status"] == "cancelled" and (await balance(u))["credit"] == "10.00"

        second = await call(u, "request_peek", conversation_id=s.conversation_id, max_price="3.83")
        assert (await balance(u))["held"] == "3.83"
        travel.advance(hours=24, seconds=1)
        assert (await call(u, "get_peek", peek_id=second["id"]))["status"] == "expired"
        assert await balance(u) == {**(await balance(u)), "credit": "10.00", "held": "0.00"}
        late = await a.call_tool("respond_to_peek", {"peek_id": second["id"], "decision": "accept"})
        assert "expired" in error_text(late)
        assert (await call(a, "check_inbox"))["pending_peeks"] == []
        cancel_late = await u.call_tool("cancel_peek", {"peek_id": second["id"]})
        assert "expired" in error_text(cancel_late)
    assert ledger_total(hub) == 0


async def test_the_sweeper_expires_requests_nobody_looks_at(hub: Hub, travel: TravelClock) -> None:
    s = await scene(hub)
    async with hub.client(s.user) as u:
        peek = await call(u, "request_peek", conversation_id=s.conversation_id, max_price="3.83")
        travel.advance(hours=25)
        async with open_store(hub.settings.db) as store:  # a bare service, as the lifespan's sweep runs it
            from agentchat_mcp.server import build_app_context

            app = build_app_context(hub.settings, store, hub.telemetry)
            assert await app.peeks.settle_due() == 1
        assert (await call(u, "get_peek", peek_id=peek["id"]))["status"] == "expired"


async def test_a_price_above_max_price_or_beyond_the_balance_is_refused_and_holds_nothing(hub: Hub) -> None:
    s = await scene(hub, credit="3.00")
    async with hub.client(s.user) as u:
        above = await u.call_tool("request_peek", {"conversation_id": s.conversation_id, "max_price": "3.82"})
        assert "above your max_price 3.82" in error_text(above)
        broke = await u.call_tool("request_peek", {"conversation_id": s.conversation_id, "max_price": "3.83"})
        assert "Not enough funds: 3.00 available, 3.83 needed" in error_text(broke)
        assert await balance(u) == {**(await balance(u)), "credit": "3.00", "held": "0.00"}
        assert (await call(u, "list_peek_requests"))["peeks"] == []
        bad = await u.call_tool("request_peek", {"conversation_id": s.conversation_id, "max_price": "1.001"})
        assert bad.is_error


async def test_an_idempotency_key_replays_the_first_request_and_refuses_other_parameters(hub: Hub) -> None:
    s = await scene(hub)
    async with hub.client(s.user) as u:
        args = {"conversation_id": s.conversation_id, "max_price": "3.83", "idempotency_key": "order-1"}
        first = await call(u, "request_peek", **args)
        again = await call(u, "request_peek", **args)
        assert again["id"] == first["id"] and again["replayed"] and not first["replayed"]
        other = await u.call_tool("request_peek", {**args, "max_price": "5.00"})
        assert "idempotency key reused" in error_text(other)
        assert (await balance(u))["held"] == "3.83"


async def test_the_peeker_reads_only_inside_the_window_and_never_after_it(hub: Hub, travel: TravelClock) -> None:
    s = await scene(hub)
    start = clock.now() + timedelta(hours=1)
    async with hub.client(s.user) as u, hub.client(s.alice) as a, hub.client(s.bob) as b:
        peek = await call(
            u,
            "request_peek",
            conversation_id=s.conversation_id,
            max_price="3.83",
            duration_minutes=10,
            start_at=start.isoformat(),
        )
        await call(a, "respond_to_peek", peek_id=peek["id"], decision="accept")
        assert (await call(u, "get_peek", peek_id=peek["id"]))["status"] == "scheduled"
        before = await u.call_tool("read_messages", {"conversation_id": s.conversation_id})
        assert f"Your peek {peek['id']} on {s.conversation_id} opens at " in error_text(before)

        travel.advance(hours=1, seconds=1)
        await call(b, "send_message", conversation_id=s.conversation_id, text="inside the window")
        got = await call(u, "read_messages", conversation_id=s.conversation_id)
        assert [m["text"] for m in got["messages"]] == ["hi bob", "inside the window"]
        assert (await call(u, "get_peek", peek_id=peek["id"]))["keys_released"]

        travel.advance(minutes=10)
        await call(a, "send_message", conversation_id=s.conversation_id, text="after the window")
        after = await u.call_tool("read_messages", {"conversation_id": s.conversation_id})
        assert f"Your peek {peek['id']} on {s.conversation_id} ended at " in error_text(after)
        assert (await call(u, "get_peek", peek_id=peek["id"]))["status"] == "completed"
    assert_unreadable_with_every_key(hub, s.user, s.conversation_id, "after the window")
    assert_readable_with_some_key(hub, s.user, s.conversation_id, seq=2)


def _peeker_keys(hub: Hub, user: Account, conversation_id: str) -> tuple[KeyBundle, list[tuple[int, bytes]]]:
    ((wrapped_private,),) = rows(hub, "SELECT wrapped_private FROM principals WHERE id = ?", user.id)
    keys = rows(
        hub,
        "SELECT epoch, wrapped_key FROM epoch_keys WHERE principal_id = ? AND conversation_id = ?",
        user.id,
        conversation_id,
    )
    return KeyBundle.unwrap(wrapped_private, user.api_key), keys


def _message(hub: Hub, conversation_id: str, seq: int) -> tuple[int, str, bytes]:
    (row,) = rows(
        hub, "SELECT epoch, sender_id, sealed FROM messages WHERE conversation_id = ? AND seq = ?", conversation_id, seq
    )
    return int(row[0]), str(row[1]), bytes(row[2])


def _open_with_any(bundle: KeyBundle, keys: list[tuple[int, bytes]], conversation_id: str, seq: int, msg: Any) -> str:
    """Try every key the peeker was ever given, under every epoch label: the strongest attempt."""
    epoch, sender, sealed = msg
    for _, wrapped in keys:
        key = EpochKey.unwrap(wrapped, bundle)
        for label in {epoch, *(e for e, _ in keys)}:
            ctx = MessageContext(conversation_id=conversation_id, epoch=label, seq=seq, sender_id=sender)
            try:
                return key.open(sealed, ctx=ctx)
            except DecryptionFailed:
                continue
    raise DecryptionFailed("no key opens it")


def assert_unreadable_with_every_key(hub: Hub, user: Account, conversation_id: str, text: str) -> None:
    bundle, keys = _peeker_keys(hub, user, conversation_id)
    assert keys, "the peeker was given keys during the window"
    ((last,),) = rows(hub, "SELECT MAX(seq) FROM messages WHERE conversation_id = ?", conversation_id)
    msg = _message(hub, conversation_id, last)
    assert msg[0] not in {e for e, _ in keys}, "a new epoch began after the window"
    with pytest.raises(DecryptionFailed):
        _open_with_any(bundle, keys, conversation_id, last, msg)


def assert_readable_with_some_key(hub: Hub, user: Account, conversation_id: str, seq: int) -> None:
    bundle, keys = _peeker_keys(hub, user, conversation_id)
    assert (
        _open_with_any(bundle, keys, conversation_id, seq, _message(hub, conversation_id, seq)) == "inside the window"
    )


async def test_without_consent_a_conversation_is_never_readable(hub: Hub) -> None:
    s = await scene(hub)
    async with hub.client(s.user) as u, hub.client(s.alice) as a, hub.client(s.bob) as b:
        peek = await call(u, "request_peek", conversation_id=s.conversation_id, max_price="3.83")
        await call(b, "send_message", conversation_id=s.conversation_id, text="bob is chatty")
        await call(a, "send_message", conversation_id=s.conversation_id, text="so is alice")
        denied = await u.call_tool("read_messages", {"conversation_id": s.conversation_id})
        assert "is waiting for the agents' consent" in error_text(denied)
        stranger = await hub.register_user("eve")
        async with hub.client(stranger) as e:
            assert "No conversation" in error_text(
                await e.call_tool("read_messages", {"conversation_id": s.conversation_id})
            )
            assert "No peek" in error_text(await e.call_tool("get_peek", {"peek_id": peek["id"]}))
    assert rows(hub, "SELECT COUNT(*) FROM epoch_keys WHERE principal_id = ?", s.user.id) == [(0,)]


async def test_with_standing_consent_keys_arrive_on_the_next_participant_request(hub: Hub) -> None:
    alice = await hub.register_agent("alice", peek_price="1.00", can_refuse=False)
    bob = await hub.register_agent("bob", peek_price="1.00", can_refuse=False)
    user = await hub.register_user("uma")
    await grant(hub, user, "5.00")
    async with hub.client(alice) as a:
        conv = (await call(a, "start_conversation", participants=[bob.id], topic="t", first_message="m1"))[
            "conversation"
        ]
    async with hub.client(user) as u:
        peek = await call(u, "request_peek", conversation_id=conv["id"], max_price="2.00")
        assert peek["status"] == "active" and not peek["keys_released"]
        assert "next request of any participant" in peek["next_step"]
        page = await call(u, "read_messages", conversation_id=conv["id"])
        assert page["messages"][0]["text"] is None and page["messages"][0]["error"]
        async with hub.client(bob) as b:  # any call by a participant, in another server process
            await call(b, "whoami")
            await call(b, "check_inbox")
        page = await call(u, "read_messages", conversation_id=conv["id"])
        assert page["messages"][0]["text"] == "m1"
        assert (await call(u, "get_peek", peek_id=peek["id"]))["keys_released"]


async def test_users_find_peekable_conversations_and_roles_are_enforced(hub: Hub) -> None:
    s = await scene(hub)
    async with hub.client(s.user) as u, hub.client(s.alice) as a:
        page = await call(u, "list_peekable_conversations", agent_id=s.bob.id)
        [found] = page["conversations"]
        assert found["conversation_id"] == s.conversation_id and found["price"] == "3.83"
        assert {p["name"] for p in found["participants"]} == {"alice", "bob"}
        assert "for user accounts" in error_text(
            await a.call_tool("request_peek", {"conversation_id": s.conversation_id, "max_price": "1"})
        )
        assert "for admin accounts" in error_text(
            await u.call_tool("grant_credits", {"user_id": s.user.id, "amount": "1"})
        )
        assert "for agent accounts" in error_text(
            await u.call_tool("respond_to_peek", {"peek_id": "pek_" + "a" * 20, "decision": "accept"})
        )
        missing = await u.call_tool("quote_peek", {"conversation_id": "cnv_" + "a" * 20})
        assert "No conversation" in error_text(missing)
        not_agent = await u.call_tool("list_peekable_conversations", {"agent_id": "agt_" + "a" * 20})
        assert "No agent" in error_text(not_agent)


async def test_grants_are_idempotent_and_only_for_users(hub: Hub) -> None:
    user = await hub.register_user("uma")
    agent = await hub.register_agent("alice")
    admin = await hub.register_admin("root")
    async with hub.client(admin) as root:
        first = await call(root, "grant_credits", user_id=user.id, amount="5.00", idempotency_key="g1")
        again = await call(root, "grant_credits", user_id=user.id, amount="5.00", idempotency_key="g1")
        assert (first["balance"], again["balance"], again["replayed"]) == ("5.00", "5.00", True)
        other = await root.call_tool("grant_credits", {"user_id": user.id, "amount": "6.00", "idempotency_key": "g1"})
        assert "idempotency key reused" in error_text(other)
        to_agent = await root.call_tool("grant_credits", {"user_id": "usr_" + agent.id[4:], "amount": "1.00"})
        assert "No user" in error_text(to_agent)


async def test_a_hundred_concurrent_requests_against_a_balance_for_three_hold_exactly_three(hub: Hub) -> None:
    # The point is the ledger under contention, not the per-user request_peek rate limit (10/minute).
    hub.settings = hub.settings.model_copy(update={"rate_limits_enabled": False})
    agents = [await hub.register_agent(f"a{i}", peek_price="1.00", can_refuse=True) for i in range(2)]
    user = await hub.register_user("uma")
    await grant(hub, user, "6.50")  # 2.00 per peek: three fit, a fourth does not
    async with hub.client(agents[0]) as a:
        conversations = [
            (await call(a, "start_conversation", participants=[agents[1].id], topic=f"t{i}"))["conversation"]["id"]
            for i in range(100)
        ]
    outcomes: list[bool] = []
    async with AsyncExitStack() as stack:
        # four clients = four server lifespans = four engines on one SQLite file
        clients = [await stack.enter_async_context(hub.client(user)) for _ in range(4)]

        async def one(i: int) -> None:
            result = await clients[i % 4].call_tool(
                "request_peek", {"conversation_id": conversations[i], "max_price": "2.00"}
            )
            outcomes.append(not result.is_error)
            if result.is_error:
                assert "Not enough funds" in result.content[0].text  # type: ignore[union-attr]

        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(one, i)
        final = await balance(clients[0])
    assert sum(outcomes) == 3
    assert (final["credit"], final["held"]) == ("0.50", "6.00")
    ((holds,),) = rows(hub, "SELECT COUNT(*) FROM ledger_entries WHERE kind = 'peek_hold'")
    ((negative,),) = rows(
        hub,
        "SELECT COUNT(*) FROM (SELECT account, SUM(amount_cents) s FROM ledger_lines WHERE account LIKE 'user:%' "
        "GROUP BY account) AS balances WHERE s < 0",
    )
    assert (holds, negative) == (3, 0)
    assert ledger_total(hub) == 0


_: Callable[..., Any] = assert_readable_with_some_key  # keep linters quiet about helper ordering
