"""The store: migrations match tables.py, WAL, the db CLI, backups that restore, racing starts, pip install."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from mcp import Client
from sqlalchemy import text
from sqlalchemy.engine import Connection

from agentchat_mcp.store import check_path, migrations, open_store
from agentchat_mcp.store.tables import metadata
from tests import support_db
from tests.conftest import PROJECT_ROOT, Hub, run_cli, structured

pytestmark = pytest.mark.anyio


def _plain_default(text: str | None) -> str | None:
    if text is None:
        return None
    text = re.sub(r"^\((.*)\)$", r"\1", text.strip())
    return re.sub(r"""^["']?'?(.*?)'?["']?$""", r"\1", text)


def _same_default(
    context: Any,
    inspected_column: Any,
    metadata_column: Any,
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool:
    """True when the defaults differ; SQLite reflects '' as "''", which alembic's own check misreads."""
    return _plain_default(inspected_default) != _plain_default(rendered_metadata_default)


def schema_drift(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": _same_default})
    return list(compare_metadata(context, metadata))


async def test_the_migrations_create_exactly_the_schema_of_tables_py(tmp_path: Path) -> None:
    async with open_store(tmp_path / "fresh.db") as store:
        async with store.read() as conn:
            drift = await conn.run_sync(schema_drift)
        assert await migrations.current_revision(store) == migrations.head_revision()
    assert drift == [], "storage/versions and agentchat_mcp/store/tables.py disagree: " + "\n".join(map(str, drift))


async def test_the_drift_check_would_notice_a_missing_column(tmp_path: Path) -> None:
    async with open_store(tmp_path / "fresh.db") as store:
        async with store.write() as conn:
            await conn.exec_driver_sql("ALTER TABLE conversations DROP COLUMN last_message_at")
        async with store.read() as conn:
            drift = await conn.run_sync(schema_drift)
    assert any("last_message_at" in str(d) for d in drift)


async def test_the_database_is_in_wal_mode_with_foreign_keys_on(tmp_path: Path) -> None:
    async with open_store(tmp_path / "wal.db") as store, store.read() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
        assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() >= 1000
    with sqlite3.connect(tmp_path / "wal.db") as raw:  # persistent: any other opener sees WAL too
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    raw.close()


# --- the db CLI --------------------------------------------------------------------------------------


def status(db: Path, **kwargs: Any) -> dict[str, Any]:
    done = run_cli("--db", str(db), "db", "status", **kwargs)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_db_status_and_upgrade_report_and_move_the_revision(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    before = status(db)
    assert before["revision"] is None and before["up_to_date"] is False
    assert before["head"] == migrations.head_revision()
    upgraded = run_cli("--db", str(db), "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    after = status(db, env={**os.environ, "AGENTCHAT_DB": str(db.with_name("ignored.db"))})  # --db wins
    assert after == {**before, "revision": migrations.head_revision(), "up_to_date": True}


@pytest.mark.sqlite_only("backups copy the SQLite file; PostgreSQL has pg_dump")
async def test_a_backup_made_by_the_cli_restores_with_the_same_data(hub: Hub, tmp_path: Path) -> None:
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    async with hub.client(alice) as a:
        conv = structured(
            await a.call_tool(
                "start_conversation", {"participants": [bob.id], "topic": "backup", "first_message": "one"}
            )
        )["conversation"]["id"]
        for text in ("two", "three"):
            structured(await a.call_tool("send_message", {"conversation_id": conv, "text": text}))
        backup = tmp_path / "elsewhere" / "backup.db"
        done = run_cli("--db", str(hub.settings.db), "db", "backup", str(backup))  # online: alice's server is running
    assert done.returncode == 0, done.stderr
    assert str(backup.resolve()) in done.stdout

    restored = Hub(tmp_path / "restored")
    restored.settings = hub.settings.model_copy(update={"db": backup})  # same server secret, restored file
    async with restored.client(bob) as b:
        page = structured(await b.call_tool("read_messages", {"conversation_id": conv}))
        assert [m["text"] for m in page["messages"]] == ["one", "two", "three"]
        assert structured(await b.call_tool("whoami", {}))["id"] == bob.id
        structured(await b.call_tool("send_message", {"conversation_id": conv, "text": "four, on the restored copy"}))
    async with open_store(backup, upgrade=False) as store:
        assert await migrations.current_revision(store) == migrations.head_revision()


async def test_db_backup_to_an_unwritable_place_fails_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    db = tmp_path / "src.db"
    async with open_store(db):
        pass
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = run_cli("--db", str(db), "db", "backup", str(blocker / "backup.db"))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "backup" in done.stderr.lower()


# --- several processes on one new file ---------------------------------------------------------------


async def test_processes_starting_at_once_on_a_fresh_database_all_succeed(tmp_path: Path) -> None:
    """Migrations and the server secret are created once, whoever comes first; the rest wait and use them."""
    env = {**os.environ, "AGENTCHAT_DB": str(tmp_path / "race" / "agentchat.db")}
    env.pop("AGENTCHAT_SECRET_FILE", None)
    commands = [[sys.executable, "-m", "agentchat_mcp", "agent", "create", "--name", f"racer-{i}"] for i in range(2)]
    started = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        for c in commands
    ]
    results = [(*p.communicate(timeout=120), p.returncode) for p in started]
    for _, err, code in results:
        assert code == 0, err
    assert len({json.loads(out)["id"] for out, _, _ in results}) == 2
    async with open_store(tmp_path / "race" / "agentchat.db", upgrade=False) as store:
        assert await migrations.current_revision(store) == migrations.head_revision()
    secret = tmp_path / "race" / "agentchat.secret"
    assert secret.stat().st_mode & 0o777 == 0o600


def _block_migration_0003(db: Path) -> None:
    """A new database file holding a table that migration 0003 creates: that step will fail."""
    with sqlite3.connect(db) as raw:
        raw.execute("CREATE TABLE payment_customers (x INTEGER)")
    raw.close()


@pytest.mark.parametrize("driver", ["inline", "aiosqlite"])
async def test_a_migration_that_fails_midway_leaves_the_database_as_it_was(tmp_path: Path, driver: str) -> None:
    """The upgrade is one transaction: a failing step undoes the steps before it too, so the next
    start (once the cause is fixed) begins from a known revision instead of a half-built schema."""
    db = tmp_path / "agentchat.db"
    _block_migration_0003(db)
    with pytest.raises(migrations.MigrationFailed, match="payment_customers already exists"):
        async with open_store(db, driver=driver):
            pass
    with sqlite3.connect(db) as raw:
        tables = {name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    raw.close()
    assert tables == {"payment_customers"}  # neither 0001's tables nor a version stamp were kept
    with sqlite3.connect(db) as raw:  # the operator clears the obstacle; the next start migrates
        raw.execute("DROP TABLE payment_customers")
    raw.close()
    async with open_store(db, driver=driver) as store:
        assert await migrations.current_revision(store) == migrations.head_revision()


@pytest.mark.parametrize(
    "command",
    [
        ("agent", "create", "--name", "x"),
        ("serve", "--transport", "stdio"),
        ("serve", "--transport", "http", "--port", "0"),
    ],
)
def test_a_failing_migration_is_one_plain_line_from_every_command(tmp_path: Path, command: tuple[str, ...]) -> None:
    db = tmp_path / "agentchat.db"
    _block_migration_0003(db)
    serve = command[0] == "serve"  # a server's start-up, stdio or HTTP: the real process
    done = run_cli(*command, env={**os.environ, "AGENTCHAT_DB": str(db)}, timeout=60, process=serve)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"error: could not bring the database {db} to schema {migrations.head_revision()}" in done.stderr
    assert "table payment_customers already exists. Nothing was changed; it is still at no schema (new)." in done.stderr


async def test_two_servers_starting_at_once_on_a_fresh_database_both_serve(tmp_path: Path) -> None:
    hub = Hub(tmp_path)
    first, second = hub.client(), hub.client()
    async with first as a, second as b:
        for client, name in ((a, "first"), (b, "second")):
            got = structured(await client.call_tool("register_agent", {"name": name, "peek_price": "1.00"}))
            assert got["id"].startswith("agt_")


# --- pip install ., then run from anywhere -----------------------------------------------------------


def _hatchling_available() -> bool:
    try:
        import hatchling  # noqa: F401
    except ImportError:
        return False
    return True


def test_a_non_editable_install_finds_its_migrations_from_any_directory(tmp_path: Path) -> None:
    started = time.monotonic()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # The dependencies come from the test's own environment; a plain path line does not run that
    # environment's .pth files, so its editable agentchat_mcp stays out of sight.
    (purelib / "_deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps"]
    if _hatchling_available():
        install.append("--no-build-isolation")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AGENTCHAT_DB", "AGENTCHAT_SECRET_FILE")}
    done = subprocess.run(
        [*install, str(PROJECT_ROOT)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr

    where = subprocess.run(
        [python, "-c", "import agentchat_mcp.store.migrations as m; print(m.__file__); print(m.storage_dir())"],
        capture_output=True,
        text=True,
        env=env,
        cwd="/tmp",
        check=True,
    ).stdout.split()
    assert all(str(purelib) in line for line in where), where
    assert not (purelib / "storage").exists() and not (purelib / "schemas").exists()

    db = tmp_path / "installed.db"
    script = venv / "bin" / "agentchat-mcp"
    for args in (["db", "upgrade"], ["db", "status"]):
        run = subprocess.run(
            [script, "--db", str(db), *args], capture_output=True, text=True, env=env, cwd="/tmp", check=False
        )
        assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "db": str(db.resolve()),
        "revision": migrations.head_revision(),
        "head": migrations.head_revision(),
        "up_to_date": True,
    }
    print(f"pip install . and run from /tmp: {time.monotonic() - started:.1f} s")


async def test_the_aiosqlite_driver_serves_the_same_conversation(tmp_path: Path) -> None:
    """The threaded aiosqlite path (the shape of the PostgreSQL store) stays a working option."""
    from tests.conftest import Hub, structured

    hub = Hub(tmp_path)
    hub.settings = hub.settings.model_copy(update={"sqlite_driver": "aiosqlite"})
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    async with hub.client(alice) as a, hub.client(bob) as b:
        started = await a.call_tool(
            "start_conversation", {"participants": [bob.id], "topic": "t", "first_message": "hi"}
        )
        conv = structured(started)["conversation"]["id"]
        page = structured(await b.call_tool("read_messages", {"conversation_id": conv}))
    assert [m["text"] for m in page["messages"]] == ["hi"]


STORES = ["inline", "aiosqlite", pytest.param("postgres", marks=pytest.mark.postgres_only)]


def scratch_db(tmp_path: Path, name: str, driver: str) -> Any:
    """An SQLite file for the SQLite drivers; the test's PostgreSQL database for 'postgres'."""
    return support_db.database_for(tmp_path / name) if driver == "postgres" else tmp_path / name


@pytest.mark.parametrize("driver", STORES)
async def test_planned_statements_read_and_write_like_sqlalchemy(tmp_path: Path, driver: str) -> None:
    """fetch/run (the send path's fast lane) keep SQLAlchemy's meaning: literals bound, values
    converted (a Boolean comes back a bool), rows by column name, the new row's id."""
    from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, bindparam, insert, select, update

    scratch = MetaData()
    notes = Table(
        "plan_notes",
        scratch,
        Column("id", Integer, primary_key=True),
        Column("body", String, nullable=False),
        Column("pinned", Boolean, nullable=False),
        Column("kind", String, nullable=False, default="note"),  # a Python-side default
    )
    async with open_store(scratch_db(tmp_path, "plan.db", driver), driver=driver) as store:
        async with store.write() as conn:
            await conn.run_sync(scratch.create_all)
            first = await conn.run(insert(notes), {"body": "a", "pinned": True, "kind": "note"})
            second = await conn.run(insert(notes), {"body": "b", "pinned": False, "kind": "todo"})
            touched = await conn.run(
                update(notes).where(notes.c.pinned.is_(False)).values(body=bindparam("text")), {"text": "b2"}
            )
            with pytest.raises(ValueError, match="kind"):  # a plan cannot run Python-side defaults
                await conn.run(insert(notes), {"body": "c", "pinned": False})
        async with store.read() as conn:
            rows = await conn.fetch(select(notes.c.id, notes.c.body, notes.c.pinned).where(notes.c.kind == "note"), {})
            pinned = await conn.fetch(select(notes.c.body).where(notes.c.pinned == bindparam("p")), {"p": False})
    assert (first.inserted_id, second.inserted_id, touched.rowcount) == (1, 2, 1)
    assert [(r.id, r.body, r.pinned) for r in rows] == [(1, "a", True)]
    assert rows[0].pinned is True
    assert [r.body for r in pinned] == ["b2"]


@pytest.mark.parametrize("driver", STORES)
async def test_a_failed_write_leaves_nothing_behind_and_the_next_write_works(tmp_path: Path, driver: str) -> None:
    """A unit of work that fails half-way rolls back whole: planned and SQLAlchemy statements alike
    (the inline driver begins and commits on the driver itself), and the connection serves on."""
    from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select

    scratch = MetaData()
    notes = Table("tx_notes", scratch, Column("id", Integer, primary_key=True), Column("body", String))
    db = scratch_db(tmp_path, "tx.db", driver)
    async with open_store(db, driver=driver) as store:
        async with store.write() as conn:
            await conn.run_sync(scratch.create_all)
        for joins_sqlalchemy in (False, True):
            with pytest.raises(RuntimeError, match="half-way"):
                async with store.write() as conn:
                    await conn.run(insert(notes), {"body": "planned"})
                    if joins_sqlalchemy:
                        await conn.execute(insert(notes).values(body="core"))
                    raise RuntimeError("failed half-way")
        async with store.write() as conn:
            await conn.run(insert(notes), {"body": "kept"})
            await conn.execute(insert(notes).values(body="kept too"))
        async with store.read() as conn:
            bodies = [r.body for r in await conn.fetch(select(notes.c.body).order_by(notes.c.id), {})]
    assert bodies == ["kept", "kept too"]
    assert [row[0] for row in support_db.query(db, "SELECT body FROM tx_notes ORDER BY id")] == bodies


# --- file modes: the database holds every key hash and sealed message, as private as the secret beside it ---


def _modes(db: Path) -> dict[str, int]:
    """Permission bits of the database and whichever of its -wal, -shm and -journal files exist now."""
    files = [db, *(db.with_name(db.name + suffix) for suffix in ("-wal", "-shm", "-journal"))]
    return {f.name: stat.S_IMODE(f.stat().st_mode) for f in files if f.exists()}


@pytest.mark.sqlite_only("file modes of the SQLite file and its WAL")
async def test_a_fresh_database_made_by_the_cli_and_its_wal_and_shm_are_0600(tmp_path: Path) -> None:
    # Under the usual umask (022) SQLite made all three 0644: readable by every local user.
    hub = Hub(tmp_path / "fresh")
    env = {**os.environ, "AGENTCHAT_DB": str(hub.settings.db), "AGENTCHAT_SECRET_FILE": str(hub.settings.secret_file)}
    done = run_cli("agent", "create", "--name", "first", env=env)
    assert done.returncode == 0, done.stderr
    assert _modes(hub.settings.db)["agentchat.db"] == 0o600
    async with Client(hub.stdio(None)) as client:  # a running server: the WAL and shared memory are open
        structured(await client.call_tool("register_agent", {"name": "second", "peek_price": "1.00"}))
        live = _modes(hub.settings.db)
    assert live == {"agentchat.db": 0o600, "agentchat.db-wal": 0o600, "agentchat.db-shm": 0o600}


async def test_an_existing_database_others_can_read_is_made_0600_with_a_warning(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    async with open_store(db):
        pass
    db.chmod(0o644)  # as every earlier version left it
    done = run_cli("--db", str(db), "db", "status")
    assert done.returncode == 0, done.stderr
    assert _modes(db) == {"old.db": 0o600}
    assert str(db) in done.stderr and "0600" in done.stderr, done.stderr
    assert done.stdout.strip() and "Traceback" not in done.stderr


@pytest.mark.sqlite_only("backups copy the SQLite file; PostgreSQL has pg_dump")
async def test_a_backup_is_as_private_as_the_database(hub: Hub, tmp_path: Path) -> None:
    await hub.register_agent("alice")
    backup = tmp_path / "elsewhere" / "backup.db"
    done = run_cli("--db", str(hub.settings.db), "db", "backup", str(backup))
    assert done.returncode == 0, done.stderr
    assert _modes(backup) == {"backup.db": 0o600}


async def test_checking_a_database_path_keeps_the_locks_of_this_processs_open_connections(tmp_path: Path) -> None:
    """check_path must not open the file itself: closing any descriptor of it drops this process's POSIX
    locks, and the next process to close its connection then deletes the WAL under our open store."""
    db = tmp_path / "locks.db"
    async with open_store(db) as store:
        async with store.write() as conn:
            await conn.execute(text("CREATE TABLE canary (x INTEGER)"))
        wal = db.with_name(db.name + "-wal")
        assert wal.stat().st_size > 0
        check_path(db)
        # Python source for another process (the path as a literal), not SQL built from input.
        other = f"import sqlite3; c = sqlite3.connect({str(db)!r}); c.execute('SELECT count(*) FROM sqlite_master').fetchall(); c.close()"  # noqa: S608
        subprocess.run([sys.executable, "-c", other], check=True)
        assert wal.exists(), "another process's close deleted the WAL: our locks were gone"


def test_the_head_read_without_alembic_is_alembics_own_head() -> None:
    """head_revision() parses the scripts (the hub then starts without loading alembic): same answer."""
    from alembic.script import ScriptDirectory

    assert migrations.head_revision() == ScriptDirectory.from_config(migrations.alembic_config()).get_current_head()
