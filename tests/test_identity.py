"""Identities: registration, whoami, profiles, key rotation, the directory, CLI accounts, the server secret."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_types import ServerNotification

from agentchat_mcp import server_secret
from tests.conftest import Account, Hub, error_text, run_cli, structured
from tests.support_http import http_client, serving

pytestmark = pytest.mark.anyio


# --- register, whoami, profile ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_session_that_registers_acts_as_the_new_agent_at_once(hub: Hub, mode: str) -> None:
    async with hub.client(mode=mode) as c:
        assert "register_agent" in error_text(await c.call_tool("whoami", {}))
        got = structured(
            await c.call_tool(
                "register_agent",
                {
                    "name": "  Quill  ",
                    "peek_price": "2.5",
                    "description": "writes haiku",
                    "can_refuse": False,
                    "tags": ["Poetry", "poetry", "Haiku"],
                },
            )
        )
        assert got["id"].startswith("agt_") and got["api_key"].startswith("acp_") and got["role"] == "agent"
        me = structured(await c.call_tool("whoami", {}))
        names = {t.name for t in (await c.list_tools()).tools}
    assert me["id"] == got["id"]
    assert (me["name"], me["peek_price"], me["can_refuse"], me["tags"]) == ("Quill", "2.50", False, ["haiku", "poetry"])
    assert "send_message" in names and "register_agent" not in names
    # The key it returned is the way back in, from a new session.
    async with hub.client(Account(id=got["id"], role="agent", name="Quill", api_key=got["api_key"])) as again:
        assert structured(await again.call_tool("whoami", {}))["id"] == got["id"]


# Issue 11, point 11: the Python SDK client checks a result against the tool's tools/list entry; with no
# entry cached it lists the tools after the call, when the session is already the new principal.
NOT_LISTED = "not listed by server"


def sdk_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and NOT_LISTED in r.getMessage()]


class Heard:
    """A client's message handler that keeps the server's notifications."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    async def __call__(self, message: Any) -> None:
        if isinstance(message, ServerNotification):
            self.methods.append(message.method)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("tool", ["register_agent", "register_user"])
async def test_registering_before_any_tools_list_logs_no_client_warning(
    hub: Hub, mode: str, tool: str, caplog: pytest.LogCaptureFixture
) -> None:
    arguments = {"name": "quill", "peek_price": "1.00"} if tool == "register_agent" else {"display_name": "uma"}
    caplog.set_level(logging.WARNING)
    async with hub.client(mode=mode) as c:  # no list_tools first, as a script would do
        got = structured(await c.call_tool(tool, arguments))
        assert structured(await c.call_tool("whoami", {}))["id"] == got["id"]
        listed = {t.name for t in (await c.list_tools()).tools}
    assert sdk_warnings(caplog) == []
    assert "whoami" in listed and not listed & {"register_agent", "register_user"}  # shown once, then gone


async def test_registering_tells_a_listing_client_its_tools_changed_and_never_shows_register_again(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    heard = Heard()
    async with hub.client(mode="legacy", message_handler=heard) as c:
        assert c.server_capabilities.tools is not None and c.server_capabilities.tools.list_changed
        before = {t.name for t in (await c.list_tools()).tools}  # as a desktop client does on connect
        structured(await c.call_tool("register_agent", {"name": "quill", "peek_price": "1.00"}))
        after = {t.name for t in (await c.list_tools()).tools}
    assert heard.methods == ["notifications/tools/list_changed"]
    assert "register_agent" in before and "send_message" in after and "register_agent" not in after
    assert sdk_warnings(caplog) == []


async def test_registering_over_stdio_and_http_logs_no_client_warning(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with Client(hub.stdio(None)) as c:  # a real agentchat-mcp process
        structured(await c.call_tool("register_agent", {"name": "quill", "peek_price": "1.00"}))
    async with serving(hub) as base, http_client(base, mode="legacy") as c:  # an anonymous HTTP session
        structured(await c.call_tool("register_user", {"display_name": "uma"}))
        assert structured(await c.call_tool("whoami", {}))["role"] == "user"
    assert sdk_warnings(caplog) == []


async def test_a_user_registers_and_has_no_agent_fields(hub: Hub) -> None:
    uma = await hub.register_user("Uma")
    async with hub.client(uma) as u:
        me = structured(await u.call_tool("whoami", {}))
        assert (me["role"], me["peek_price"], me["can_refuse"]) == ("user", None, None)
        refused = error_text(await u.call_tool("update_profile", {"peek_price": "3.00"}))
        assert "agents only" in refused
        assert structured(await u.call_tool("update_profile", {"name": "Uma B."}))["name"] == "Uma B."


async def test_update_profile_changes_only_what_is_passed_and_shows_in_the_directory(hub: Hub) -> None:
    alice = await hub.register_agent("alice", tags=["python"])
    async with hub.client(alice) as a:
        me = structured(await a.call_tool("update_profile", {"description": "reviews code", "peek_price": "4.00"}))
        assert (me["name"], me["description"], me["peek_price"], me["tags"]) == (
            "alice",
            "reviews code",
            "4.00",
            ["python"],
        )
        me = structured(await a.call_tool("update_profile", {"tags": [], "can_refuse": False}))
        assert (me["tags"], me["can_refuse"], me["peek_price"]) == ([], False, "4.00")
        assert "name" in error_text(await a.call_tool("update_profile", {"name": "   "}))
    async with hub.client() as anonymous:
        profile = structured(await anonymous.call_tool("get_agent", {"agent_id": alice.id}))
    assert (profile["description"], profile["peek_price"], profile["can_refuse"]) == ("reviews code", "4.00", False)


# --- rotate_api_key ---------------------------------------------------------------------------------


async def test_rotating_a_key_rejects_the_old_one_at_once_and_the_new_one_opens_old_messages(hub: Hub) -> None:
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    async with hub.client(alice) as a:
        conv = structured(
            await a.call_tool(
                "start_conversation", {"participants": [bob.id], "topic": "keys", "first_message": "before rotation"}
            )
        )["conversation"]["id"]
    async with hub.client(bob) as other_process:  # bob's old key is warm in this server's cache
        assert structured(await other_process.call_tool("whoami", {}))["id"] == bob.id
        async with hub.client(bob) as b:
            new_key = structured(await b.call_tool("rotate_api_key", {}))["api_key"]
            assert new_key != bob.api_key and new_key.startswith("acp_")
            # The rotating session goes on as bob, under the new key.
            assert structured(await b.call_tool("whoami", {}))["id"] == bob.id
        # Everywhere else the old key stops working now, not after a cache expires.
        assert "not valid" in error_text(await other_process.call_tool("whoami", {}))
    async with hub.client(bob) as stale:
        assert "not valid" in error_text(await stale.call_tool("whoami", {}))
        assert "register_agent" in {t.name for t in (await stale.list_tools()).tools}  # treated as anonymous
    rotated = Account(id=bob.id, role="agent", name="bob", api_key=new_key)
    async with hub.client(rotated) as b:
        page = structured(await b.call_tool("read_messages", {"conversation_id": conv}))
        assert [m["text"] for m in page["messages"]] == ["before rotation"]
        structured(await b.call_tool("send_message", {"conversation_id": conv, "text": "after rotation"}))
    async with hub.client(alice) as a:
        page = structured(await a.call_tool("read_messages", {"conversation_id": conv}))
    assert [m["text"] for m in page["messages"]] == ["before rotation", "after rotation"]


async def test_the_api_key_is_shown_once_and_never_again(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    async with hub.client(alice) as a:
        outputs = [
            await a.call_tool("whoami", {}),
            await a.call_tool("update_profile", {"description": "hi"}),
            await a.call_tool("find_agents", {}),
            await a.call_tool("get_agent", {"agent_id": alice.id}),
            await a.read_resource("agentchat://me"),
        ]
    for output in outputs:
        assert alice.api_key not in output.model_dump_json()


# --- the directory ----------------------------------------------------------------------------------


async def test_find_agents_by_text_and_tag_pages_with_a_cursor(hub: Hub) -> None:
    pythonistas = [await hub.register_agent(f"py-helper-{i}", tags=["python"]) for i in range(5)]
    await hub.register_agent("rustacean", tags=["rust"])
    await hub.register_agent("100% literal_name", tags=["python"])
    await hub.register_user("py-user")  # users are not in the directory
    async with hub.client() as anonymous:
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            args: dict[str, Any] = {"tag": "Python", "limit": 2}
            if cursor:
                args["cursor"] = cursor
            page = structured(await anonymous.call_tool("find_agents", args))
            seen += [a["id"] for a in page["agents"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3 and len(seen) == len(set(seen)) == 6
        assert {p.id for p in pythonistas} <= set(seen)
        by_text = structured(await anonymous.call_tool("find_agents", {"query": "HELPER"}))["agents"]
        assert {a["name"] for a in by_text} == {f"py-helper-{i}" for i in range(5)}
        both = structured(await anonymous.call_tool("find_agents", {"query": "rust", "tag": "rust"}))["agents"]
        assert [a["name"] for a in both] == ["rustacean"]
        # LIKE wildcards in the query are literal text.
        literal = structured(await anonymous.call_tool("find_agents", {"query": "100%"}))["agents"]
        assert [a["name"] for a in literal] == ["100% literal_name"]
        assert structured(await anonymous.call_tool("find_agents", {"query": "_"}))["agents"][0]["name"] == (
            "100% literal_name"
        )
        assert structured(await anonymous.call_tool("find_agents", {"query": "py-user"}))["agents"] == []


async def test_get_agent_returns_a_public_profile_and_users_read_as_not_found(hub: Hub) -> None:
    alice = await hub.register_agent("alice", peek_price="3.25", tags=["go"])
    uma = await hub.register_user("uma")
    async with hub.client() as anonymous:
        profile = structured(await anonymous.call_tool("get_agent", {"agent_id": alice.id}))
        assert (profile["name"], profile["peek_price"], profile["tags"], profile["verified"]) == (
            "alice",
            "3.25",
            ["go"],
            False,
        )
        assert set(profile) == {
            "id",
            "name",
            "description",
            "peek_price",
            "can_refuse",
            "verified",
            "tags",
            "created_at",
            "rating",
            "rating_count",
            "performance",
        }
        assert profile["created_at"].endswith(("Z", "+00:00"))
        missing = error_text(await anonymous.call_tool("get_agent", {"agent_id": "agt_" + "0" * 20}))
        assert "No agent" in missing and "find_agents" in missing
    async with hub.client(alice) as a:  # a user's id is not an agent id
        assert "agent_id" in error_text(await a.call_tool("get_agent", {"agent_id": uma.id}))


# --- CLI accounts -----------------------------------------------------------------------------------


cli = run_cli


async def test_cli_creates_agents_users_and_admins_printing_the_key_once_and_the_keys_sign_in(
    tmp_path: Path,
) -> None:
    hub = Hub(tmp_path)
    env = {**os.environ, "AGENTCHAT_DB": str(hub.settings.db)}
    env.pop("AGENTCHAT_SECRET_FILE", None)  # the default: beside the database
    for role, extra in (
        ("agent", ["--peek-price", "2.50", "--tag", "python", "--description", "helps"]),
        ("user", []),
        ("admin", []),
    ):
        done = cli(role, "create", "--name", f"cli-{role}", *extra, env=env)
        assert done.returncode == 0, done.stderr
        printed = json.loads(done.stdout)
        prefix = {"agent": "agt_", "user": "usr_", "admin": "adm_"}[role]
        assert printed["role"] == role and printed["id"].startswith(prefix)
        assert (done.stdout + done.stderr).count(printed["api_key"]) == 1
        assert "only this once" in done.stderr
        async with hub.client(Account(printed["id"], role, printed["name"], printed["api_key"])) as c:
            me = structured(await c.call_tool("whoami", {}))
        assert (me["id"], me["role"], me["name"]) == (printed["id"], role, f"cli-{role}")
        if role == "agent":
            assert (me["peek_price"], me["tags"], me["description"]) == ("2.50", ["python"], "helps")
    bad = cli("agent", "create", "--name", "cheap", "--peek-price", "0.01", env=env)
    assert bad.returncode != 0 and "--peek-price" in bad.stderr and "Traceback" not in bad.stderr
    assert stat.S_IMODE(hub.settings.resolved_secret_file().stat().st_mode) == 0o600


# --- the server secret ------------------------------------------------------------------------------


def test_the_secret_file_is_created_0600_and_a_world_readable_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "agentchat.secret"
    first = server_secret.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert server_secret.load_or_create(path) == first  # read back, not replaced
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        server_secret.load_or_create(path)


def test_a_world_readable_secret_stops_the_cli_and_the_server_with_a_clear_message(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTCHAT_DB": str(tmp_path / "s.db")}
    env.pop("AGENTCHAT_SECRET_FILE", None)
    server_secret.load_or_create(tmp_path / "agentchat.secret")
    (tmp_path / "agentchat.secret").chmod(0o644)
    for args in (["user", "create", "--name", "second"], ["serve"]):
        done = cli(*args, env=env, process=args == ["serve"])  # the server's start-up: the real process
        assert done.returncode != 0, args
        assert "readable by other users" in done.stderr and "chmod 600" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        assert done.stdout == "", args  # stdout stays clean for the stdio protocol


def test_processes_creating_the_secret_at_once_all_read_the_same_complete_secret(tmp_path: Path) -> None:
    for trial in range(20):
        path = tmp_path / f"race-{trial}" / "agentchat.secret"
        barrier = threading.Barrier(4)
        results: list[bytes | BaseException] = []

        def load(path: Path = path, barrier: threading.Barrier = barrier, results: list[Any] = results) -> None:
            barrier.wait()
            try:
                results.append(server_secret.load_or_create(path))
            except BaseException as exc:  # reported below
                results.append(exc)

        threads = [threading.Thread(target=load) for _ in range(4)]
        switch = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # interleave as much as possible
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            sys.setswitchinterval(switch)
        assert len(set(results)) == 1 and isinstance(results[0], bytes), results
