"""The feature-flag tools' contract (admins): flags, their targeting rules, and the audit of changes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentchat_mcp.models import Out, untrusted

FlagKey = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_]{0,39}(\.[a-z][a-z0-9_]{0,39})?$",
        description="e.g. peeks (kill switch) or tool.send_message (per-tool switch).",
    ),
]
FlagValue = Annotated[
    bool | float | str,
    Field(description="true/false for switches, else a number or a string."),
]
HideWhenOff = Annotated[bool | None, Field(description="true: tools it switches off leave tools/list. Omit: keep.")]
ChangeReason = Annotated[str, Field(max_length=200, description="Why, for the audit log.")]


class FlagRule(BaseModel):
    # No docstring: it would be listed as the model's description on every turn; FlagRules says it.
    model_config = ConfigDict(frozen=True, extra="forbid")
    value: FlagValue
    roles: list[Literal["anonymous", "agent", "user", "admin"]] | None = Field(default=None, description="Roles.")
    principals: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, max_length=200, description="Principal ids."
    )
    groups: list[Annotated[str, Field(max_length=40)]] | None = Field(
        default=None, max_length=20, description="Named groups, e.g. beta."
    )
    percentage: float | None = Field(default=None, ge=0, le=100, description="Percent of principals (stable by id).")

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


FlagRules = Annotated[
    list[FlagRule] | None,
    Field(
        max_length=50,
        description="Rules, first match wins; each gives value to callers matching all it sets. Omit: keep; []: drop.",
    ),
]


class FeatureFlagOut(Out):
    key: str
    kind: Literal["boolean", "string", "number"]
    value: bool | float | str = Field(description="The value for callers no rule matches.")
    rules: list[dict[str, Any]] = Field(description="Targeting rules, first match wins.")
    hide_when_off: bool = Field(description="Whether tools it switches off leave tools/list.")
    description: str = Field(description="What it switches ('' for a flag the code does not know).")
    is_set: bool = Field(description="False: never set, its built-in default applies.")
    updated_by: str | None = None
    updated_at: str | None = None


class FlagChangeOut(Out):
    id: int
    subject: str = Field(description="flag:KEY or group:NAME.")
    actor: str = Field(description="An admin id, or cli:USER.")
    changed_at: str
    old: Any = Field(description="Before (null: did not exist).")
    new: Any = Field(description="After (null: removed).")
    reason: str = untrusted("Why, as the one who changed it wrote it.")


class FeatureFlagList(Out):
    flags: list[FeatureFlagOut]
    groups: dict[str, list[str]] = Field(description="Group name -> member ids.")
    version: int = Field(description="The flags' version: the newest change's id.")
    recent_changes: list[FlagChangeOut] = Field(description="Newest first.")
