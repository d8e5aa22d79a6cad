"""Invitation codes: with registration = invite, a code from the operator admits a set number of
registrations of one kind until it expires; everything else is refused and leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentchat_mcp.services.identity import INVITE_REFUSED
from tests.conftest import Hub, TravelClock, error_text, rows, run_cli, structured
from tests.support_db import db_value

pytestmark = pytest.mark.anyio

UNKNOWN_CODE = "aci_" + "x" * 32  # well formed, never issued


def cli(hub: Hub, *args: str) -> subprocess.CompletedProcess[str]:
    """`agentchat-mcp ...` as the operator runs it, on the hub's database and secret."""
    env = {
        **os.environ,
        "AGENTCHAT_DB": db_value(hub.settings.db),
        "AGENTCHAT_SECRET_FILE": str(hub.settings.resolved_secret_file()),
    }
    return run_cli(*args, env=env)


def new_invite(hub: Hub, *args: str) -> dict[str, Any]:
    done = cli(hub, "invite", "create", *args)
    assert done.returncode == 0, done.stderr
    printed: dict[str, Any] = json.loads(done.stdout)
    assert (done.stdout + done.stderr).count(printed["code"]) == 1  # shown once
    assert "only this once" in done.stderr
    return printed


def by_invitation(hub: Hub, policy: str = "invite") -> None:
    hub.settings = hub.settings.model_copy(update={"registration": policy})


async def register_agent(hub: Hub, name: str, code: str | None) -> Any:
    args: dict[str, Any] = {"name": name, "peek_price": "1.00"}
    if code is not None:
        args["invite_code"] = code
    async with hub.client() as c:
        return await c.call_tool("register_agent", args)


async def register_user(hub: Hub, name: str, code: str | None) -> Any:
    args: dict[str, Any] = {"display_name": name}
    if code is not None:
        args["invite_code"] = code
    async with hub.client() as c:
        return await c.call_tool("register_user", args)


def refused(result: Any) -> bool:
    """The one refusal every bad code gets (the SDK prefixes the tool's name)."""
    return error_text(result).endswith(INVITE_REFUSED)


def principals(hub: Hub) -> int:
    return int(rows(hub, "SELECT COUNT(*) FROM principals")[0][0])


def uses_left(hub: Hub, invite_id: str) -> int:
    return int(rows(hub, "SELECT uses_left FROM invites WHERE id = ?", invite_id)[0][0])


async def test_invite_mode_refuses_registration_without_a_code_or_with_a_wrong_one_and_writes_nothing(
    hub: Hub,
) -> None:
    by_invitation(hub)
    for register in (register_agent, register_user):
        missing = error_text(await register(hub, "mallory", None))
        assert "invitation" in missing and "invite_code" in missing
        unknown = error_text(await register(hub, "mallory", UNKNOWN_CODE))
        assert unknown.endswith(INVITE_REFUSED) and "fresh invitation code" in unknown
        malformed = error_text(await register(hub, "mallory", "let-me-in"))
        assert "invite_code" in malformed
    assert principals(hub) == 0


async def test_a_code_from_the_cli_registers_once_then_is_refused(hub: Hub) -> None:
    by_invitation(hub)
    invite = new_invite(hub)
    assert invite["role"] == "agent" and invite["uses"] == 1 and invite["code"].startswith("aci_")
    async with hub.client() as c:
        first = await c.call_tool(
            "register_agent", {"name": "ada", "peek_price": "1.00", "invite_code": invite["code"]}
        )
        got = structured(first)
        assert structured(await c.call_tool("whoami", {}))["id"] == got["id"]  # the session acts as ada
    assert invite["code"] not in json.dumps(got) + first.content[0].text
    again = error_text(await register_agent(hub, "eve", invite["code"]))
    assert again.endswith(INVITE_REFUSED) and invite["code"] not in again
    assert [r[0] for r in rows(hub, "SELECT name FROM principals")] == ["ada"]
    assert uses_left(hub, invite["id"]) == 0
    assert rows(hub, "SELECT last_used_at IS NOT NULL FROM invites")[0][0] == 1


async def test_a_two_use_code_admits_exactly_two_of_five_concurrent_registrations(hub: Hub) -> None:
    by_invitation(hub)
    invite = new_invite(hub, "--uses", "2")
    results: list[Any] = []
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(hub.client()) for _ in range(5)]

        async def register(i: int) -> None:
            args = {"name": f"racer-{i}", "peek_price": "1.00", "invite_code": invite["code"]}
            results.append(await clients[i].call_tool("register_agent", args))

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(register, i)
    admitted = [r for r in results if not r.is_error]
    assert len(admitted) == 2
    assert [refused(r) for r in results if r.is_error] == [True] * 3
    assert principals(hub) == 2 and uses_left(hub, invite["id"]) == 0


async def test_an_expired_code_is_refused(hub: Hub, travel: TravelClock) -> None:
    by_invitation(hub)
    invite = new_invite(hub, "--uses", "5", "--expires-in-days", "7")
    travel.advance(days=6)
    structured(await register_agent(hub, "early", invite["code"]))
    travel.advance(days=2)
    assert refused(await register_agent(hub, "late", invite["code"]))
    assert principals(hub) == 1 and uses_left(hub, invite["id"]) == 4


async def test_a_user_code_cannot_register_an_agent_but_registers_a_user(hub: Hub) -> None:
    by_invitation(hub)
    invite = new_invite(hub, "--role", "user")
    assert refused(await register_agent(hub, "sneaky", invite["code"]))
    assert principals(hub) == 0 and uses_left(hub, invite["id"]) == 1
    got = structured(await register_user(hub, "uma", invite["code"]))
    assert got["role"] == "user" and got["id"].startswith("usr_")
    assert uses_left(hub, invite["id"]) == 0


@pytest.mark.sqlite_only("reads the bytes of the database file and its WAL")
async def test_the_database_keeps_only_a_hash_of_the_code(hub: Hub) -> None:
    by_invitation(hub)
    invite = new_invite(hub, "--uses", "2")
    structured(await register_agent(hub, "ada", invite["code"]))
    ((stored,),) = rows(hub, "SELECT code_hash FROM invites")
    assert stored != invite["code"] and invite["code"] not in stored
    db_files = [p for p in Path(hub.settings.db).parent.iterdir() if p.name.startswith(Path(hub.settings.db).name)]
    assert db_files
    for path in db_files:  # the main file and its WAL alike
        assert invite["code"].encode() not in path.read_bytes(), path.name


async def test_closed_mode_refuses_even_a_valid_code(hub: Hub) -> None:
    by_invitation(hub, "closed")
    invite = new_invite(hub)
    assert "closed" in error_text(await register_agent(hub, "ada", invite["code"]))
    assert principals(hub) == 0 and uses_left(hub, invite["id"]) == 1


async def test_open_mode_ignores_the_code(hub: Hub) -> None:
    invite = new_invite(hub)
    structured(await register_agent(hub, "ada", UNKNOWN_CODE))
    structured(await register_user(hub, "uma", invite["code"]))
    assert principals(hub) == 2 and uses_left(hub, invite["id"]) == 1


def test_the_cli_refuses_bad_numbers_with_one_line_and_creates_nothing(tmp_path: Path) -> None:
    hub = Hub(tmp_path)
    for args, word in (
        (["--uses", "0"], "--uses"),
        (["--uses", "many"], "--uses"),
        (["--expires-in-days", "-1"], "--expires-in-days"),
        (["--expires-in-days", "nan"], "--expires-in-days"),
        (["--role", "admin"], "--role"),
    ):
        done = cli(hub, "invite", "create", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert word in done.stderr and "Traceback" not in done.stderr and done.stdout == "", args
    if not isinstance(hub.settings.db, Path) or hub.settings.db.exists():
        assert rows(hub, "SELECT COUNT(*) FROM invites") == [(0,)]


async def test_pruning_old_secrets_keeps_the_version_a_live_invitation_is_hashed_under(hub: Hub) -> None:
    """Rotate the server secret after inviting: `secrets prune` must not void the unused code (no
    principal hashes under the old version any more, but the invitation does); once it is used up,
    the old version goes."""
    by_invitation(hub)
    invite = new_invite(hub, "--uses", "1")
    assert cli(hub, "secrets", "rotate").returncode == 0
    status = json.loads(cli(hub, "secrets", "status").stdout)
    assert [(v["version"], v["principals"], v["live_invites"]) for v in status["versions"]] == [(2, 0, 0), (1, 0, 1)]
    assert json.loads(cli(hub, "secrets", "prune").stdout)["dropped_versions"] == []

    registered = structured(await register_agent(hub, "late", invite["code"]))
    assert registered["id"].startswith("agt_")
    assert json.loads(cli(hub, "secrets", "prune").stdout)["dropped_versions"] == [1]


async def test_an_admin_creates_an_invitation_over_mcp_and_nobody_else_can(hub: Hub) -> None:
    admin, agent = await hub.register_admin("root"), await hub.register_agent("alice")  # before invitations only
    by_invitation(hub)
    async with hub.client(agent) as c:
        refused = await c.call_tool("create_invite", {"role": "user"})
    assert refused.is_error and "admin" in error_text(refused)
    async with hub.client(admin) as c:
        invite = structured(await c.call_tool("create_invite", {"role": "user", "uses": 1, "expires_in_days": 2}))
    assert invite["code"].startswith("aci_") and invite["role"] == "user" and invite["uses"] == 1
    assert rows(hub, "SELECT created_by FROM invites WHERE id = ?", invite["id"]) == [(admin.id,)]
    async with hub.client() as c:
        registered = structured(
            await c.call_tool("register_user", {"display_name": "uma", "invite_code": invite["code"]})
        )
    assert registered["role"] == "user"
    if isinstance(hub.settings.db, Path):
        assert invite["code"].encode() not in hub.settings.db.read_bytes()
