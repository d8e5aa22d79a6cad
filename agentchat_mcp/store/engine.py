"""Open the database, migrate it, and hand out read and write transactions."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from sqlalchemy import Select, event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.compiler import SQLCompiler

from agentchat_mcp.store import migrations


class Store:
    """Transactions over one database file; the only owner of the engine."""

    def __init__(self, engine: AsyncEngine, path: Path) -> None:
        self.engine = engine
        self.path = path
        # SQLite has one writer at a time; queueing our own writers here is cheaper and fairer
        # than letting them spin on SQLITE_BUSY. Other processes still wait on busy_timeout.
        self._write_lock = anyio.Lock()
        self._watch: sqlite3.Connection | None = None
        # Called with the seconds a writer waited for the write lock (ours, then SQLite's): the
        # database-saturation signal in telemetry (db_write_wait_seconds).
        self.write_wait_observers: list[Callable[[float], None]] = []
        self._compiled: dict[Select[Any], SQLCompiler] = {}

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction: one consistent snapshot for the whole block."""
        # Shielded: a cancelled caller (client gone, shutdown) must not abandon a connection
        # mid-statement, which leaves the driver's worker thread to be torn down uncleanly.
        with anyio.CancelScope(shield=True):
            async with self.engine.connect() as conn, conn.begin():
                yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: commits when the block ends, rolls back (all of it) on error.

        Shielded from cancellation: a unit of work, once begun, commits or rolls back whole.
        """
        with anyio.CancelScope(shield=True):
            asked = time.perf_counter()
            async with self._write_lock, self.engine.connect() as conn:
                await conn.execution_options(sqlite_immediate=True)
                async with conn.begin():
                    for observe in self.write_wait_observers:
                        observe(time.perf_counter() - asked)
                    yield conn

    def _watch_connection(self) -> sqlite3.Connection:
        if self._watch is None:
            self._watch = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        return self._watch

    def data_version(self) -> int:
        """Changes whenever another connection (or process) commits: a cheap 'anything new?' poll."""
        (version,) = self._watch_connection().execute("PRAGMA data_version").fetchone()
        return int(version)

    def quick_first(self, statement: Select[Any], params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of one small indexed read, run inline on the watch connection.

        For checks made on every request: microseconds, where a pooled async read costs hundreds
        (thread hops). Autocommit, so it sees every write committed by any process.
        """
        compiled = self._compiled.get(statement)
        if compiled is None:
            compiled = self._compiled[statement] = statement.compile(dialect=self.engine.dialect)
        ordered = [params[name] for name in compiled.positiontup or ()]
        row: tuple[Any, ...] | None = self._watch_connection().execute(str(compiled), ordered).fetchone()
        return row

    async def backup(self, target: Path) -> None:
        """An online, consistent copy of the live database (SQLite backup API)."""
        await anyio.to_thread.run_sync(backup_file, self.path, target)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        await self.engine.dispose()


def backup_file(source: Path, target: Path) -> None:
    """Copy a live SQLite database page by page; safe while other processes write."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    dst.close()
    src.close()


def _configure_sqlite(engine: AsyncEngine, busy_timeout: float) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it consistent
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@asynccontextmanager
async def open_store(path: Path, *, busy_timeout: float = 30.0, upgrade: bool = True) -> AsyncIterator[Store]:
    """Open (creating if needed) the database at `path`, migrated to the newest schema."""
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{path}",
        connect_args={"timeout": busy_timeout},
        pool_size=8,
        max_overflow=8,
        pool_reset_on_return=None,  # every unit of work ends in COMMIT or ROLLBACK already
    )
    _configure_sqlite(engine, busy_timeout)
    store = Store(engine, path)
    try:
        if upgrade:
            await migrations.upgrade(store)
        yield store
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
