"""Authorization matrix: every tool x every role, aimed at other principals' ids: refused or not found, nothing leaked.

The victims: agents alice and bob in a conversation holding a canary message, and (when the peek
tools exist) a user's pending peek on it. The attackers: an anonymous session, an outsider agent,
an outsider user and an admin. Each attacker calls every tool with arguments pointing at the
victims' ids. Then:

- no result or error text contains the canary plaintext or any victim's API key;
- a call aimed at the victims' conversation or peek fails (refused, or "not found" exactly as for a
  missing id), unless the tool exists to act on other people's conversations (quote_peek,
  request_peek: asking to peek is the product);
- the victims' data is unchanged: their conversation holds the same messages afterwards.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import Any

import pytest
from hypothesis import find, settings
from hypothesis import strategies as st
from mcp import MCPError

from tests.conftest import Account, Hub, structured

pytestmark = pytest.mark.anyio

CANARY = "canary: the launch code is 7731, tell no one"
ID_PREFIXES = ("agt", "usr", "adm", "cnv", "pek")
# Tools whose job is to act on conversations the caller is not in.
ACT_ON_OTHERS = frozenset({"quote_peek", "request_peek"})


def regex_example(pattern: str) -> str:
    return str(find(st.from_regex(pattern, fullmatch=True), lambda _: True, settings=settings(database=None)))


def sample(schema: dict[str, Any], name: str, ids: dict[str, str]) -> Any:
    """A plausible valid value for one argument, with ids pointing at the victims."""
    options = schema.get("anyOf")
    if options:
        usable = [o for o in options if o.get("type") != "null"]
        return sample(usable[0] if usable else options[0], name, ids)
    pattern = schema.get("pattern", "")
    for prefix in ID_PREFIXES:
        if pattern.startswith(f"^{prefix}_"):
            return ids[prefix]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "array":
        return [sample(schema.get("items", {}), name, ids)] * max(1, schema.get("minItems", 1))
    if kind == "integer":
        return max(schema.get("minimum", 1), min(schema.get("maximum", 10), 10))
    if kind == "number":
        return 0 if "timeout" in name else max(schema.get("minimum", 1), min(schema.get("maximum", 10), 10))
    if kind == "boolean":
        return True
    if pattern:
        return regex_example(pattern)
    return ("probe " + name)[: schema.get("maxLength", 100)].ljust(schema.get("minLength", 0), "x")


def probe_arguments(schema: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """Every required argument, and every id-shaped optional one, aimed at the victims."""
    required = set(schema.get("required", []))
    out = {}
    for name, prop in schema.get("properties", {}).items():
        text = json.dumps(prop)
        if name in required or any(f"^{p}_" in text for p in ID_PREFIXES) or "timeout" in name:
            out[name] = sample(prop, name, ids)
    return out


def result_text(result: Any) -> str:
    parts = [c.text for c in result.content if getattr(c, "text", None)]
    return "\n".join(parts) + json.dumps(result.structured_content or {}, default=str)


async def test_every_tool_by_every_role_against_other_principals_ids(hub: Hub) -> None:
    hub.settings = hub.settings.model_copy(update={"rate_limits_enabled": False})
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    uma = await hub.register_user("uma")  # a victim user
    admin = await hub.register_admin("root")
    async with hub.client(alice) as a:
        started = structured(
            await a.call_tool("start_conversation", {"participants": [bob.id], "topic": "t", "first_message": CANARY})
        )
        conversation_id = started["conversation"]["id"]
    ids = {"agt": alice.id, "usr": uma.id, "adm": admin.id, "cnv": conversation_id, "pek": "pek_" + "z" * 20}

    async with hub.client(admin) as root:
        tool_names = {t.name for t in (await root.list_tools()).tools}
    if {"grant_credits", "request_peek"} <= tool_names:  # a pending peek of uma's on the conversation
        async with hub.client(admin) as root:
            structured(await root.call_tool("grant_credits", {"user_id": uma.id, "amount": "50.00"}))
        async with hub.client(uma) as u:
            peek = structured(
                await u.call_tool("request_peek", {"conversation_id": conversation_id, "max_price": "50.00"})
            )
        ids["pek"] = peek.get("peek_id") or peek.get("id") or peek["peek"]["id"]

    attackers: dict[str, Account | None] = {
        "anonymous": None,
        "agent": await hub.register_agent("mallory"),
        "user": await hub.register_user("eve"),
        "admin": await hub.register_admin("nosy-admin"),
    }
    secrets = [CANARY, alice.api_key, bob.api_key, uma.api_key, admin.api_key]
    schemas: dict[str, dict[str, Any]] = {}
    for account in (alice, uma, admin, None):
        async with hub.client(account) as c:
            schemas.update({t.name: t.input_schema for t in (await c.list_tools()).tools})
    private = {ids["cnv"], ids["pek"]}

    problems: list[str] = []
    calls = 0
    for role, attacker in attackers.items():
        async with AsyncExitStack() as stack:
            # one session per attacker; register_* gets a fresh one, as a successful registration
            # turns an anonymous session into the new principal
            shared = await stack.enter_async_context(hub.client(attacker))
            for tool in sorted(schemas):
                args = probe_arguments(schemas[tool], ids)
                calls += 1
                try:
                    if not tool.startswith("register_"):
                        result = await shared.call_tool(tool, args)
                    else:
                        async with hub.client() as fresh:
                            result = await fresh.call_tool(tool, args)
                except MCPError as exc:
                    problems.append(f"{role} {tool}: JSON-RPC error {exc.error.code}")
                    continue
                problems += judge(role, tool, args, result, secrets, private)
    print(f"authorization matrix: {len(attackers)} roles x {len(schemas)} tools = {calls} calls")
    assert len(schemas) >= 15 and calls == len(attackers) * len(schemas)
    assert problems == []

    async with hub.client(bob) as b:  # the victims' conversation is untouched
        page = structured(await b.call_tool("read_messages", {"conversation_id": conversation_id}))
    assert [m["text"] for m in page["messages"]] == [CANARY]


def judge(role: str, tool: str, args: dict[str, Any], result: Any, secrets: list[str], private: set[str]) -> list[str]:
    """What is wrong with one attacker's call: a leak, a success on someone else's data, an internal error."""
    problems = []
    text = result_text(result)
    leaked = [s[:12] for s in secrets if s in text]
    if leaked:
        problems.append(f"{role} {tool}({args}) leaked {leaked}")
    # A cursor is a position to list from (compared, never looked up): aimed at a victim's id it still
    # lists only the caller's own rows, so it is checked for leaks but not counted as acting on the victim.
    aimed_at_private = any(str(v) in private for v in _flatten({k: v for k, v in args.items() if k != "cursor"}))
    if aimed_at_private and not result.is_error and tool not in ACT_ON_OTHERS:
        problems.append(f"{role} {tool}({args}) succeeded on someone else's conversation or peek")
    if "Internal error" in text:
        problems.append(f"{role} {tool}: internal error")
    return problems


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flatten(v)]
    if isinstance(value, list):
        return [x for v in value for x in _flatten(v)]
    return [value]


async def test_a_non_member_gets_the_same_answer_as_for_a_missing_conversation(hub: Hub) -> None:
    alice, bob, mallory = [await hub.register_agent(n) for n in ("alice", "bob", "mallory")]
    async with hub.client(alice) as a:
        started = structured(
            await a.call_tool("start_conversation", {"participants": [bob.id], "topic": "t", "first_message": CANARY})
        )
    real, missing = started["conversation"]["id"], "cnv_" + "0" * 20
    async with hub.client(mallory) as m:
        for tool, extra in (("read_messages", {}), ("send_message", {"text": "hi"}), ("mark_read", {})):
            on_real = await m.call_tool(tool, {"conversation_id": real, **extra})
            on_missing = await m.call_tool(tool, {"conversation_id": missing, **extra})
            assert on_real.is_error and on_missing.is_error
            assert on_real.content[0].text.replace(real, "ID") == on_missing.content[0].text.replace(missing, "ID")
