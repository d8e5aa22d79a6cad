"""Feature flags through OpenFeature: kill switches, rollouts and plan gates; the only importer of openfeature.

A flag is boolean, string or number. Its value for a caller is the first of its targeting rules that
matches (by role, principal id, named group, or a percentage of principals picked by a stable hash of
the id), else its value for everyone. A flag nobody has set answers its built-in default (CATALOGUE; a
per-tool switch `tool.NAME` defaults to on).

Where the values come from: an OpenFeature provider. Ours, DatabaseProvider, reads the `feature_flags`
tables; an operator can hand FeatureFlags any other OpenFeature provider (flagd, LaunchDarkly,
Unleash, Flagsmith ...) instead, and the rest of the server does not change.

Why evaluations are memoised: the OpenFeature client costs ~18 us an evaluation (context merging,
hook contexts; measured with its InMemoryProvider), and every tool call evaluates one or two flags.
So the answer for (flag, principal, role) is kept until the flags' version moves: the newest id in
`feature_flag_changes`, polled every POLL_SECONDS (the store's data_version first, so an idle database
costs no query; on PostgreSQL the poll wakes on every commit instead, through LISTEN/NOTIFY). A change made by any process on the same database (a tool, the CLI) reaches every
process within about POLL_SECONDS, with no restart. Another provider clears the memo by emitting
PROVIDER_CONFIGURATION_CHANGED, as OpenFeature providers do when their flags change.
"""

from __future__ import annotations

import getpass
import importlib
import itertools
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, FeatureProvider, Metadata
from openfeature.provider.no_op_provider import NoOpProvider
from sqlalchemy import delete, func, insert, select, update

from agentchat_mcp import clock
from agentchat_mcp.errors import InvalidInput, NotFound
from agentchat_mcp.services.flag_rules import (
    CATALOGUE,
    TOOL_FLAG_PREFIX,
    Flag,
    FlagSpec,
    FlagValue,
    Kind,
    Snapshot,
    check_value,
    kind_of,
    parse_rules,
    spec_of,
)
from agentchat_mcp.settings import ConfigurationError
from agentchat_mcp.store import Store
from agentchat_mcp.store.tables import feature_flag_changes, feature_flag_groups, feature_flags

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # how often each process looks for a newer flags version
MEMO_LIMIT = 50_000  # answers kept per version (flags x active principals); cleared past it
HISTORY_LIMIT = 200

# --- the OpenFeature provider ------------------------------------------------------------------


class DatabaseProvider(AbstractProvider):
    """OpenFeature provider over the `feature_flags` tables, answering from a snapshot in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.snapshot = Snapshot()

    def get_metadata(self) -> Metadata:
        return Metadata(name="agentchat-database")

    def replace(self, snapshot: Snapshot) -> None:
        """Serve `snapshot` from now on, and tell OpenFeature clients the configuration changed."""
        changed = [
            k for k in {*snapshot.flags, *self.snapshot.flags} if snapshot.flags.get(k) != self.snapshot.flags.get(k)
        ]
        self.snapshot = snapshot
        self.emit_provider_configuration_changed(ProviderEventDetails(flags_changed=sorted(changed)))

    def _resolve(
        self, key: str, default: Any, context: EvaluationContext | None, kind: Kind
    ) -> FlagResolutionDetails[Any]:
        flag = self.snapshot.flags.get(key)
        if flag is None:
            spec = spec_of(key)
            if spec is None:
                return FlagResolutionDetails(default, ErrorCode.FLAG_NOT_FOUND, f"no flag {key}", Reason.ERROR)
            return FlagResolutionDetails(spec.default, reason=Reason.DEFAULT, variant="default")
        if flag.kind != kind:
            return FlagResolutionDetails(default, ErrorCode.TYPE_MISMATCH, f"{key} is a {flag.kind} flag", Reason.ERROR)
        attributes = context.attributes if context else {}
        listed = attributes.get("groups")
        groups = [g for g in listed if isinstance(g, str)] if isinstance(listed, list | tuple) else []
        value, variant, reason = flag.resolve(
            (context.targeting_key if context else None) or "", str(attributes.get("role", "")), frozenset(groups)
        )
        return FlagResolutionDetails(value, reason=reason, variant=variant)

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, "boolean")

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, "string")

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        found = self._resolve(flag_key, default_value, evaluation_context, "number")
        if not found.error_code and isinstance(found.value, float):
            found.value = int(found.value)  # type: ignore[misc]
        return found

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, "number")

    def resolve_object_details(
        self, flag_key: str, default_value: Any, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[Any]:
        return FlagResolutionDetails(default_value, ErrorCode.TYPE_MISMATCH, "no object flags", Reason.ERROR)


# --- the service -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One audited change: who, when, old -> new (JSON; None where there was nothing)."""

    id: int
    subject: str
    actor: str
    changed_at: str
    old: Any
    new: Any
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subject": self.subject,
            "actor": self.actor,
            "changed_at": self.changed_at,
            "old": self.old,
            "new": self.new,
            "reason": self.reason,
        }


_domains = itertools.count(1)
_RETIRED = NoOpProvider()  # what a closed FeatureFlags' OpenFeature domain points at
_VERSION = select(func.max(feature_flag_changes.c.id))


def provider_from(spec: str) -> FeatureProvider:
    """The OpenFeature provider `spec` ("module:function", AGENTCHAT_FLAGS_PROVIDER) builds."""
    module_name, _, function = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function)
        return factory()  # type: ignore[no-any-return]
    except Exception as exc:
        raise ConfigurationError(
            f"AGENTCHAT_FLAGS_PROVIDER {spec} did not give an OpenFeature provider ({type(exc).__name__}: {exc}): "
            "name a module:function that returns one, or unset it to serve the flags from the database"
        ) from None


def cli_actor() -> str:
    """Who a CLI change is recorded as."""
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except (KeyError, OSError):  # no user name in this environment (a bare container)
        return "cli"


class FeatureFlags:
    """Evaluates flags for callers (cached per version) and changes them (audited)."""

    def __init__(
        self,
        store: Store,
        *,
        count: Callable[[dict[str, str]], None] | None = None,
        provider: FeatureProvider | None = None,
    ) -> None:
        self._store = store
        self._count = count or (lambda _attributes: None)
        self.own = DatabaseProvider()
        # One OpenFeature domain per instance: several servers (tests, hubs) may run in one process.
        self.domain = f"agentchat-{next(_domains)}"
        api.set_provider_and_wait(provider or self.own, self.domain)
        self.client = api.get_client(self.domain)
        if provider is not None:
            self.client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, self._forget)
        self._memo: dict[tuple[str, str, str], tuple[FlagValue, dict[str, str]]] = {}
        self._gates: dict[str, tuple[tuple[str, FlagSpec], ...]] = {}

    @property
    def version(self) -> int:
        return self.own.snapshot.version

    def close(self) -> None:
        """Give the OpenFeature domain up (its provider is shut down by OpenFeature)."""
        api.set_provider(_RETIRED, self.domain)

    def _forget(self, _details: EventDetails | None = None) -> None:
        self._memo = {}

    # --- evaluation: the hot path ---

    def value(self, key: str, principal_id: str | None, role: str) -> FlagValue:
        """Flag `key` for this caller. Memoised until the flags change (see the module docstring)."""
        memo_key = (key, principal_id or "", role)
        hit = self._memo.get(memo_key)
        if hit is None:
            hit = self._evaluate(key, principal_id or "", role)
        self._count(hit[1])
        return hit[0]

    def enabled(self, key: str, principal_id: str | None, role: str) -> bool:
        """A boolean flag for this caller."""
        return self.value(key, principal_id, role) is True

    def _evaluate(self, key: str, principal_id: str, role: str) -> tuple[FlagValue, dict[str, str]]:
        spec = spec_of(key)
        kind = spec.kind if spec else self._kind(key)
        context = EvaluationContext(
            principal_id,
            {"role": role, "groups": sorted(self.own.snapshot.groups.get(principal_id, frozenset()))},
        )
        default: Any = spec.default if spec else _ZERO[kind]
        if kind == "boolean":
            details: Any = self.client.get_boolean_details(key, default, context)
        elif kind == "string":
            details = self.client.get_string_details(key, default, context)
        else:
            details = self.client.get_float_details(key, float(default), context)
        variant = details.variant or ("error" if details.error_code else "default")
        hit: tuple[FlagValue, dict[str, str]] = (details.value, {"flag": key, "variant": variant})
        if len(self._memo) >= MEMO_LIMIT:
            self._memo = {}
        self._memo[(key, principal_id, role)] = hit
        return hit

    def _kind(self, key: str) -> Kind:
        flag = self.own.snapshot.flags.get(key)
        return flag.kind if flag else "boolean"

    def paused(self, tool: str, principal_id: str | None, role: str) -> str | None:
        """Why `tool` is refused to this caller right now (a flag that switches it is off), else None."""
        gates = self._gates.get(tool)
        if gates is None:
            gates = self._gates[tool] = _gates_of(tool)
        for key, spec in gates:
            if self.value(key, principal_id, role) is False:
                return f"{spec.paused} (feature flag '{key}' is off). {spec.hint}"
        return None

    def hidden_tools(self, tools: Iterable[str], principal_id: str | None, role: str) -> frozenset[str]:
        """Of `tools`, those switched off for this caller by a flag set to hide them (tools/list)."""
        hiding = {k for k, f in self.own.snapshot.flags.items() if f.hide_when_off}
        if not hiding:
            return frozenset()
        gone: set[str] = set()
        for tool in tools:
            gates = self._gates.get(tool) or _gates_of(tool)
            if any(key in hiding and self.value(key, principal_id, role) is False for key, _ in gates):
                gone.add(tool)
        return frozenset(gone)

    # --- keeping up with the database ---

    async def load(self) -> None:
        """Read every flag and group (at start-up, and when the version moved)."""
        async with self._store.read() as conn:
            version = (await conn.execute(_VERSION)).scalar() or 0
            flag_rows = (await conn.execute(select(feature_flags))).all()
            group_rows = (await conn.execute(select(feature_flag_groups))).all()
        flags = {r.key: _flag(r) for r in flag_rows}
        groups: dict[str, set[str]] = {}
        for r in group_rows:
            groups.setdefault(r.principal_id, set()).add(r.name)
        self.own.replace(Snapshot(int(version), flags, {p: frozenset(g) for p, g in groups.items()}))
        self._forget()

    async def run(self) -> None:
        """Reload whenever another process (or this one) changed the flags; until cancelled."""
        seen = self._store.data_version()
        try:
            await self.refresh()  # a change between load() at start-up and the line above
        except Exception:
            logger.warning("could not check the feature flags' version", exc_info=True)
            seen = -1  # check again on the next pass
        while True:
            await self._store.wait_for_change(POLL_SECONDS)  # PostgreSQL: on the next commit anywhere
            current = self._store.data_version()  # read before the version: a write after it moves it again
            if current == seen:
                continue
            try:
                await self.refresh()
            except Exception:  # a busy or failing database: keep serving the flags we have, try again
                logger.warning("could not check the feature flags' version", exc_info=True)
                continue
            seen = current

    async def refresh(self) -> bool:
        """Reload if the flags' version moved (one indexed read); True if it did."""
        newest = await self._store.quick_first(_VERSION, {})
        if int((newest[0] if newest else 0) or 0) == self.version:
            return False
        await self.load()
        return True

    # --- changes (audited) ---

    async def set_flag(
        self,
        key: str,
        value: Any,
        *,
        actor: str,
        rules: Sequence[Mapping[str, Any]] | None = None,
        hide_when_off: bool | None = None,
        reason: str = "",
    ) -> Flag:
        """Set flag `key` (created if new; a catalogue flag keeps its kind). `rules` None keeps the
        current rules, [] drops them; `hide_when_off` None keeps the current choice."""
        spec = spec_of(key)
        kind: Kind = spec.kind if spec else kind_of(value)
        async with self._store.write() as conn:
            row = (await conn.execute(select(feature_flags).where(feature_flags.c.key == key))).first()
            old = _flag(row) if row is not None else None
            if old is not None and old.kind != kind:
                kind = old.kind
            checked = check_value(kind, value, f"the value of {key}")
            flag = Flag(
                key=key,
                kind=kind,
                value=checked,
                rules=parse_rules(key, kind, rules) if rules is not None else (old.rules if old else ()),
                hide_when_off=hide_when_off if hide_when_off is not None else bool(old and old.hide_when_off),
                updated_by=actor,
                updated_at=clock.now_iso(),
            )
            values = {
                "kind": flag.kind,
                "value": json.dumps(flag.value),
                "rules": json.dumps([r.as_json() for r in flag.rules]),
                "hide_when_off": flag.hide_when_off,
                "updated_by": actor,
                "updated_at": flag.updated_at,
            }
            if old is None:
                await conn.execute(insert(feature_flags).values(key=key, **values))
            else:
                await conn.execute(update(feature_flags).where(feature_flags.c.key == key).values(**values))
            before = old or (Flag(key, spec.kind, spec.default) if spec else None)  # a built-in flag's default
            await _audit(conn, f"flag:{key}", actor, before.as_json() if before else None, flag.as_json(), reason)
        await self.load()
        return flag

    async def group(self, name: str, principal_id: str, *, member: bool, actor: str, reason: str = "") -> bool:
        """Add `principal_id` to group `name` (member=True) or take it out; True if that changed anything."""
        if not name or len(name) > 40:
            raise InvalidInput("A group name has 1 to 40 characters, e.g. beta.")
        async with self._store.write() as conn:
            where = (feature_flag_groups.c.name == name) & (feature_flag_groups.c.principal_id == principal_id)
            present = (await conn.execute(select(feature_flag_groups.c.name).where(where))).first() is not None
            if present == member:
                return False
            if member:
                await conn.execute(
                    insert(feature_flag_groups).values(name=name, principal_id=principal_id, added_at=clock.now_iso())
                )
            else:
                await conn.execute(delete(feature_flag_groups).where(where))
            await _audit(conn, f"group:{name}", actor, {"member": principal_id} if present else None,
                         {"member": principal_id} if member else None, reason)  # fmt: skip
        await self.load()
        return True

    def flags(self) -> list[tuple[str, FlagSpec | None, Flag | None]]:
        """Every known flag (catalogue and set), by key: its built-in spec and what the operator set."""
        snapshot = self.own.snapshot.flags
        keys = sorted({*CATALOGUE, *snapshot})
        return [(k, spec_of(k), snapshot.get(k)) for k in keys]

    def groups(self) -> dict[str, list[str]]:
        """Group name -> its members."""
        out: dict[str, list[str]] = {}
        for principal, names in self.own.snapshot.groups.items():
            for name in names:
                out.setdefault(name, []).append(principal)
        return {name: sorted(members) for name, members in sorted(out.items())}

    async def history(self, subject: str | None = None, limit: int = 50) -> list[Change]:
        """The newest changes first; `subject`: one flag's key (or group:NAME) only."""
        query = select(feature_flag_changes).order_by(feature_flag_changes.c.id.desc()).limit(min(limit, HISTORY_LIMIT))
        if subject is not None:
            full = subject if subject.startswith(("flag:", "group:")) else f"flag:{subject}"
            query = query.where(feature_flag_changes.c.subject == full)
        async with self._store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [Change(r.id, r.subject, r.actor, r.changed_at, _loads(r.old), _loads(r.new), r.reason) for r in rows]

    def view(self, key: str, flag: Flag | None = None) -> dict[str, Any]:
        """Flag `key` (or `flag`, just set) as the tools and the CLI show it."""
        shown = flag or self.describe(key)
        spec = spec_of(key)
        is_set = shown.updated_at != ""
        return {
            "key": key,
            **shown.as_json(),
            "description": spec.description if spec else "",
            "is_set": is_set,
            "updated_by": shown.updated_by if is_set else None,
            "updated_at": shown.updated_at if is_set else None,
        }

    def describe(self, key: str) -> Flag:
        """The flag as it stands (set, or its built-in default)."""
        flag = self.own.snapshot.flags.get(key)
        if flag is not None:
            return flag
        spec = spec_of(key)
        if spec is None:
            raise NotFound(f"No feature flag {key}; list_feature_flags shows them.")
        return Flag(key, spec.kind, spec.default)


_ZERO: dict[Kind, FlagValue] = {"boolean": False, "string": "", "number": 0.0}


def _gates_of(tool: str) -> tuple[tuple[str, FlagSpec], ...]:
    gates = [(key, spec) for key, spec in CATALOGUE.items() if tool in spec.tools]
    own = f"{TOOL_FLAG_PREFIX}{tool}"
    gates.append((own, spec_of(own)))  # type: ignore[arg-type]
    return tuple(gates)


def _flag(row: Any) -> Flag:
    kind: Kind = row.kind
    return Flag(
        key=row.key,
        kind=kind,
        value=json.loads(row.value),
        rules=parse_rules(row.key, kind, json.loads(row.rules)),
        hide_when_off=bool(row.hide_when_off),
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


async def _audit(conn: Any, subject: str, actor: str, old: Any, new: Any, reason: str) -> None:
    await conn.execute(
        insert(feature_flag_changes).values(
            subject=subject,
            actor=actor,
            changed_at=clock.now_iso(),
            old=None if old is None else json.dumps(old, sort_keys=True),
            new=None if new is None else json.dumps(new, sort_keys=True),
            reason=reason[:200],
        )
    )
