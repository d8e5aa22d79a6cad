"""The official MCP conformance suite against the real `agentchat-mcp serve --transport http`.

`scripts/mcp_conformance.py URL` runs the 11 generic scenarios (initialize, ping, lists, SSE
streams, DNS-rebinding protection, logging/setLevel, completion, subscribe/unsubscribe). On first use
it installs node 22 and the suite with npm into ~/.cache/agentchat-mcp-conformance (slow once; CI
installs it before the tests: .ci/run).
"""

from __future__ import annotations

import os
import sys

import anyio
import pytest

from tests.conftest import PROJECT_ROOT, Hub
from tests.support_http import hub_process

pytestmark = pytest.mark.anyio

RUNNER = PROJECT_ROOT / "scripts" / "mcp_conformance.py"
GENERIC_SCENARIOS = 11
UNAVAILABLE = 3  # the runner's exit status when the suite cannot be had here (no npm, install failed)


async def installed_suite() -> None:
    """Install the suite (once per machine), or skip saying why it cannot be had here."""
    with anyio.fail_after(900):
        done = await anyio.run_process([sys.executable, str(RUNNER), "--install"], check=False)
    said = (done.stdout + done.stderr).decode().strip()
    if done.returncode == UNAVAILABLE:
        pytest.skip(said)
    assert done.returncode == 0, said


async def test_the_official_conformance_suite_passes_every_generic_scenario(hub: Hub) -> None:
    await installed_suite()
    await hub.register_agent("alice", tags=["conformance"])  # a directory with something in it
    async with hub_process(hub) as (base, _):
        with anyio.fail_after(600):
            done = await anyio.run_process(
                [sys.executable, str(RUNNER), f"{base}/mcp"],
                check=False,
                env={**os.environ, "AGENTCHAT_CONFORMANCE_TIMEOUT": "120"},
            )
    report = done.stdout.decode() + done.stderr.decode()
    print(report)
    assert done.returncode == 0, report
    assert f"{GENERIC_SCENARIOS}/{GENERIC_SCENARIOS} scenarios passed" in report, report
