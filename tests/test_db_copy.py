"""`agentchat-mcp db copy --to postgresql://...`: an embedded store moved into a real, empty PostgreSQL
database, the same bytes, checked, and refused anywhere it could lose or mix data."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from agentchat_mcp.settings import Settings
from tests.conftest import Hub, run_cli, structured
from tests.test_peeks import call, scene

pytestmark = [pytest.mark.anyio, pytest.mark.sqlite_only("copies an embedded SQLite store into PostgreSQL")]

SERVER = "postgresql://postgres@127.0.0.1:5432"
HIDDEN = "hunter2-not-shown"  # a password that must never be printed


@pytest.fixture
async def empty_pg() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database of this test's own; dropped afterwards."""
    name = f"copy_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(f"{SERVER}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"{SERVER}/{name}"
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def sqlite_rows(hub: Hub, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(hub.settings.db) as db:
        found = db.execute(sql).fetchall()
    db.close()
    return found


async def pg_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


def env_for(hub: Hub) -> dict[str, str]:
    return {"AGENTCHAT_DB": str(hub.settings.db), "AGENTCHAT_SECRET_FILE": str(hub.settings.resolved_secret_file())}


async def test_a_copy_holds_the_same_bytes_balances_and_a_second_copy_is_refused(hub: Hub, empty_pg: str) -> None:
    s = await scene(hub)
    async with hub.client(s.user) as u, hub.client(s.bob) as b:
        await call(b, "send_message", conversation_id=s.conversation_id, text="a secret worth copying")
        await call(u, "request_peek", conversation_id=s.conversation_id, max_price="3.83")

    copied = run_cli("db", "copy", "--to", empty_pg, env=env_for(hub))
    assert copied.returncode == 0, copied.stderr
    assert "AGENTCHAT_SECRET_FILE=" + str(hub.settings.resolved_secret_file()) in copied.stderr
    summary = json.loads(copied.stdout)
    assert summary["rows_identical"] and summary["ledger_balanced"]
    assert summary["rows"]["messages"] == 2 and summary["rows"]["peeks"] == 1

    # The auditor's view, outside our code: ciphertexts, wrapped keys and ledger lines are byte-identical.
    for sql in (
        "SELECT id, conversation_id, seq, sealed, signature FROM messages ORDER BY id",
        "SELECT id, wrapped_private, box_public, api_key_hash FROM principals ORDER BY id",
        "SELECT id, entry_id, account, amount_cents FROM ledger_lines ORDER BY id",
    ):
        theirs = [tuple(bytes(v) if isinstance(v, memoryview | bytes) else v for v in r) for r in sqlite_rows(hub, sql)]
        assert await pg_rows(empty_pg, sql) == theirs
    assert (await pg_rows(empty_pg, "SELECT SUM(amount_cents) FROM ledger_lines"))[0][0] == 0
    # Sequences go on after the copied ids: the next ledger line will not collide.
    next_id = (await pg_rows(empty_pg, "SELECT nextval(pg_get_serial_sequence('ledger_lines', 'id'))"))[0][0]
    assert next_id == sqlite_rows(hub, "SELECT MAX(id) FROM ledger_lines")[0][0] + 1

    again = run_cli("db", "copy", "--to", empty_pg, env=env_for(hub))
    assert again.returncode != 0
    assert again.stderr.count("\n") == 1 and "is not empty" in again.stderr and "nothing was changed" in again.stderr
    assert (await pg_rows(empty_pg, "SELECT COUNT(*) FROM messages"))[0][0] == 2


async def test_a_failed_copy_leaves_the_target_empty(hub: Hub, empty_pg: str) -> None:
    """A ledger that does not balance is refused after the rows went in: the whole copy rolls back."""
    s = await scene(hub)
    assert s.conversation_id
    with sqlite3.connect(hub.settings.db) as db:  # corrupt the source's books behind the server's back
        db.execute(
            "UPDATE ledger_lines SET amount_cents = amount_cents + 1 WHERE id = (SELECT MIN(id) FROM ledger_lines)"
        )
    db.close()
    failed = run_cli("db", "copy", "--to", empty_pg, env=env_for(hub))
    assert failed.returncode != 0 and "does not balance" in failed.stderr and "Traceback" not in failed.stderr
    assert await pg_rows(empty_pg, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == []


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("mysql://root@127.0.0.1/agentchat", "must be a PostgreSQL URL"),
        (f"postgresql+psycopg://postgres:{HIDDEN}@127.0.0.1/x", "must be a PostgreSQL URL"),
        (f"postgresql://postgres:{HIDDEN}@127.0.0.1:1/agentchat", "could not copy to"),
    ],
)
async def test_a_target_that_cannot_be_used_is_one_line_without_its_password(hub: Hub, target: str, says: str) -> None:
    await hub.register_user("someone")
    out = run_cli("db", "copy", "--to", target, env=env_for(hub))
    assert out.returncode != 0 and says in out.stderr and out.stderr.count("\n") == 1
    assert HIDDEN not in out.stderr + out.stdout


async def test_agents_keep_their_keys_after_the_copy(hub: Hub, empty_pg: str) -> None:
    """The point of moving up: the same API keys read the old conversation and go on talking."""
    s = await scene(hub)
    assert run_cli("db", "copy", "--to", empty_pg, env=env_for(hub)).returncode == 0

    moved = Hub(hub.tmp_path)
    moved.settings = Settings(db=empty_pg, secret_file=hub.settings.resolved_secret_file())
    async with moved.client(s.bob) as b, moved.client(s.alice) as a:
        history = await call(b, "read_messages", conversation_id=s.conversation_id)
        assert [m["text"] for m in history["messages"]] == ["hi bob"]
        structured(await b.call_tool("send_message", {"conversation_id": s.conversation_id, "text": "on postgres"}))
        after = await call(a, "read_messages", conversation_id=s.conversation_id)
        assert [m["text"] for m in after["messages"]] == ["hi bob", "on postgres"]
