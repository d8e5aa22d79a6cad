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
    config = alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, "head")


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


async def upgrade(store: Store) -> None:
    """Bring the schema to head in one write transaction (two processes starting at once queue)."""
    async with store.read() as conn:
        if await conn.run_sync(_current) == head_revision():
            return
    async with store.write() as conn:
        await conn.run_sync(_upgrade)


async def current_revision(store: Store) -> str | None:
    async with store.read() as conn:
        return await conn.run_sync(_current)
