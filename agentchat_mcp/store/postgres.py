"""The PostgreSQL store: several hub replicas on one database, behaving as one SQLite hub does.

Why each choice (docs/storage.md has the per-write-path reasoning):

- Writes, one at a time across every replica: each write transaction begins with
  `pg_advisory_xact_lock(WRITE_LOCK)`, held until COMMIT or ROLLBACK. That is SQLite's BEGIN
  IMMEDIATE, so the money code (check a balance, then move it) keeps the guarantees it was written
  for, and ids (sequences) are handed out in commit order, which the change feed and the analytics
  watermarks rely on. Writes run at READ COMMITTED: each statement sees everything committed before
  it, and the lock makes "before" mean "every earlier writer". (REPEATABLE READ would take its
  snapshot at the lock statement, before the previous writer committed.)
- Reads: REPEATABLE READ, READ ONLY: one snapshot for the whole `read()` block, as on SQLite.
- Change signal: the same first statement runs `pg_notify(CHANNEL, '')`, which PostgreSQL delivers
  at COMMIT and only if the transaction commits. One LISTEN connection per store counts them
  (data_version) and wakes wait_for_change(), so a message sent on one replica wakes a waiter on
  another in milliseconds instead of a poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import asyncpg
from sqlalchemy import Select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import create_async_engine

from agentchat_mcp.errors import Busy, InvalidInput
from agentchat_mcp.settings import PostgresUrl
from agentchat_mcp.store.engine import DatabaseUnavailable, DbConnection, NotOnPostgres, PooledConnection, Store

logger = logging.getLogger(__name__)

CHANNEL = "agentchat_changes"
WRITE_LOCK = 0x61676E74_63686174 >> 1  # 'agntchat', one key for the whole database (fits a bigint)
# One round trip at BEGIN: queue behind every other writer, then say "changed" (sent only on commit).
_BEGIN_WRITE = f"SELECT pg_advisory_xact_lock({WRITE_LOCK}), pg_notify('{CHANNEL}', '')"
PING_SECONDS = 15.0  # how long the LISTEN connection may stay quiet before we check it is still there
PING_TIMEOUT = 5.0
# How long a unit of work queues for a pooled connection in a spike before it is refused as Busy (a
# retryable error; nothing was done). Long, as SQLite's inline store queues without limit: a spike
# should show as latency, and the mcp client's own read timeout (300 s) is longer still.
POOL_TIMEOUT_SECONDS = 120.0
BUSY = "The hub is busy (every database connection is in use); nothing was done, retry shortly."
PG_DUMP = "use pg_dump / pg_restore (or your provider's snapshots) for PostgreSQL"
# PostgreSQL text cannot hold U+0000 (SQLite's can): such a value is refused, as a bad argument.
NUL_REFUSED = "Text must not contain the NUL character (U+0000); remove it and send again."


def engine_url(url: PostgresUrl) -> URL:
    """The SQLAlchemy URL on asyncpg, whichever postgresql scheme the operator wrote."""
    try:
        parsed = make_url(url.secret)
    except (ArgumentError, ValueError):
        raise DatabaseUnavailable(f"{url} is not a database URL: write postgresql://USER@HOST:PORT/DATABASE") from None
    return parsed.set(drivername="postgresql+asyncpg")


class PostgresStore(Store):
    """Transactions on one PostgreSQL database (SQLAlchemy's async engine on asyncpg, pooled)."""

    def __init__(self, url: PostgresUrl, *, pool: tuple[int, int] = (10, 10)) -> None:
        super().__init__()
        self.url = url
        sa_url = engine_url(url)
        self._dsn = sa_url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.engine = create_async_engine(
            sa_url, pool_size=pool[0], max_overflow=pool[1], pool_timeout=POOL_TIMEOUT_SECONDS
        )
        self._reads = self.engine.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        # Our own writers queue here first, so a queue of them holds one pooled connection, not one each.
        self._write_lock = anyio.Lock(fast_acquire=True)
        self._version = 0
        self._changed = asyncio.Event()  # asyncpg calls back outside any task: plain asyncio here
        self._listener: Any = None  # asyncpg.Connection, LISTENing on CHANNEL
        self._listen_lock = asyncio.Lock()
        self._listen_failed = False
        self._pinged = time.monotonic()

    @property
    def shown(self) -> str:
        return str(self.url)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[DbConnection]:
        """One snapshot for the whole block (REPEATABLE READ, READ ONLY)."""
        with anyio.CancelScope(shield=True), _refusing_nul(), _busy_when_no_connection():
            async with self._reads.connect() as conn, conn.begin():
                yield PooledConnection(conn)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[DbConnection]:
        """One writer at a time across every replica (the advisory lock); commits or rolls back whole."""
        with anyio.CancelScope(shield=True), _refusing_nul(), _busy_when_no_connection():
            asked = time.perf_counter()
            assert self.engine is not None
            async with self._write_lock, self.engine.connect() as conn, conn.begin():
                await conn.exec_driver_sql(_BEGIN_WRITE)
                self._waited(time.perf_counter() - asked)
                yield PooledConnection(conn)

    async def quick_first(self, statement: Select[Any], params: dict[str, Any]) -> tuple[Any, ...] | None:
        """One autocommit statement: a single round trip, no BEGIN or COMMIT."""
        with _busy_when_no_connection():
            async with self._autocommit.connect() as conn:
                row = (await conn.execute(statement, params)).first()
        return None if row is None else tuple(row)

    # --- the change signal ---

    def data_version(self) -> int:
        """How many commits this store has heard of (any replica's); moves on every one."""
        return self._version

    async def wait_for_change(self, timeout: float) -> None:
        """Return on the next commit anywhere, or after `timeout`; listens again if the connection dropped."""
        if self._listener is None or self._listener.is_closed():
            try:
                await self.listen()
            except (OSError, asyncpg.PostgresError) as exc:
                if not self._listen_failed:
                    logger.warning("cannot LISTEN for changes (%s); polling every %.1f s until it can", exc, timeout)
                    self._listen_failed = True
                await anyio.sleep(timeout)
                self._bump()  # unheard: every poll may have missed something
                return
        changed = self._changed
        with anyio.move_on_after(timeout):
            await changed.wait()
            return
        if time.monotonic() - self._pinged > PING_SECONDS:  # quiet for a while: is the line still up?
            await self._ping()

    async def _ping(self) -> None:
        """A link that died without a word (no FIN: a NAT, a failover) would leave us deaf: ask it, briefly."""
        self._pinged = time.monotonic()
        listener = self._listener
        try:
            await listener.execute("SELECT 1", timeout=PING_TIMEOUT)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            logger.warning("the LISTEN connection to %s stopped answering; reconnecting", self.shown)
            listener.remove_termination_listener(self._lost)
            listener.terminate()
            self._bump()  # as for a drop: pollers rescan, the next wait listens again

    async def listen(self) -> None:
        """Open the LISTEN connection (again); then report a change, as any commit meanwhile went unheard."""
        async with self._listen_lock:
            if self._listener is not None and not self._listener.is_closed():
                return
            conn = await asyncpg.connect(self._dsn)
            await conn.add_listener(CHANNEL, self._notified)
            conn.add_termination_listener(self._lost)
            self._listener = conn
            if self._listen_failed:
                logger.warning("listening for changes again")
                self._listen_failed = False
            self._bump()

    def _notified(self, *_: Any) -> None:
        self._bump()

    def _lost(self, *_: Any) -> None:
        logger.warning("the LISTEN connection to %s dropped; reconnecting", self.shown)
        self._bump()  # wake the pollers: they rescan, and the next wait listens again

    def _bump(self) -> None:
        self._version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # --- chores that are SQLite's alone ---

    async def backup(self, target: Path) -> None:
        raise NotOnPostgres(f"agentchat-mcp keeps no backup of its own on PostgreSQL: {PG_DUMP}")

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.remove_termination_listener(self._lost)
            with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):  # already gone: nothing to close
                await listener.close(timeout=5)
        assert self.engine is not None
        await self.engine.dispose()


@contextmanager
def _busy_when_no_connection() -> Iterator[None]:
    """The pool's timeout (no connection free for POOL_TIMEOUT_SECONDS) as Busy: a retryable refusal
    the caller sees with its wait, not an internal error."""
    try:
        yield
    except PoolTimeout:
        raise Busy(BUSY, retry_after_seconds=5) from None


@contextmanager
def _refusing_nul() -> Iterator[None]:
    """A NUL in a text value, which PostgreSQL refuses, as the caller's bad argument (rolled back whole)."""
    try:
        yield
    except DBAPIError as exc:
        if isinstance(getattr(exc.orig, "__cause__", None), asyncpg.CharacterNotInRepertoireError):
            raise InvalidInput(NUL_REFUSED) from exc
        raise


@asynccontextmanager
async def open_postgres_store(
    url: PostgresUrl, *, upgrade: bool = True, pool: tuple[int, int] = (10, 10)
) -> AsyncIterator[Store]:
    """Connect, LISTEN, and migrate to the newest schema (one replica at a time: the write lock)."""
    from agentchat_mcp.store import migrations

    store = PostgresStore(url, pool=pool)
    try:
        try:
            async with store.read() as conn:
                await conn.exec_driver_sql("SELECT 1")
            await store.listen()
        except (OSError, asyncpg.PostgresError, DBAPIError) as exc:
            raise unusable(url, exc) from None
        if upgrade:
            await migrations.upgrade(store)
        yield store
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()


def unusable(url: PostgresUrl, exc: BaseException) -> DatabaseUnavailable:
    """A failed connection as one line: the URL without its password, and PostgreSQL's reason."""
    reason = getattr(exc, "orig", None) or exc
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    text = text.split(": ", 1)[-1] if text.startswith("<class") else text
    return DatabaseUnavailable(
        f"cannot use the PostgreSQL database {url} ({text}): set AGENTCHAT_DB (or --db) to "
        "postgresql://USER@HOST:PORT/DATABASE of a server that is up and a database that exists"
    )
