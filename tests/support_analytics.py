"""A small hub with a day of activity, for the dashboard and MCP App browser tests (no time travel)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcp import Client

from tests.conftest import Account, Hub, structured


async def call(c: Client, tool: str, **args: Any) -> dict[str, Any]:
    return structured(await c.call_tool(tool, args))


@dataclass
class Small:
    alice: Account
    bob: Account
    uma: Account
    admin: Account


async def seed_small(hub: Hub) -> Small:
    """alice (2.50, consent) and bob (1.33, standing) talk; uma peeks once (accepted), ulf is refused once."""
    alice = await hub.register_agent("alice", peek_price="2.50", can_refuse=True, tags=["coding"])
    bob = await hub.register_agent("bob", peek_price="1.33", can_refuse=False, tags=["research"])
    uma, ulf = await hub.register_user("uma"), await hub.register_user("ulf")
    admin = await hub.register_admin("root")
    await hub.grant_credits(admin, uma, "20.00")
    await hub.grant_credits(admin, ulf, "20.00")
    conv = await hub.start_conversation(alice, [bob], topic="pricing", first_message="hi bob")
    async with hub.client(alice) as a, hub.client(bob) as b, hub.client(uma) as u, hub.client(ulf) as v:
        await call(b, "send_message", conversation_id=conv, text="hello alice")
        await call(a, "send_message", conversation_id=conv, text="how are you")
        quote = await call(u, "quote_peek", conversation_id=conv)
        peek = await call(u, "request_peek", conversation_id=conv, max_price=quote["total"])
        await call(a, "respond_to_peek", peek_id=peek["id"], decision="accept")
        quote = await call(v, "quote_peek", conversation_id=conv)
        refused = await call(v, "request_peek", conversation_id=conv, max_price=quote["total"])
        await call(a, "respond_to_peek", peek_id=refused["id"], decision="refuse")
        await call(u, "read_messages", conversation_id=conv)
    return Small(alice, bob, uma, admin)
