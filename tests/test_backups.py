"""Backups that are tested: `db backup --verify`, `db verify` and `db restore` through the CLI, on a
database with money (a captured peek, a refund) and encrypted messages; and copies with flipped
bytes, which verify refuses in one line."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from agentchat_mcp.store.engine import backup_file
from tests.conftest import Hub, ledger_total
from tests.support_cli import cli, one_line
from tests.test_peeks import balance, call
from tests.test_refunds import peek_at, refund

pytestmark = [pytest.mark.anyio, pytest.mark.sqlite_only("backups copy the SQLite file; PostgreSQL has pg_dump")]


def env_for(hub: Hub, db: Path | None = None) -> dict[str, str]:
    return {
        "AGENTCHAT_DB": str(db or hub.settings.db),
        "AGENTCHAT_SECRET_FILE": str(hub.settings.resolved_secret_file()),
    }


async def test_backup_verify_and_restore_make_a_full_cycle_with_money_and_messages(hub: Hub, tmp_path: Path) -> None:
    agent, user, conversation_id, peek_id = await peek_at(hub, credit="20.00")
    await refund(hub, peek_id)
    async with hub.client(user) as u:
        await call(u, "request_peek", conversation_id=conversation_id, max_price="100.00")
        before = await balance(u)
    copy = tmp_path / "backups" / "agentchat.db"

    done = cli("db", "backup", str(copy), "--verify", **env_for(hub))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["verified"] and summary["integrity_check"] == "ok" and summary["ledger_balanced"]
    assert summary["rows"]["messages"] == 1 and summary["rows"]["peeks"] == 2
    assert summary["message_signatures_checked"] == 1 and "read back decrypted" in summary["canary"]
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert rows_of(hub.settings.db, "SELECT COUNT(*) FROM principals") == rows_of(
        copy, "SELECT COUNT(*) FROM principals"
    )

    # Restore into a fresh place, then refuse to overwrite it without --force.
    target = tmp_path / "restored" / "agentchat.db"
    restored = cli("db", "restore", str(copy), **env_for(hub, target))
    assert restored.returncode == 0, restored.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    refused = cli("db", "restore", str(copy), **env_for(hub, target))
    assert one_line(refused) == (
        f"error: {target} already holds a database: stop the servers that use it and add --force to overwrite it"
    )
    assert cli("db", "restore", str(copy), "--force", **env_for(hub, target)).returncode == 0

    # The restored database serves the same people: balances, and messages their own keys open.
    hub.settings = hub.settings.model_copy(update={"db": target})
    async with hub.client(user) as u, hub.client(agent) as a:
        assert await balance(u) == before
        page = await call(a, "read_messages", conversation_id=conversation_id)
        assert [m["text"] for m in page["messages"]] == ["hi"]
    assert ledger_total(hub) == 0


def rows_of(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        found = conn.execute(sql).fetchall()
    conn.close()
    return found


def flip(path: Path, offset: int, count: int = 1) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


async def test_verify_says_in_one_line_that_a_copy_with_flipped_bytes_is_bad(hub: Hub, tmp_path: Path) -> None:
    await peek_at(hub)
    good = tmp_path / "good.db"
    backup_file(hub.settings.db, good)
    assert cli("db", "verify", str(good), **env_for(hub)).returncode == 0

    # Bytes flipped in a message's ciphertext: SQLite cannot tell (no page checksums); the signature can.
    ((sealed, conversation_id, seq),) = rows_of(good, "SELECT sealed, conversation_id, seq FROM messages")
    in_message = tmp_path / "in-message.db"
    in_message.write_bytes(good.read_bytes())
    flip(in_message, good.read_bytes().index(bytes(sealed)) + len(sealed) // 2)
    assert one_line(cli("db", "verify", str(in_message), **env_for(hub))) == (
        f"error: backup {in_message} failed verification: message {seq} of {conversation_id} does not match its "
        "sender's signature (altered bytes)"
    )

    # Bytes flipped in the b-tree structure: SQLite's own checks catch it.
    page_size = rows_of(good, "PRAGMA page_size")[0][0]
    assert isinstance(page_size, int)
    in_structure = tmp_path / "in-structure.db"
    in_structure.write_bytes(good.read_bytes())
    for page in range(1, 6):
        flip(in_structure, page * page_size, 12)
    line = one_line(cli("db", "verify", str(in_structure), **env_for(hub)))
    assert line.startswith(f"error: backup {in_structure} failed verification: ")
    assert "integrity_check" in line or "not a sound SQLite database" in line


async def test_verify_and_restore_refuse_a_missing_file_or_the_database_itself(hub: Hub, tmp_path: Path) -> None:
    await hub.register_user("uma")
    missing = tmp_path / "nope.db"
    assert one_line(cli("db", "verify", str(missing), **env_for(hub))) == (
        f"error: backup {missing} does not exist (or is not a file): give the path of a backup file"
    )
    db = hub.settings.db.resolve()
    assert one_line(cli("db", "restore", str(db), "--force", **env_for(hub))) == (
        f"error: {db} is the database itself: give the path of a backup file"
    )
    assert os.path.getsize(db) > 0
