"""Argument errors in plain words: where pydantic's validation errors become what the model reads.

The SDK validates a tool's arguments against the tool's input model before the body runs, and on a
mismatch answered with pydantic's own report ("1 validation error for register_agentArguments", the
error type, the input, "For further information visit https://errors.pydantic.dev/..."). `explain`
turns that report into one sentence per wrong argument: what was wrong, and what to pass instead. It
names only tools the caller may call (`can_call`), so a hint never sends a model to a tool it lacks.
server.py calls it, for every tool, at the one place the SDK raises the report (AgentChatServer.call_tool).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

# Ids are 'pfx_' and 20 lowercase letters or digits. What each kind is, and where the caller finds one:
# the first hint whose tool the caller may call is given (none: the shape alone).
ID_KINDS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "agt": ("agent", (("find_agents", "find_agents finds them by name"),)),
    "cnv": (
        "conversation",
        (
            ("list_conversations", "list_conversations lists yours"),
            ("list_peekable_conversations", "list_peekable_conversations lists those of an agent"),
        ),
    ),
    "pek": ("peek", (("list_peek_requests", "list_peek_requests lists yours"),)),
    "usr": ("user", ()),
    "adm": ("admin", ()),
}
_ID_PATTERN = re.compile(r"^\^([a-z]+)_\[a-z0-9\]\{(\d+)\}\$$")
_TOOL_NAME = re.compile(r"\b[a-z]+(?:_[a-z]+)+\b")
MAX_SHOWN = 40  # characters of a rejected value quoted back
MAX_EXPLAINED = 2  # wrong arguments explained in full; the rest are named


def explain(error: ValidationError, schema: dict[str, Any], can_call: frozenset[str], tools: Iterable[str]) -> str:
    """One sentence per wrong argument (the first MAX_EXPLAINED of them), for the model that sent them.

    `schema`: the tool's full input schema; `can_call`: the tools the caller may call; `tools`: every
    tool name (a description naming a tool outside `can_call` is not quoted).
    """
    known = frozenset(tools)
    details: dict[str, ErrorDetails] = {}
    for detail in error.errors(include_url=False):
        details.setdefault(_label(detail["loc"]), detail)  # the first error per argument
    sentences = [_sentence(label, d, schema, can_call, known) for label, d in list(details.items())[:MAX_EXPLAINED]]
    rest = list(details)[MAX_EXPLAINED:]
    if rest:
        sentences.append(f"Check {', '.join(rest)} too.")
    return " ".join(sentences)


def _label(loc: tuple[int | str, ...]) -> str:
    """participants.0 -> participants[0]; union branch tags (decimal, str) are dropped."""
    label = str(loc[0]) if loc else "arguments"
    for part in loc[1:]:
        if isinstance(part, int):
            label += f"[{part}]"
    return label


def _sentence(
    label: str, d: ErrorDetails, schema: dict[str, Any], can_call: frozenset[str], known: frozenset[str]
) -> str:
    arg = label.split("[", 1)[0]
    prop = schema.get("properties", {}).get(arg, {})
    leaf = _leaf(prop, item="[" in label)
    kind, ctx, value = d["type"], d.get("ctx", {}), d.get("input")
    shown = _shown(value)
    id_kind = _id_kind(leaf)
    about = _described(prop, can_call, known)
    if kind == "missing":
        if id_kind:
            noun, shape, hint = _id_help(id_kind, can_call)
            return f"{label} is missing: it takes {noun} ({shape}){hint}."
        return f"{label} is missing{_colon(about)}"
    if kind == "string_pattern_mismatch":
        if id_kind:
            noun, shape, hint = _id_help(id_kind, can_call)
            return f"{label} {shown} is not {noun}: {noun.split(' ', 1)[1]}s look like {shape}{hint}."
        return f"{label} {shown} is not in the expected form{_colon(about)}"
    if kind == "value_error":  # our own validators' words (cursors)
        return f"{label} {shown} is {str(ctx.get('error', d['msg'])).rstrip('.')}."
    if kind in ("literal_error", "enum"):
        return f"{label} must be {ctx.get('expected', 'one of the listed values')}, not {shown}."
    if kind == "string_too_long":
        return f"{label} is too long: at most {ctx.get('max_length')} characters."
    if kind == "too_long":
        return f"{label} has too many items: at most {ctx.get('max_length')}."
    if kind == "string_too_short":
        limit = ctx.get("min_length", 1)
        return f"{label} must not be empty." if limit == 1 else f"{label} needs at least {limit} characters."
    if kind == "too_short":
        return f"{label} needs at least {ctx.get('min_length', 1)} item(s)."
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return f"{label} must be {_range(leaf, prop, ctx)}, not {shown}."
    if kind == "finite_number":
        return f'{label} must be an amount in USD like "2.50", not {shown}.'
    if kind == "decimal_max_places":
        return f'{label} {shown} has more than {ctx.get("decimal_places", 2)} decimal places; amounts are USD, e.g. "2.50".'
    if kind.startswith("decimal_"):
        return f'{label} must be an amount in USD like "2.50", not {shown}.'
    if kind.startswith("datetime") or kind == "timezone_aware":
        return f'{label} must be a date and time with its zone, like "2030-01-31T14:00:00Z", not {shown}.'
    expected = _EXPECTED.get(kind)
    if expected:
        return f"{label} must be {expected}, not {_kind_of(value)}."
    return f"{label}: {d['msg'].rstrip('.')}."


_EXPECTED = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
}


def _colon(about: str) -> str:
    """': the description.' after a sentence's start, or just its full stop."""
    return f": {about.rstrip('.')}." if about else "."


def _leaf(prop: dict[str, Any], *, item: bool) -> dict[str, Any]:
    """The non-null form of an argument's schema (of its items, for an item)."""
    branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    leaf = branches[0] if len(branches) == 1 else prop
    return dict(leaf.get("items", {})) if item else leaf


def _id_kind(leaf: dict[str, Any]) -> str | None:
    match = _ID_PATTERN.match(str(leaf.get("pattern", "")))
    return match.group(1) if match and match.group(1) in ID_KINDS else None


def _id_help(prefix: str, can_call: frozenset[str]) -> tuple[str, str, str]:
    """('an agent id', 'agt_ and 20 lowercase letters or digits', '; find_agents finds them by name')."""
    noun, hints = ID_KINDS[prefix]
    article = "an" if noun in ("agent", "admin") else "a"
    hint = next((text for tool, text in hints if tool in can_call), None)
    return f"{article} {noun} id", f"{prefix}_ and 20 lowercase letters or digits", f"; {hint}" if hint else ""


def _described(prop: dict[str, Any], can_call: frozenset[str], known: frozenset[str]) -> str:
    """The argument's description, unless it sends the caller to a tool it may not call."""
    text = str(prop.get("description") or _leaf(prop, item=False).get("description") or "")
    if any(name in known and name not in can_call for name in _TOOL_NAME.findall(text)):
        return ""
    return text


def _range(leaf: dict[str, Any], prop: dict[str, Any], ctx: dict[str, Any]) -> str:
    """'between 1 and 100', or the one bound there is; amounts (decimals) with cents."""
    money = any(isinstance(v, Decimal) for v in ctx.values())
    bounds = [b for b in _leaf(prop, item=False).get("anyOf", [leaf]) if "minimum" in b or "maximum" in b] or [leaf]
    low, high = bounds[0].get("minimum"), bounds[0].get("maximum")
    for key in ("ge", "gt"):
        low = ctx.get(key, low)
    for key in ("le", "lt"):
        high = ctx.get(key, high)

    def fmt(n: Any) -> str:
        if money:
            return f"{Decimal(str(n)):.2f}"
        return str(int(n)) if isinstance(n, float) and n.is_integer() else str(n)

    unit = " (USD)" if money else ""
    if low is not None and high is not None:
        return f"between {fmt(low)} and {fmt(high)}{unit}"
    if low is not None:
        return f"at least {fmt(low)}{unit}"
    return f"at most {fmt(high)}{unit}"


def _shown(value: Any) -> str:
    """The rejected value as JSON, cut short."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        text = repr(value)
    if len(text) <= MAX_SHOWN:
        return text
    return text[:MAX_SHOWN] + ('..."' if text.startswith('"') else "...")


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {_shown(value)}"
    if isinstance(value, str):
        return f"the string {_shown(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
