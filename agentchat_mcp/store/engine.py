"""Open the database, migrate it, and hand out read and write transactions."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import time
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import Insert, Select, Update, create_engine, event
from sqlalchemy.engine import Connection, CursorResult, Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from agentchat_mcp.errors import OperatorError
from agentchat_mcp.settings import PostgresUrl
from agentchat_mcp.store import migrations

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from agentchat_mcp.settings import Settings

T = TypeVar("T")
logger = logging.getLogger(__name__)

_FIX = "set AGENTCHAT_DB (or --db) to"


class DatabaseUnavailable(OperatorError):
    """The database path cannot be used: a folder, not an SQLite file, or not writable."""


class Ran(NamedTuple):
    """What a write statement did: rows it touched, and the new row's id for an INSERT."""

    rowcount: int
    inserted_id: int | None


class DbConnection(Protocol):
    """What a unit of work gets: the subset of SQLAlchemy's AsyncConnection the services use, plus
    `fetch` and `run` for the few statements on the hottest paths (see Plan)."""

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[*tuple[Any, ...]]: ...

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

    async def exec_driver_sql(self, sql: str, parameters: Any = None) -> CursorResult[*tuple[Any, ...]]: ...

    async def fetch(self, statement: Select[Any], parameters: Mapping[str, Any]) -> list[Any]: ...

    async def run(self, statement: Insert | Update, parameters: Mapping[str, Any]) -> Ran: ...


@dataclass(frozen=True)
class Plan:
    """A module-level statement compiled once, run straight on the SQLite driver.

    Why: SQLAlchemy's execution machinery costs ~50 us per statement, SQLite's own work ~5 us; on
    the path every message takes (send_message) that was most of its cost. A plan keeps what the
    machinery adds that we rely on: bound values from the statement's own literals, type
    conversion of bound and returned values, and rows readable by column name.
    """

    sql: str
    binds: tuple[tuple[str | None, Any, Callable[[Any], Any] | None], ...]  # (our key, else literal; converter)
    row: type[tuple[Any, ...]] | None
    converters: tuple[Callable[[Any], Any] | None, ...]  # per column; empty when none converts

    @classmethod
    def of(cls, statement: ClauseElement, keys: tuple[str, ...], dialect: Dialect) -> Plan:
        _refuse_python_defaults(statement, keys)
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler)
        binds = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            binds.append((name, None, convert) if name in keys else (None, bind.effective_value, convert))
        row: type[tuple[Any, ...]] | None = None
        converters: tuple[Callable[[Any], Any] | None, ...] = ()
        if isinstance(statement, Select):
            columns = list(statement.selected_columns)
            row = namedtuple("Row", [c.key for c in columns], rename=True)  # type: ignore[misc,no-redef]
            converters = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
            if not any(converters):  # rows come back as the driver gives them
                converters = ()
        return cls(str(compiled), tuple(binds), row, converters)

    def values(self, parameters: Mapping[str, Any]) -> list[Any]:
        out = []
        for key, literal, convert in self.binds:
            value = parameters[key] if key is not None else literal
            out.append(convert(value) if convert is not None and value is not None else value)
        return out

    def shape(self, raw: tuple[Any, ...]) -> Any:
        assert self.row is not None
        if self.converters:
            raw = tuple(f(v) if f is not None else v for f, v in zip(self.converters, raw, strict=True))
        return self.row(*raw)


def _refuse_python_defaults(statement: ClauseElement, keys: tuple[str, ...]) -> None:
    """fetch/run take every value from the caller: Python-side column defaults run only in
    SQLAlchemy's execution machinery, which plans skip (both drivers refuse alike)."""
    if not isinstance(statement, Insert | Update):
        return
    skipped = [
        c.key
        for c in getattr(statement.table, "columns", ())
        if c.key not in keys and (c.default if isinstance(statement, Insert) else c.onupdate) is not None
    ]
    if skipped:
        raise ValueError(f"a planned statement cannot fill Python-side defaults ({', '.join(skipped)}); pass them")


class InlineConnection:
    """A sync SQLAlchemy connection behind the async API, run inline on the event loop.

    Why: SQLite is a library, not a server. In WAL mode a statement here costs ~5-20 us of CPU and
    never waits for another reader; through aiosqlite each statement costs ~270 us in thread hops
    (measured: bench/send.py, bench/peek.py), which made every tool 10x slower than its work.
    Writers still wait for each other: on our own anyio lock first, then on SQLite's busy handler
    for other processes (bounded by busy_timeout, usually microseconds).
    """

    def __init__(self, sync: Connection, store: Store) -> None:
        self.sync = sync
        self._store = store
        self._raw: sqlite3.Connection | None = None  # the driver's connection, for plans

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[*tuple[Any, ...]]:
        return self.sync.execute(statement, parameters)

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(self.sync, *args, **kwargs)

    async def exec_driver_sql(self, sql: str, parameters: Any = None) -> CursorResult[*tuple[Any, ...]]:
        return self.sync.exec_driver_sql(sql, parameters)

    def _driver(self) -> sqlite3.Connection:
        if self._raw is None:
            self._raw = self.sync.connection.driver_connection  # type: ignore[assignment]
        assert self._raw is not None
        return self._raw

    async def fetch(self, statement: Select[Any], parameters: Mapping[str, Any]) -> list[Any]:
        """Every row of a planned SELECT, readable by column name."""
        plan = self._store.plan(statement, parameters)
        return [plan.shape(raw) for raw in self._driver().execute(plan.sql, plan.values(parameters))]

    async def run(self, statement: Insert | Update, parameters: Mapping[str, Any]) -> Ran:
        """One planned INSERT or UPDATE."""
        plan = self._store.plan(statement, parameters)
        cursor = self._driver().execute(plan.sql, plan.values(parameters))
        return Ran(cursor.rowcount, cursor.lastrowid if isinstance(statement, Insert) else None)


class PooledConnection:
    """SQLAlchemy's AsyncConnection (aiosqlite here; asyncpg for PostgreSQL) with `fetch` and `run`."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[*tuple[Any, ...]]:
        return await self.conn.execute(statement, parameters)

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self.conn.run_sync(fn, *args, **kwargs)

    async def exec_driver_sql(self, sql: str, parameters: Any = None) -> CursorResult[*tuple[Any, ...]]:
        return await self.conn.exec_driver_sql(sql, parameters)

    async def fetch(self, statement: Select[Any], parameters: Mapping[str, Any]) -> list[Any]:
        return list((await self.conn.execute(statement, dict(parameters))).all())

    async def run(self, statement: Insert | Update, parameters: Mapping[str, Any]) -> Ran:
        _refuse_python_defaults(statement, tuple(parameters))
        result = await self.conn.execute(statement, dict(parameters))
        inserted = result.inserted_primary_key if isinstance(statement, Insert) else None
        return Ran(result.rowcount, int(inserted[0]) if inserted else None)


class NotOnPostgres(OperatorError):
    """An SQLite-only chore (file backups, file checks) asked of a PostgreSQL store."""


class Store:
    """What services see of the database: read and write transactions, plans, change signals.

    Two kinds: SqliteStore (the embedded default, one file) and PostgresStore (store/postgres.py,
    several replicas on one server). Services never ask which; the few SQLite-only chores (file
    backups) raise NotOnPostgres with what to use instead.
    """

    path: Path | None = None  # the SQLite file; None on PostgreSQL
    engine: AsyncEngine | None = None
    sync_engine: Engine | None = None

    def __init__(self) -> None:
        # Called with the seconds a writer waited for the write lock (ours, then the database's):
        # the database-saturation signal in telemetry (db_write_wait_seconds).
        self.write_wait_observers: list[Callable[[float], None]] = []
        self._plans: dict[tuple[ClauseElement, tuple[str, ...]], Plan] = {}

    @property
    def shown(self) -> str:
        """The database as an operator knows it: the file's path, or the URL without its password."""
        return str(self.path)

    @property
    def dialect(self) -> Dialect:
        engine = self.sync_engine if self.sync_engine is not None else self.engine
        assert engine is not None
        return engine.dialect

    def plan(self, statement: ClauseElement, parameters: Mapping[str, Any]) -> Plan:
        """`statement` compiled for the raw driver, once per set of parameter names."""
        key = (statement, tuple(parameters))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = Plan.of(statement, key[1], self.dialect)
        return plan

    def _waited(self, seconds: float) -> None:
        for observe in self.write_wait_observers:
            observe(seconds)

    def read(self) -> AbstractAsyncContextManager[DbConnection]:
        """A read transaction: one consistent snapshot for the whole block."""
        raise NotImplementedError

    def write(self) -> AbstractAsyncContextManager[DbConnection]:
        """A write transaction, one at a time: commits when the block ends, rolls back on error."""
        raise NotImplementedError

    def data_version(self) -> int:
        """Changes whenever a write commits elsewhere (another process or replica): a cheap 'anything new?'."""
        raise NotImplementedError

    async def wait_for_change(self, timeout: float) -> None:
        """Return when data_version() may have moved, or after `timeout` seconds."""
        raise NotImplementedError

    async def quick_first(self, statement: Select[Any], params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of one small indexed read, outside any transaction; sees every commit."""
        raise NotImplementedError

    async def backup(self, target: Path) -> None:
        """An online, consistent copy of the live database."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class SqliteStore(Store):
    """Transactions over one SQLite database file; the only owner of its engine.

    `driver="inline"` (default) runs SQLite statements on the event loop (see InlineConnection);
    `driver="aiosqlite"` runs them through SQLAlchemy's asyncio engine on aiosqlite, the shape the
    PostgreSQL (asyncpg) store takes too. Services see the same DbConnection either way.
    """

    def __init__(self, path: Path, *, busy_timeout: float, driver: str = "inline") -> None:
        super().__init__()
        self.path = path
        self.driver = driver
        if driver == "aiosqlite":
            from sqlalchemy.ext.asyncio import create_async_engine  # with the ORM: 7 MiB the inline driver never uses

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
        # fast_acquire: an uncontended writer goes straight on; the default yields to the event
        # loop first, which suspends and resumes the request's whole coroutine stack (~30 us).
        self._write_lock = anyio.Lock(fast_acquire=True)
        self._watch: sqlite3.Connection | None = None
        # Inline driver: writes are one at a time (the lock above), so one connection serves them
        # all; checking one out of the pool for each transaction cost more than the transaction.
        self._writer: Connection | None = None

    @asynccontextmanager
    async def _transaction(self, *, immediate: bool) -> AsyncIterator[DbConnection]:
        if self.sync_engine is not None:
            assert not immediate, "inline writes go through _inline_write"
            with self.sync_engine.connect() as sync, sync.begin():
                yield InlineConnection(sync, self)
            return
        assert self.engine is not None
        async with self.engine.connect() as conn:
            if immediate:
                await conn.execution_options(sqlite_immediate=True)
            async with conn.begin():
                yield PooledConnection(conn)

    def _writer_connection(self) -> Connection:
        if self._writer is None:
            assert self.sync_engine is not None
            self._writer = self.sync_engine.connect()  # _inline_write issues its BEGIN IMMEDIATE itself
        return self._writer

    @contextmanager
    def _inline_write(self) -> Iterator[DbConnection]:
        """BEGIN IMMEDIATE and COMMIT straight on the driver; SQLAlchemy joins in only if the unit
        of work runs a SQLAlchemy statement (its begin hook sees the open transaction, see below)."""
        writer = self._writer_connection()
        driver: sqlite3.Connection = writer.connection.driver_connection  # type: ignore[assignment]
        driver.execute("BEGIN IMMEDIATE")
        try:
            yield InlineConnection(writer, self)
        except BaseException:
            (writer.rollback if writer.in_transaction() else driver.rollback)()
            raise
        else:
            (writer.commit if writer.in_transaction() else driver.commit)()
        finally:
            if writer.invalidated or writer.closed:  # e.g. the disk went away: start afresh next time
                self._writer = None
            elif driver.in_transaction:  # a failed COMMIT leaves it open: never hand that to the next writer
                driver.rollback()

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
            async with self._write_lock:
                if self.sync_engine is not None:
                    with self._inline_write() as conn:
                        self._waited(time.perf_counter() - asked)
                        yield conn
                    return
                async with self._transaction(immediate=True) as conn:
                    self._waited(time.perf_counter() - asked)
                    yield conn

    def _watch_connection(self) -> sqlite3.Connection:
        if self._watch is None:
            assert self.path is not None
            self._watch = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        return self._watch

    def data_version(self) -> int:
        """Changes whenever another connection (or process) commits: a cheap 'anything new?' poll."""
        (version,) = self._watch_connection().execute("PRAGMA data_version").fetchone()
        return int(version)

    async def wait_for_change(self, timeout: float) -> None:
        """SQLite tells no one of a commit: pollers sleep their interval, then compare data_version()."""
        await anyio.sleep(timeout)

    async def quick_first(self, statement: Select[Any], params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of one small indexed read, run inline on the watch connection.

        For checks made on every request: microseconds, where a pooled async read costs hundreds
        (thread hops). Autocommit, so it sees every write committed by any process. Nothing here
        awaits: the coroutine runs straight through, as the plain call it was.
        """
        plan = self.plan(statement, params)
        raw = self._watch_connection().execute(plan.sql, plan.values(params)).fetchone()
        return None if raw is None else plan.shape(raw)

    async def backup(self, target: Path) -> None:
        """An online, consistent copy of the live database (SQLite backup API)."""
        assert self.path is not None
        await anyio.to_thread.run_sync(backup_file, self.path, target)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
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
    _make_private(target)  # a copy of every key hash and sealed message, so as private as the original
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    dst.close()
    src.close()


_SIDE_FILES = ("-wal", "-shm", "-journal")


def _make_private(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it, or take group and world access off it.

    It holds every API-key hash, sealed message and wrapped key: as private as the server secret
    beside it (server_secret.py). SQLite gives the -wal, -shm and -journal files it creates the
    database file's own mode, so a 0600 database gets 0600 side files whatever the umask.

    An existing file others can access (every earlier version left it 0644 under the usual umask)
    is made owner-only with a warning, not refused as a readable secret file is: refusing would
    stop every hub on upgrade, and whoever runs the server must read the 0600 secret file already,
    so no process that could use the database loses it. A file we do not own (root serving another
    user's files) cannot be changed: warn and go on.
    """
    with contextlib.suppress(FileExistsError):  # else already there, or just created by another process
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for file in (path, *(path.with_name(path.name + suffix) for suffix in _SIDE_FILES)):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
        except FileNotFoundError:  # a side file comes and goes with connections
            continue
        if not mode & 0o077:
            continue
        try:
            file.chmod(mode & 0o700)
        except PermissionError:
            logger.warning(
                "%s is open to other users (%04o) and not ours to change: run chmod 600 %s", file, mode, file
            )
        else:
            logger.warning("%s was open to other users (%04o); it is now owner-only (%04o)", file, mode, mode & 0o700)


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
        # Straight to the driver: a BEGIN needs none of the statement machinery (~15 us saved).
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        if getattr(dbapi, "in_transaction", False):  # Store._inline_write began it on the driver
            return
        cursor = dbapi.cursor()
        cursor.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        cursor.close()


def open_settings_store(settings: Settings, *, upgrade: bool = True) -> AbstractAsyncContextManager[Store]:
    """The database of `settings`, opened the way the server and every command open it."""
    return open_store(
        settings.db,
        busy_timeout=settings.busy_timeout_seconds,
        driver=settings.sqlite_driver,
        upgrade=upgrade,
        pool=(settings.pg_pool_size, settings.pg_pool_overflow),
    )


def check_path(path: Path | PostgresUrl) -> Path:
    """`path` resolved, if a database can live there; else DatabaseUnavailable saying what to do.

    Looks only (creates nothing), so a command can check its database before it makes anything
    beside it, such as the server secret. A PostgreSQL URL is no path: NotOnPostgres.
    """
    if isinstance(path, PostgresUrl):
        raise NotOnPostgres(f"{path} is a PostgreSQL database, not an SQLite file")
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        raise DatabaseUnavailable(f"the database path {path} is a folder: {_FIX} a file, e.g. {path / 'agentchat.db'}")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise DatabaseUnavailable(
                f"cannot write the database {path} (permission denied): {_FIX} a file you can write, or fix its owner"
            )
        # Ask SQLite to read it, never open the file ourselves: closing any descriptor of a database
        # file drops every POSIX lock this process holds on it, SQLite's own connections' included
        # (another process may then checkpoint and delete the WAL under them). SQLite shares its
        # descriptors between the connections of one process, so its probe is safe.
        try:
            with contextlib.closing(sqlite3.connect(path)) as probe:
                probe.execute("PRAGMA schema_version").fetchone()
        except sqlite3.Error as exc:  # an empty file is a new database to SQLite, and reads fine
            raise _unusable(path, exc) from None
        return path
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise DatabaseUnavailable(
            f"cannot create the database {path}: {folder} is a file, not a folder; {_FIX} a path in a folder "
            "you can write to"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatabaseUnavailable(
            f"cannot create the database {path}: no permission to write in {folder}; {_FIX} a path in a folder "
            "you can write to"
        )
    return path


def _unusable(path: Path, exc: BaseException) -> DatabaseUnavailable:
    """What check_path cannot foresee (a read-only disk, /proc, a corrupt file), as one line."""
    reason = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
    if "file is not a database" in text:
        return DatabaseUnavailable(
            f"{path} is not an SQLite database: {_FIX} an agentchat database, or to a new file to create one"
        )
    return DatabaseUnavailable(f"cannot open the database {path} ({text}): {_FIX} a file in a folder you can write to")


def open_store(
    path: Path | PostgresUrl,
    *,
    busy_timeout: float = 30.0,
    upgrade: bool = True,
    driver: str = "inline",
    pool: tuple[int, int] = (10, 10),
) -> AbstractAsyncContextManager[Store]:
    """Open the database at `path` (an SQLite file, created if needed, or a PostgreSQL URL),
    migrated to the newest schema.

    A database that cannot be used raises DatabaseUnavailable (one line for the operator), before
    anything is created there. `pool`: PostgreSQL's connections kept open, and more at peaks.
    """
    if isinstance(path, PostgresUrl):
        from agentchat_mcp.store.postgres import open_postgres_store  # asyncpg: imported only when used

        return open_postgres_store(path, upgrade=upgrade, pool=pool)
    return _open_sqlite(path, busy_timeout=busy_timeout, upgrade=upgrade, driver=driver)


@asynccontextmanager
async def _open_sqlite(path: Path, *, busy_timeout: float, upgrade: bool, driver: str) -> AsyncIterator[Store]:
    path = check_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _make_private(path)
    except OSError as exc:
        raise _unusable(path, exc) from None
    store = SqliteStore(path, busy_timeout=busy_timeout, driver=driver)
    try:
        await _probe(store)
        if upgrade:
            await migrations.upgrade(store)
        yield store
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()


async def _probe(store: SqliteStore) -> None:
    """Open one connection the way every unit of work does (WAL mode included): SQLite's own
    errors surface here, as one line, rather than from deep inside a migration or the first call."""
    try:
        async with store.read() as conn:
            await conn.exec_driver_sql("PRAGMA schema_version")
    except (OSError, sqlite3.Error, DBAPIError) as exc:
        assert store.path is not None
        raise _unusable(store.path, exc) from None
