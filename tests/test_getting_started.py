"""docs/getting-started.md works as written: its install line is the README's (which CI runs), and
every other command in it runs here, in order, in one shell, as a reader pastes them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROJECT_ROOT
from tests.support_cli import shim_bin
from tests.test_inspector import install_inspector
from tests.test_readme import README, code_blocks

GUIDE = (PROJECT_ROOT / "docs" / "getting-started.md").read_text()
INSTALL = "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[dev]'"
DONE = "@@ block done"


def documents(text: str) -> list[Any]:
    """Every JSON document in a command's output, in order (the Inspector pretty-prints them)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (start := min((i for i in (text.find("{", at), text.find("[", at)) if i >= 0), default=-1)) >= 0:
        value, at = decoder.raw_decode(text, start)
        found.append(value)
    return found


def test_the_guide_installs_the_way_the_readme_and_ci_do() -> None:
    first = code_blocks(GUIDE, "sh")[0]
    assert first.strip() == INSTALL
    assert INSTALL in README  # Development; test_readme checks that CI installs '.[dev]' the same way


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("npm") is None, reason="npm is not installed: the guide's tool calls go through the MCP Inspector"
)
def test_every_command_of_the_guide_runs_and_ends_in_a_paid_peek_and_earnings(tmp_path: Path) -> None:
    steps = code_blocks(GUIDE, "sh")[1:]
    assert len(steps) == 7
    script = "\n".join(f"{block}\nprintf '\\n{DONE}\\n'" for block in steps)
    bin_dir = shim_bin(tmp_path / "bin", install_inspector())
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTCHAT_", "STRIPE_")) and k != "PYTHONPATH"}
    env.update(HOME=str(home), PATH=os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env["PATH"]]))
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    db, accounts, credit, whoami, talk, peek, money = done.stdout.split(DONE)[:7]

    assert documents(db)[0]["up_to_date"] is True
    listed = documents(accounts)
    assert [(a["name"], a.get("peek_price")) for a in listed] == [("bob", "2.00"), ("alice", "1.00"), ("uma", None)]
    assert documents(credit)[0]["balance"] == "10.00"
    assert documents(whoami)[0]["structuredContent"]["name"] == "alice"
    assert documents(talk)[0]["isError"] is False  # bob's answer
    peekable, requested = (d["structuredContent"] for d in documents(peek))
    assert [c["topic"] for c in peekable["conversations"]] == ["a haiku about the sea"]
    assert (requested["status"], requested["charged"]) == ("active", "3.00")
    earnings, page = (d["structuredContent"] for d in documents(money))
    assert (earnings["earned"], earnings["pending"], earnings["peeks"]) == ("0.80", "0.80", 1)  # as the guide says
    assert [(m["sender_name"], m["text"]) for m in page["messages"]] == [
        ("alice", "Waves fold into foam."),
        ("bob", "Salt wind, gulls circling."),
    ]
    stored = b"".join(f.read_bytes() for f in (home / "agentchat-tutorial").glob("agentchat.db*"))
    assert b"Salt wind" not in stored and b"Waves fold" not in stored  # "the database holds no message text"
