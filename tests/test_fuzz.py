"""Every tool's input schema, fuzzed: no input, valid or not, makes a tool fail with an internal error.

An internal error is what the model cannot act on: our guard's "Internal error; it has been logged",
the SDK's bare "Error executing tool NAME" (an exception escaped the guard), or a JSON-RPC -32603.
Inputs come from each tool's published input schema (`from_schema` below: the JSON Schema subset
pydantic emits, as Hypothesis strategies; hypothesis-jsonschema 0.23 no longer runs on current
Hypothesis), with real ids mixed in so calls reach past "not found", plus arbitrary JSON under the
schema's own argument names.

FUZZ_EXAMPLES (default 20) sets the examples per tool and role; FUZZ_SEED randomizes the run
(default: derandomized, so CI is repeatable).
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client, MCPError

from agentchat_mcp.services.identity import Identity
from tests.conftest import Account, Hub, structured

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
SEED = os.environ.get("FUZZ_SEED")
INTERNAL = "Internal error; it has been logged"
ID_PATTERN = re.compile(r"^(agt|usr|adm|cnv|pek|sub|pay|txn|pck|ref)_[a-z0-9]{20}$")
ROLES = ("anonymous", "agent", "user", "admin")
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def from_schema(schema: dict[str, Any], root: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Values valid against `schema` (the subset pydantic emits: $ref, anyOf, enum, const, bounds, patterns)."""
    root = root if root is not None else schema
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return st.deferred(lambda: from_schema(root.get("$defs", {})[name], root))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(option, root) for option in schema[key]])
    if "allOf" in schema:
        return from_schema({**{k: v for k, v in schema.items() if k != "allOf"}, **schema["allOf"][0]}, root)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}, root) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        low = schema["exclusiveMinimum"] + 1 if "exclusiveMinimum" in schema else low
        high = schema["exclusiveMaximum"] - 1 if "exclusiveMaximum" in schema else high
        return st.integers(low, high)
    if kind == "number":
        low, high = (
            schema.get("minimum", schema.get("exclusiveMinimum")),
            schema.get("maximum", schema.get("exclusiveMaximum")),
        )
        floats = st.floats(
            low,
            high,
            allow_nan=False,
            allow_infinity=False,
            exclude_min="exclusiveMinimum" in schema,
            exclude_max="exclusiveMaximum" in schema,
        )
        int_low = None if low is None else math.floor(low) + 1 if "exclusiveMinimum" in schema else math.ceil(low)
        int_high = None if high is None else math.ceil(high) - 1 if "exclusiveMaximum" in schema else math.floor(high)
        if int_low is not None and int_high is not None and int_low > int_high:
            return floats
        return floats | st.integers(int_low, int_high)
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(
                lambda text: low <= len(text) and (high is None or len(text) <= high)
            )
        if schema.get("format") == "date-time":
            return st.datetimes(timezones=st.just(UTC)).map(lambda moment: moment.isoformat())
        return st.text(min_size=low, max_size=high if high is not None else max(low, 200))
    if kind == "array":
        items = from_schema(schema.get("items", {}), root)
        return st.lists(
            items,
            min_size=schema.get("minItems", 0),
            max_size=schema.get("maxItems", 5),
            unique_by=(lambda value: repr(value)) if schema.get("uniqueItems") else None,
        )
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {name: from_schema(prop, root) for name, prop in properties.items() if name in required},
            optional={name: from_schema(prop, root) for name, prop in properties.items() if name not in required},
        )
    return JSON


def internal_error(tool: str, result: Any) -> str | None:
    """The text of an internal error, or None if the result is fine (success or an actionable error)."""
    if not result.is_error:
        return None
    text = result.content[0].text if result.content else ""
    if INTERNAL in text or text.strip() == f"Error executing tool {tool}":
        return text
    return None


def fast_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with any wait/timeout argument required and capped near 0, so no call long-polls."""
    schema = copy.deepcopy(schema)
    for name, prop in schema.get("properties", {}).items():
        if "timeout" in name:
            prop.clear()
            prop.update({"type": "number", "minimum": 0, "maximum": 0.05})
            schema.setdefault("required", []).append(name)
    return schema


def with_real_ids(args: Any, ids: dict[str, list[str]], pick: int) -> Any:
    """Replace generated ids by real ones of the same kind, so calls get past 'not found'."""
    if isinstance(args, dict):
        return {k: with_real_ids(v, ids, pick) for k, v in args.items()}
    if isinstance(args, list):
        return [with_real_ids(v, ids, pick) for v in args]
    if isinstance(args, str) and ID_PATTERN.match(args) and ids.get(args[:3]):
        choices = ids[args[:3]]
        return choices[pick % len(choices)]
    return args


class World:
    """One hub with a principal of every role, a conversation and clients for each role."""

    def __init__(self, portal: BlockingPortal, tmp_path: Path) -> None:
        self.portal = portal
        self.hub = Hub(tmp_path)
        self.hub.settings = self.hub.settings.model_copy(update={"rate_limits_enabled": False})
        self.accounts: dict[str, Account | None] = {"anonymous": None}
        self.ids: dict[str, list[str]] = {}
        self.calls = 0
        self.succeeded = 0

    def set_up(self) -> None:
        hub = self.hub
        alice = self.portal.call(hub.register_agent, "alice")
        bob = self.portal.call(hub.register_agent, "bob")
        self.accounts["agent"] = alice
        self.accounts["user"] = self.portal.call(hub.register_user, "uma")
        self.accounts["admin"] = self.portal.call(hub.register_admin, "root")
        conversation = self.portal.call(start_conversation, hub, alice, bob)
        self.ids = {
            "agt": [alice.id, bob.id],
            "usr": [self.accounts["user"].id],  # type: ignore[union-attr]
            "adm": [self.accounts["admin"].id],  # type: ignore[union-attr]
            "cnv": [conversation],
        }

    def client(self, role: str) -> Client:
        return self.portal.wrap_async_context_manager(self.hub.client(self.accounts[role]))  # type: ignore[return-value]

    def call(self, client: Client, tool: str, args: Any) -> str | None:
        self.calls += 1
        try:
            result = self.portal.call(client.call_tool, tool, args)
        except MCPError as exc:
            return f"JSON-RPC error {exc.error.code}: {exc.error.message}" if exc.error.code == -32603 else None
        self.succeeded += not result.is_error
        return internal_error(tool, result)


async def start_conversation(hub: Hub, alice: Account, bob: Account) -> str:
    async with hub.client(alice) as client:
        got = structured(
            await client.call_tool(
                "start_conversation", {"participants": [bob.id], "topic": "fuzz", "first_message": "hello"}
            )
        )
    return str(got["conversation"]["id"])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with start_blocking_portal("asyncio") as portal:
        world = World(portal, tmp_path)
        world.set_up()
        yield world


def fuzz_tool(world: World, client: Client, tool: str, schema: dict[str, Any], examples: int) -> None:
    """Hypothesis over one tool's inputs; fails (after shrinking) on the first internal error."""
    valid = from_schema(fast_schema(schema))
    names = sorted(schema.get("properties", {})) or ["x"]
    arbitrary = st.dictionaries(st.sampled_from(names), JSON, max_size=len(names))
    strategy = st.one_of(
        st.tuples(valid, st.integers(0, 3)).map(lambda pair: with_real_ids(pair[0], world.ids, pair[1])),
        valid,
        arbitrary,
    )

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=SEED is None,
        suppress_health_check=list(HealthCheck),
    )
    @given(args=strategy)
    def check(args: Any) -> None:
        if "timeout_s" in args and not isinstance(args["timeout_s"], int | float):
            args = {**args, "timeout_s": 0}
        args = {k: (min(v, 0.05) if "timeout" in k and isinstance(v, int | float) else v) for k, v in args.items()}
        problem = world.call(client, tool, args)
        assert problem is None, f"{tool}({args!r}) -> {problem}"

    if SEED is not None:
        check = settings(derandomize=False)(check)
    check()


def test_no_tool_input_causes_an_internal_error(world: World) -> None:
    failures: list[str] = []
    per_role: dict[str, list[str]] = {}
    for role in ROLES:
        with world.client(role) as client:
            tools = world.portal.call(client.list_tools).tools
            per_role[role] = [t.name for t in tools]
            for tool in tools:
                try:
                    fuzz_tool(world, client, tool.name, tool.input_schema, EXAMPLES)
                except AssertionError as exc:
                    failures.append(f"[{role}] {exc}".splitlines()[0])
    every_tool = {name for names in per_role.values() for name in names}
    print(f"fuzzed {len(every_tool)} tools: {world.calls} calls, {world.succeeded} succeeded, 0 internal errors")
    assert len(every_tool) >= 15
    assert world.calls >= EXAMPLES * len(every_tool)
    assert world.succeeded >= world.calls // 10  # the inputs reach past validation and "not found"
    assert failures == []


def test_tools_a_role_cannot_see_refuse_fuzzed_input_cleanly(world: World) -> None:
    """Calling a tool outside your role, with any input: a refusal, never an internal error."""
    schemas: dict[str, dict[str, Any]] = {}
    for role in ("agent", "user", "admin"):
        with world.client(role) as client:
            schemas.update({t.name: t.input_schema for t in world.portal.call(client.list_tools).tools})
    for role in ROLES:
        with world.client(role) as client:
            visible = {t.name for t in world.portal.call(client.list_tools).tools}
            for name, schema in schemas.items():
                if name not in visible:
                    fuzz_tool(world, client, name, schema, max(3, EXAMPLES // 5))


def test_the_fuzzer_catches_an_internal_error_when_there_is_one(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: Identity, agent_id: str) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(Identity, "get_agent", broken)
    with world.client("agent") as client:
        schema = next(t.input_schema for t in world.portal.call(client.list_tools).tools if t.name == "get_agent")
        with pytest.raises(AssertionError, match=r"get_agent.*Internal error; it has been logged"):
            fuzz_tool(world, client, "get_agent", schema, 5)
