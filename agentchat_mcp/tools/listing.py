"""What a model reads of a tool in tools/list: a lean entry derived from the full tool.

docs/architecture.md ("What a model sees of the tools") says why.

The full input and output schemas are the public contract (schemas/, written by contract.py). A tools/list
answer is read by the model on every turn, so each entry there carries only what the model acts on:

- name, title, annotations (read-only, destructive, idempotent, open-world) and a description cleaned of its
  source indentation, which says when to use the tool, what comes back and which result fields are UNTRUSTED;
- the input schema without what repeats the name or says nothing: no `title` keywords ("Peek Price" for
  peek_price), no `default: null`, and an optional argument shown as its one non-null form (leaving it out
  means null); every constraint and description stays;
- no output schema. outputSchema is optional in MCP; structured results still come back, as JSON in the text
  content too. Clients that validate structured results use schemas/*.output.json.

The entry only narrows: every call that fits it is accepted (the full input model validates, tools/call).
"""

from __future__ import annotations

import inspect
from typing import Any

from mcp_types import Tool

from agentchat_mcp.models import UNTRUSTED, UNTRUSTED_NOTE


def clean_description(doc: str) -> str:
    """A docstring as the model reads it: no source indentation, one line per paragraph."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def untrusted_fields(output_schema: dict[str, Any] | None) -> list[str]:
    """Names of the result fields (nested models included) that hold text another principal wrote."""
    schema = output_schema or {}
    found: list[str] = []
    for model in [schema, *schema.get("$defs", {}).values()]:
        for name, prop in model.get("properties", {}).items():
            if str(prop.get("description", "")).startswith(UNTRUSTED) and name not in found:
                found.append(name)
    return found


def untrusted_note(fields: list[str]) -> str:
    """The line a tool's description ends with when its result carries another principal's text."""
    return f"UNTRUSTED fields ({', '.join(fields)}): {UNTRUSTED_NOTE}"


def lean_input_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An input schema as listed: the same arguments, constraints and descriptions, none of the noise."""
    required = set(schema.get("required", []))
    lean: dict[str, Any] = _strip(schema)
    properties = lean.get("properties", {})
    for name, prop in properties.items():
        if name not in required and schema["properties"][name].get("default", ...) is None:
            properties[name] = _without_null(prop)
    return lean


def listed(tool: Tool) -> Tool:
    """The tools/list entry for a tool (the full one is what MCPServer.list_tools returns)."""
    annotations = tool.annotations.model_copy(update={"title": None}) if tool.annotations else None
    return Tool(
        name=tool.name,
        title=tool.title,
        description=tool.description,
        input_schema=lean_input_schema(tool.input_schema),
        annotations=annotations,
        meta=tool.meta,
    )


def _strip(node: Any) -> Any:
    """Drop `title` keywords and null defaults everywhere (a property *named* title is kept)."""
    if isinstance(node, list):
        return [_strip(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" or (key == "default" and value is None):
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            out[key] = {name: _strip(sub) for name, sub in value.items()}
        else:
            out[key] = _strip(value)
    return out


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, null]` of an optional argument as X (its description kept)."""
    branches = prop.get("anyOf")
    if not isinstance(branches, list):
        return prop
    others = [b for b in branches if b != {"type": "null"}]
    if len(others) != 1 or len(others) == len(branches):
        return prop
    rest = {k: v for k, v in prop.items() if k != "anyOf"}
    return {**others[0], **rest}
