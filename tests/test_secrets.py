"""Server-secret rotation: versioned keyed hashes, nobody locked out, old versions pruned when unused."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agentchat_mcp import cli, server_secret
from agentchat_mcp.errors import NotAuthenticated
from agentchat_mcp.server_secret import Keyring, load_keyring, version_of
from agentchat_mcp.services.identity import Identity
from agentchat_mcp.store import open_store
from tests import support_db
from tests.conftest import Hub, structured

pytestmark = pytest.mark.anyio


def stored_hashes(hub: Hub) -> dict[str, str]:
    return dict(support_db.query(hub.settings.db, "SELECT id, api_key_hash FROM principals"))


async def test_after_a_rotation_every_existing_key_still_works_and_moves_to_the_new_version(hub: Hub) -> None:
    alice, bob = await hub.register_agent("alice"), await hub.register_user("bob")
    assert {version_of(h) for h in stored_hashes(hub).values()} == {1}
    keyring = server_secret.rotate(hub.settings.resolved_secret_file())
    assert keyring.current_version == 2
    async with hub.client(alice) as client:
        assert structured(await client.call_tool("whoami", {}))["id"] == alice.id
    hashes = stored_hashes(hub)
    assert hashes[alice.id].startswith("v2$") and version_of(hashes[bob.id]) == 1  # bob has not signed in yet
    async with hub.client(bob) as client:
        assert structured(await client.call_tool("whoami", {}))["id"] == bob.id
    assert all(h.startswith("v2$") for h in stored_hashes(hub).values())


async def test_new_registrations_and_rotated_api_keys_use_the_newest_version(hub: Hub) -> None:
    server_secret.rotate(hub.settings.resolved_secret_file())
    server_secret.rotate(hub.settings.resolved_secret_file())
    carol = await hub.register_agent("carol")
    assert stored_hashes(hub)[carol.id].startswith("v3$")
    async with hub.client(carol) as client:
        new_key = structured(await client.call_tool("rotate_api_key", {}))["api_key"]
    assert stored_hashes(hub)[carol.id].startswith("v3$")
    async with hub.client(replace(carol, api_key=new_key)) as client:
        assert structured(await client.call_tool("whoami", {}))["id"] == carol.id


async def test_a_server_started_before_the_rotation_keeps_accepting_keys_another_process_rehashed(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    path = hub.settings.resolved_secret_file()
    async with open_store(hub.settings.db) as store:
        stale = Identity(store, load_keyring(path))  # a long-running process, loaded at v1
        assert (await stale.authenticate(alice.api_key)).id == alice.id
        server_secret.rotate(path)
        fresh = Identity(store, load_keyring(path))  # a process started after the rotation
        assert (await fresh.authenticate(alice.api_key)).id == alice.id  # rehashes alice to v2
        assert stored_hashes(hub)[alice.id].startswith("v2$")
        stale.forget(alice.id)  # its auth cache expired
        assert (await stale.authenticate(alice.api_key)).id == alice.id  # reloads the rotated file
        # and its own new registrations are hashed under v2 as well
        dave, _ = await stale.register("user", "dave")
        assert stored_hashes(hub)[dave.id].startswith("v2$")
        with pytest.raises(NotAuthenticated):
            await stale.authenticate("acp_" + "x" * 43)


async def test_prune_drops_only_versions_no_principal_uses(hub: Hub) -> None:
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    path = hub.settings.resolved_secret_file()
    server_secret.rotate(path)
    async with hub.client(alice) as client:
        await client.call_tool("whoami", {})
    async with open_store(hub.settings.db) as store:
        in_use = await Identity(store, load_keyring(path)).hash_versions()
    assert in_use == {1: 1, 2: 1}
    keyring, dropped = server_secret.prune(path, set(in_use))
    assert dropped == [] and [v for v, _ in keyring.versions] == [2, 1]  # bob still needs v1
    async with hub.client(bob) as client:
        assert not (await client.call_tool("whoami", {})).is_error
    keyring, dropped = server_secret.prune(path, {2})
    assert dropped == [1] and [v for v, _ in keyring.versions] == [2]
    for account in (alice, bob):
        async with hub.client(account) as client:
            assert structured(await client.call_tool("whoami", {}))["id"] == account.id
    _, dropped = server_secret.prune(path, set())  # the newest version always stays
    assert dropped == [] and load_keyring(path).current_version == 2


def test_concurrent_rotations_lose_no_version(tmp_path: Path) -> None:
    path = tmp_path / "agentchat.secret"
    first = load_keyring(path)
    threads = [threading.Thread(target=server_secret.rotate, args=(path,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keyring = load_keyring(path)
    assert [v for v, _ in keyring.versions] == [7, 6, 5, 4, 3, 2, 1]
    assert dict(keyring.versions)[1] == first.versions[0][1]  # the original secret is kept
    assert len({s for _, s in keyring.versions}) == 7
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_the_keyring_file_format_and_its_errors(tmp_path: Path) -> None:
    secret = bytes(range(32))
    assert server_secret.parse(secret.hex()) == ((1, secret),)  # a file from before rotation existed
    two = ((2, b"\x02" * 32), (1, secret))
    assert server_secret.parse(server_secret.render(two)) == two
    for bad, message in (
        ("", "does not hold a valid server secret"),
        ("zz", "line 1: expected"),
        ("v2 abcd", "not a valid server secret"),
        (f"v1 {secret.hex()}\nv1 {secret.hex()}", "twice"),
    ):
        with pytest.raises(ValueError, match=message):
            server_secret.parse(bad)
    readable = tmp_path / "open.secret"
    readable.write_text(secret.hex())
    readable.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_keyring(readable)
    keyring = Keyring(two)
    assert secret.hex() not in repr(keyring) and "versions=[2, 1]" in repr(keyring)
    assert (
        keyring.hash("acp_k").startswith("v2$")
        and Keyring.single(secret).hash("acp_k") == keyring.candidates("acp_k")[1]
    )
    assert keyring.fingerprint(1) != keyring.fingerprint(2) and secret.hex()[:12] not in keyring.fingerprint(1)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """cli.main configures the root logger; put it back for the tests that follow."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_the_cli_rotates_reports_and_prunes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "agentchat.secret"
    monkeypatch.setenv("AGENTCHAT_DB", str(tmp_path / "agentchat.db"))
    monkeypatch.setenv("AGENTCHAT_SECRET_FILE", str(secret_file))

    def run(*argv: str) -> dict[str, object]:
        with pytest.raises(SystemExit) as done:
            cli.main(list(argv))
        assert done.value.code == 0
        return dict(json.loads(capsys.readouterr().out))

    run("user", "create", "--name", "erin")
    assert run("secrets", "rotate")["current_version"] == 2
    status = run("secrets", "status")
    assert status["current_version"] == 2
    assert [(v["version"], v["principals"]) for v in status["versions"]] == [(2, 0), (1, 1)]  # type: ignore[index]
    assert run("secrets", "prune")["dropped_versions"] == []  # erin still hashes under v1
    secret_text = secret_file.read_text()
    assert all(line.split()[-1] not in json.dumps(status) for line in secret_text.splitlines() if line.startswith("v"))
