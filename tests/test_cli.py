"""The `agentchat-mcp` command as a person meets it: one clear line for every mistake, help for
every flag, --db wherever it is typed, and lists that give the ids other commands need."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from agentchat_mcp.cli import MAX_LISTED, build_parser
from tests import support_db
from tests.conftest import Hub
from tests.support_cli import cli, one_line

pytestmark = pytest.mark.anyio


# --- a bad database path: one line naming it and what to do (issue 11, point 3) -------------------

FIX = "set AGENTCHAT_DB (or --db) to"
COMMANDS = {
    "db status": ("db", "status"),
    "agent create": ("agent", "create", "--name", "x"),
    "serve (stdio)": ("serve",),
    "serve (http)": ("serve", "--transport", "http", "--port", "0"),
}


def bad_paths(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path given as AGENTCHAT_DB, the line a person sees)."""
    folder = tmp_path / "a-folder"
    folder.mkdir()
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a database\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    return {
        "a folder": (
            folder,
            f"error: the database path {folder} is a folder: {FIX} a file, e.g. {folder}/agentchat.db",
        ),
        "not SQLite": (
            notes,
            f"error: {notes} is not an SQLite database: {FIX} an agentchat database, or to a new file to create one",
        ),
        "under a file": (
            blocker / "agentchat.db",
            f"error: cannot create the database {blocker}/agentchat.db: {blocker} is a file, not a folder; "
            f"{FIX} a path in a folder you can write to",
        ),
    }


# Every kind through the store's own check (db status) and the server's start-up check (stdio); the
# other entries share those checks, so one kind each shows they are reached before anything else.
CASES = [
    *(
        (kind, command)
        for kind in ("a folder", "not SQLite", "under a file")
        for command in ("db status", "serve (stdio)")
    ),
    ("not SQLite", "agent create"),
    ("under a file", "serve (http)"),
]


@pytest.mark.parametrize(("kind", "command"), CASES)
def test_a_bad_database_path_is_one_line_from_every_command(tmp_path: Path, kind: str, command: str) -> None:
    tmp_path = tmp_path.resolve()
    db, expected = bad_paths(tmp_path)[kind]
    before = sorted(tmp_path.rglob("*"))
    done = cli(*COMMANDS[command], AGENTCHAT_DB=str(db))
    assert one_line(done) == expected
    assert sorted(tmp_path.rglob("*")) == before  # nothing made beside it: no server secret, no database


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder: run the tests as a user to check this")
def test_a_database_in_a_folder_without_write_permission_is_one_line(tmp_path: Path) -> None:
    locked = tmp_path.resolve() / "locked"
    locked.mkdir(mode=0o500)
    try:
        done = cli("db", "status", AGENTCHAT_DB=str(locked / "agentchat.db"))
    finally:
        locked.chmod(0o700)
    assert one_line(done) == (
        f"error: cannot create the database {locked}/agentchat.db: no permission to write in {locked}; "
        f"{FIX} a path in a folder you can write to"
    )


def test_an_invalid_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    done = cli(
        "db", "status", AGENTCHAT_DB=str(tmp_path / "a.db"), AGENTCHAT_PAYMENTS="card", AGENTCHAT_LOG_LEVEL="loud"
    )
    assert one_line(done) == (
        "error: AGENTCHAT_PAYMENTS is not valid: Input should be 'ledger' or 'stripe'; "
        "AGENTCHAT_LOG_LEVEL is not valid: 'loud' is not a log level; use one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    )


# --- users list / agents list: the ids credits grant needs (point 4) -----------------------------


async def test_agents_list_and_users_list_print_ids_newest_first_one_json_line_each(hub: Hub) -> None:
    alice = await hub.register_agent("alice", peek_price="2.50")
    bob = await hub.register_agent("bob")
    uma = await hub.register_user("uma")
    db = str(hub.settings.db)
    agents = cli("agents", "list", AGENTCHAT_DB=db, AGENTCHAT_SECRET_FILE=str(hub.settings.secret_file))
    assert agents.returncode == 0, agents.stderr
    listed = [json.loads(line) for line in agents.stdout.splitlines()]
    assert [(a["id"], a["name"], a["peek_price"]) for a in listed] == [
        (bob.id, "bob", "1.00"),
        (alice.id, "alice", "2.50"),
    ]
    assert all(list(a) == ["id", "name", "peek_price", "created_at"] for a in listed)
    users = cli("users", "list", "--db", db, AGENTCHAT_SECRET_FILE=str(hub.settings.secret_file))
    assert users.returncode == 0, users.stderr
    (user,) = [json.loads(line) for line in users.stdout.splitlines()]
    assert list(user) == ["id", "name", "created_at"] and (user["id"], user["name"]) == (uma.id, "uma")
    assert user["created_at"].endswith("Z")


async def test_a_list_is_bounded_by_limit_and_says_what_it_left_out(hub: Hub) -> None:
    for name in ("ann", "alice", "bob"):
        await hub.register_agent(name)
    env = {"AGENTCHAT_DB": support_db.db_value(hub.settings.db), "AGENTCHAT_SECRET_FILE": str(hub.settings.secret_file)}
    two = cli("agent", "list", "--limit", "2", **env)
    assert [json.loads(line)["name"] for line in two.stdout.splitlines()] == ["bob", "alice"]
    assert two.stderr.splitlines() == [
        f"2 of 3 agents shown, newest first; --limit (up to {MAX_LISTED}) or --name shows others"
    ]
    named = cli("agents", "list", "--name", "AL", **env)
    assert [json.loads(line)["name"] for line in named.stdout.splitlines()] == ["alice"] and named.stderr == ""
    nobody = cli("users", "list", **env)
    assert nobody.returncode == 0 and nobody.stdout == ""
    assert nobody.stderr.splitlines() == [f"no users in {support_db.shown(hub.settings.db)}"]
    too_many = cli("agents", "list", "--limit", str(MAX_LISTED + 1), **env)
    assert too_many.returncode == 2 and too_many.stdout == ""
    assert too_many.stderr.splitlines()[-1] == (
        f"agentchat-mcp agent list: error: argument --limit: must be a whole number from 1 to {MAX_LISTED}, "
        f"not {MAX_LISTED + 1}"
    )


# --- rough edges (point 10) ---------------------------------------------------------------------


def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser under `parser` (each once: an alias names the same parser), itself included."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += parsers(child)
    return found


def test_every_option_of_every_command_has_help() -> None:
    missing = [
        f"{p.prog} {action.option_strings[0]}"
        for p in parsers(build_parser())
        for action in p._actions
        if action.option_strings and not action.help
    ]
    assert missing == []


def test_serve_help_explains_transport_host_and_port() -> None:
    done = cli("serve", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())  # argparse wraps lines
    assert "--transport {stdio,http,sse} stdio: one client that starts this process (desktop apps)" in text
    assert "--host HOST address the hub listens on (default: 127.0.0.1)" in text
    assert "--port PORT port the hub listens on; 0 picks a free one (default: 8765)" in text


def test_db_is_accepted_after_the_command_as_before_it(tmp_path: Path) -> None:
    db = tmp_path / "after.db"
    elsewhere = {"AGENTCHAT_DB": str(tmp_path / "ignored.db")}
    after = cli("db", "upgrade", "--db", str(db), **elsewhere)
    assert after.returncode == 0, after.stderr
    statuses = [
        cli(*args, **elsewhere) for args in (("db", "status", "--db", str(db)), ("--db", str(db), "db", "status"))
    ]
    assert statuses[0].stdout == statuses[1].stdout and json.loads(statuses[0].stdout)["up_to_date"] is True
    assert not (tmp_path / "ignored.db").exists()


def test_a_peek_price_out_of_range_is_an_argparse_error_exit_2(tmp_path: Path) -> None:
    done = cli("agent", "create", "--name", "cheap", "--peek-price", "0.10", AGENTCHAT_DB=str(tmp_path / "a.db"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines()[0].startswith("usage: agentchat-mcp agent create")
    assert done.stderr.splitlines()[-1] == (
        "agentchat-mcp agent create: error: argument --peek-price: must be from 0.50 to 500.00 USD, not 0.10"
    )
    words = cli("agent", "create", "--name", "cheap", "--peek-price", "two", AGENTCHAT_DB=str(tmp_path / "a.db"))
    assert words.stderr.splitlines()[-1] == (
        "agentchat-mcp agent create: error: argument --peek-price: must be USD like 2.50, not 'two'"
    )
    assert not (tmp_path / "a.db").exists()


def test_create_help_uses_the_right_article() -> None:
    for role, line in (
        ("agent", "create an agent; prints its id and API key once"),
        ("user", "create a user; prints its id and API key once"),
        ("admin", "create an admin; prints its id and API key once"),
    ):
        done = cli(role, "--help")
        assert line in " ".join(done.stdout.split()), done.stdout


@pytest.mark.parametrize(
    "command", [("credits", "grant", "usr_" + "0" * 20, "5.00"), ("agents", "list"), ("secrets", "status")]
)
def test_a_secret_file_others_can_read_is_one_line_from_the_commands_that_use_it(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    secret = tmp_path.resolve() / "agentchat.secret"
    secret.write_text("v1 " + "ab" * 32 + "\n")
    secret.chmod(0o644)
    done = cli(*command, AGENTCHAT_DB=str(tmp_path / "a.db"))
    assert one_line(done) == f"error: {secret} is readable by other users; run: chmod 600 {secret}"


async def test_a_backup_or_schema_export_to_a_place_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    tmp_path = tmp_path.resolve()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    env = {"AGENTCHAT_DB": str(tmp_path / "src.db")}
    backup = cli("db", "backup", str(blocker / "backup.db"), **env)
    assert one_line(backup) == (
        f"error: could not back up to {blocker}/backup.db ({blocker} is a file, not a folder): give a path in a "
        "folder you can write to"
    )
    export = cli("schemas", "export", "--out", str(blocker / "schemas"), **env)
    assert one_line(export) == (
        f"error: could not write schemas to {blocker}/schemas ({blocker} is a file, not a folder): give --out a "
        "folder you can write to"
    )
