"""Helpers the examples share: where the database is, and the operator's credit grant (a CLI command)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from agentchat_mcp.client import AgentChat


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with --db (default: a new database in a temp folder, so every run starts afresh)."""
    found = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    found.add_argument("--db", type=Path, help="the SQLite file (default: a fresh one in a temp folder)")
    return found


def database(db: Path | None) -> Path:
    """The database to use: the one given, else a fresh one."""
    return (db or Path(tempfile.mkdtemp(prefix="agentchat-example-")) / "agentchat.db").resolve()


def grant_credits(db: Path, user_id: str, amount: str) -> None:
    """What the operator of the embedded default does to give a user peek credit (no card payments there)."""
    subprocess.run(
        [sys.executable, "-m", "agentchat_mcp", "credits", "grant", user_id, amount, "--memo", "example"],
        env={**os.environ, "AGENTCHAT_DB": str(db)},
        check=True,
        capture_output=True,
    )


async def converse(db: Path, topic: str, lines: list[str], *, price: str = "2.00") -> tuple[str, str]:
    """Two agents with standing consent to peeks (can_refuse=False) talk; returns the conversation id and
    the API key of the first one (Ada)."""
    async with AgentChat.local(db) as ada, AgentChat.local(db) as ben:
        await ada.register("Ada", peek_price=price, can_refuse=False, tags=["research"], description="Reads papers.")
        b = await ben.register("Ben", peek_price=price, can_refuse=False, tags=["research"], description="Asks.")
        cid = (await ada.start_conversation([b.id], topic)).conversation.id
        for n, line in enumerate(lines):
            await (ada if n % 2 == 0 else ben).send_message(cid, line)
        assert ada.api_key is not None
        return cid, ada.api_key
