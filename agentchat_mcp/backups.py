"""Backups that are tested: `db backup PATH --verify`, `db verify PATH`, `db restore PATH [--force]`.

Verifying a backup restores it into a temporary folder (the SQLite backup API reads every page of
it) and checks the restored copy:

1. `PRAGMA integrity_check` is `ok`;
2. its schema revision is this release's migration head;
3. row counts of the main tables, and the ledger balances (all lines sum to zero);
4. messages: every stored message (newest first, up to MAX_SIGNATURES) still verifies against its
   sender's Ed25519 signature key from the copy, so a flipped byte in a ciphertext, its place or
   the sender's key is caught. This is what can be checked of *existing* messages: they are end-to-end
   encrypted, and only a participant's API key (never stored) unwraps the keys that open them
   (architecture.md section 4, property 2), so no operator tool can read them, by design;
5. a canary read with test keys: in the restored copy (never the live database), two throwaway
   verification agents are registered, one sends a message and the other reads it back decrypted
   through the real services, with this server's secret file. That shows the copy works as a
   database of this server: API-key hashes keyed by the server secret, wrapped private keys, epoch
   keys sealed per reader, AEAD with associated data, and signatures.

The temporary copy is deleted afterwards. Any failure is one BackupInvalid line for the operator.
"""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentchat_mcp.errors import AgentChatError, OperatorError
from agentchat_mcp.settings import Settings

COUNTED = ("principals", "conversations", "messages", "peeks", "ledger_entries", "ledger_lines", "payments")
MAX_SIGNATURES = 100_000
CANARY_TEXT = "agentchat backup canary"


class BackupInvalid(OperatorError):
    """A backup that failed verification, or a restore that was refused (one line)."""


@dataclass
class Verified:
    path: Path
    revision: str
    rows: dict[str, int] = field(default_factory=dict)
    signatures_checked: int = 0
    canary: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "backup": str(self.path),
            "verified": True,
            "integrity_check": "ok",
            "revision": self.revision,
            "rows": self.rows,
            "ledger_balanced": True,
            "message_signatures_checked": self.signatures_checked,
            "canary": self.canary,
        }


async def verify(path: Path, settings: Settings) -> Verified:
    """Restore `path` into a temporary folder and check it (module docstring); BackupInvalid if not sound."""
    from agentchat_mcp.store.engine import backup_file

    if not path.is_file():
        raise BackupInvalid(f"backup {path} does not exist (or is not a file): give the path of a backup file")
    with tempfile.TemporaryDirectory(prefix="agentchat-verify-") as folder:
        restored = Path(folder) / "restored.db"
        try:
            backup_file(path, restored)
            checked = _check_file(path, restored)
        except sqlite3.DatabaseError as exc:
            raise BackupInvalid(
                f"backup {path} failed verification: it is not a sound SQLite database ({exc})"
            ) from None
        checked.canary = await _canary(restored, settings, path)
    return checked


def _fail(path: Path, what: str) -> BackupInvalid:
    return BackupInvalid(f"backup {path} failed verification: {what}")


def _check_file(path: Path, restored: Path) -> Verified:
    from agentchat_mcp.store import migrations

    db = sqlite3.connect(restored)
    try:
        problems = [row[0] for row in db.execute("PRAGMA integrity_check(5)")]
        if problems != ["ok"]:
            said = [x.strip() for p in problems for x in str(p).splitlines() if x.strip() and "***" not in x]
            more = f" (and {len(said) - 3} more)" if len(said) > 3 else ""
            raise _fail(path, f"PRAGMA integrity_check says {'; '.join(said[:3])}{more}")
        head = migrations.head_revision()
        try:
            revision = db.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:
            revision = None
        if revision is None or revision[0] != head:
            found = revision[0] if revision else "none"
            raise _fail(path, f"its schema revision is {found}, not this release's head {head}")
        checked = Verified(path=path, revision=head)
        for table in COUNTED:
            checked.rows[table] = int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608 (fixed names)
        unbalanced = db.execute("SELECT COALESCE(SUM(amount_cents), 0) FROM ledger_lines").fetchone()[0]
        if unbalanced != 0:
            raise _fail(path, f"its ledger lines sum to {unbalanced} cents, not 0")
        checked.signatures_checked = _check_signatures(path, db)
        return checked
    finally:
        db.close()


def _check_signatures(path: Path, db: sqlite3.Connection) -> int:
    from agentchat_mcp.crypto import MessageContext, signed_payload, verify_signature

    rows = db.execute(
        "SELECT m.conversation_id, m.epoch, m.seq, m.sender_id, m.sealed, m.signature, p.sign_public "
        "FROM messages m LEFT JOIN principals p ON p.id = m.sender_id ORDER BY m.id DESC LIMIT ?",
        (MAX_SIGNATURES,),
    )
    count = 0
    for conversation_id, epoch, seq, sender_id, sealed, signature, sign_public in rows:
        ctx = MessageContext(conversation_id=conversation_id, epoch=epoch, seq=seq, sender_id=sender_id)
        try:
            if sign_public is None:
                raise AgentChatError("its sender is missing")
            verify_signature(bytes(sign_public), signed_payload(ctx, bytes(sealed)), bytes(signature))
        except (AgentChatError, ValueError, TypeError):
            raise _fail(
                path, f"message {seq} of {conversation_id} does not match its sender's signature (altered bytes)"
            ) from None
        count += 1
    return count


async def _canary(restored: Path, settings: Settings, path: Path) -> str:
    """Two throwaway agents in the restored copy: one sends, the other reads it back decrypted."""
    from agentchat_mcp.server import build_app_context
    from agentchat_mcp.store import open_store
    from agentchat_mcp.telemetry import Telemetry

    copy = settings.model_copy(update={"db": restored, "payments": "ledger", "api_key": None})
    try:
        async with open_store(restored, upgrade=False) as store:
            app = build_app_context(copy, store, Telemetry())
            _, sender_key = await app.identity.register("agent", "backup-canary-sender", peek_price_cents=50)
            _, reader_key = await app.identity.register("agent", "backup-canary-reader", peek_price_cents=50)
            sender = await app.identity.authenticate(sender_key)
            reader = await app.identity.authenticate(reader_key)
            conversation, _ = await app.conversations.start(sender, [reader.id], "backup canary", CANARY_TEXT)
            page = await app.conversations.read(reader, conversation.id, 0, 10)
    except AgentChatError as exc:
        raise _fail(path, f"a test message could not be written and read back in the restored copy ({exc})") from None
    texts = [m.text for m in page.messages]
    if texts != [CANARY_TEXT]:
        raise _fail(path, "a test message written in the restored copy did not read back decrypted")
    return "a test message between two throwaway agents in the restored copy read back decrypted"


async def restore(path: Path, settings: Settings, *, force: bool) -> Verified:
    """Verify `path`, then copy it over the database of `settings` (refused if one exists, unless force)."""
    from agentchat_mcp.store.engine import backup_file, check_path

    target = check_path(settings.sqlite_path)
    if target == path.resolve():
        raise BackupInvalid(f"{path} is the database itself: give the path of a backup file")
    live = target.exists() and target.stat().st_size > 0
    if live and not force:
        raise BackupInvalid(
            f"{target} already holds a database: stop the servers that use it and add --force to overwrite it"
        )
    checked = await verify(path, settings)
    backup_file(path, target)  # page by page, through SQLite (WAL and locks respected); the file stays 0600
    return checked
