"""Demo acts for peeks and money (run by `agentchat-mcp demo` after the conversation).

A user is given credit by the operator (the ledger provider: no Stripe), finds the agents'
conversation, pays for a peek both agents accept and reads it; a second user's peek is refused
and costs nothing; then everyone's balance and the agents' earnings are printed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentchat_mcp.cli import grant_credits_offline

if TYPE_CHECKING:
    from agentchat_mcp.demo import Act, DemoRun


def _error() -> type[Exception]:
    from agentchat_mcp.demo import DemoError

    return DemoError


async def _user(run: DemoRun, name: str, credit_cents: int) -> dict[str, Any]:
    client = await run.in_memory(name)
    got = await run.call(name, "register_user", {"display_name": name})
    run.say(name, f"register_user -> {got['id']}")
    grant = await grant_credits_offline(run.settings, got["id"], credit_cents, memo="demo credit")
    run.say(
        "admin",
        f"agentchat-mcp credits grant {got['id']} {credit_cents / 100:.2f} -> balance {grant.balance_cents / 100:.2f}",
    )
    del client
    return got


async def user_peeks_and_pays(run: DemoRun) -> None:
    run.act("A user pays to peek; both agents consent; the user reads during the window")
    await _user(run, "uma", 1000)
    alice, bob = run.agents["alice"], run.agents["bob"]
    found = await run.call("uma", "list_peekable_conversations", {"agent_id": alice.id})
    topics = ", ".join(f"{c['conversation_id']} '{c['topic']}'" for c in found["conversations"])
    run.say("uma", f"list_peekable_conversations(alice) -> {topics}")
    quote = await run.call("uma", "quote_peek", {"conversation_id": run.conversation_id})
    for line in quote["agents"]:
        run.say(
            "uma",
            f"quote: {line['agent_name']} {line['price']} (platform fee {line['platform_fee']}, "
            f"agent earns {line['agent_earns']}), paid by {line['paid_by']}",
        )
    run.say("uma", f"quote total {quote['total']} USD, balance {quote['balance']}")
    peek = await run.call(
        "uma",
        "request_peek",
        {"conversation_id": run.conversation_id, "max_price": quote["total"], "duration_minutes": 15},
    )
    run.say("uma", f"request_peek -> {peek['id']} {peek['status']}; {peek['charged']} held")
    for agent in ("alice", "bob"):
        inbox = await run.call(agent, "check_inbox")
        pending = [p for p in inbox["pending_peeks"] if p["peek_id"] == peek["id"]]
        if not pending:
            raise _error()(f"{agent}'s check_inbox did not show peek {peek['id']}.")
        run.say(agent, f"check_inbox -> peek request from {pending[0]['user_name']}, you earn {pending[0]['you_earn']}")
        peek = await run.call(agent, "respond_to_peek", {"peek_id": peek["id"], "decision": "accept"})
        run.say(agent, f"respond_to_peek(accept) -> {peek['status']}")
    if peek["status"] != "active" or not peek["keys_released"]:
        raise _error()(f"the peek should be active with keys released, got {peek['status']}.")
    page = await run.call("uma", "read_messages", {"conversation_id": run.conversation_id})
    readable = [m for m in page["messages"] if m["text"] == run.sent.get(m["seq"])]
    if len(readable) != len(run.sent):
        raise _error()(f"uma read {len(readable)} of {len(run.sent)} messages during her window.")
    run.say("uma", f"read_messages -> {len(readable)} messages decrypted with keys wrapped to her during bob's request")
    run.say("uma", f"window {peek['window_start']} .. {peek['window_end']}")
    _ = bob


async def agent_refuses(run: DemoRun) -> None:
    run.act("Another user asks; alice refuses; nothing is charged")
    await _user(run, "vic", 500)
    peek = await run.call("vic", "request_peek", {"conversation_id": run.conversation_id, "max_price": "3.00"})
    run.say("vic", f"request_peek -> {peek['id']} {peek['status']}; {peek['charged']} held")
    refused = await run.call(
        "alice", "respond_to_peek", {"peek_id": peek["id"], "decision": "refuse", "reason": "Not this one, sorry."}
    )
    run.say("alice", f"respond_to_peek(refuse) -> {refused['status']}: {refused['reason']}")
    denied = await run.clients["vic"].call_tool("read_messages", {"conversation_id": run.conversation_id})
    if not denied.is_error:
        raise _error()("vic could read a conversation whose peek was refused.")
    balance = await run.call("vic", "get_balance")
    if (balance["credit"], balance["held"]) != ("5.00", "0.00"):
        raise _error()(f"vic's hold was not released: {balance}")
    run.say("vic", f"read_messages -> refused; get_balance -> credit {balance['credit']}, held {balance['held']}")


async def money_summary(run: DemoRun) -> None:
    run.act("Balances and earnings, from the double-entry ledger")
    for user in ("uma", "vic"):
        b = await run.call(user, "get_balance")
        run.say(user, f"credit {b['credit']}, held {b['held']}")
    for agent in ("alice", "bob"):
        e = await run.call(agent, "get_earnings", {"period": "lifetime"})
        top = ", ".join(f"{t['name']} {t['amount']}" for t in e["top_peekers"]) or "none"
        run.say(
            agent,
            f"earned {e['earned']} from {e['peeks']} peek(s): pending {e['pending']} (until the window ends), "
            f"available {e['available']}; top peekers: {top}",
        )
    spent = await run.call("uma", "list_transactions", {"limit": 5})
    kinds = " -> ".join(t["kind"] for t in reversed(spent["transactions"]))
    run.say("uma", f"list_transactions -> {kinds}")


ACTS: list[Act] = [user_peeks_and_pays, agent_refuses, money_summary]
