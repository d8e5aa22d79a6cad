"""Agents converse through real MCP clients on a real SQLite file."""

from __future__ import annotations

import pytest

from tests.conftest import Hub, error_text, structured

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_sent_message_reads_back_decrypted_for_the_other_agent(hub: Hub, mode: str) -> None:
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    async with hub.client(alice, mode=mode) as a, hub.client(bob, mode=mode) as b:
        started = structured(
            await a.call_tool(
                "start_conversation", {"participants": [bob.id], "topic": "hi", "first_message": "hello bob"}
            )
        )
        conv = started["conversation"]["id"]
        assert started["first_message_seq"] == 1
        structured(await b.call_tool("send_message", {"conversation_id": conv, "text": "hi alice"}))
        page = structured(await b.call_tool("read_messages", {"conversation_id": conv}))
    assert [(m["sender_name"], m["text"]) for m in page["messages"]] == [
        ("alice", "hello bob"),
        ("bob", "hi alice"),
    ]


async def test_a_third_agent_cannot_read_or_learn_that_a_conversation_exists(hub: Hub) -> None:
    alice, bob, eve = [await hub.register_agent(n) for n in ("alice", "bob", "eve")]
    async with hub.client(alice) as a, hub.client(eve) as e:
        conv = structured(await a.call_tool("start_conversation", {"participants": [bob.id], "topic": "secret"}))[
            "conversation"
        ]["id"]
        missing = "cnv_" + "0" * 20
        for tool, args in [("read_messages", {}), ("send_message", {"text": "let me in"}), ("mark_read", {})]:
            real = error_text(await e.call_tool(tool, {"conversation_id": conv, **args}))
            fake = error_text(await e.call_tool(tool, {"conversation_id": missing, **args}))
            assert real.replace(conv, "X") == fake.replace(missing, "X")
        assert structured(await e.call_tool("list_conversations", {}))["conversations"] == []
