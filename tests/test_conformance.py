"""The official MCP conformance suite against the real `agentchat-mcp serve --transport http`.

`../shared/tools/mcp-conformance URL` runs the 11 generic scenarios (initialize, ping, lists,
SSE streams, DNS-rebinding protection, logging/setLevel, completion, subscribe/unsubscribe). On
first use it installs node 22 and the suite with npm into ~/.cache/mcp-conformance (slow once).
"""

from __future__ import annotations

import os
import shutil

import anyio
import pytest

from tests.conftest import PROJECT_ROOT, Hub
from tests.support_http import hub_process

pytestmark = pytest.mark.anyio

CONFORMANCE = PROJECT_ROOT.parent / "shared" / "tools" / "mcp-conformance"
GENERIC_SCENARIOS = 11


@pytest.mark.skipif(
    shutil.which("npm") is None,
    reason="npm is not installed: the conformance suite installs node 22 and @modelcontextprotocol/conformance with it",
)
async def test_the_official_conformance_suite_passes_every_generic_scenario(hub: Hub) -> None:
    assert CONFORMANCE.is_file(), f"the conformance runner is missing at {CONFORMANCE}"
    await hub.register_agent("alice", tags=["conformance"])  # a directory with something in it
    async with hub_process(hub) as (base, _):
        with anyio.fail_after(900):  # the first run installs node and the suite
            done = await anyio.run_process(
                [str(CONFORMANCE), f"{base}/mcp"], check=False, env={**os.environ, "MCP_CONFORMANCE_TIMEOUT": "120"}
            )
    report = done.stdout.decode() + done.stderr.decode()
    print(report)
    assert done.returncode == 0, report
    assert f"{GENERIC_SCENARIOS}/{GENERIC_SCENARIOS} scenarios passed" in report, report
