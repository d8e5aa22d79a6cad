"""Alembic, driven from code: find storage/ (in the wheel or the checkout) and upgrade or report."""

from __future__ import annotations

import ast
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from agentchat_mcp.errors import OperatorError

if TYPE_CHECKING:
    from alembic.config import Config

    from agentchat_mcp.store.engine import Store


def storage_dir() -> Path:
    """The migrations folder: packaged as agentchat_mcp/_storage, or storage/ in a checkout."""
    packaged = Path(str(resources.files("agentchat_mcp"))) / "_storage"
    if (packaged / "env.py").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "storage"


def alembic_config() -> Config:
    from alembic.config import Config  # alembic (with mako and pygments, ~12 MiB) only when a migration is due

    config = Config()
    config.set_main_option("script_location", str(storage_dir()))
    return config


@cache
def head_revision() -> str:
    """The newest schema revision these migrations know: the one no other revision follows.
    Read from the scripts' `revision` / `down_revision` lines, without loading alembic."""
    follows: dict[str, str | None] = {}
    for script in (storage_dir() / "versions").glob("*.py"):
        names: dict[str, str | None] = {}
        for node in ast.parse(script.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for target in node.targets:
                    value = node.value.value
                    if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                        names[target.id] = value if isinstance(value, str) else None
        if names.get("revision"):
            follows[str(names["revision"])] = names.get("down_revision")
    heads = set(follows) - set(follows.values())
    assert len(heads) == 1, f"the migrations must have one head, found {sorted(heads)}"
    return heads.pop()


def _upgrade(conn: Connection) -> None:
    # Join the write transaction the store already began on the driver. Alembic takes SQLite for
    # non-transactional DDL and otherwise commits after each migration, which releases the write
    # lock between steps: a second process starting at once then migrates the same steps again,
    # and a failing step leaves the ones before it applied. In a transaction it runs them all.
    if not conn.in_transaction():
        conn.begin()
    config = alembic_config()
    config.attributes["connection"] = conn
    from alembic import command

    command.upgrade(config, "head")


def _current(conn: Connection) -> str | None:
    """What alembic's MigrationContext.get_current_revision reads, without loading alembic."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    versions = [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
    assert len(versions) <= 1, versions
    return versions[0] if versions else None


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
