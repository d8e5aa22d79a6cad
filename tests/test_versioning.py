"""API versioning: the server says its API version, and a renamed tool or argument keeps answering."""

from __future__ import annotations

import logging
import re
from datetime import date

import httpx2
import pytest
from mcp import Client

from agentchat_mcp import __version__
from agentchat_mcp.server import build_server
from agentchat_mcp.telemetry import Telemetry
from agentchat_mcp.versioning import API_VERSION, META_KEY, RENAMED, Deprecation, add_months
from tests.conftest import PROJECT_ROOT, Account, Hub, structured
from tests.support_http import serving

pytestmark = pytest.mark.anyio
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


async def test_the_api_version_is_semver_in_server_info_and_on_healthz(hub: Hub) -> None:
    assert SEMVER.match(API_VERSION)
    async with hub.client() as c:
        info = c.server_info
    assert info is not None and info.version == API_VERSION
    async with serving(hub, telemetry=Telemetry()) as base, httpx2.AsyncClient() as http:
        body = (await http.get(f"{base}/healthz")).json()
    assert (body["api_version"], body["version"]) == (API_VERSION, __version__)
    policy = (PROJECT_ROOT / "docs" / "api-versioning.md").read_text()
    assert f"Current API version: {API_VERSION}" in policy
    for old in RENAMED:  # every rename in force is in the changelog, with its sunset
        assert f"`{old.old}`" in policy and old.sunset.isoformat() in policy


def renaming_server(hub: Hub, account: Account, *renames: Deprecation) -> Client:
    """A client of a server with these renames registered, as versioning.RENAMED's entries are."""
    server = build_server(hub.settings_for(account.api_key), telemetry=hub.telemetry)
    assert server.registry is not None
    for old in renames:
        server.registry.deprecate(old)
    return Client(server)


async def test_a_renamed_tool_still_answers_under_its_old_name_and_says_until_when(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await hub.register_agent("alice")
    renamed = Deprecation("who_am_i", "whoami", date(2026, 12, 7), "Call whoami instead; nothing else changes.")
    async with renaming_server(hub, alice, renamed) as c:
        listed = {t.name: t for t in (await c.list_tools()).tools}
        assert listed["who_am_i"].description.startswith("DEPRECATED: This tool name is renamed whoami")
        assert "2027-12-07" in listed["who_am_i"].description and "whoami" in listed
        with caplog.at_level(logging.WARNING, logger="agentchat_mcp"):
            old = await c.call_tool("who_am_i", {})
        new = await c.call_tool("whoami", {})
    assert structured(old) == structured(new) and structured(old)["id"] == alice.id
    (notice,) = old.meta[META_KEY]
    assert notice == {
        "deprecated": "tool who_am_i",
        "use": "whoami",
        "sunset": "2027-12-07",
        "note": "Call whoami instead; nothing else changes.",
        "policy": "docs/api-versioning.md",
    }
    assert new.meta is None or META_KEY not in new.meta  # the current name carries no warning
    assert any("deprecated tool who_am_i called; use whoami" in r.getMessage() for r in caplog.records)


async def test_a_renamed_argument_still_works_and_is_described_as_deprecated(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await hub.register_agent("alice", tags=["python"])
    renamed = Deprecation("text", "query", date(2026, 12, 7), "Pass query instead.", tool="find_agents")
    async with renaming_server(hub, alice, renamed) as c:
        tool = next(t for t in (await c.list_tools()).tools if t.name == "find_agents")
        assert "Argument text is renamed query" in (tool.description or "")
        assert tool.input_schema["properties"]["text"]["description"].startswith("Deprecated: use query")
        old = await c.call_tool("find_agents", {"text": "alice"})
        new = await c.call_tool("find_agents", {"query": "alice"})
        with caplog.at_level(logging.WARNING, logger="agentchat_mcp"):
            refused = await c.call_tool("find_agents", {"text": "alice", "limit": 0})
    assert structured(old) == structured(new)
    assert refused.is_error  # a call that fails is logged as a deprecated call too
    assert any("deprecated argument text of find_agents called" in r.getMessage() for r in caplog.records)
    assert old.meta[META_KEY][0]["deprecated"] == "argument text of find_agents"


def test_the_sunset_is_twelve_months_after_the_deprecation_even_at_a_month_end() -> None:
    assert Deprecation("a", "b", date(2026, 12, 7), "").sunset == date(2027, 12, 7)
    assert add_months(date(2027, 1, 31), 1) == date(2027, 2, 28) and add_months(date(2028, 1, 31), 1) == date(
        2028, 2, 29
    )
