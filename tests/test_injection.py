"""SQL-injection and control-character strings in every text field: stored and returned verbatim.

Each payload is wrapped in '<...>' so the service's trimming of leading/trailing spaces (a documented
normalization of names, descriptions and reasons) does not count as a change; everything inside,
quotes, NUL, escapes, bidi overrides, LIKE wildcards, must come back byte for byte.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests import support_db
from tests.conftest import Hub, structured

pytestmark = pytest.mark.anyio

PAYLOADS = [
    "Robert'); DROP TABLE principals;--",
    "' OR '1'='1' --",
    '" OR 1=1; SELECT * FROM principals WHERE "a"="a',
    "1; UPDATE principals SET role='admin'",
    "%_%\\%\\_ LIKE wildcards",
    "NUL\x00inside",
    "tab\there newline\nthere cr\rthere vt\x0bff\x0c",
    "escape \x1b[31mred\x1b[0m bell\x07 del\x7f",
    "bidi \u202eevil\u202c zero\u200bwidth \ufeffbom",
    "unicode 🦊 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 Ω ñ",
    "back\\slash \\x00 \\u0000 literal",
    '{"json": [1, 2], "key": null}',
    "$(rm -rf /) `id` ${HOME}",
    "<script>alert(1)</script>",
]
# PostgreSQL text cannot hold U+0000: there such a value is refused, clearly (the last test); SQLite stores it.
WRAPPED = [f"<{p}>" for p in PAYLOADS if not (support_db.ON_POSTGRES and "\x00" in p)]


def tables(hub: Hub) -> set[str]:
    return set(support_db.table_names(hub.settings.db))


async def test_profile_fields_are_stored_and_returned_verbatim(hub: Hub) -> None:
    registered: dict[str, str] = {}  # agent id -> payload
    for payload in WRAPPED:
        async with hub.client() as session:  # registering makes this session the new agent
            got = structured(
                await session.call_tool(
                    "register_agent", {"name": payload[:100], "description": payload, "peek_price": "1.00"}
                )
            )
            me = structured(await session.call_tool("whoami", {}))
            assert got["name"] == me["name"] == payload[:100]
            assert me["description"] == payload
            edited = f"{payload} (edited)"
            updated = structured(
                await session.call_tool("update_profile", {"name": edited[:100], "description": edited})
            )
            assert (updated["name"], updated["description"]) == (edited[:100], edited)
            registered[got["id"]] = edited
        async with hub.client() as session:
            user = structured(await session.call_tool("register_user", {"display_name": payload[:100]}))
            assert user["name"] == structured(await session.call_tool("whoami", {}))["name"] == payload[:100]
    bystander = await hub.register_agent("plain bystander")
    async with hub.client(bystander) as other:
        for agent_id, text in registered.items():
            profile = structured(await other.call_tool("get_agent", {"agent_id": agent_id}))
            assert (profile["name"], profile["description"]) == (text[:100], text)
            found = structured(await other.call_tool("find_agents", {"query": text[:100]}))
            assert [a["id"] for a in found["agents"]] == [agent_id]  # wildcards and quotes match only themselves
    assert {"principals", "conversations", "messages"} <= tables(hub)


async def test_topics_and_messages_are_stored_and_returned_verbatim(hub: Hub) -> None:
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    conversations: dict[str, str] = {}
    async with hub.client(alice) as a:
        for payload in WRAPPED:
            started = structured(
                await a.call_tool(
                    "start_conversation",
                    {"participants": [bob.id], "topic": payload[:200], "first_message": payload},
                )
            )
            conversation_id = started["conversation"]["id"]
            assert started["conversation"]["topic"] == payload[:200]
            structured(await a.call_tool("send_message", {"conversation_id": conversation_id, "text": payload * 3}))
            conversations[conversation_id] = payload
    async with hub.client(bob) as b:
        listed = await all_conversations(b)
        for conversation_id, payload in conversations.items():
            assert listed[conversation_id] == payload[:200]
            page = structured(await b.call_tool("read_messages", {"conversation_id": conversation_id}))
            assert [m["text"] for m in page["messages"]] == [payload, payload * 3]
    db = hub.settings.db
    assert support_db.query(db, "SELECT COUNT(*) FROM principals") == [(2,)]
    assert support_db.query(db, "SELECT COUNT(*) FROM messages") == [(2 * len(WRAPPED),)]
    assert support_db.query(db, "SELECT COUNT(*) FROM principals WHERE role = 'admin'") == [(0,)]


async def all_conversations(client: Any) -> dict[str, str]:
    topics: dict[str, str] = {}
    cursor = None
    while True:
        page = structured(
            await client.call_tool("list_conversations", {"limit": 100, **({"cursor": cursor} if cursor else {})})
        )
        topics.update({c["id"]: c["topic"] for c in page["conversations"]})
        cursor = page.get("next_cursor")
        if not cursor:
            return topics


async def test_money_and_peek_texts_are_stored_and_returned_verbatim(hub: Hub) -> None:
    async with hub.client() as probe:
        names = {t.name for t in (await probe.list_tools()).tools}

    admin = await hub.register_admin("root")
    async with hub.client(admin) as root:
        names |= {t.name for t in (await root.list_tools()).tools}
    if "grant_credits" not in names:
        pytest.skip("the money tools are not in this tree yet")
    uma = await hub.register_user("uma")
    async with hub.client(admin) as root:
        for i, payload in enumerate(WRAPPED):
            structured(
                await root.call_tool(
                    "grant_credits",
                    {"user_id": uma.id, "amount": "1.00", "memo": payload[:200], "idempotency_key": f"inj-{i}"},
                )
            )
    async with hub.client(uma) as u:
        history = structured(await u.call_tool("list_transactions", {"limit": 100}))
    memos = {t["memo"] for t in history["transactions"]}
    assert {p[:200] for p in WRAPPED} <= memos


@pytest.mark.postgres_only
async def test_on_postgresql_a_nul_character_is_refused_with_a_clear_error_and_nothing_is_written(hub: Hub) -> None:
    async with hub.client() as session:
        refused = await session.call_tool(
            "register_agent", {"name": "NUL\x00inside", "description": "d", "peek_price": "1.00"}
        )
    assert refused.is_error and "must not contain the NUL character" in refused.content[0].text  # type: ignore[union-attr]
    assert support_db.query(hub.settings.db, "SELECT COUNT(*) FROM principals") == [(0,)]
