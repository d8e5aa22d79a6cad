"""Running `agentchat-mcp` as a person does, and reading the one line it prints when it refuses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import run_cli


def cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """run_cli with a clean environment: no AGENTCHAT_ or STRIPE_ settings but those given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTCHAT_", "STRIPE_"))}
    kwargs: dict[str, Any] = {"cwd": cwd} if cwd is not None else {}
    return run_cli(*args, env={**clean, **env}, **kwargs)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused command (exit 2, nothing on stdout)."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]
