"""The storage layer: one Store per process, SQLAlchemy Core over SQLite or PostgreSQL (docs/storage.md).

Store functions never commit: a service opens `store.write()` (one transaction, BEGIN IMMEDIATE
on SQLite, an advisory lock on PostgreSQL, so a writer waits for the lock up front instead of
failing half-way) or `store.read()`, and does its whole unit of work inside it.
"""

from agentchat_mcp.store.engine import (
    DatabaseUnavailable,
    DbConnection,
    NotOnPostgres,
    SqliteStore,
    Store,
    check_path,
    open_settings_store,
    open_store,
)

__all__ = [
    "DatabaseUnavailable",
    "DbConnection",
    "NotOnPostgres",
    "SqliteStore",
    "Store",
    "check_path",
    "open_settings_store",
    "open_store",
]
