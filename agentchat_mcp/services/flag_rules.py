"""Feature flags as data: the built-in catalogue, targeting rules, and their checks (no OpenFeature here).

services/flags.py serves these through OpenFeature; this module says what a flag is and whom a rule picks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentchat_mcp.errors import InvalidInput

Kind = Literal["boolean", "string", "number"]
FlagValue = bool | str | float
KINDS: tuple[Kind, ...] = ("boolean", "string", "number")
ROLES = frozenset({"anonymous", "agent", "user", "admin"})


@dataclass(frozen=True)
class FlagSpec:
    """A flag the code knows: its default, what it switches, and what a paused caller is told."""

    kind: Kind
    default: FlagValue
    description: str
    tools: tuple[str, ...] = ()  # tools refused while the flag is off for the caller
    paused: str = ""  # the refusal, without the trailing hint
    hint: str = "Try again later; an operator switches it back on."  # what a refused caller can do


CATALOGUE: dict[str, FlagSpec] = {
    "peeks": FlagSpec(
        "boolean",
        True,
        "Kill switch: new peek requests (request_peek). Peeks already granted keep working.",
        ("request_peek",),
        "New peek requests are paused on this server; nothing was charged",
    ),
    "payouts": FlagSpec(
        "boolean",
        True,
        "Kill switch: payouts (request_payout, `agentchat-mcp payouts run`). Earnings keep accruing.",
        ("request_payout",),
        "Payouts are paused on this server; your earnings are safe and stay available",
    ),
    "registration": FlagSpec(
        "boolean",
        True,
        "Kill switch: new registrations (register_agent, register_user).",
        ("register_agent", "register_user"),
        "Registration is paused on this server",
    ),
    "referrals": FlagSpec(
        "boolean",
        True,
        "Kill switch: the referral programme (get_referral_code, get_referral_stats; while off, registrations "
        "with a referral code are refused and no commission or reward is paid).",
        ("get_referral_code", "get_referral_stats"),
        "The referral programme is paused on this server",
    ),
    "advanced_analytics": FlagSpec(
        "boolean",
        True,
        "Plan gate ADVANCED_ANALYTICS: an agent's get_agent_analytics and agentchat://analytics/agent. On for "
        "everyone by default; make it a plan by setting it off with a rule that turns it on for a group.",
        ("get_agent_analytics",),
        "Advanced analytics are not part of your plan on this server",
        "get_earnings still shows your earnings; the operator can add you to the plan.",
    ),
}
TOOL_FLAG_PREFIX = "tool."
TOOL_PAUSED = "This tool is paused on this server"


def spec_of(key: str) -> FlagSpec | None:
    """The built-in description of `key`: a catalogue flag, or a per-tool switch (default on)."""
    found = CATALOGUE.get(key)
    if found is None and key.startswith(TOOL_FLAG_PREFIX):
        name = key.removeprefix(TOOL_FLAG_PREFIX)
        return FlagSpec("boolean", True, f"Per-tool switch: {name}.", (name,), TOOL_PAUSED)
    return found


@dataclass(frozen=True)
class Rule:
    """Gives `value` to callers matching every condition it sets (None: that condition is not used)."""

    value: FlagValue
    roles: frozenset[str] | None = None
    principals: frozenset[str] | None = None
    groups: frozenset[str] | None = None
    percentage: float | None = None  # 0-100: that share of principals, by a stable hash of their id

    def matches(self, key: str, principal_id: str, role: str, groups: frozenset[str]) -> bool:
        if self.roles is not None and role not in self.roles:
            return False
        if self.principals is not None and principal_id not in self.principals:
            return False
        if self.groups is not None and not self.groups & groups:
            return False
        return self.percentage is None or (bool(principal_id) and bucket(key, principal_id) < self.percentage * 100)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value}
        for name in ("roles", "principals", "groups"):
            chosen = getattr(self, name)
            if chosen is not None:
                out[name] = sorted(chosen)
        if self.percentage is not None:
            out["percentage"] = self.percentage
        return out


def bucket(key: str, principal_id: str) -> int:
    """0-9999: where a principal falls in flag `key`'s rollouts. The same on every process and restart
    (sha256, not Python's salted hash); per flag, so two 10% rollouts do not pick the same principals."""
    digest = hashlib.sha256(f"{key}\x00{principal_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


@dataclass(frozen=True)
class Flag:
    """A flag as set by the operator."""

    key: str
    kind: Kind
    value: FlagValue
    rules: tuple[Rule, ...] = ()
    hide_when_off: bool = False
    updated_by: str = ""
    updated_at: str = ""

    def resolve(self, principal_id: str, role: str, groups: frozenset[str]) -> tuple[FlagValue, str, str]:
        """(value, variant, OpenFeature reason) for one caller: the first matching rule, else the flag's value."""
        for number, rule in enumerate(self.rules, 1):
            if rule.matches(self.key, principal_id, role, groups):
                reason = "SPLIT" if rule.percentage is not None else "TARGETING_MATCH"
                return rule.value, f"rule-{number}", reason
        return self.value, "default", "STATIC"

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "value": self.value,
            "rules": [r.as_json() for r in self.rules],
            "hide_when_off": self.hide_when_off,
        }


def check_value(kind: Kind, value: Any, where: str) -> FlagValue:
    """`value` if it is of `kind`, else an InvalidInput naming `where`."""
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "string" and isinstance(value, str) and len(value) <= 200:
        return value
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise InvalidInput(f"{where} must be a {kind} (the flag is a {kind} flag), not {value!r}.")


def parse_rules(key: str, kind: Kind, rules: Iterable[Mapping[str, Any]]) -> tuple[Rule, ...]:
    """Rules as given (dicts: value, and any of roles, principals, groups, percentage), checked."""
    parsed: list[Rule] = []
    for number, raw in enumerate(rules, 1):
        where = f"rule {number} of {key}"
        unknown = set(raw) - {"value", "roles", "principals", "groups", "percentage"}
        if unknown or "value" not in raw:
            raise InvalidInput(
                f"{where}: a rule has a value and any of roles, principals, groups, percentage"
                f"{'; not ' + ', '.join(sorted(unknown)) if unknown else ''}."
            )
        roles = _names(raw.get("roles"), f"{where}: roles")
        if roles is not None and not roles <= ROLES:
            raise InvalidInput(
                f"{where}: roles are {', '.join(sorted(ROLES))}, not {', '.join(sorted(roles - ROLES))}."
            )
        percentage = raw.get("percentage")
        if percentage is not None and (
            isinstance(percentage, bool) or not isinstance(percentage, int | float) or not 0 <= percentage <= 100
        ):
            raise InvalidInput(f"{where}: percentage is a number from 0 to 100, not {percentage!r}.")
        parsed.append(
            Rule(
                value=check_value(kind, raw["value"], f"{where}: value"),
                roles=roles,
                principals=_names(raw.get("principals"), f"{where}: principals"),
                groups=_names(raw.get("groups"), f"{where}: groups"),
                percentage=None if percentage is None else float(percentage),
            )
        )
    if len(parsed) > 50:
        raise InvalidInput(f"{key} has {len(parsed)} rules; 50 at most (use a group for long lists of principals).")
    return tuple(parsed)


def _names(raw: Any, where: str) -> frozenset[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list | tuple) or not all(isinstance(n, str) and 0 < len(n) <= 64 for n in raw):
        raise InvalidInput(f"{where} is a list of names or ids.")
    return frozenset(raw)


@dataclass(frozen=True)
class Snapshot:
    """Every flag and group membership at one version."""

    version: int = 0
    flags: Mapping[str, Flag] = field(default_factory=dict)
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)  # principal id -> its groups


def kind_of(value: Any) -> Kind:
    """The kind of flag a first value makes."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    raise InvalidInput(f"A flag's value is true/false, a string or a number, not {value!r}.")
