"""`db copy --to postgresql://...`: move an embedded SQLite store into an empty PostgreSQL database.

For the desktop user who outgrows one machine: every table is copied as it is, so API keys keep
working (their hashes are keyed by the server secret, which stays a file: point the new servers'
AGENTCHAT_SECRET_FILE at the old one), sealed messages and wrapped keys are the same bytes, and the
ledger is the same lines.

One target transaction does it all: the schema (the same Alembic migrations, PostgreSQL's DDL is
transactional), the rows, the id sequences, then the checks. Any failure rolls the target back to
empty, and the source is only read (one snapshot), so nothing is ever half-copied.

Checked before COMMIT: row counts per table, a digest of every table's rows (read back through the
same column types, in primary-key order) equal on both sides, and the ledger summing to zero.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Table, create_engine, func, insert, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from agentchat_mcp.errors import OperatorError
from agentchat_mcp.settings import POSTGRES_SCHEMES, PostgresUrl
from agentchat_mcp.store import migrations
from agentchat_mcp.store.engine import DatabaseUnavailable
from agentchat_mcp.store.postgres import engine_url
from agentchat_mcp.store.tables import ledger_lines, metadata

BATCH_ROWS = 2_000


class CopyRefused(OperatorError):
    """The copy could not start or did not check out; the target was left as it was (one line)."""


@dataclass
class Copied:
    source: str
    target: str
    revision: str
    rows: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "from": self.source,
            "to": self.target,
            "revision": self.revision,
            "rows": self.rows,
            "rows_identical": True,
            "ledger_balanced": True,
        }


def target_url(url: str) -> PostgresUrl:
    """--to as a PostgresUrl (printed without its password); anything else is refused."""
    if not url.strip().lower().startswith(POSTGRES_SCHEMES):
        shown = url.split("@")[-1] if "@" in url else url  # a URL of another kind may still carry a password
        raise CopyRefused(f"--to must be a PostgreSQL URL such as postgresql://user@host/agentchat, not ...{shown}")
    return PostgresUrl(url.strip())


def _key(table: Table) -> list[Any]:
    return list(table.primary_key.columns) or list(table.columns)


def _batches(conn: Connection, table: Table) -> Iterable[list[dict[str, Any]]]:
    result = conn.execution_options(yield_per=BATCH_ROWS).execute(select(table).order_by(*_key(table)))
    for part in result.mappings().partitions(BATCH_ROWS):
        yield [dict(row) for row in part]


def _digest(conn: Connection, table: Table) -> tuple[int, str]:
    """Rows and a SHA-256 of every row's values, as the column types give them back, in key order."""
    digest = hashlib.sha256()
    count = 0
    result = conn.execution_options(yield_per=BATCH_ROWS).execute(select(table).order_by(*_key(table)))
    for row in result:
        digest.update(repr(tuple(row)).encode())
        count += 1
    return count, digest.hexdigest()


def _refuse_non_empty(target: Connection, shown_target: str) -> None:
    names = inspect(target).get_table_names()
    if names:
        listed = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        raise CopyRefused(
            f"{shown_target} is not empty ({len(names)} tables: {listed}); copy into a new, empty database "
            "(e.g. `createdb agentchat`): nothing was changed"
        )


def _set_sequences(target: Connection) -> None:
    """Serial ids go on after the copied ones (the copy inserted explicit ids, which sequences skip)."""
    for table in metadata.sorted_tables:
        for column in table.primary_key.columns:
            if column.autoincrement is True or (column.autoincrement == "auto" and column.type.python_type is int):
                target.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence(:t, :c), COALESCE(MAX({column.name}), 0) + 1, false) "  # noqa: S608 (our names)
                        f"FROM {table.name}"
                    ),
                    {"t": table.name, "c": column.name},
                )


def _copy(target: Connection, source: Connection, copied: Copied) -> None:
    _refuse_non_empty(target, copied.target)
    migrations.upgrade_connection(target)
    for table in metadata.sorted_tables:
        for batch in _batches(source, table):
            target.execute(insert(table), batch)
    _set_sequences(target)
    for table in metadata.sorted_tables:
        count, theirs = _digest(source, table)
        copied_count, ours = _digest(target, table)
        if (count, theirs) != (copied_count, ours):
            raise CopyRefused(
                f"table {table.name} did not copy identically ({count} rows in, {copied_count} out): "
                "the target was rolled back; report this with `agentchat-mcp --version`"
            )
        copied.rows[table.name] = count
    balance = target.execute(select(func.coalesce(func.sum(ledger_lines.c.amount_cents), 0))).scalar_one()
    if balance != 0:
        raise CopyRefused(
            f"the source's ledger does not balance ({balance} cents): run `agentchat-mcp db verify` on a backup "
            "of it first; nothing was copied"
        )


async def copy_to_postgresql(source: Path, url: str) -> Copied:
    """Copy the SQLite database at `source` (already at the migration head) into the empty database at `url`."""
    target = target_url(url)
    copied = Copied(source=str(source), target=str(target), revision=migrations.head_revision())
    reader = create_engine(f"sqlite:///file:{source}?mode=ro&uri=true")
    try:
        engine = create_async_engine(engine_url(target), isolation_level="SERIALIZABLE")
    except DatabaseUnavailable as exc:
        raise CopyRefused(str(exc)) from None
    try:
        with reader.connect() as src:
            src.exec_driver_sql("BEGIN")  # one snapshot for the whole copy: writers may go on meanwhile
            async with engine.begin() as dst:
                await dst.run_sync(_copy, src, copied)
    except (OSError, OperationalError, DBAPIError) as exc:
        reason = getattr(exc, "orig", None) or exc
        raise CopyRefused(
            f"could not copy to {copied.target} ({str(reason).splitlines()[0]}): nothing was changed"
        ) from None
    finally:
        reader.dispose()
        await engine.dispose()
    return copied
