"""Open the database, migrate it, and hand out read and write transactions."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import Select, create_engine, event
from sqlalchemy.engine import Connection, CursorResult, Dialect, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler

from agentchat_mcp.store import migrations

T = TypeVar("T")


class DbConnection(Protocol):
    """What a unit of work gets: the subset of SQLAlchemy's AsyncConnection the services use."""

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[*tuple[Any, ...]]: ...

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

    async def exec_driver_sql(self, sql: str, parameters: Any = None) -> CursorResult[*tuple[Any, ...]]: ...


class InlineConnection:
    """A sync SQLAlchemy connection behind the async API, run inline on the event loop.

    Why: SQLite is a library, not a server. In WAL mode a statement here costs ~5-20 us of CPU and
    never waits for another reader; through aiosqlite each statement costs ~270 us in thread hops
    (measured: bench/send.py, bench/peek.py), which made every tool 10x slower than its work.
    Writers still wait for each other: on our own anyio lock first, then on SQLite's busy handler
    for other processes (bounded by busy_timeout, usually microseconds).
    """

    def __init__(self, sync: Connection) -> None:
        self.sync = sync

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[*tuple[Any, ...]]:
        return self.sync.execute(statement, parameters)

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(self.sync, *args, **kwargs)

    async def exec_driver_sql(self, sql: str, parameters: Any = None) -> CursorResult[*tuple[Any, ...]]:
        return self.sync.exec_driver_sql(sql, parameters)


class Store:
    """Transactions over one database file; the only owner of the engine.

    `driver="inline"` (default) runs SQLite statements on the event loop (see InlineConnection);
    `driver="aiosqlite"` runs them through SQLAlchemy's asyncio engine on aiosqlite, the shape a
    PostgreSQL (asyncpg) store takes too. Services see the same DbConnection either way.
    """

    def __init__(self, path: Path, *, busy_timeout: float, driver: str = "inline") -> None:
        self.path = path
        self.driver = driver
        self.engine: AsyncEngine | None = None
        self.sync_engine: Engine | None = None
        if driver == "aiosqlite":
            self.engine = create_async_engine(
                f"sqlite+aiosqlite:///{path}",
                connect_args={"timeout": busy_timeout},
                pool_size=8,
                max_overflow=8,
                pool_reset_on_return=None,  # every unit of work ends in COMMIT or ROLLBACK already
            )
            _configure_sqlite(self.engine.sync_engine, busy_timeout)
        elif driver == "inline":
            self.sync_engine = create_engine(
                f"sqlite:///{path}",
                connect_args={"timeout": busy_timeout, "check_same_thread": False},
                pool_size=8,
                max_overflow=-1,  # a suspended unit of work must never make another wait for a connection
                pool_reset_on_return=None,
            )
            _configure_sqlite(self.sync_engine, busy_timeout)
        else:
            raise ValueError(f"unknown SQLite driver {driver!r}: use 'inline' or 'aiosqlite'")
        # SQLite has one writer at a time; queueing our own writers here is cheaper and fairer
        # than letting them spin on SQLITE_BUSY. Other processes still wait on busy_timeout.
        self._write_lock = anyio.Lock()
        self._watch: sqlite3.Connection | None = None
        # Called with the seconds a writer waited for the write lock (ours, then SQLite's): the
        # database-saturation signal in telemetry (db_write_wait_seconds).
        self.write_wait_observers: list[Callable[[float], None]] = []
        self._compiled: dict[Select[Any], SQLCompiler] = {}

    @property
    def dialect(self) -> Dialect:
        engine = self.sync_engine if self.sync_engine is not None else self.engine
        assert engine is not None
        return engine.dialect

    @asynccontextmanager
    async def _transaction(self, *, immediate: bool) -> AsyncIterator[DbConnection]:
        if self.sync_engine is not None:
            with self.sync_engine.connect() as sync:
                if immediate:
                    sync.execution_options(sqlite_immediate=True)
                with sync.begin():
                    yield InlineConnection(sync)
            return
        assert self.engine is not None
        async with self.engine.connect() as conn:
            if immediate:
                await conn.execution_options(sqlite_immediate=True)
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[DbConnection]:
        """A read transaction: one consistent snapshot for the whole block."""
        # Shielded: a cancelled caller (client gone, shutdown) must not abandon a connection
        # mid-statement, which leaves the driver's worker thread to be torn down uncleanly.
        with anyio.CancelScope(shield=True):
            async with self._transaction(immediate=False) as conn:
                yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[DbConnection]:
        """A write transaction: commits when the block ends, rolls back (all of it) on error.

        Shielded from cancellation: a unit of work, once begun, commits or rolls back whole.
        """
        with anyio.CancelScope(shield=True):
            asked = time.perf_counter()
            async with self._write_lock, self._transaction(immediate=True) as conn:
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
            compiled = self._compiled[statement] = statement.compile(dialect=self.dialect)
        values = compiled.construct_params(params)  # our values plus the statement's own literals
        ordered = [values[name] for name in compiled.positiontup or ()]
        row: tuple[Any, ...] | None = self._watch_connection().execute(str(compiled), ordered).fetchone()
        return row

    async def backup(self, target: Path) -> None:
        """An online, consistent copy of the live database (SQLite backup API)."""
        await anyio.to_thread.run_sync(backup_file, self.path, target)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self.engine is not None:
            await self.engine.dispose()
        if self.sync_engine is not None:
            self.sync_engine.dispose()


def backup_file(source: Path, target: Path) -> None:
    """Copy a live SQLite database page by page; safe while other processes write."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    dst.close()
    src.close()


def _configure_sqlite(engine: Engine, busy_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it consistent
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@asynccontextmanager
async def open_store(
    path: Path, *, busy_timeout: float = 30.0, upgrade: bool = True, driver: str = "inline"
) -> AsyncIterator[Store]:
    """Open (creating if needed) the database at `path`, migrated to the newest schema."""
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    store = Store(path, busy_timeout=busy_timeout, driver=driver)
    try:
        if upgrade:
            await migrations.upgrade(store)
        yield store
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
