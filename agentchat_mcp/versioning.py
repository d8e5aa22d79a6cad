"""The API version of the tool contract, and what is deprecated in it (docs/api-versioning.md).

API_VERSION is semver for what clients and models depend on: tool names, arguments, result fields,
resources, prompts. MAJOR: something was removed or changed incompatibly (only after its sunset);
MINOR: something was added (a tool, an optional argument, a result field) or deprecated; PATCH: fixes
that change no schema. It is `serverInfo.version` in the MCP handshake and `api_version` on /healthz;
the package's own version is `agentchat-mcp --version` and `version` on /healthz.

A renamed tool or argument is listed in RENAMED (old name -> new name): the old name keeps answering
until its sunset, its description says it is deprecated, and every call through it logs a warning and
carries a sunset notice in the result's `_meta` under META_KEY. tools/registry.py does the aliasing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

API_VERSION = "1.4.0"
META_KEY = "agentchat/deprecation"
NOTICE_MONTHS = 6  # a removal is announced at least this long before the sunset
KEEP_MONTHS = 12  # an old name keeps answering at least this long after it was deprecated


@dataclass(frozen=True)
class Deprecation:
    """An old tool name, or an old argument name of one tool, that still answers until `sunset`."""

    old: str
    new: str
    deprecated_on: date
    note: str  # the migration note: what to change
    tool: str | None = None  # for an argument: the tool (by its current name) it belongs to

    @property
    def sunset(self) -> date:
        """The earliest day the old name may stop answering (KEEP_MONTHS after deprecation)."""
        return add_months(self.deprecated_on, KEEP_MONTHS)

    @property
    def subject(self) -> str:
        return f"argument {self.old} of {self.tool}" if self.tool else f"tool {self.old}"

    def description_line(self) -> str:
        """What the tool's description says about it."""
        what = f"Argument {self.old} is" if self.tool else "This tool name is"
        return f"DEPRECATED: {what} renamed {self.new}; it answers until {self.sunset.isoformat()}. {self.note}"

    def notice(self) -> dict[str, str]:
        """The sunset warning a call's result carries in `_meta`."""
        return {
            "deprecated": self.subject,
            "use": self.new,
            "sunset": self.sunset.isoformat(),
            "note": self.note,
            "policy": "docs/api-versioning.md",
        }


def add_months(day: date, months: int) -> date:
    """`day` moved `months` later, clamped to the month's last day (Jan 31 + 1 month = Feb 28/29)."""
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    for last in (31, 30, 29, 28):
        try:
            return day.replace(year=year, month=month, day=min(day.day, last))
        except ValueError:
            continue
    raise AssertionError("unreachable: every month has 28 days")


# Renamed tools and arguments, oldest first. Empty until the first rename: add an entry here (and a line in
# docs/api-versioning.md's changelog) instead of deleting a name; remove it after its sunset, in a MAJOR.
RENAMED: tuple[Deprecation, ...] = ()
