"""The database alone never reveals a message (architecture.md section 4, properties 1-3 and 5)."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import MCPError

from agentchat_mcp.crypto import EpochKey, KeyBundle, MessageContext
from agentchat_mcp.errors import DecryptionFailed
from agentchat_mcp.settings import PostgresUrl
from tests import support_db
from tests.conftest import Account, Hub, error_text, run_cli, structured

pytestmark = pytest.mark.anyio

MISSING = "cnv_" + "0" * 20


def forms(secret: str) -> list[bytes]:
    """The secret as stored text might hold it: UTF-8, UTF-16, hex, and base64 at every alignment."""
    raw = secret.encode()
    found = [
        raw,
        secret.encode("utf-16-le"),
        secret.encode("utf-16-be"),
        raw.hex().encode(),
        raw.hex().upper().encode(),
    ]
    for shift in range(3):  # base64 of the text inside a longer blob starts at any of 3 alignments
        encoded = base64.b64encode(b"\x00" * shift + raw)[4 if shift else 0 :]
        found += [encoded[:-4], base64.urlsafe_b64encode(b"\x00" * shift + raw)[4 if shift else 0 : -4]]
    return [f for f in found if len(f) >= 16]


def occurrences(data: bytes, secret: str) -> int:
    return sum(data.count(form) for form in forms(secret))


def rows(db: Path | PostgresUrl, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return support_db.query(db, sql, *args)


def execute(db: Path | PostgresUrl, sql: str, *args: Any) -> None:
    support_db.query(db, sql, *args)


cli = run_cli


async def start(client: Any, others: list[Account], first_message: str | None = None) -> str:
    args: dict[str, Any] = {"participants": [o.id for o in others], "topic": "at rest"}
    if first_message is not None:
        args["first_message"] = first_message
    return str(structured(await client.call_tool("start_conversation", args))["conversation"]["id"])


async def send(client: Any, conversation_id: str, text: str) -> int:
    sent = structured(await client.call_tool("send_message", {"conversation_id": conversation_id, "text": text}))
    return int(sent["seq"])


async def read(client: Any, conversation_id: str) -> list[dict[str, Any]]:
    return list(structured(await client.call_tool("read_messages", {"conversation_id": conversation_id}))["messages"])


# --- property 1: no plaintext and no key in the file, the WAL or a backup ------------------------------


@pytest.mark.sqlite_only("reads the bytes of the database file, its WAL and a backup")
async def test_a_canary_and_every_api_key_appear_nowhere_in_the_db_wal_or_a_backup(hub: Hub, tmp_path: Path) -> None:
    canary = f"CANARY-{uuid.uuid4().hex}-the eagle lands at dawn"
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    async with hub.client(alice) as a, hub.client(bob) as b:
        conv = await start(a, [bob], first_message=f"first: {canary}")
        for i in range(3):
            await send(a, conv, f"{canary} #{i}")
            await send(b, conv, f"re: {canary} #{i}")
        rotated = structured(await b.call_tool("rotate_api_key", {}))["api_key"]
        assert [m["text"] for m in await read(a, conv)][-1] == f"re: {canary} #2"

        # While the servers run, the newest pages live in the WAL: check it holds them, then search it.
        db = hub.settings.db
        wal = db.with_name(db.name + "-wal")
        assert wal.stat().st_size > 0
        backup = tmp_path / "backups" / "copy.db"
        done = cli("--db", str(db), "db", "backup", str(backup))
        assert done.returncode == 0, done.stderr
        assert rows(backup, "SELECT count(*) FROM messages") == [(7,)]

        secrets = {
            "canary": canary,
            "alice's key": alice.api_key,
            "bob's old key": bob.api_key,
            "bob's new key": rotated,
        }
        for i, hex_secret in enumerate(
            re.findall(r"\b[0-9a-f]{64}\b", hub.settings.resolved_secret_file().read_text())
        ):
            secrets[f"server secret {i}"] = hex_secret
        assert any(name.startswith("server secret") for name in secrets)
        files = [db, wal, db.with_name(db.name + "-shm"), backup]
        for path in files:
            data = path.read_bytes()
            for what, secret in secrets.items():
                assert occurrences(data, secret) == 0, f"{what} found in {path.name}"
        # The search would have found it, in any of these forms.
        for blob in (
            f"x{canary}y".encode("utf-16-le"),
            base64.b64encode(f"xy{canary}".encode()),
            canary.encode().hex().encode(),
        ):
            assert occurrences(blob, canary) >= 1

        # No usable private key either: neither alice's raw X25519/Ed25519 keys nor a raw epoch key.
        (wrapped,) = rows(db, "SELECT wrapped_private FROM principals WHERE id = ?", alice.id)[0]
        bundle = KeyBundle.unwrap(wrapped, alice.api_key)
        raw_private = [bytes(bundle._box_key), bytes(bundle._sign_key)]
        (sealed_epoch_key,) = rows(
            db, "SELECT wrapped_key FROM epoch_keys WHERE conversation_id = ? AND principal_id = ?", conv, alice.id
        )[0]
        raw_epoch_key = bundle.open_sealed(sealed_epoch_key)
        for path in files:
            data = path.read_bytes()
            for raw in [
                *raw_private,
                raw_epoch_key,
                *(bytes.fromhex(v) for k, v in secrets.items() if k.startswith("server")),
            ]:
                assert raw not in data, f"a raw key found in {path.name}"


# --- a third agent learns nothing -------------------------------------------------------------------


async def test_a_third_agent_gets_the_same_answer_as_for_a_missing_conversation_everywhere(hub: Hub) -> None:
    alice, bob, eve = [await hub.register_agent(n) for n in ("alice", "bob", "eve")]
    async with hub.client(alice) as a:
        conv = await start(a, [bob], first_message="for bob only")
    async with hub.client(eve) as e:
        for tool, extra in [
            ("read_messages", {}),
            ("send_message", {"text": "let me in"}),
            ("mark_read", {}),
            ("wait_for_messages", {"timeout_s": 0}),
            ("leave_conversation", {}),
        ]:
            real = error_text(await e.call_tool(tool, {"conversation_id": conv, **extra}))
            fake = error_text(await e.call_tool(tool, {"conversation_id": MISSING, **extra}))
            assert real.replace(conv, "X") == fake.replace(MISSING, "X"), tool
            assert "for bob only" not in real and "alice" not in real
        for suffix in ("", "/messages"):
            answers = []
            for target in (conv, MISSING):
                with pytest.raises(MCPError) as refused:
                    await e.read_resource(f"agentchat://conversations/{target}{suffix}")
                answers.append((refused.value.error.code, refused.value.error.message.replace(target, "X")))
            assert answers[0] == answers[1], suffix
        assert structured(await e.call_tool("list_conversations", {}))["conversations"] == []
        assert structured(await e.call_tool("check_inbox", {}))["total_unread"] == 0
        waited = structured(await e.call_tool("wait_for_messages", {"timeout_s": 0}))
        assert waited == {"timed_out": True, "conversations": []}
    async with hub.client(eve, mode="legacy") as legacy:
        answers = []
        for target in (conv, MISSING):
            with pytest.raises(MCPError) as refused:
                await legacy.subscribe_resource(f"agentchat://conversations/{target}")
            answers.append(refused.value.error.message.replace(target, "X"))
        assert answers[0] == answers[1]
    # Nothing eve did changed the conversation.
    async with hub.client(bob) as b:
        assert [m["text"] for m in await read(b, conv)] == ["for bob only"]


# --- tampering is detected, reported and counted -----------------------------------------------------


def flip_first_byte(db: Path, column: str, conv: str, seq: int) -> None:
    (value,) = rows(db, f"SELECT {column} FROM messages WHERE conversation_id = ? AND seq = ?", conv, seq)[0]  # noqa: S608
    flipped = bytes([value[30] ^ 0x01])
    execute(
        db,
        f"UPDATE messages SET {column} = ? WHERE conversation_id = ? AND seq = ?",  # noqa: S608
        value[:30] + flipped + value[31:],
        conv,
        seq,
    )


Tamper = Callable[[Path, str, str, Account], tuple[str, set[int]]]  # -> (conversation to read, failing seqs)


def flip_ciphertext(db: Path, conv: str, other: str, sender: Account) -> tuple[str, set[int]]:
    flip_first_byte(db, "sealed", conv, 2)
    return conv, {2}


def flip_signature(db: Path, conv: str, other: str, sender: Account) -> tuple[str, set[int]]:
    flip_first_byte(db, "signature", conv, 2)
    return conv, {2}


def move_to_another_conversation(db: Path, conv: str, other: str, sender: Account) -> tuple[str, set[int]]:
    execute(db, "UPDATE messages SET conversation_id = ? WHERE conversation_id = ? AND seq = 2", other, conv)
    return other, {2}


def change_sender(db: Path, conv: str, other: str, sender: Account) -> tuple[str, set[int]]:
    execute(db, "UPDATE messages SET sender_id = ? WHERE conversation_id = ? AND seq = 2", sender.id, conv)
    return conv, {2}


def reorder(db: Path, conv: str, other: str, sender: Account) -> tuple[str, set[int]]:
    for old, new in ((2, 100), (3, 2), (100, 3)):
        execute(db, "UPDATE messages SET seq = ? WHERE conversation_id = ? AND seq = ?", new, conv, old)
    return conv, {2, 3}


def replay(db: Path, conv: str, other: str, sender: Account) -> tuple[str, set[int]]:
    execute(
        db,
        "INSERT INTO messages (conversation_id, seq, epoch, sender_id, sealed, signature, created_at) "
        "SELECT conversation_id, 4, epoch, sender_id, sealed, signature, created_at FROM messages "
        "WHERE conversation_id = ? AND seq = 2",
        conv,
    )
    return conv, {4}


@pytest.mark.parametrize(
    "tamper",
    [flip_ciphertext, flip_signature, move_to_another_conversation, change_sender, reorder, replay],
    ids=lambda f: f.__name__,
)
async def test_a_tampered_message_fails_to_open_with_a_clear_error_and_is_counted(hub: Hub, tamper: Tamper) -> None:
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    async with hub.client(alice) as a:
        conv = await start(a, [bob], first_message="one")
        await send(a, conv, "two")
        await send(a, conv, "three")
        other = await start(a, [bob], first_message="elsewhere")
    read_from, failing = tamper(hub.settings.db, conv, other, bob)
    before = hub.counter("encryption_failures")
    async with hub.client(bob) as b:
        got = await read(b, read_from)
    for message in got:
        if message["seq"] in failing:
            assert message["text"] is None, message
            assert "integrity check" in message["error"] and str(message["seq"]) in message["error"]
        else:
            assert message["text"] and message["error"] is None, message
    assert {m["seq"] for m in got} >= failing
    assert hub.counter("encryption_failures") - before == len(failing)


async def test_a_tampered_epoch_key_fails_clearly_for_its_reader_only(hub: Hub) -> None:
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    async with hub.client(alice) as a:
        conv = await start(a, [bob], first_message="one")
        await send(a, conv, "two")
    db = hub.settings.db
    (wrapped,) = rows(
        db, "SELECT wrapped_key FROM epoch_keys WHERE conversation_id = ? AND principal_id = ?", conv, bob.id
    )[0]
    execute(
        db,
        "UPDATE epoch_keys SET wrapped_key = ? WHERE conversation_id = ? AND principal_id = ?",
        wrapped[:-1] + bytes([wrapped[-1] ^ 0x01]),
        conv,
        bob.id,
    )
    before = hub.counter("encryption_failures")
    async with hub.client(bob) as b:
        got = await read(b, conv)
        assert [(m["text"], m["error"] is not None) for m in got] == [(None, True), (None, True)]
        # Sending needs the current key too: refused with a message, not an internal error.
        text = error_text(await b.call_tool("send_message", {"conversation_id": conv, "text": "hi"}))
        assert "could not be opened" in text and "Internal error" not in text, text
    assert hub.counter("encryption_failures") - before == 3  # two reads and the refused send
    async with hub.client(alice) as a:
        assert [m["text"] for m in await read(a, conv)] == ["one", "two"]


# --- property 5: a participant who left holds nothing that opens later messages -----------------------


async def test_after_bob_leaves_nothing_he_holds_opens_a_later_message(hub: Hub) -> None:
    alice, bob, carol = [await hub.register_agent(n) for n in ("alice", "bob", "carol")]
    async with hub.client(alice) as a, hub.client(bob) as b, hub.client(carol) as c:
        conv = await start(a, [bob, carol], first_message="before bob leaves")
        assert [m["text"] for m in await read(b, conv)] == ["before bob leaves"]
        structured(await b.call_tool("leave_conversation", {"conversation_id": conv}))
        left_at_seq = 1
        await send(a, conv, "after 1")
        await send(c, conv, "after 2")
        assert [m["text"] for m in await read(c, conv)] == ["before bob leaves", "after 1", "after 2"]

        # Bob's tools now answer as for a conversation that does not exist.
        for tool, extra in [
            ("read_messages", {}),
            ("send_message", {"text": "I am back"}),
            ("mark_read", {}),
            ("wait_for_messages", {"timeout_s": 0}),
            ("leave_conversation", {}),
        ]:
            real = error_text(await b.call_tool(tool, {"conversation_id": conv, **extra}))
            fake = error_text(await b.call_tool(tool, {"conversation_id": MISSING, **extra}))
            assert real.replace(conv, "X") == fake.replace(MISSING, "X"), tool
        for suffix in ("", "/messages"):
            with pytest.raises(MCPError, match="No conversation"):
                await b.read_resource(f"agentchat://conversations/{conv}{suffix}")
        assert structured(await b.call_tool("list_conversations", {}))["conversations"] == []

    # Everything bob could take from the database, opened with his own API key.
    db = hub.settings.db
    ((wrapped_private,),) = rows(db, "SELECT wrapped_private FROM principals WHERE id = ?", bob.id)
    bundle = KeyBundle.unwrap(wrapped_private, bob.api_key)
    his = rows(
        db, "SELECT epoch, wrapped_key FROM epoch_keys WHERE conversation_id = ? AND principal_id = ?", conv, bob.id
    )
    others = rows(
        db, "SELECT wrapped_key FROM epoch_keys WHERE conversation_id = ? AND principal_id != ?", conv, bob.id
    )
    messages = rows(db, "SELECT seq, epoch, sender_id, sealed FROM messages WHERE conversation_id = ?", conv)
    keys = [EpochKey.unwrap(wrapped, bundle) for _, wrapped in his]
    earlier = [m for m in messages if m[0] <= left_at_seq]
    later = [m for m in messages if m[0] > left_at_seq]
    assert len(later) == 2 and others
    # The harness works: his keys do open what was sent while he was there.
    (seq, epoch, sender, sealed) = earlier[0]
    assert keys[0].open(sealed, ctx=MessageContext(conv, epoch, seq, sender)) == "before bob leaves"
    for key in keys:
        for seq, epoch, sender, sealed in later:
            for claimed_epoch in {epoch, *(e for e, _ in his)}:
                with pytest.raises(DecryptionFailed):
                    key.open(sealed, ctx=MessageContext(conv, claimed_epoch, seq, sender))
    for (wrapped,) in others:  # nor can he unseal the copies made for the others
        with pytest.raises(DecryptionFailed):
            bundle.open_sealed(wrapped)
    assert max(e for e, _ in his) < min(m[1] for m in later)
