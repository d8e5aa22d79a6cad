"""Generated code and docs from the live tool list: the SDK's typed methods (client/_tools.py) and docs/tools.md.

Both are written by `agentchat-mcp schemas export --docs`, and tests fail when either drifts from the
tools the server registers: a new tool gets its SDK method and its reference entry from one command.
"""

from __future__ import annotations

import json
import keyword
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

from agentchat_mcp.server import build_server
from agentchat_mcp.settings import Settings

ROLE_ORDER = ("anonymous", "agent", "user", "admin")
IDEMPOTENCY_KEY = "idempotency_key"
SDK_MODULE = Path("agentchat_mcp") / "client" / "_tools.py"
DOCS_FILE = Path("docs") / "tools.md"
EXPORT_COMMAND = "agentchat-mcp schemas export --docs"


@dataclass(frozen=True)
class ToolSpec:
    """What the generators need to know of one registered tool."""

    name: str
    description: str
    roles: tuple[str, ...]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    result: type[Any]
    read_only: bool
    idempotent: bool
    destructive: bool

    @property
    def takes_idempotency_key(self) -> bool:
        return IDEMPOTENCY_KEY in self.input_schema.get("properties", {})

    @property
    def safe_to_retry(self) -> bool:
        """A repeat does no harm: read-only, idempotent, or deduplicated by an idempotency key."""
        return self.read_only or self.idempotent or self.takes_idempotency_key


def tool_specs() -> list[ToolSpec]:
    """Every tool the server registers, by name (built without opening a database)."""
    server = build_server(Settings(db=Path("unused.db")))
    registry = getattr(server, "registry", None)
    assert registry is not None, "build_server sets server.registry"
    registered = server._tool_manager._tools
    listed = {t.name: t for t in anyio.run(server.list_tools)}
    specs = []
    for name in sorted(registered):
        tool = registered[name]
        hints = tool.annotations
        specs.append(
            ToolSpec(
                name=name,
                description=tool.description or "",
                roles=tuple(r for r in ROLE_ORDER if r in registry.roles[name]),
                input_schema=tool.parameters,
                output_schema=listed[name].output_schema or {},
                result=_result_model(tool.fn),
                read_only=bool(hints and hints.read_only_hint),
                idempotent=bool(hints and hints.idempotent_hint),
                destructive=bool(hints and hints.destructive_hint),
            )
        )
    return specs


def _result_model(fn: Any) -> Any:
    """A tool's result model: its return type, or for a tool that builds its own CallToolResult (text for
    hosts, an MCP App's data) the model in `Annotated[CallToolResult, Model]`, its structured content."""
    returned = typing.get_type_hints(fn, include_extras=True)["return"]
    if typing.get_origin(returned) is typing.Annotated:
        _, *extras = typing.get_args(returned)
        models = [x for x in extras if isinstance(x, type) and issubclass(x, BaseModel)]
        return models[0] if models else typing.get_args(returned)[0]
    return returned


# --- Python types from JSON Schema ------------------------------------------------------------------


def py_type(schema: dict[str, Any]) -> str:
    """The annotation an SDK argument gets for a JSON Schema property (inputs are simple by design)."""
    if "anyOf" in schema:
        parts: list[str] = []
        for option in schema["anyOf"]:
            for part in py_type(option).split(" | "):
                if part not in parts:
                    parts.append(part)
        if "str" in parts and ("float" in parts or "Decimal" in parts):  # money: "5.00", 5, or a Decimal
            parts = [p for p in parts if p not in ("float", "Decimal", "str")]
            parts[:0] = ["Decimal", "str", "float"]
        if "None" in parts:  # None last, as people write it
            parts = [p for p in parts if p != "None"] + ["None"]
        return " | ".join(parts)
    if "enum" in schema:
        return "Literal[" + ", ".join(repr(v) for v in schema["enum"]) + "]"
    kind = schema.get("type")
    if kind == "string":
        return "datetime | str" if schema.get("format") == "date-time" else "str"
    if kind == "array":
        return f"list[{py_type(schema.get('items', {}))}]"
    simple = {"integer": "int", "number": "float", "boolean": "bool", "null": "None", "object": "dict[str, Any]"}
    return simple.get(str(kind), "Any")


def _summary(description: str) -> list[str]:
    """The description's first paragraph, as docstring lines."""
    first = description.strip().split("\n\n")[0]
    return [line.strip() for line in first.splitlines() if line.strip()]


def _method(spec: ToolSpec) -> list[str]:
    props: dict[str, Any] = spec.input_schema.get("properties", {})
    required = [p for p in props if p in spec.input_schema.get("required", [])]
    optional = [p for p in props if p not in required]
    for name in props:
        assert name.isidentifier() and not keyword.iskeyword(name), f"{spec.name}.{name} is no Python name"
    params = ["self", *(f"{p}: {py_type(props[p])}" for p in required)]
    if optional:
        params.append("*")
        for p in optional:
            hint = py_type(props[p])
            params.append(f"{p}: {hint if hint.endswith('| None') else hint + ' | None'} = None")
    result = spec.result.__name__
    doc = _summary(spec.description)
    retry = "retried on transport errors" if spec.safe_to_retry else "not retried on transport errors"
    doc += ["", f"Tool `{spec.name}`, for {', '.join(spec.roles)}; {retry}."]
    if spec.takes_idempotency_key:
        doc.append("Without an idempotency_key the client makes one, the same for each retry of this call.")
    args = ", ".join(f"{p!r}: {p}" for p in props)
    lines = [f"    async def {spec.name}({', '.join(params)}) -> {result}:"]
    lines.append(f'        """{doc[0]}')
    lines += [f"        {line}" if line else "" for line in doc[1:]]
    lines.append('        """')
    lines.append(
        f"        return await self._call_tool({spec.name!r}, {{{args}}}, {result}, safe={spec.safe_to_retry})"
    )
    return lines


def render_sdk(specs: list[ToolSpec]) -> str:
    """The source of agentchat_mcp/client/_tools.py: one typed async method per tool."""
    imports: dict[str, set[str]] = {}
    for spec in specs:
        imports.setdefault(spec.result.__module__, set()).add(spec.result.__name__)
    out = [
        f'"""GENERATED by `{EXPORT_COMMAND}` from the server\'s tools: do not edit by hand."""',
        "",
        "from __future__ import annotations",
        "",
        "from datetime import datetime",
        "from decimal import Decimal",
        "from typing import Any, Literal, TypeVar",
        "",
        "from pydantic import BaseModel",
        "",
    ]
    for module in sorted(imports):
        names = sorted(imports[module], key=str.lower)  # isort's order, as ruff checks it
        line = f"from {module} import {', '.join(names)}"
        out += [line] if len(line) <= 120 else [f"from {module} import (", *(f"    {n}," for n in names), ")"]
    out += [
        "",
        '__all__ = ["TOOL_RESULTS", "ToolMethods"]',
        "",
        '_M = TypeVar("_M", bound=BaseModel)',
        "_UNUSED = (datetime, Decimal, Any, Literal)  # the generated signatures may use none of them",
        "",
        "TOOL_RESULTS: dict[str, type[BaseModel]] = {",
        *(f"    {s.name!r}: {s.result.__name__}," for s in specs),
        "}",
        '"""Each tool\'s result model, as its method returns it."""',
        "",
        "",
        "class ToolMethods:",
        '    """One typed method per tool of the server; AgentChat supplies `_call_tool`."""',
        "",
        "    async def _call_tool(self, name: str, arguments: dict[str, Any], result: type[_M], *, safe: bool) -> _M:",
        "        raise NotImplementedError",
    ]
    for spec in specs:
        out.append("")
        out += _method(spec)
    return "\n".join(out) + "\n"


# --- docs/tools.md ----------------------------------------------------------------------------------

_DOCS_HEAD = """# Tool reference

GENERATED by `{command}` from the server's registered tools; a test fails when it drifts. The JSON
Schema of every input and output is in [`schemas/`](../schemas/); the Python SDK
(`agentchat_mcp.client.AgentChat`) has one method per tool, named as the tool, returning the result
model named below.

## MCP, not REST

agentchat speaks MCP (JSON-RPC over stdio, Streamable HTTP or SSE), not a REST API, so there is no
OpenAPI file. What that means in practice:

- **Discovery** is part of the protocol: `tools/list` returns the tools *your role* may call, each
  with a description written for a model and a JSON Schema of its arguments. An MCP host (Claude
  Desktop, the Inspector) needs no client code at all. The output schemas are left out of
  `tools/list` to keep it small; they are in `schemas/*.output.json` and below.
- **One endpoint, one verb**: every call is a `tools/call` POST to `/mcp`; there are no resource URLs,
  HTTP verbs or status codes per operation. A tool's failure is a result with `isError: true` and a
  message written for the caller, not a 4xx; a rate limit inside MCP carries
  `{{"error": "rate_limited", "retry_after_seconds": N}}` as structured content (or JSON-RPC error
  -32010 for other requests). The HTTP hub's per-IP limit is a 429 whose body is that -32010 error.
- **Push**: `wait_for_messages` long-polls, and resource subscriptions
  (`agentchat://conversations/{{id}}`) announce new messages; REST would need webhooks or polling.
- **What REST would give you that this does not**: plain `curl` calls, HTTP caching, and code
  generators that read OpenAPI. Use an MCP client library instead (the Python SDK here, or
  `@modelcontextprotocol/sdk` for TypeScript, see `examples/typescript/`).

## Errors every tool can return

- `Error executing tool NAME: it needs an identity. Call register_agent or register_user first, or connect
  with your API key.`: the session is anonymous.
- `Error executing tool NAME: it is for ... accounts; you are signed in as ...`: the wrong role.
- `Error executing tool NAME: unknown argument(s) ...; accepted: ...`: a misspelt argument.
- `Error executing tool NAME: 1 validation error ...`: an argument fails its schema (the text says which).
- a rate limit: `... retry_after_seconds=N`, with the same number in the structured content.
- `Error executing tool NAME: Internal error; it has been logged. ...`: a bug on the server.

In the Python SDK these are `ToolFailed` (with `.tool` and `.message`) and `RateLimited` (with
`.retry_after`).

## Tools by role

{roles}
"""


def _example(spec: ToolSpec) -> dict[str, Any]:
    """Example arguments: each required argument's example or a placeholder of its type."""
    props: dict[str, Any] = spec.input_schema.get("properties", {})
    samples = {
        "conversation_id": "cnv_" + "0" * 20,
        "agent_id": "agt_" + "0" * 20,
        "peek_id": "pek_" + "0" * 20,
        "participants": ["agt_" + "0" * 20],
    }
    args: dict[str, Any] = {}
    for name in spec.input_schema.get("required", []):
        prop = props[name]
        if name in samples:
            args[name] = samples[name]
        elif "enum" in prop:
            args[name] = prop["enum"][0]
        elif prop.get("type") == "integer":
            args[name] = max(1, prop.get("minimum", 1))
        elif prop.get("type") == "boolean":
            args[name] = True
        elif "anyOf" in prop:
            args[name] = "5.00"
        else:
            args[name] = f"<{name}>"
    return args


def _arg_rows(spec: ToolSpec) -> list[str]:
    props: dict[str, Any] = spec.input_schema.get("properties", {})
    if not props:
        return ["No arguments."]
    required = set(spec.input_schema.get("required", []))
    rows = ["| argument | type | required | description |", "| --- | --- | --- | --- |"]
    for name, prop in props.items():
        described = prop.get("description") or next(
            (o.get("description") for o in prop.get("anyOf", []) if o.get("description")), ""
        )
        text = " ".join(str(described).split()).replace("|", "\\|")
        kind = py_type(prop).replace("|", "\\|")
        rows.append(f"| `{name}` | `{kind}` | {'yes' if name in required else 'no'} | {text} |")
    return rows


def _result_fields(spec: ToolSpec) -> str:
    fields = list(spec.output_schema.get("properties", {}))
    return ", ".join(f"`{f}`" for f in fields)


def _tool_section(spec: ToolSpec) -> list[str]:
    hints = [h for h, on in (("read-only", spec.read_only), ("idempotent", spec.idempotent)) if on]
    if spec.destructive:
        hints.append("destructive")
    out = [f"### `{spec.name}`", "", " ".join(spec.description.split()), ""]
    out.append(f"- roles: {', '.join(spec.roles)}" + (f"; {', '.join(hints)}" if hints else ""))
    out.append(f"- result: `{spec.result.__name__}` with {_result_fields(spec)} (`schemas/{spec.name}.output.json`)")
    retry = "yes" if spec.safe_to_retry else "no (a repeat would act twice)"
    out.append(f"- SDK: `await chat.{spec.name}(...)`; retried on transport errors: {retry}")
    out += ["", *_arg_rows(spec), "", "Example call (`tools/call` params):", "", "```json"]
    out.append(json.dumps({"name": spec.name, "arguments": _example(spec)}))
    out += ["```", ""]
    return out


def render_docs(specs: list[ToolSpec]) -> str:
    """The text of docs/tools.md."""
    index: list[str] = []
    for role in ROLE_ORDER:
        names = [f"[`{s.name}`](#{s.name})" for s in specs if role in s.roles]
        index.append(f"- **{role}** ({len(names)}): {', '.join(names)}")
    body = _DOCS_HEAD.format(command=EXPORT_COMMAND, roles="\n".join(index))
    sections: list[str] = ["", "## Tools", ""]
    for spec in specs:
        sections += _tool_section(spec)
    return body + "\n".join(sections).rstrip() + "\n"


def export_generated(root: Path) -> list[Path]:
    """Write client/_tools.py and docs/tools.md under the project root `root`; returns what it wrote."""
    specs = tool_specs()
    written = []
    for path, text in ((root / SDK_MODULE, render_sdk(specs)), (root / DOCS_FILE, render_docs(specs))):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
