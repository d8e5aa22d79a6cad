"""Alembic, driven from code: find storage/ (in the wheel or the checkout) and upgrade or report."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from agentchat_mcp.errors import OperatorError

if TYPE_CHECKING:
    from agentchat_mcp.store.engine import Store


def storage_dir() -> Path:
    """The migrations folder: packaged as agentchat_mcp/_storage, or storage/ in a checkout."""
    packaged = Path(str(resources.files("agentchat_mcp"))) / "_storage"
    if (packaged / "env.py").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "storage"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(storage_dir()))
    return config


def head_revision() -> str:
    """The newest schema revision these migrations know."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _upgrade(conn: Connection) -> None:
    # Join the write transaction the store already began on the driver. Alembic takes SQLite for
    # non-transactional DDL and otherwise commits after each migration, which releases the write
    # lock between steps: a second process starting at once then migrates the same steps again,
    # and a failing step leaves the ones before it applied. In a transaction it runs them all.
    if not conn.in_transaction():
        conn.begin()
    config = alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, "head")


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


class MigrationFailed(OperatorError, RuntimeError):
    """A migration step failed; the database was left at the revision it had."""


async def upgrade(store: Store) -> None:
    """Bring the schema to head in one write transaction: two processes starting at once queue,
    and a failing migration leaves the database at the revision it had."""
    async with store.read() as conn:
        before = await conn.run_sync(_current)
    if before == head_revision():
        return
    try:
        async with store.write() as conn:
            await conn.run_sync(_upgrade)
    except DBAPIError as exc:
        raise MigrationFailed(
            f"could not bring the database {store.shown} to schema {head_revision()}: {exc.orig}. "
            f"Nothing was changed; it is still at {f'schema {before}' if before else 'no schema (new)'}."
        ) from exc


async def current_revision(store: Store) -> str | None:
    async with store.read() as conn:
        return await conn.run_sync(_current)


def upgrade_connection(conn: Connection) -> None:
    """Bring the database behind `conn` to head inside the transaction it is in (db copy's target)."""
    _upgrade(conn)
