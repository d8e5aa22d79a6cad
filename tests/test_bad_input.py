"""Every tool refuses bad input with a message the model can act on, and refused writes write nothing.

The tools are listed from the server, so a tool added later is covered without touching this file.
Bad values are derived from each tool's input schema: wrong types, missing and unknown arguments,
oversize and empty strings, out-of-range numbers, malformed and unknown ids, NaN and odd prices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from agentchat_mcp.settings import PostgresUrl
from tests import support_db
from tests.conftest import Account, Hub, structured

pytestmark = pytest.mark.anyio

JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}
WRONG_VALUES: list[Any] = [{"an": "object"}, ["a", "list"], "a string", 12345]
ID_PATTERN = re.compile(r"^\^([a-z]+)_\[a-z0-9\]\{(\d+)\}\$$")
PRICE_WORDS = ("price", "amount", "credits", "max_price")
BAD_PRICES = ["NaN", "nan", "Infinity", "-Infinity", "-1.00", "1.234", "abc", "1e999", ""]
ROLE_ORDER = ("agent", "user", "admin", "anonymous")
# What pydantic's own report looks like; an argument error must read as sentences instead (issue 11, point 5).
PYDANTIC_REPORT = ("validation error", "errors.pydantic.dev", "[type=", "input_value", "Input should")


@dataclass
class World:
    hub: Hub
    clients: dict[str, Client]
    known: dict[str, Any]  # argument name -> a real, valid value in this world


def options(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The alternatives of a property schema (nested anyOf / oneOf flattened), or the schema itself."""
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if not alternatives:
        return [schema]
    return [leaf for alternative in alternatives for leaf in options(alternative)]


def types_of(schema: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for option in options(schema):
        kind = option.get("type")
        if isinstance(kind, list):
            found |= set(kind)
        elif isinstance(kind, str):
            found.add(kind)
    return found


def main_option(schema: dict[str, Any]) -> dict[str, Any]:
    """The first alternative that is not null."""
    return next((o for o in options(schema) if o.get("type") != "null"), schema)


def is_money(name: str, schema: dict[str, Any]) -> bool:
    return any(w in name for w in PRICE_WORDS) and {"number", "string"} <= types_of(schema)


def sample(name: str, schema: dict[str, Any], known: dict[str, Any]) -> Any:
    """A schema-valid value for an argument (a real one when the world has it)."""
    if name in known:
        return known[name]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    option = main_option(schema)
    if "enum" in option:
        return option["enum"][0]
    if "const" in option:
        return option["const"]
    kind = option.get("type")
    if is_money(name, schema):
        return "1.00"
    if kind == "string":
        match = ID_PATTERN.match(option.get("pattern", ""))
        if match:
            return f"{match.group(1)}_" + "0" * int(match.group(2))
        return "x" * max(1, option.get("minLength", 1))
    if kind in ("integer", "number"):
        low = option.get("minimum", option.get("exclusiveMinimum", 0) + 1)
        return int(low) if kind == "integer" else low
    if kind == "boolean":
        return True
    if kind == "array":
        item = sample(name, option.get("items", {"type": "string"}), {})
        return [item] * max(1, option.get("minItems", 1))
    if kind == "object":
        return {}
    return None


def baseline(schema: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties", {})
    return {name: sample(name, properties[name], known) for name in schema.get("required", [])}


@dataclass(frozen=True)
class Case:
    what: str
    arguments: dict[str, Any]
    must_mention: tuple[str, ...]  # the text names at least one of these
    write_ok: bool = False


def cases_for(schema: dict[str, Any], known: dict[str, Any]) -> list[Case]:
    """Bad inputs for one tool, derived from its input schema."""
    base = baseline(schema, known)
    properties: dict[str, dict[str, Any]] = schema.get("properties", {})
    found = [Case("an unknown argument", {**base, "no_such_argument": 1}, ("no_such_argument",))]
    for name in schema.get("required", []):
        found.append(Case(f"{name} missing", {k: v for k, v in base.items() if k != name}, (name,)))
    for name, prop in properties.items():
        allowed = types_of(prop)
        option = main_option(prop)
        kind = option.get("type")

        def bad(what: str, value: Any, *mention: str, arg: str = name) -> None:
            found.append(Case(f"{arg} {what}", {**base, arg: value}, mention or (arg,)))

        wrong = [v for v in WRONG_VALUES if not any(t in allowed for t in _json_types(v))]
        for value in wrong[:2]:
            bad(f"= {value!r} (wrong type)", value)
        if is_money(name, prop):
            for price in BAD_PRICES:
                bad(f"= {price!r} (bad price)", price)
            continue
        if kind == "string":
            if "maxLength" in option:
                bad("oversize", "x" * (option["maxLength"] + 1))
            if option.get("minLength", 0) >= 1:
                bad("empty", "")
                if "pattern" not in option and "enum" not in option:
                    bad("only spaces", " " * max(3, option["minLength"]))
            if "pattern" in option:
                bad("malformed", "not a valid value!")
                match = ID_PATTERN.match(option["pattern"])
                if match and name != "cursor":  # a cursor is a position in id order, not a thing that must exist
                    unknown = f"{match.group(1)}_" + "z" * int(match.group(2))
                    bad("unknown id", unknown, unknown, "not found", "No ", "no ")
            if "enum" in option:
                bad("not one of the choices", "definitely-not-a-choice")
        elif kind in ("integer", "number"):
            if "minimum" in option:
                bad("below the minimum", option["minimum"] - 1)
            if "maximum" in option:
                bad("above the maximum", option["maximum"] * 10 + 1)
            if kind == "integer":
                bad("with decimals", 1.5)
        elif kind == "array":
            item_schema = option.get("items", {})
            item = sample(name, item_schema, {})
            if "maxItems" in option:
                bad("too many items", [item] * (option["maxItems"] + 1))
            if option.get("minItems", 0) >= 1:
                bad("empty list", [])
            item_kind = main_option(item_schema).get("type")
            if item_kind == "string" and "maxLength" in item_schema:
                bad("with an oversize item", ["x" * (item_schema["maxLength"] + 1)])
            if item_kind == "string" and "pattern" in item_schema:
                bad("with a malformed item", ["not a valid value!"])
                match = ID_PATTERN.match(item_schema["pattern"])
                if match:
                    unknown = f"{match.group(1)}_" + "z" * int(match.group(2))
                    bad("with an unknown id", [unknown], unknown, "not found", "No ", "no ")
    return found


def _json_types(value: Any) -> set[str]:
    if isinstance(value, bool):
        return {"boolean"}
    if isinstance(value, int):
        return {"integer", "number"}
    for name, kinds in JSON_TYPES.items():
        if isinstance(value, kinds):
            return {name}
    return set()


def row_counts(db: Path | PostgresUrl) -> dict[str, int]:
    # tool_usage_daily: the per-tool call counters (refused calls count too), flushed every few seconds
    tables = [t for t in support_db.table_names(db) if t != "tool_usage_daily"]
    counts = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM \"{t}\"" for t in tables)  # noqa: S608 (table names)
    return {t: int(n) for t, n in support_db.query(db, counts)}


def problems_with(tool: str, case: Case, result: Any) -> str | None:
    """Why this refusal is not good enough for a model, or None."""
    if not result.is_error:
        return "accepted"
    text = " ".join(getattr(c, "text", "") for c in result.content).strip()
    if text in (f"Error executing tool {tool}", f"Error executing tool {tool}:", ""):
        return f"a bare error: {text!r}"
    if "Internal error" in text or "Traceback" in text or 'File "' in text:
        return f"an internal error: {text!r}"
    if any(raw in text for raw in PYDANTIC_REPORT) or "\n" in text:
        return f"pydantic's report, not a sentence for the model: {text!r}"
    if not any(m in text for m in case.must_mention):
        return f"does not name {case.must_mention}: {text!r}"
    return None


async def world(hub: Hub) -> tuple[dict[str, Account | None], dict[str, Any]]:
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    uma = await hub.register_user("uma")
    root = await hub.register_admin("root")
    conv = await hub.start_conversation(alice, [bob])
    accounts: dict[str, Account | None] = {"agent": alice, "user": uma, "admin": root, "anonymous": None}
    known = {
        "conversation_id": conv,
        "agent_id": bob.id,
        "participants": [bob.id],
        "user_id": uma.id,
        "principal_id": bob.id,
        "text": "hello",
        "first_message": "hello",
        "topic": "a topic",
        "name": "a name",
        "display_name": "a name",
    }
    return accounts, known


async def test_every_tool_refuses_bad_input_clearly_and_writes_nothing(tmp_path: Path) -> None:
    hub = Hub(tmp_path)
    # Hundreds of calls from one principal: rate limits are tested elsewhere.
    hub.settings = hub.settings.model_copy(update={"rate_limits_enabled": False})
    accounts, known = await world(hub)
    failures: list[str] = []
    covered: set[str] = set()
    checked = 0
    for role in ROLE_ORDER:
        async with hub.client(accounts[role]) as client:
            for tool in (await client.list_tools()).tools:
                if tool.name in covered:
                    continue
                covered.add(tool.name)
                for case in cases_for(tool.input_schema, known):
                    before = row_counts(hub.settings.db)
                    result = await client.call_tool(tool.name, case.arguments)
                    checked += 1
                    problem = problems_with(tool.name, case, result)
                    if problem:
                        failures.append(f"{tool.name} ({role}), {case.what}: {problem}")
                    elif (after := row_counts(hub.settings.db)) != before:
                        changed = {t: (before.get(t), n) for t, n in after.items() if before.get(t) != n}
                        failures.append(f"{tool.name} ({role}), {case.what}: refused but wrote {changed}")
    assert {"register_agent", "send_message", "start_conversation", "update_profile"} <= covered
    assert checked > 100
    assert not failures, f"{len(failures)} of {checked} bad calls handled badly:\n" + "\n".join(failures)


async def test_a_tool_the_role_may_not_call_is_refused_with_what_would_work(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    uma = await hub.register_user("uma")
    async with hub.client() as anonymous:
        text = (
            (await anonymous.call_tool("send_message", {"conversation_id": "cnv_" + "0" * 20, "text": "x"}))
            .content[0]
            .text
        )
        assert "register_agent" in text
    async with hub.client(uma) as user:
        text = (await user.call_tool("start_conversation", {"participants": [alice.id], "topic": "x"})).content[0].text
        assert "agent" in text and "user" in text
    async with hub.client(alice) as agent:
        text = (await agent.call_tool("register_agent", {"name": "again", "peek_price": "1.00"})).content[0].text
        assert "Error executing tool register_agent" in text and "signed in" in text
    assert row_counts(hub.settings.db)["principals"] == 2


async def test_an_unknown_tool_is_named_in_the_refusal(hub: Hub) -> None:
    async with hub.client() as client:
        result = await client.call_tool("no_such_tool", {})
    assert result.is_error and "no_such_tool" in result.content[0].text


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_send_message_refusals_name_the_argument_in_both_protocol_eras(hub: Hub, mode: str) -> None:
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    async with hub.client(alice, mode=mode) as a:
        conv = structured(await a.call_tool("start_conversation", {"participants": [bob.id], "topic": "t"}))[
            "conversation"
        ]["id"]
        for arguments, word in [
            ({"conversation_id": conv, "text": "x" * 16001}, "text"),
            ({"conversation_id": conv, "text": "   "}, "text"),
            ({"conversation_id": conv, "text": 5}, "text"),
            ({"conversation_id": "cnv_nope", "text": "hi"}, "conversation_id"),
            ({"conversation_id": conv, "text": "hi", "urgent": True}, "urgent"),
        ]:
            result = await a.call_tool("send_message", arguments)
            assert result.is_error and word in result.content[0].text, (arguments, result.content[0].text)
    assert row_counts(hub.settings.db)["messages"] == 0


async def test_a_conversation_needs_another_agent_and_names_each_unknown_one(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    uma = await hub.register_user("uma")
    async with hub.client(alice) as a:
        alone = await a.call_tool("start_conversation", {"participants": [alice.id, alice.id], "topic": "me"})
        assert alone.is_error and "other agent" in alone.content[0].text
        ghost = "agt_" + "q" * 20
        unknown = await a.call_tool("start_conversation", {"participants": [ghost], "topic": "boo"})
        assert unknown.is_error and ghost in unknown.content[0].text and "find_agents" in unknown.content[0].text
        # A user is not an agent: the id pattern already says so.
        user = await a.call_tool("start_conversation", {"participants": [uma.id], "topic": "hi"})
        assert user.is_error and "participants" in user.content[0].text
    assert row_counts(hub.settings.db)["conversations"] == 0


# Issue 11, point 5: argument errors say what was wrong and what to do, in a sentence per argument, and
# name only tools the caller may call. The exact line a model sees, per role.
WRONG_ARGUMENTS: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "anonymous",
        "get_agent",
        {"agent_id": "alice"},
        'agent_id "alice" is not an agent id: agent ids look like agt_ and 20 lowercase letters or digits; '
        "find_agents finds them by name.",
    ),
    (
        "user",
        "get_agent",
        {},
        "agent_id is missing: it takes an agent id (agt_ and 20 lowercase letters or digits); "
        "find_agents finds them by name.",
    ),
    (
        "agent",
        "read_messages",
        {"conversation_id": "general"},
        'conversation_id "general" is not a conversation id: conversation ids look like cnv_ and 20 lowercase '
        "letters or digits; list_conversations lists yours.",
    ),
    (
        "user",
        "read_messages",
        {"conversation_id": "general"},
        'conversation_id "general" is not a conversation id: conversation ids look like cnv_ and 20 lowercase '
        "letters or digits; list_peekable_conversations lists those of an agent.",
    ),
    (
        "agent",
        "start_conversation",
        {"participants": ["bob"], "topic": "t"},
        'participants[0] "bob" is not an agent id: agent ids look like agt_ and 20 lowercase letters or digits; '
        "find_agents finds them by name.",
    ),
    ("agent", "find_agents", {"limit": 0}, "limit must be between 1 and 100, not 0."),
    (
        "anonymous",
        "register_agent",
        {"name": "", "peek_price": "1e999", "tags": ["ok", "bad!"]},
        'name must not be empty. peek_price must be between 0.50 and 500.00 (USD), not "1e999". Check tags[1] too.',
    ),
    (
        "anonymous",
        "register_agent",
        {"name": "x", "peek_price": "1.234"},
        'peek_price "1.234" has more than 2 decimal places; amounts are USD, e.g. "2.50".',
    ),
    (
        "user",
        "request_peek",
        {"conversation_id": "cnv_" + "0" * 20, "max_price": "NaN", "start_at": "soon"},
        'max_price must be an amount in USD like "2.50", not "NaN". start_at must be a date and time with its '
        'zone, like "2030-01-31T14:00:00Z", not "soon".',
    ),
    (
        "agent",
        "respond_to_peek",
        {"peek_id": "pek_" + "0" * 20, "decision": "maybe"},
        "decision must be 'accept' or 'refuse', not \"maybe\".",
    ),
    ("agent", "update_profile", {"tags": "python"}, 'tags must be a list, not the string "python".'),
    ("agent", "wait_for_messages", {"timeout_s": "soon"}, 'timeout_s must be a number, not the string "soon".'),
    (
        "user",
        "list_transactions",
        {"cursor": "page-two"},
        'cursor "page-two" is not a cursor this tool returned. Pass the next_cursor of the previous page '
        "unchanged, or omit cursor for the first page.",
    ),
    (
        "admin",
        "grant_credits",
        {"user_id": "uma", "amount": "5.00"},
        'user_id "uma" is not a user id: user ids look like usr_ and 20 lowercase letters or digits.',
    ),
]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_wrong_argument_gets_one_plain_sentence_saying_what_to_pass(hub: Hub, mode: str) -> None:
    accounts: dict[str, Account | None] = {
        "anonymous": None,
        "agent": await hub.register_agent("alice"),
        "user": await hub.register_user("uma"),
        "admin": await hub.register_admin("root"),
    }
    seen = []
    for role, tool, arguments, _line in WRONG_ARGUMENTS:
        async with hub.client(accounts[role], mode=mode) as client:
            result = await client.call_tool(tool, arguments)
        seen.append((role, tool, result.is_error, result.content[0].text))
    assert seen == [
        (role, tool, True, f"Error executing tool {tool}: {line}") for role, tool, _, line in WRONG_ARGUMENTS
    ]
