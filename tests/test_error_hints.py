"""Issue 11, point 6: an error names only tools the caller's role may call, and a peeker outside its
window is told about the window.

Each role's errors are triggered the ways a model meets them: every tool of the role with bad arguments
and unknown ids (the cases of test_bad_input), every tool of another role, and the state errors of
each domain (someone else's conversation or peek, a peek not open yet or over, no credit, a second
subscription, ...). Every tool named in an error (besides the one the caller itself called) must be in
the role's tools/list.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError

from agentchat_mcp.contract import tool_schemas
from tests.conftest import Account, Hub, TravelClock, structured
from tests.test_bad_input import cases_for

pytestmark = pytest.mark.anyio

SCHEMAS = tool_schemas()
TOOLS = sorted({name.split(".")[0] for name in SCHEMAS}, key=len, reverse=True)
NAMED = re.compile(r"\b(" + "|".join(TOOLS) + r")\b")
ECHO = re.compile(r"^Error executing tool [a-z_]+: ")  # the SDK's prefix repeats the tool that was called


def tools_named(text: str) -> set[str]:
    return set(NAMED.findall(ECHO.sub("", text)))


class Errors:
    """Calls as one principal and keeps every error text it gets."""

    def __init__(self, role: str, client: Client, callable_tools: set[str]) -> None:
        self.role, self.client, self.callable = role, client, callable_tools
        self.texts: list[tuple[str, str]] = []  # (what was called, the error)

    async def call(self, tool: str, **args: Any) -> str | None:
        result = await self.client.call_tool(tool, args)
        if not result.is_error:
            return None
        text = str(result.content[0].text)
        self.texts.append((f"{tool}({args})", text))
        return text

    async def read(self, uri: str) -> None:
        try:
            await self.client.read_resource(uri)
        except MCPError as exc:
            self.texts.append((f"read {uri}", exc.error.message))

    def problems(self) -> list[str]:
        return [
            f"{self.role}: {called} -> {text!r} names {sorted(tools_named(text) - self.callable)}"
            for called, text in self.texts
            if tools_named(text) - self.callable
        ]


async def tool_names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


async def test_every_error_a_role_meets_names_only_tools_that_role_may_call(hub: Hub, travel: TravelClock) -> None:
    hub.settings = hub.settings.model_copy(update={"rate_limits_enabled": False})
    alice = await hub.register_agent("alice", peek_price="2.00", can_refuse=True)
    bob = await hub.register_agent("bob", peek_price="1.00", can_refuse=False)
    mallory = await hub.register_agent("mallory")
    uma, eve = await hub.register_user("uma"), await hub.register_user("eve")
    root = await hub.register_admin("root")
    conversation = await hub.start_conversation(alice, [bob])
    await hub.grant_credits(root, uma, "20.00")
    async with hub.client(uma) as u:
        peek = structured(await u.call_tool("request_peek", {"conversation_id": conversation, "max_price": "3.00"}))
    missing = {"conversation_id": "cnv_" + "z" * 20, "peek_id": "pek_" + "z" * 20, "agent_id": "agt_" + "z" * 20}
    known = {
        "conversation_id": conversation,
        "agent_id": bob.id,
        "participants": [bob.id],
        "user_id": uma.id,
        "text": "hello",
        "topic": "a topic",
        "name": "a name",
        "display_name": "a name",
    }
    accounts: dict[str, Account | None] = {"anonymous": None, "agent": mallory, "user": eve, "admin": root}
    problems: list[str] = []
    counted = 0
    for role, account in accounts.items():
        async with hub.client(account) as client:
            mine = await tool_names(client)
            seen = Errors(role, client, mine)
            for tool in TOOLS:  # another role's tool: refused; the role's own: bad arguments, unknown ids
                if tool.startswith("register_") and role == "anonymous":
                    continue  # a successful registration would change the session's role
                if tool not in mine:
                    await seen.call(tool)
                    continue
                for case in cases_for(SCHEMAS[f"{tool}.input.json"], known):
                    await seen.call(tool, **case.arguments)
            for tool, args in [  # someone else's things, and things that do not exist
                ("read_messages", {"conversation_id": conversation}),
                ("send_message", {"conversation_id": conversation, "text": "x"}),
                ("mark_read", {"conversation_id": conversation}),
                ("leave_conversation", {"conversation_id": conversation}),
                ("wait_for_messages", {"conversation_id": conversation, "timeout_s": 0}),
                ("get_peek", {"peek_id": peek["id"]}),
                ("get_peek", {"peek_id": missing["peek_id"]}),
                ("cancel_peek", {"peek_id": peek["id"]}),
                ("respond_to_peek", {"peek_id": peek["id"], "decision": "accept"}),
                ("quote_peek", {"conversation_id": missing["conversation_id"]}),
                ("request_peek", {"conversation_id": conversation, "max_price": "3.00"}),  # eve has no credit
                ("get_agent", {"agent_id": missing["agent_id"]}),
                ("list_peekable_conversations", {"agent_id": missing["agent_id"]}),
                ("request_payout", {}),
                ("buy_credits", {"amount": "20.00"}),
                ("cancel_subscription", {"agent_id": bob.id}),
                ("grant_credits", {"user_id": "usr_" + "z" * 20, "amount": "1.00"}),
            ]:
                if tool in mine:
                    await seen.call(tool, **args)
            for suffix in ("", "/messages"):
                await seen.read(f"agentchat://conversations/{conversation}{suffix}")
            await seen.read("agentchat://me")
            counted += len(seen.texts)
            problems += seen.problems()
    async with hub.client(uma) as u:  # the peeker, before, during and after its window
        seen = Errors("user", u, await tool_names(u))
        await seen.call("read_messages", conversation_id=conversation)  # waiting for alice's consent
        async with hub.client(alice) as a:
            structured(await a.call_tool("respond_to_peek", {"peek_id": peek["id"], "decision": "accept"}))
        travel.advance(hours=1)
        await seen.call("read_messages", conversation_id=conversation)  # the window is over
        problems += seen.problems()
        counted += len(seen.texts)
    assert counted > 300
    assert not problems, "\n".join(problems)


async def test_a_peeker_outside_its_window_is_told_about_the_window(hub: Hub, travel: TravelClock) -> None:
    alice = await hub.register_agent("alice", peek_price="2.00", can_refuse=True)
    bob = await hub.register_agent("bob", peek_price="1.00", can_refuse=False)
    uma = await hub.register_user("uma")
    root = await hub.register_admin("root")
    conversation = await hub.start_conversation(alice, [bob])
    await hub.grant_credits(root, uma, "20.00")
    start = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)

    async def read(u: Client) -> str:
        result = await u.call_tool("read_messages", {"conversation_id": conversation})
        assert result.is_error, result.structured_content
        return str(result.content[0].text)

    prefix = "Error executing tool read_messages: "
    async with hub.client(uma) as u:
        assert await read(u) == (
            f"{prefix}No conversation {conversation} that you can see. You read one during a paid peek's window: "
            "list_peek_requests shows your peeks, request_peek asks for one."
        )
        peek = structured(
            await u.call_tool(
                "request_peek",
                {"conversation_id": conversation, "max_price": "3.00", "start_at": start.isoformat()},
            )
        )
        assert await read(u) == (
            f"{prefix}Your peek {peek['id']} on {conversation} is waiting for the agents' consent (until "
            f"{peek['consent_deadline']}); reading opens once they all accept. get_peek shows where it stands."
        )
        async with hub.client(alice) as a:
            structured(await a.call_tool("respond_to_peek", {"peek_id": peek["id"], "decision": "accept"}))
        opened = structured(await u.call_tool("get_peek", {"peek_id": peek["id"]}))
        assert await read(u) == (
            f"{prefix}Your peek {peek['id']} on {conversation} opens at {opened['window_start']}; read_messages "
            f"works from then until {opened['window_end']}."
        )
        travel.advance(hours=3)
        await anyio.sleep(0)
        assert await read(u) == (
            f"{prefix}Your peek {peek['id']} on {conversation} ended at {opened['window_end']}; messages after that "
            "stay sealed to you. request_peek asks for a new window."
        )
