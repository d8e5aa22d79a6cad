"""The test database: an SQLite file in tmp_path, or, with AGENTCHAT_TEST_DB set, a fresh PostgreSQL database.

    AGENTCHAT_TEST_DB=postgresql://127.0.0.1/postgres pytest     # the whole suite on PostgreSQL

AGENTCHAT_TEST_DB names a database to connect to for CREATE and DROP DATABASE (the server's
`postgres` database will do). Each worker migrates a template database once, then each test
gets its own copy (CREATE DATABASE ... TEMPLATE, tens of ms), emptied when the test ends and
handed to the next test (TRUNCATE, as fresh as a copy: ids start at 1 again); the databases and the
template are dropped when the worker ends. Every name starts with AGENTCHAT_TEST_DB_PREFIX
(default agentchat_test_), so what a crashed run left behind is found with
`python -m tests.support_db --drop-leftovers`.

Tests that need the SQLite file itself (sqlite3 on it, file modes, backups) carry
`@pytest.mark.sqlite_only("why")` and are skipped, with that reason, on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from agentchat_mcp.settings import PostgresUrl

T = TypeVar("T")
ADMIN_URL = os.environ.get("AGENTCHAT_TEST_DB", "").strip()
PREFIX = os.environ.get("AGENTCHAT_TEST_DB_PREFIX", "agentchat_test_")
ON_POSTGRES = ADMIN_URL.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://"))
if ON_POSTGRES:  # a test opens several stores (one per client): small pools keep them under max_connections
    os.environ.setdefault("AGENTCHAT_PG_POOL_SIZE", "2")
    os.environ.setdefault("AGENTCHAT_PG_POOL_OVERFLOW", "3")
_WORKER = f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"
_numbers = itertools.count(1)
_template: str | None = None
_made: dict[Path, PostgresUrl] = {}  # one database per test path, as one file per path on SQLite
# The secret file SQLite would default to (beside the file) for each database made: run_cli passes it
# when a command names one of these databases and no AGENTCHAT_SECRET_FILE (PostgreSQL needs one).
secrets: dict[str, Path] = {}


def _dsn(database: str) -> str:
    """A plain postgresql:// DSN for asyncpg, on `database` of the admin URL's server."""
    from sqlalchemy.engine import make_url

    return make_url(ADMIN_URL).set(drivername="postgresql", database=database).render_as_string(hide_password=False)


def url_of(database: str) -> PostgresUrl:
    return PostgresUrl(_dsn(database))


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a loop of its own (a test's own loop may be running here)."""

    async def main() -> T:
        return await fn()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def _admin(*statements: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(_dsn(_admin_database()))
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    run_async(run)


def _admin_database() -> str:
    from sqlalchemy.engine import make_url

    return make_url(ADMIN_URL).database or "postgres"


def _ensure_template() -> str:
    """This worker's migrated template database (made on first use)."""
    global _template
    if _template is None:
        from agentchat_mcp.store import open_store

        name = f"{PREFIX}tmpl_{_WORKER}"
        _admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')

        async def migrate() -> None:
            async with open_store(url_of(name)):
                pass

        run_async(migrate)
        _template = name
        import asyncpg

        async def tables() -> tuple[str, ...]:
            conn = await asyncpg.connect(_dsn(name))
            try:
                return await _table_names(conn)
            finally:
                await conn.close()

        global _tables
        _tables = run_async(tables)
    return _template


def database_for(path: Path) -> Path | PostgresUrl:
    """Where a test keeps the database it would keep in `path`: that file, or its own PostgreSQL database."""
    if not ON_POSTGRES:
        return path
    if path not in _made:
        if _free:
            name = _free.pop()
        else:
            name = f"{PREFIX}{_WORKER}_{next(_numbers)}"
            _admin(f'CREATE DATABASE "{name}" TEMPLATE "{_ensure_template()}"')
        _made[path] = url_of(name)
        secrets[_made[path].secret] = path.with_name("agentchat.secret")
    return _made[path]


def db_value(db: Path | PostgresUrl) -> str:
    """AGENTCHAT_DB / --db for a subprocess or a CLI run: the path, or the URL with its password."""
    return db.secret if isinstance(db, PostgresUrl) else str(db)


def drop_made() -> None:
    """Give back the databases the test that just ended used: emptied (TRUNCATE ... RESTART IDENTITY,
    tens of ms) for the next test, where a DROP DATABASE waits for a checkpoint on PostgreSQL 15 (~1-2 s).
    A database whose tables changed (a test that ran DDL) is dropped instead."""
    if not _made:
        return
    names = [_name(url) for url in _made.values()]
    _made.clear()
    secrets.clear()
    for name in names:
        if _reset(name):
            _free.append(name)
        else:
            _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_free: list[str] = []  # emptied databases of this worker, ready for the next test
_tables: tuple[str, ...] = ()  # the template's tables (migrated, empty but for alembic_version)


def release(path: Path) -> None:
    """Give back the database made for `path` now, not at the end of the test (a test that makes many)."""
    url = _made.pop(path, None)
    if url is None:
        return
    secrets.pop(url.secret, None)
    name = _name(url)
    if _reset(name):
        _free.append(name)
    else:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _reset(name: str) -> bool:
    import asyncpg

    async def run() -> bool:
        conn = await asyncpg.connect(_dsn(name))
        try:
            await conn.execute(  # a store the test left open must not block the TRUNCATE
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            if await _table_names(conn) != _tables:
                return False
            emptied = ", ".join(f'"{t}"' for t in _tables if t != "alembic_version")
            await conn.execute(f"TRUNCATE {emptied} RESTART IDENTITY CASCADE")
            return True
        finally:
            await conn.close()

    try:
        return run_async(run)
    except Exception:  # e.g. the test dropped a table: start that one afresh
        return False


async def _table_names(conn: Any) -> tuple[str, ...]:
    found = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
    return tuple(r[0] for r in found)


def with_secret_file(args: list[str], env: dict[str, str] | None) -> dict[str, str] | None:
    """`env` for a command run on a test's PostgreSQL database: with the secret file SQLite would have
    used beside the file, unless the test names one (tests written for SQLite rely on that default)."""
    if not ON_POSTGRES:
        return env
    named = env.get("AGENTCHAT_DB") if env is not None else os.environ.get("AGENTCHAT_DB")
    if "--db" in args[:-1]:
        named = args[args.index("--db") + 1]
    secret = secrets.get(named or "")
    current = env if env is not None else os.environ
    if secret is None or current.get("AGENTCHAT_SECRET_FILE"):
        return env
    return {**current, "AGENTCHAT_SECRET_FILE": str(secret)}


def kept_database(label: str) -> PostgresUrl:
    """A fresh database outside the per-test cycle, for what outlives one test (a module's shared
    replicas); dropped when the worker ends."""
    name = f"{PREFIX}{_WORKER}_{label}_{next(_numbers)}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{_ensure_template()}"')
    _kept.append(name)
    return url_of(name)


_kept: list[str] = []


def drop_template() -> None:
    """At the end of the session: this worker's databases, then its template."""
    global _template
    drop_made()
    names = [*_free, *_kept, *([_template] if _template else [])]
    _free.clear()
    _kept.clear()
    _template = None
    if names:
        _admin(*(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names))


def _name(url: PostgresUrl) -> str:
    from sqlalchemy.engine import make_url

    database = make_url(url.secret).database
    assert database is not None
    return database


def query(db: Path | PostgresUrl, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of one SQL statement (`?` placeholders), straight on the database, as an auditor reads it."""
    if not isinstance(db, PostgresUrl):
        import sqlite3

        with sqlite3.connect(db) as conn:
            found = conn.execute(sql, args).fetchall()
        conn.close()
        return found
    import asyncpg

    numbered = iter(itertools.count(1))
    statement = re.sub(r"\?", lambda _: f"${next(numbered)}", sql)

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(db.secret)
        try:
            return [tuple(r) for r in await conn.fetch(statement, *args)]
        finally:
            await conn.close()

    return run_async(run)


def shown(db: Path | PostgresUrl) -> str:
    """The database as the CLI names it in messages: the resolved path, or the URL without its password."""
    return str(db) if isinstance(db, PostgresUrl) else str(db.resolve())


def table_names(db: Path | PostgresUrl) -> list[str]:
    """The tables of the database (SQLite's own, such as sqlite_sequence, included there)."""
    if isinstance(db, PostgresUrl):
        return [r[0] for r in query(db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    return [r[0] for r in query(db, "SELECT name FROM sqlite_master WHERE type = 'table'")]


def database_names(prefix: str = PREFIX) -> list[str]:
    """The databases on the server whose names start with `prefix`."""
    rows = query(url_of(_admin_database()), "SELECT datname FROM pg_database WHERE starts_with(datname, ?)", prefix)
    return sorted(name for (name,) in rows)


def drop_leftovers() -> list[str]:
    """Drop every database named with PREFIX (what crashed runs left); returns their names."""
    import asyncpg

    async def run() -> list[str]:
        conn = await asyncpg.connect(_dsn(_admin_database()))
        try:
            names = [
                r[0] for r in await conn.fetch("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", PREFIX)
            ]
            for name in sorted(names, key=lambda n: "tmpl" in n):  # copies before their templates
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return names
        finally:
            await conn.close()

    return run_async(run)


if __name__ == "__main__":
    if sys.argv[1:] != ["--drop-leftovers"] or not ON_POSTGRES:
        sys.exit("usage: AGENTCHAT_TEST_DB=postgresql://... python -m tests.support_db --drop-leftovers")
    print("\n".join(drop_leftovers()) or f"no database named {PREFIX}*")
