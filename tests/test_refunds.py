"""Admin refunds of peeks through real MCP clients on a real SQLite file: before capture, after
capture, after payout (the agent owes it), with referral lines tied to the peek, replays, the CLI,
and (test_payments_stripe.py) the card refund at localstripe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentchat_mcp.server import build_app_context
from agentchat_mcp.services.ledger import PLATFORM_REVENUE, Line, agent_pending, user_credit
from agentchat_mcp.store import open_store
from tests.conftest import Account, Hub, TravelClock, error_text, ledger_total, rows
from tests.support_cli import cli, one_line
from tests.test_peeks import balance, call, grant

pytestmark = pytest.mark.anyio


async def talking(
    hub: Hub, *, price: str, can_refuse: bool = False, credit: str = "10.00"
) -> tuple[Account, Account, str]:
    """An agent at `price` talking to one at 0.50 with standing consent, and a user with `credit`:
    (agent, user, conversation id)."""
    agent = await hub.register_agent("ada", peek_price=price, can_refuse=can_refuse)
    other = await hub.register_agent("bo", peek_price="0.50", can_refuse=False)
    user = await hub.register_user("uma")
    await grant(hub, user, credit)
    return agent, user, await hub.start_conversation(agent, [other])


async def peek_at(hub: Hub, *, price: str = "2.50", credit: str = "10.00") -> tuple[Account, Account, str, str]:
    """talking(), both agents with standing consent, and a captured peek: (agent, user, conversation id, peek id)."""
    agent, user, conv = await talking(hub, price=price, credit=credit)
    async with hub.client(user) as u:
        peek = await call(u, "request_peek", conversation_id=conv, max_price="100.00")
    assert peek["status"] in ("active", "scheduled")
    return agent, user, conv, peek["id"]


async def refund(hub: Hub, peek_id: str, reason: str = "bad peek") -> dict[str, Any]:
    admin = await hub.register_admin(f"root-{entries(hub)}")
    async with hub.client(admin) as root:
        return await call(root, "refund_peek", peek_id=peek_id, reason=reason)


def entries(hub: Hub) -> int:
    return int(rows(hub, "SELECT COUNT(*) FROM ledger_entries")[0][0])


async def test_a_refund_after_capture_gives_everything_back_and_a_second_one_changes_nothing(hub: Hub) -> None:
    agent, user, conv, peek_id = await peek_at(hub)
    async with hub.client(agent) as a:
        assert (await balance(a))["pending"] == "2.00"

    done = await refund(hub, peek_id)
    assert (done["refunded_from"], done["returned"], done["replayed"]) == ("active", "3.00", False)
    assert done["to_card"] == [] and done["agents_owing"] == []
    async with hub.client(user) as u, hub.client(agent) as a:
        assert (await balance(u))["credit"] == "10.00"
        assert (await balance(a))["pending"] == "0.00"
        assert (await call(u, "get_peek", peek_id=peek_id))["status"] == "refunded"
        # the peeker loses access at once
        assert "refunded" in error_text(await u.call_tool("read_messages", {"conversation_id": conv}))
        # the user sees the refund in list_transactions, with the reason
        newest = (await call(u, "list_transactions"))["transactions"][0]
        assert (newest["kind"], newest["amount"], newest["ref"]) == ("peek_refund", "3.00", peek_id)
        assert "bad peek" in newest["memo"]
    admin_balance = rows(hub, "SELECT SUM(amount_cents) FROM ledger_lines WHERE account = ?", PLATFORM_REVENUE)
    assert admin_balance == [(0,)]  # the 0.60 fee went back too

    before = entries(hub)
    again = await refund(hub, peek_id, reason="another reason")
    assert (again["replayed"], again["refunded_from"], again["returned"]) == (True, "refunded", "3.00")
    assert entries(hub) == before and ledger_total(hub) == 0


async def test_a_refund_before_capture_releases_the_hold(hub: Hub) -> None:
    agent, user, conv = await talking(hub, price="3.00", can_refuse=True, credit="5.00")
    async with hub.client(user) as u:
        peek = await call(u, "request_peek", conversation_id=conv, max_price="3.50")
        assert peek["status"] == "awaiting_consent" and (await balance(u))["held"] == "3.50"
    done = await refund(hub, peek["id"])
    assert (done["refunded_from"], done["returned"]) == ("awaiting_consent", "3.50")
    async with hub.client(user) as u, hub.client(agent) as a:
        b = await balance(u)
        assert (b["credit"], b["held"]) == ("5.00", "0.00")
        # the agent can no longer accept it
        said = error_text(await a.call_tool("respond_to_peek", {"peek_id": peek["id"], "decision": "accept"}))
        assert "refunded" in said
    assert ledger_total(hub) == 0


async def test_a_refund_after_payout_leaves_the_agent_owing_and_blocks_payouts_until_settled(
    hub: Hub, travel: TravelClock
) -> None:
    agent, user, conv, peek_id = await peek_at(hub, price="12.50", credit="30.00")
    travel.advance(minutes=16)  # the window ends: 10.00 available
    async with hub.client(agent) as a:
        paid = await call(a, "request_payout")
        assert paid["amount"] == "10.00"
    done = await refund(hub, peek_id)
    assert done["refunded_from"] in ("active", "completed")
    assert done["agents_owing"] == [{"agent_id": agent.id, "owes": "10.00"}]
    async with hub.client(agent) as a:
        assert (await balance(a))["available"] == "-10.00"
        said = error_text(await a.call_tool("request_payout", {}))
        assert "You owe 10.00 for refunded peeks" in said and "get_balance" in said
    # new earnings settle what is owed first
    async with hub.client(user) as u:
        second = await call(u, "request_peek", conversation_id=conv, max_price="13.00")
    travel.advance(minutes=16)
    async with hub.client(agent) as a:
        assert (await balance(a))["available"] == "0.00"
        assert "minimum" in error_text(await a.call_tool("request_payout", {}))
    assert second["status"] in ("active", "scheduled") and ledger_total(hub) == 0


async def test_referral_lines_tied_to_the_peek_are_reversed_and_a_spent_reward_is_absorbed(hub: Hub) -> None:
    """Any entry posted under the peek's key is reversed with it, whoever it paid (here a made-up one paying
    an agent and a user; issue 12's real commission: tests/test_referrals.py); a user's spent part is absorbed."""
    _, _, _, peek_id = await peek_at(hub, price="5.00")
    referrer = await hub.register_agent("rex", peek_price="1.00")
    friend = await hub.register_user("fay")
    async with open_store(hub.settings.db) as store:
        app = build_app_context(hub.settings, store, hub.telemetry)
        async with store.write() as conn:
            await app.ledger.post(
                conn,
                idempotency_key=f"peek:{peek_id}:referral",
                kind="referral_commission",
                lines=[
                    Line(PLATFORM_REVENUE, -10),
                    Line(agent_pending(referrer.id), 10),
                    Line("platform:referrals", -500),
                    Line(user_credit(friend.id), 500),
                ],
                ref="ref_test",
            )
            # the friend spends 3.00 of the reward before the refund
            await app.ledger.post(
                conn,
                idempotency_key="spent",
                kind="test_spend",
                lines=[Line(user_credit(friend.id), -300), Line("external:clearing", 300)],
            )
    done = await refund(hub, peek_id)
    assert done["returned"] == "5.50"
    async with hub.client(referrer) as r, hub.client(friend) as f:
        assert (await balance(r))["pending"] == "0.00"
        assert (await balance(f))["credit"] == "0.00"  # took back the 2.00 left, never below zero
    clawback = rows(hub, "SELECT SUM(amount_cents) FROM ledger_lines WHERE account = 'platform:clawback'")
    assert clawback == [(-300,)]  # what the friend already spent, absorbed by the platform
    assert ledger_total(hub) == 0


async def test_refunding_what_was_never_paid_or_is_unknown_says_what_to_do(hub: Hub) -> None:
    _, user, conv = await talking(hub, price="1.00", can_refuse=True, credit="5.00")
    async with hub.client(user) as u:
        peek = await call(u, "request_peek", conversation_id=conv, max_price="1.50")
        await call(u, "cancel_peek", peek_id=peek["id"])
        assert "refund_peek" not in {t.name for t in (await u.list_tools()).tools}
        assert (await u.call_tool("refund_peek", {"peek_id": peek["id"], "reason": "x"})).is_error
    admin = await hub.register_admin("root")
    async with hub.client(admin) as root:
        said = error_text(await root.call_tool("refund_peek", {"peek_id": peek["id"], "reason": "x"}))
        assert f"Peek {peek['id']} is cancelled: its hold was already given back" in said
        unknown = error_text(await root.call_tool("refund_peek", {"peek_id": "pek_" + "0" * 20, "reason": "x"}))
        assert unknown.endswith(f"No peek pek_{'0' * 20} that you can see.")
        blank = error_text(await root.call_tool("refund_peek", {"peek_id": peek["id"], "reason": "  "}))
        assert "reason" in blank


async def test_the_cli_refunds_a_peek_and_prints_one_json_line(hub: Hub, tmp_path: Path) -> None:
    _, user, _, peek_id = await peek_at(hub)
    env = {"AGENTCHAT_DB": str(hub.settings.db), "AGENTCHAT_SECRET_FILE": str(hub.settings.resolved_secret_file())}
    done = cli("peeks", "refund", peek_id, "--reason", "operator refund", **env)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert (shown["peek_id"], shown["refunded_from"], shown["returned"], shown["replayed"]) == (
        peek_id,
        "active",
        "3.00",
        False,
    )
    assert json.loads(cli("peeks", "refund", peek_id, "--reason", "again", **env).stdout)["replayed"] is True
    missing = cli("peeks", "refund", "pek_" + "1" * 20, "--reason", "x", **env)
    assert one_line(missing) == f"error: No peek pek_{'1' * 20} that you can see."
    async with hub.client(user) as u:
        assert (await balance(u))["credit"] == "10.00"
