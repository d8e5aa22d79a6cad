"""The MCP contract: schemas/ in sync, every tool described and annotated, role-filtered tool lists,
prompts, completions and resources as a client sees them."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from mcp import MCPError
from mcp_types import INVALID_PARAMS, ResourceTemplateReference

from agentchat_mcp.contract import render, tool_schemas
from agentchat_mcp.prompts import TEMPLATES
from tests.conftest import PROJECT_ROOT, Account, Hub, structured

ANONYMOUS_TOOLS = {"register_agent", "register_user", "find_agents", "get_agent"}
# architecture.md section 10: the operator's tools. No agent or user may see them.
ADMIN_TOOLS = {"verify_agent", "grant_credits", "set_feature_flag", "list_feature_flags", "get_platform_analytics"}
MISSING_CONVERSATION = "cnv_" + "0" * 20


# --- schemas/ -----------------------------------------------------------------------------------------


def test_the_schemas_folder_matches_the_code() -> None:
    expected = {name: render(schema) for name, schema in tool_schemas().items()}
    on_disk = {p.name: p.read_text() for p in (PROJECT_ROOT / "schemas").glob("*.json")}
    missing = sorted(set(expected) - set(on_disk))
    stale = sorted(set(on_disk) - set(expected))
    changed = sorted(n for n in set(expected) & set(on_disk) if expected[n] != on_disk[n])
    assert not (missing or stale or changed), (
        f"schemas/ is out of date (missing {missing}, stale {stale}, changed {changed}); "
        "run `agentchat-mcp schemas export` and commit schemas/ with the tool change"
    )


def test_every_tool_has_an_input_and_an_output_schema_file() -> None:
    files = tool_schemas()
    tools = {name.split(".")[0] for name in files}
    for tool in tools:
        assert files[f"{tool}.input.json"].get("type") == "object", tool
        assert files[f"{tool}.output.json"].get("properties"), f"{tool} has no structured output"


# --- tools as each role sees them ---------------------------------------------------------------------


async def tools_as(hub: Hub, account: Account | None) -> dict[str, Any]:
    async with hub.client(account) as client:
        return {t.name: t for t in (await client.list_tools()).tools}


@pytest.fixture
async def accounts(hub: Hub) -> dict[str, Account | None]:
    return {
        "anonymous": None,
        "agent": await hub.register_agent("alice"),
        "user": await hub.register_user("uma"),
        "admin": await hub.register_admin("root"),
    }


@pytest.mark.anyio
async def test_every_tool_and_every_argument_is_described_and_every_tool_annotated(
    hub: Hub, accounts: dict[str, Account | None]
) -> None:
    seen: dict[str, Any] = {}
    for account in accounts.values():
        seen.update(await tools_as(hub, account))
    problems = []
    for name, tool in sorted(seen.items()):
        if len((tool.description or "").strip()) < 40:
            problems.append(f"{name}: the description is missing or too short to tell a model when to use it")
        for arg, prop in tool.input_schema.get("properties", {}).items():
            described = prop.get("description") or any(o.get("description") for o in prop.get("anyOf", []))
            if not described:
                problems.append(f"{name}.{arg}: no description")
        hints = tool.annotations
        if hints is None or None in (hints.read_only_hint, hints.destructive_hint, hints.idempotent_hint):
            problems.append(f"{name}: readOnlyHint, destructiveHint and idempotentHint must all be set")
        elif hints.read_only_hint and hints.destructive_hint:
            problems.append(f"{name}: read-only and destructive at once")
        if not tool.title and not (hints and hints.title):
            problems.append(f"{name}: no title")
        if tool.input_schema.get("additionalProperties") is not False:
            problems.append(f"{name}: unknown arguments are not refused in the schema")
    assert not problems, "\n".join(problems)
    assert seen.keys() == {p.name.split(".")[0] for p in (PROJECT_ROOT / "schemas").glob("*.json")}


@pytest.mark.anyio
async def test_the_tool_list_is_filtered_by_role(hub: Hub, accounts: dict[str, Account | None]) -> None:
    lists = {role: set(await tools_as(hub, account)) for role, account in accounts.items()}
    assert lists["anonymous"] == ANONYMOUS_TOOLS
    for role in ("agent", "user"):
        assert not lists[role] & ADMIN_TOOLS, role
        assert not lists[role] & {"register_agent", "register_user"}, role  # they have an identity already
    assert {"send_message", "start_conversation", "read_messages"} <= lists["agent"]
    assert not {"send_message", "start_conversation"} & lists["user"]
    admin_only = lists["admin"] - lists["agent"] - lists["user"] - lists["anonymous"]
    assert admin_only, "the admin sees nothing the others do not"
    assert {"whoami", "find_agents", "get_agent"} <= lists["agent"] & lists["user"] & lists["admin"]


# What tools/list costs each role: characters of the JSON of the result as a client receives it (issue 11,
# point 7). Before the lean listing (tools/listing.py): anonymous 9,163, agent 51,314, user 58,341, admin
# 24,729 (61-67% of it output schemas). A budget may go down with the list; raise one only for a new tool
# or a new argument, and say so in the commit. Issue 12 (referrals, ratings, badges) raised them from 4,400 /
# 17,000 / 17,000 / 8,900 (measured 4,329 / 16,792 / 16,773 / 8,798 before, 5,019 / 19,005 / 18,986 / 10,918
# after): 4 tools (get_referral_code, get_referral_stats, rate_agent, verify_agent) and 5 arguments
# (referral_code x2; find_agents verified_only, min_rating, sort), then register_agent's template (5,212);
# refund_peek (issue 14) raised admin 8,900 -> 9,700 before that merge.
# Issue 13 (analytics): get_agent_analytics and get_platform_analytics, +890 agent, +730 admin, and its MCP App _meta (agent 20,103, admin 12,577).
# Issue 14 (flags): set_feature_flag and list_feature_flags, admin 12,577 -> 15,373 (most of it the targeting-rule schema).
TOOLS_LIST_BUDGET = {"anonymous": 5_300, "agent": 20_200, "user": 19_100, "admin": 15_500}


def tools_list_size(listing: Any) -> int:
    return len(json.dumps(listing.model_dump(mode="json", by_alias=True, exclude_none=True)))


@pytest.mark.anyio
async def test_tools_list_stays_within_its_budget_per_role(
    hub: Hub, accounts: dict[str, Account | None], capsys: pytest.CaptureFixture[str]
) -> None:
    sizes = {}
    for role, account in accounts.items():
        async with hub.client(account) as client:
            sizes[role] = tools_list_size(await client.list_tools())
    with capsys.disabled():
        print(f"\ntools/list characters per role: {sizes} (budget {TOOLS_LIST_BUDGET})")
    over = {
        role: f"{size} > {TOOLS_LIST_BUDGET[role]}" for role, size in sizes.items() if size > TOOLS_LIST_BUDGET[role]
    }
    assert not over, f"tools/list grew past its budget: {over}; every model pays for it on every turn"


def _untitled(node: Any) -> Any:
    """A schema without `title` keywords (a property named title would stay)."""
    if isinstance(node, list):
        return [_untitled(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        k: ({n: _untitled(p) for n, p in v.items()} if k == "properties" else _untitled(v))
        for k, v in node.items()
        if k != "title"
    }


def _as_listed(prop: dict[str, Any], required: bool) -> dict[str, Any]:
    """What tools/list should show of a contract property: untitled; an optional X | null as X."""
    prop = _untitled(prop)
    if required or prop.get("default", ...) is not None:
        return prop
    rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
    (branch,) = [b for b in prop.get("anyOf", [{"type": "null"}, {}]) if b != {"type": "null"}]
    return {**branch, **rest}


@pytest.mark.anyio
async def test_the_listed_tools_narrow_the_contract_and_lose_none_of_its_words(
    hub: Hub, accounts: dict[str, Account | None]
) -> None:
    """tools/list is the lean form of schemas/ (tools/listing.py): the same arguments, the same required ones,
    every constraint and description; no titles, no output schemas. schemas/ keeps the full contract."""
    contract = await anyio.to_thread.run_sync(tool_schemas)
    seen: dict[str, Any] = {}
    for account in accounts.values():
        seen.update(await tools_as(hub, account))
    problems = []
    for name, tool in sorted(seen.items()):
        full, listed = contract[f"{name}.input.json"], tool.input_schema
        if tool.output_schema is not None:
            problems.append(f"{name}: tools/list shows an output schema")
        if "\n " in (tool.description or ""):
            problems.append(f"{name}: the description keeps its source indentation")
        if listed.get("required") != full.get("required") or listed["properties"].keys() != full["properties"].keys():
            problems.append(f"{name}: the listed arguments or required ones differ from schemas/")
            continue
        for arg, prop in full["properties"].items():
            want = _as_listed(prop, arg in full.get("required", []))
            if listed["properties"][arg] != want:
                problems.append(f"{name}.{arg}: {listed['properties'][arg]} in tools/list; from schemas/: {want}")
    assert not problems, "\n".join(problems)


@pytest.mark.anyio
async def test_a_hidden_tool_is_refused_when_called_anyway(hub: Hub, accounts: dict[str, Account | None]) -> None:
    lists = {role: set(await tools_as(hub, account)) for role, account in accounts.items()}
    admin_only = sorted(lists["admin"] - lists["agent"])
    async with hub.client(accounts["agent"]) as agent:
        for name in admin_only:
            result = await agent.call_tool(name, {})
            assert result.is_error, name
            assert "admin" in result.content[0].text, result.content[0].text


# --- prompts ------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_four_agent_templates_are_listed_described_and_render(hub: Hub, mode: str) -> None:
    async with hub.client(mode=mode) as client:
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert set(prompts) == {
            "customer-service-agent",
            "coding-assistant",
            "research-assistant",
            "creative-writing-partner",
        }
        for name, prompt in prompts.items():
            assert prompt.description and prompt.title, name
            for argument in prompt.arguments or []:
                assert argument.description, f"{name}.{argument.name}"
            got = await client.get_prompt(name, {"name": "Quill", "focus": "haiku about SQLite"})
            text = got.messages[0].content.text
            assert "Quill" in text and "haiku about SQLite" in text and "register_agent" in text
            assert "never instructions" in text or "not instructions" in text or "never" in text
            bare = await client.get_prompt(name, {})  # every argument is optional
            assert bare.messages[0].content.text


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_bad_prompt_request_gets_an_actionable_invalid_params_error(hub: Hub, mode: str) -> None:
    async with hub.client(mode=mode) as client:
        for name, arguments, words in [
            ("no-such-template", {}, ("no-such-template", "coding-assistant")),
            ("coding-assistant", {"persona": "pirate"}, ("persona", "focus")),
            ("coding-assistant", {"name": "x" * 300}, ("name",)),
        ]:
            with pytest.raises(MCPError) as refused:
                await client.get_prompt(name, arguments)
            assert refused.value.error.code == INVALID_PARAMS, refused.value.error
            for word in words:
                assert word in refused.value.error.message, refused.value.error.message


def test_every_template_has_tags_a_title_and_a_duty() -> None:
    for name, (title, duty, tags) in TEMPLATES.items():
        assert title and "{focus}" in duty and tags, name


# --- completion -------------------------------------------------------------------------------------


AGENT_REF = ResourceTemplateReference(uri="agentchat://agents/{agent_id}")
CONVERSATION_REF = ResourceTemplateReference(uri="agentchat://conversations/{conversation_id}")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_agent_and_own_conversation_ids_complete(hub: Hub, mode: str) -> None:
    alice, bob, eve = [await hub.register_agent(n) for n in ("alice", "bob", "eve")]
    async with hub.client(alice, mode=mode) as a:
        conv = structured(await a.call_tool("start_conversation", {"participants": [bob.id], "topic": "t"}))[
            "conversation"
        ]["id"]
        everyone = (await a.complete(AGENT_REF, {"name": "agent_id", "value": "agt_"})).completion.values
        assert {alice.id, bob.id, eve.id} <= set(everyone)
        narrowed = (await a.complete(AGENT_REF, {"name": "agent_id", "value": bob.id[:10]})).completion.values
        assert bob.id in narrowed and all(v.startswith(bob.id[:10]) for v in narrowed)
        exact = (await a.complete(AGENT_REF, {"name": "agent_id", "value": bob.id})).completion.values
        assert exact == [bob.id]
        mine = (await a.complete(CONVERSATION_REF, {"name": "conversation_id", "value": "cnv_"})).completion.values
        assert mine == [conv]
    async with hub.client(eve, mode=mode) as e:  # another agent's conversation is never offered
        theirs = (await e.complete(CONVERSATION_REF, {"name": "conversation_id", "value": ""})).completion.values
        assert theirs == []
    async with hub.client(mode=mode) as anonymous:
        assert (
            await anonymous.complete(CONVERSATION_REF, {"name": "conversation_id", "value": ""})
        ).completion.values == []


@pytest.mark.anyio
async def test_agent_id_completion_finds_a_prefix_beyond_the_first_hundred_agents(hub: Hub) -> None:
    from agentchat_mcp.server import build_app_context
    from agentchat_mcp.store import open_store

    async with open_store(hub.settings.db) as store:
        app = build_app_context(hub.settings, store, hub.telemetry)
        ids = sorted([(await app.identity.register("agent", f"a{i}", peek_price_cents=100))[0].id for i in range(130)])
    last = ids[-1]
    async with hub.client() as client:
        got = (await client.complete(AGENT_REF, {"name": "agent_id", "value": last[:12]})).completion
    assert last in got.values
    assert got.values == [i for i in ids if i.startswith(last[:12])][:100]


# --- resources --------------------------------------------------------------------------------------


def content(result: Any) -> dict[str, Any]:
    return dict(json.loads(result.contents[0].text))


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_resources_read_for_members_and_read_as_not_found_for_anyone_else(hub: Hub, mode: str) -> None:
    alice, bob, eve = [await hub.register_agent(n) for n in ("alice", "bob", "eve")]
    uma = await hub.register_user("uma")
    async with hub.client(alice, mode=mode) as a:
        templates = {t.uri_template for t in (await a.list_resource_templates()).resource_templates}
        assert {
            "agentchat://agents/{agent_id}",
            "agentchat://conversations/{conversation_id}",
            "agentchat://conversations/{conversation_id}/messages",
        } <= templates
        assert "agentchat://me" in {str(r.uri) for r in (await a.list_resources()).resources}
        conv = structured(
            await a.call_tool(
                "start_conversation", {"participants": [bob.id], "topic": "res", "first_message": "hello"}
            )
        )["conversation"]["id"]
        assert content(await a.read_resource("agentchat://me"))["id"] == alice.id
        assert content(await a.read_resource(f"agentchat://agents/{bob.id}"))["name"] == "bob"
        info = content(await a.read_resource(f"agentchat://conversations/{conv}"))
        assert info["topic"] == "res" and set(info["participants"]) == {alice.id, bob.id}
        page = content(await a.read_resource(f"agentchat://conversations/{conv}/messages"))
        assert [(m["sender_name"], m["text"]) for m in page["messages"]] == [("alice", "hello")]
        with pytest.raises(MCPError, match="No agent"):
            await a.read_resource(f"agentchat://agents/{uma.id}")  # users are not in the directory
    async with hub.client(uma, mode=mode) as u:
        assert content(await u.read_resource("agentchat://me"))["role"] == "user"
    async with hub.client(eve, mode=mode) as e:
        for suffix in ("", "/messages"):
            answers = []
            for target in (conv, MISSING_CONVERSATION):
                with pytest.raises(MCPError) as refused:
                    await e.read_resource(f"agentchat://conversations/{target}{suffix}")
                answers.append((refused.value.error.code, refused.value.error.message.replace(target, "X")))
            assert answers[0] == answers[1]
            assert "No conversation" in answers[0][1]
    async with hub.client(mode=mode) as anonymous:
        with pytest.raises(MCPError, match="register_agent"):
            await anonymous.read_resource("agentchat://me")


@pytest.mark.anyio
async def test_a_client_lists_the_server_instructions_that_say_text_is_data(hub: Hub) -> None:
    async with hub.client(mode="legacy") as client:
        instructions = client.instructions or ""
    assert "whoami" in instructions and "untrusted" in instructions
