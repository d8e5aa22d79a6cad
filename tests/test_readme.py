"""The README tells the truth: its commands are CI's, its config works as written, its names exist."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from agentchat_mcp.cli import build_parser
from agentchat_mcp.server import build_server
from agentchat_mcp.settings import Settings
from tests.conftest import PROJECT_ROOT, structured

README = (PROJECT_ROOT / "README.md").read_text()
CI = (PROJECT_ROOT / ".ci" / "run").read_text()
EXAMPLE = PROJECT_ROOT / "claude_desktop_config.example.json"


def code_blocks(text: str, lang: str = "") -> list[str]:
    """Fenced blocks with this language tag, dedented (blocks inside list items are indented)."""
    found = re.findall(rf"^( *)```{lang}\n(.*?)^\1```", text, re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(body) for _, body in found]


def command_of(block: str, comment: str) -> str:
    """The command on the line of `block` whose trailing comment contains `comment`."""
    for line in block.splitlines():
        if "#" in line and comment in line.split("#", 1)[1]:
            return line.split("#", 1)[0].strip()
    raise AssertionError(f"no line commented {comment!r} in:\n{block}")


def setting_env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        names.add(str(choices[0]) if choices else f"AGENTCHAT_{name.upper()}")
    return names


def agentchat_command() -> str:
    """The installed console script: on PATH in CI's venv, beside this interpreter in any venv."""
    found = shutil.which("agentchat-mcp", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    assert found, "the agentchat-mcp console script is not installed (pip install -e '.[dev]')"
    return found


# --- the first screen -------------------------------------------------------------------------


def test_the_first_screen_says_what_it_is_and_gives_the_install_demo_and_test_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:15])
    assert "MCP server" in first_screen and "encrypted conversations" in first_screen
    block = code_blocks(README, "sh")[0]
    assert block in first_screen
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    assert commands == ["pip install -e '.[dev]' && agentchat-mcp demo", "pytest"]
    assert command_of(block, "test suite") == "pytest"


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    readme_command = command_of(code_blocks(README, "sh")[0], "test suite")
    match = re.search(r'^TEST_COMMAND="([^"]+)"$', CI, re.MULTILINE)
    assert match, "CI names its test command in TEST_COMMAND"
    assert match.group(1) == readme_command
    assert re.search(r"^\s+\$TEST_COMMAND\b", CI, re.MULTILINE), "CI runs $TEST_COMMAND itself"
    # CI installs what the README installs, lints and type-checks as the Development section says.
    assert "pip install --quiet -e '.[dev]'" in CI
    for step in ("ruff check .", "ruff format --check .", "mypy agentchat_mcp"):
        assert re.search(rf"^{re.escape(step)}$", CI, re.MULTILINE), step
        assert step in README, step


def test_ci_fails_on_pytest_exit_5_and_enforces_coverage_floors() -> None:
    assert CI.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in CI
    assert '"$status" -eq 5' in CI
    assert "--cov-fail-under=80" in CI
    assert "scripts/check_coverage.py coverage.json" in CI


# --- Claude Desktop ---------------------------------------------------------------------------


def test_the_example_config_is_valid_json_naming_real_settings_and_matches_the_readme() -> None:
    config = json.loads(EXAMPLE.read_text())
    server = config["mcpServers"]["agentchat"]
    assert server["command"] == "agentchat-mcp"
    assert set(server["env"]) == {"AGENTCHAT_API_KEY", "AGENTCHAT_DB"}
    assert set(server["env"]) <= setting_env_names()
    embedded = [json.loads(block) for block in code_blocks(README, "json")]
    assert config in embedded, "README shows the example config as it is in the file"


@pytest.mark.anyio
async def test_the_example_config_works_as_written_once_agent_create_printed_a_key(tmp_path: Path) -> None:
    db = tmp_path / "agentchat.db"
    # README step 1, as written (a subprocess with the README's environment variable).
    step1 = re.search(r"^\s*(AGENTCHAT_DB=\S+) (agentchat-mcp agent create .+)$", README, re.MULTILINE)
    assert step1, "README step 1 creates the agent on the config's database"
    created = await anyio.run_process(
        [agentchat_command(), *step1.group(2).split()[1:]],
        env={**os.environ, "AGENTCHAT_DB": str(db)},
        check=False,
    )
    assert created.returncode == 0, created.stderr.decode()
    printed = json.loads(created.stdout)
    assert printed["name"] == "my-assistant" and printed["api_key"].startswith("acp_")
    # Step 2: the example config with its two placeholders filled in, started the way a client does.
    server = json.loads(EXAMPLE.read_text())["mcpServers"]["agentchat"]
    env = {
        name: value.replace("/ABSOLUTE/PATH/agentchat.db", str(db)) if name == "AGENTCHAT_DB" else printed["api_key"]
        for name, value in server["env"].items()
    }
    command = shutil.which(server["command"]) or agentchat_command()
    params = StdioServerParameters(command=command, args=server.get("args", []), env=env)
    with (tmp_path / "server.stderr").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
            me = structured(await client.call_tool("whoami", {}))
    assert (me["id"], me["name"], me["role"]) == (printed["id"], "my-assistant", "agent")


# --- names the README uses exist --------------------------------------------------------------


def test_every_tool_the_server_registers_is_in_the_readme_tool_table(tmp_path: Path) -> None:
    tools = anyio.run(build_server(Settings(db=tmp_path / "unused.db")).list_tools)
    missing = [t.name for t in tools if f"`{t.name}`" not in README]
    assert not missing, f"add these tools to the Tools table in README.md: {missing}"


def test_every_environment_variable_in_the_docs_is_a_real_setting() -> None:
    real = setting_env_names()
    texts = [README] + [p.read_text() for p in sorted((PROJECT_ROOT / "docs").glob("*.md"))]
    mentioned = {m for text in texts for m in re.findall(r"\b(?:AGENTCHAT|STRIPE)_[A-Z_]+\b", text)}
    assert mentioned
    test_only = {"AGENTCHAT_TEST_DB", "AGENTCHAT_TEST_DB_PREFIX"}  # the test suite's own (tests/support_db.py)
    assert not mentioned - real - test_only, f"documented but not settings: {sorted(mentioned - real - test_only)}"


def test_every_command_in_the_command_line_section_exists() -> None:
    section = README.split("## Command line", 1)[1].split("##", 1)[0]
    parser = build_parser()
    subparsers: Any = next(a for a in parser._actions if a.dest == "command")
    for line in code_blocks(section)[0].splitlines():
        words = line.split()
        assert words[0] == "agentchat-mcp"
        command = words[1].strip("[")
        for name in command.split("|"):
            assert name in subparsers.choices, f"agentchat-mcp {name} is in the README but not in the CLI"


def test_local_links_in_the_readme_point_at_files_that_exist() -> None:
    links = re.findall(r"\]\(([^)#]+)\)", README)
    local = [link for link in links if "://" not in link]
    assert local
    missing = [link for link in local if not (PROJECT_ROOT / link).exists()]
    assert not missing, missing


def test_the_demo_command_the_readme_gives_is_a_real_cli_command() -> None:
    done = subprocess.run([agentchat_command(), "demo", "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "--keep" in done.stdout


def test_every_serve_flag_is_documented_in_the_configuration_page() -> None:
    parser = build_parser()
    subparsers: Any = next(a for a in parser._actions if a.dest == "command")
    serve = subparsers.choices["serve"]
    flags = [
        opt for action in serve._actions for opt in action.option_strings if opt.startswith("--") and opt != "--help"
    ]
    page = (PROJECT_ROOT / "docs" / "configuration.md").read_text()
    missing = [flag for flag in flags if f"`{flag}" not in page]
    assert not missing, f"document these in docs/configuration.md: {missing}"


def test_every_test_the_security_doc_names_as_a_guard_exists() -> None:
    """docs/security.md names the test guarding each defect class; a renamed or deleted test fails here."""
    doc = (PROJECT_ROOT / "docs" / "security.md").read_text()
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", doc)
    assert len(named) >= 10
    missing = []
    for path, name in named:
        source = (PROJECT_ROOT / path).read_text()
        if not re.search(rf"^(async def|def|class) {name}\b|^{name} = ", source, re.MULTILINE):
            missing.append(f"{path}::{name}")
    assert missing == []


# --- every doc and every command is reachable from the README (issue 11, point 4) ------------------


def test_the_getting_started_guide_is_the_readmes_first_link() -> None:
    links = [link for link in re.findall(r"\]\(([^)#]+)\)", README) if "://" not in link]
    assert links[0] == "docs/getting-started.md"


def test_every_doc_is_linked_from_the_readme() -> None:
    docs = sorted(p.name for p in (PROJECT_ROOT / "docs").glob("*.md"))
    assert "peeks-and-money.md" in docs
    missing = [name for name in docs if f"](docs/{name})" not in README]
    assert missing == [], f"link these from README.md: {missing}"


def _leaf_commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> dict[int, str]:
    """id(parser) -> 'group action' for every command that runs something (an alias: the same parser)."""
    found: dict[int, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            named: dict[int, tuple[str, argparse.ArgumentParser]] = {}
            for name, child in action.choices.items():
                named.setdefault(id(child), (name, child))  # an alias comes after its command's name
            for name, child in named.values():
                found.update(_leaf_commands(child, (*words, name)))
            return found
    return {id(parser): " ".join(words)}


def test_the_command_line_section_lists_every_command() -> None:
    parser = build_parser()
    every = _leaf_commands(parser)
    commands: Any = next(a for a in parser._actions if a.dest == "command")
    section = README.split("## Command line", 1)[1].split("##", 1)[0]
    documented: set[int] = set()
    for line in code_blocks(section)[0].splitlines():
        words = [w.strip("[]") for w in line.split()[1:3]]
        for group in words[0].split("|"):
            child: Any = commands.choices[group]
            actions = [a for a in child._actions if isinstance(a, argparse._SubParsersAction)]
            if not actions:
                documented.add(id(child))
                continue
            for action in words[1].split("|"):
                documented.add(id(actions[0].choices[action]))
    missing = sorted(name for key, name in every.items() if key not in documented)
    assert missing == [], f"add these to the README's Command line section: {missing}"


# --- the MCP Inspector, as the README gives it (point 10) ----------------------------------------


def inspector_block() -> str:
    (block,) = [b for b in code_blocks(README, "sh") if "@modelcontextprotocol/inspector" in b]
    return block


def test_the_readme_gives_the_inspectors_cli_mode_and_the_node_it_needs() -> None:
    cli_lines = [line for line in inspector_block().splitlines() if " --cli " in line]
    assert cli_lines and all("--method" in line for line in cli_lines)
    assert "Node.js 22.19 or newer" in README


@pytest.mark.anyio
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed: it installs node 22 and the Inspector")
async def test_the_readmes_inspector_cli_command_works_as_written(tmp_path: Path) -> None:
    from tests.support_cli import shim_bin
    from tests.test_inspector import install_inspector

    home = await anyio.to_thread.run_sync(install_inspector)
    engines = json.loads((home / "node_modules/@modelcontextprotocol/inspector/package.json").read_text())["engines"]
    assert engines["node"] == ">=22.19.0", "the README's Node version is the one the Inspector declares"
    db = tmp_path / "agentchat.db"
    created = await anyio.run_process(
        [agentchat_command(), "agent", "create", "--name", "my-assistant"],
        env={**os.environ, "AGENTCHAT_DB": str(db)},
        check=False,
    )
    assert created.returncode == 0, created.stderr.decode()
    key = json.loads(created.stdout)["api_key"]
    (line,) = [line for line in inspector_block().splitlines() if " --cli " in line]
    filled = line.replace("/ABSOLUTE/PATH/agentchat.db", str(db)).replace("acp_...", key)
    bin_dir = shim_bin(tmp_path / "bin", home)
    env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), os.environ["PATH"]]), "HOME": str(tmp_path)}
    with anyio.fail_after(120):
        done = await anyio.run_process(["sh", "-c", filled], env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    assert result["structuredContent"]["name"] == "my-assistant"
