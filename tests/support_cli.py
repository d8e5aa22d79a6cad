"""Running `agentchat-mcp` as a person does, and reading the one line it prints when it refuses."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from agentchat_mcp.cli import build_parser
from tests.conftest import PROJECT_ROOT, run_cli


def cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """run_cli with a clean environment: no AGENTCHAT_ or STRIPE_ settings but those given. A server
    start (`serve`, or a bare `agentchat-mcp`, which is serve over stdio) runs as the real process: its
    start-up is the point; every other command runs in this process."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTCHAT_", "STRIPE_"))}
    kwargs: dict[str, Any] = {"cwd": cwd} if cwd is not None else {}
    return run_cli(*args, env={**clean, **env}, process=starts_a_server(args), **kwargs)


_COMMANDS = frozenset(next(a for a in build_parser()._actions if a.dest == "command").choices or ())


def starts_a_server(args: tuple[str, ...]) -> bool:
    """True for `agentchat-mcp [OPTIONS] serve ...` and a bare `agentchat-mcp [OPTIONS]`."""
    named = [arg for arg in args if arg in _COMMANDS]
    return not named or named[0] == "serve"


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused command (exit 2, nothing on stdout)."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def shim_bin(folder: Path, inspector: Path | None = None) -> Path:
    """A folder for the front of PATH where the commands a doc names run this checkout.

    `agentchat-mcp`: this checkout's code (PYTHONPATH is written into the script: the Inspector
    passes a server only PATH, HOME and the like, plus its -e values). `npx`, given `inspector` (the
    folder tests/test_inspector.py installs node 22 and the Inspector into): runs that Inspector,
    and refuses any other package, so a doc cannot depend on something the test does not provide.
    """
    folder.mkdir(parents=True, exist_ok=True)
    scripts = {
        "agentchat-mcp": f'PYTHONPATH={shlex.quote(str(PROJECT_ROOT))} exec {shlex.quote(sys.executable)} -m agentchat_mcp "$@"'
    }
    if inspector is not None:
        node = inspector / "node_modules" / ".bin" / "node"
        launcher = inspector / "node_modules" / "@modelcontextprotocol" / "inspector" / "clients" / "launcher"
        scripts["npx"] = "\n".join(
            [
                '[ "$1" = "-y" ] && shift',
                'case "$1" in',
                "  @modelcontextprotocol/inspector | @modelcontextprotocol/inspector@*) shift ;;",
                '  *) echo "npx (test shim): only @modelcontextprotocol/inspector is provided, not: $*" >&2; exit 64 ;;',
                "esac",
                f'exec {shlex.quote(str(node))} {shlex.quote(str(launcher / "build" / "index.js"))} "$@"',
            ]
        )
    for name, body in scripts.items():
        script = folder / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return folder
