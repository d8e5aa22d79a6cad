"""The MCP Inspector CLI (`@modelcontextprotocol/inspector --cli`) against the real hub, with a bearer key.

The Inspector needs node >= 22.19, so the test installs node 22 and the Inspector with npm into
~/.cache/agentchat-mcp-inspector (or $AGENTCHAT_INSPECTOR_HOME) on first use.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from tests.conftest import Hub
from tests.support_http import hub_process

pytestmark = pytest.mark.anyio

INSPECTOR_VERSION = "2.12.0"
INSPECTOR_HOME = Path(os.environ.get("AGENTCHAT_INSPECTOR_HOME", Path.home() / ".cache" / "agentchat-mcp-inspector"))
LAUNCHER = "node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"


def install_inspector() -> Path:
    """node 22 and the Inspector, installed once with npm; returns the install folder."""
    marker = INSPECTOR_HOME / f".installed-{INSPECTOR_VERSION}"
    if marker.exists():
        return INSPECTOR_HOME
    INSPECTOR_HOME.mkdir(parents=True, exist_ok=True)
    npm = ["npm", "--prefix", str(INSPECTOR_HOME), "--no-audit", "--no-fund", "--no-update-notifier"]
    if not (INSPECTOR_HOME / "package.json").exists():
        subprocess.run(["npm", "init", "-y"], cwd=INSPECTOR_HOME, check=True, capture_output=True)
    subprocess.run(
        [*npm, "--loglevel=error", "install", "node@22", f"@modelcontextprotocol/inspector@{INSPECTOR_VERSION}"],
        cwd=INSPECTOR_HOME,
        check=True,
        capture_output=True,
        timeout=900,
    )
    marker.touch()
    return INSPECTOR_HOME


async def inspector(home: Path, fake_home: Path, url: str, *args: str, key: str | None) -> tuple[int, Any, str]:
    """Run `inspector --cli URL ARGS`; returns (exit code, parsed stdout or None, stderr)."""
    bin_dir = home / "node_modules" / ".bin"
    command = [str(bin_dir / "node"), str(home / LAUNCHER), "--cli", url, *args]
    if key is not None:
        command += ["--header", f"Authorization: Bearer {key}"]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(fake_home)}
    with anyio.fail_after(120):
        done = await anyio.run_process(command, check=False, env=env)
    out = done.stdout.decode()
    try:
        parsed = json.loads(out)
    except json.JSONDecodeError:
        parsed = None
    return done.returncode, parsed, out + done.stderr.decode()


@pytest.mark.skipif(
    shutil.which("npm") is None, reason="npm is not installed: the test installs node 22 and the Inspector with it"
)
async def test_the_inspector_cli_lists_the_tools_and_calls_whoami_with_a_bearer_key(hub: Hub, tmp_path: Path) -> None:
    home = await anyio.to_thread.run_sync(install_inspector)
    alice = await hub.register_agent("alice")
    async with hub_process(hub) as (base, _):
        url = f"{base}/mcp"
        code, listed, text = await inspector(home, tmp_path, url, "--method", "tools/list", key=alice.api_key)
        assert code == 0, text
        names = {t["name"] for t in listed["tools"]}
        assert {"whoami", "send_message", "start_conversation"} <= names
        assert all(t.get("description") for t in listed["tools"])

        code, called, text = await inspector(
            home, tmp_path, url, "--method", "tools/call", "--tool-name", "whoami", key=alice.api_key
        )
        assert code == 0, text
        assert called["isError"] is False
        assert (called["structuredContent"]["id"], called["structuredContent"]["name"]) == (alice.id, "alice")

        # without a key: the anonymous tool list; with a wrong key: refused
        code, anonymous, text = await inspector(home, tmp_path, url, "--method", "tools/list", key=None)
        assert code == 0, text
        assert "whoami" not in {t["name"] for t in anonymous["tools"]}
        code, _, text = await inspector(home, tmp_path, url, "--method", "tools/list", key="acp_wrong")
        assert code != 0 and "auth" in text, text  # the 401 sends the Inspector to its OAuth flow


if __name__ == "__main__":
    # `python -m tests.test_inspector`: install only (CI does this before the tests run).
    print(f"the Inspector {INSPECTOR_VERSION} and node 22 are in {install_inspector()}")
