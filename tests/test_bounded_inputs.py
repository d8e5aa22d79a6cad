"""Every cursor and number a caller passes is bounded at the edge, and refused in plain words.

Found by attacking the hub: list_transactions(cursor="99999999999999999999") reached SQLite, whose
integers are 64-bit, and the OverflowError came back as "Internal error"; the other cursors took any
string and silently read some other page. The arguments checked here are found in the tool schemas
(every cursor, integer, number, money and date-time argument of every tool), so a tool added later is audited
without touching this file; it only has to say who may call it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from agentchat_mcp.contract import tool_schemas
from tests.conftest import Account, Hub, structured

pytestmark = pytest.mark.anyio

HUGE = "99999999999999999999"  # 20 digits: beyond a 64-bit integer either way
OUT_OF_RANGE: dict[str, list[Any]] = {
    "cursor": [HUGE, "-" + HUGE, int(HUGE), "page-two"],
    "integer": [int(HUGE), -int(HUGE), HUGE, "-" + HUGE, "many"],
    "number": [1e300, -1e300, HUGE, "-" + HUGE, "soon"],
    "money": [HUGE, "-" + HUGE, int(HUGE), "lots"],
    # as unix times, then the ends of the calendar (UTC+14 in year 1 and UTC-14 in 9999 overflow it)
    "datetime": [int(HUGE), -int(HUGE), HUGE, "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "soon"],
}
# Who calls each tool that takes a bounded argument (a tool missing here fails its case, by name).
CALLER = {
    "find_agents": "anonymous",
    "register_agent": "anonymous",
    "list_conversations": "agent",
    "read_messages": "agent",
    "mark_read": "agent",
    "wait_for_messages": "agent",
    "update_profile": "agent",
    "request_payout": "agent",
    "list_transactions": "user",
    "list_peek_requests": "user",
    "list_peekable_conversations": "user",
    "request_peek": "user",
    "rate_agent": "user",
    "buy_credits": "user",
    "grant_credits": "admin",
    "create_invite": "admin",
    "get_agent_analytics": "agent",
    "set_feature_flag": "admin",
}


def leaves(schema: dict[str, Any]) -> list[dict[str, Any]]:
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if not alternatives:
        return [schema]
    return [leaf for alternative in alternatives for leaf in leaves(alternative)]


def kind_of(name: str, schema: dict[str, Any]) -> str | None:
    """cursor, datetime, money (a decimal as number or string), integer, number; None for the rest."""
    types = {leaf.get("type") for leaf in leaves(schema)}
    if name == "cursor":
        return "cursor"
    if any(leaf.get("format") == "date-time" for leaf in leaves(schema)):
        return "datetime"
    if {"number", "string"} <= types:
        return "money"
    if "integer" in types:
        return "integer"
    if "number" in types:
        return "number"
    return None


INPUTS = {f.removesuffix(".input.json"): s for f, s in tool_schemas().items() if f.endswith(".input.json")}
BOUNDED = [
    (tool, name, kind)
    for tool, schema in sorted(INPUTS.items())
    for name, prop in schema.get("properties", {}).items()
    if (kind := kind_of(name, prop))
]


async def world(hub: Hub) -> tuple[dict[str, Account | None], dict[str, Any]]:
    """Principals of each role, a conversation, and valid values for the other required arguments."""
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    uma, root = await hub.register_user("uma"), await hub.register_admin("root")
    async with hub.client(root) as admin:  # so that a refusal is about the value, not an empty balance
        structured(await admin.call_tool("grant_credits", {"user_id": uma.id, "amount": "50.00"}))
    async with hub.client(alice) as a:
        started = await a.call_tool(
            "start_conversation", {"participants": [bob.id], "topic": "t", "first_message": "hi"}
        )
    known = {
        "conversation_id": structured(started)["conversation"]["id"],
        "agent_id": alice.id,
        "user_id": uma.id,
        "name": "a name",
        "peek_price": "1.00",
        "max_price": "5.00",
        "amount": "10.00",
        "flag": "peeks",  # a switch: only true or false fit its value
    }
    return {"anonymous": None, "agent": alice, "user": uma, "admin": root}, known


def plain_refusal_problem(text: str, argument: str) -> str | None:
    if "Internal error" in text or "Traceback" in text or "OverflowError" in text:
        return "an internal error"
    if argument not in text:
        return "does not name the argument"
    return None


def test_the_audit_finds_every_kind_of_bounded_argument() -> None:
    found = {(tool, name) for tool, name, _ in BOUNDED}
    assert {
        ("list_transactions", "cursor"),
        ("read_messages", "after_seq"),
        ("mark_read", "up_to_seq"),
        ("wait_for_messages", "timeout_s"),
        ("request_peek", "duration_minutes"),
        ("request_peek", "max_price"),
        ("request_peek", "start_at"),
        ("grant_credits", "amount"),
        ("find_agents", "limit"),
    } <= found
    assert {kind for *_, kind in BOUNDED} == set(OUT_OF_RANGE)


@pytest.mark.parametrize(("tool", "argument", "kind"), BOUNDED, ids=[f"{t}.{a}" for t, a, _ in BOUNDED])
async def test_an_out_of_range_value_is_refused_with_a_plain_message(
    tmp_path: Path, tool: str, argument: str, kind: str
) -> None:
    assert tool in CALLER, f"say who calls {tool} in CALLER"
    hub = Hub(tmp_path)
    hub.settings = hub.settings.model_copy(update={"rate_limits_enabled": False})
    accounts, known = await world(hub)
    base = {name: known[name] for name in INPUTS[tool].get("required", []) if name != argument}
    failures = []
    async with hub.client(accounts[CALLER[tool]]) as client:
        for value in OUT_OF_RANGE[kind]:
            result = await client.call_tool(tool, {**base, argument: value})
            if not result.is_error:
                failures.append(f"{argument}={value!r}: accepted")
                continue
            text = " ".join(getattr(c, "text", "") for c in result.content)
            if problem := plain_refusal_problem(text, argument):
                failures.append(f"{argument}={value!r}: {problem}: {text!r}")
    assert not failures, f"{tool}:\n" + "\n".join(failures)


async def every_page(client: Client, tool: str, arguments: dict[str, Any], key: str) -> list[Any]:
    """Follow next_cursor a page of one at a time, as a model would, to the end."""
    items: list[Any] = []
    cursor = None
    for _ in range(20):
        page = structured(
            await client.call_tool(tool, {**arguments, "limit": 1, **({"cursor": cursor} if cursor else {})})
        )
        items += page[key]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError(f"{tool} never reached the last page")


async def test_every_next_cursor_is_taken_back_unchanged(hub: Hub) -> None:
    """The bounds refuse made-up cursors only: each list tool's own next_cursor pages on to the end."""
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    uma, root = await hub.register_user("uma"), await hub.register_admin("root")
    async with hub.client(root) as admin:
        structured(await admin.call_tool("grant_credits", {"user_id": uma.id, "amount": "50.00"}))
    async with hub.client(alice) as a:
        conversations = [
            structured(await a.call_tool("start_conversation", {"participants": [bob.id], "topic": topic}))[
                "conversation"
            ]["id"]
            for topic in ("one", "two")
        ]
        mine = await every_page(a, "list_conversations", {}, "conversations")
        assert sorted(c["id"] for c in mine) == sorted(conversations)
        agents = await every_page(a, "find_agents", {}, "agents")
        assert sorted(p["id"] for p in agents) == sorted([alice.id, bob.id])
    async with hub.client(uma) as u:
        for conversation_id in conversations:
            structured(await u.call_tool("request_peek", {"conversation_id": conversation_id, "max_price": "5.00"}))
        peekable = await every_page(u, "list_peekable_conversations", {"agent_id": alice.id}, "conversations")
        assert sorted(c["conversation_id"] for c in peekable) == sorted(conversations)
        peeks = await every_page(u, "list_peek_requests", {}, "peeks")
        assert sorted(p["conversation_id"] for p in peeks) == sorted(conversations)
        entries = await every_page(u, "list_transactions", {}, "transactions")
        assert len({e["id"] for e in entries}) == len(entries) == 3  # the grant and two holds
