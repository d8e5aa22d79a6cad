"""A server start that cannot work stops with one line on stderr and exit 2; one that can says
where it listens only once it does (issue 11, points 2 and 9)."""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path

import anyio
import httpx2
import pytest
from pydantic import SecretStr

from agentchat_mcp.payments import build_provider
from agentchat_mcp.settings import ConfigurationError, Settings
from tests import support_db
from tests.conftest import PROJECT_ROOT, Hub
from tests.support_cli import cli, one_line

pytestmark = pytest.mark.anyio

KEY_FIX = (
    "(unknown, or rotated): set AGENTCHAT_DB to the database the key was created on, or AGENTCHAT_API_KEY to a "
    "current key (agentchat-mcp agent create makes one)"
)
STRIPE_LINE = (
    "error: AGENTCHAT_PAYMENTS=stripe needs STRIPE_API_KEY (a Stripe secret key, sk_...): set it, or unset "
    "AGENTCHAT_PAYMENTS to use the embedded ledger"
)


def desktop_env(hub: Hub, **env: str) -> dict[str, str]:
    return {"AGENTCHAT_DB": str(hub.settings.db), "AGENTCHAT_SECRET_FILE": str(hub.settings.secret_file), **env}


# --- stdio: a key that is set must be a key on the database (point 2) -----------------------------


async def test_a_stdio_start_with_a_wrong_api_key_stops_instead_of_serving_anonymously(hub: Hub) -> None:
    await hub.register_agent("alice")
    done = cli(**desktop_env(hub, AGENTCHAT_API_KEY="acp_" + "x" * 43))  # bare `agentchat-mcp`, as a client runs it
    assert (
        one_line(done)
        == f"error: AGENTCHAT_API_KEY is not a valid key on the database {support_db.shown(hub.settings.db)} {KEY_FIX}"
    )


async def test_a_stdio_start_with_the_right_key_on_another_database_stops(hub: Hub, tmp_path: Path) -> None:
    alice = await hub.register_agent("alice")
    other = Hub(tmp_path / "other")
    await other.register_agent("someone-else")
    done = cli(**desktop_env(other, AGENTCHAT_API_KEY=alice.api_key))
    assert (
        one_line(done)
        == f"error: AGENTCHAT_API_KEY is not a valid key on the database {support_db.shown(other.settings.db)} {KEY_FIX}"
    )


async def test_a_stdio_start_with_the_right_key_and_a_missing_database_creates_nothing(
    hub: Hub, tmp_path: Path
) -> None:
    alice = await hub.register_agent("alice")
    missing = tmp_path.resolve() / "typo" / "agentchat.db"
    done = cli(AGENTCHAT_DB=str(missing), AGENTCHAT_API_KEY=alice.api_key)
    assert one_line(done) == (
        f"error: AGENTCHAT_API_KEY is set but the database {missing} does not exist: set AGENTCHAT_DB to the "
        "database the key was created on"
    )
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("how", ["AGENTCHAT_DB", "--db"])
async def test_a_stdio_start_on_a_relative_database_path_is_refused_with_the_reason(tmp_path: Path, how: str) -> None:
    if how == "--db":
        done = cli("--db", "agentchat.db", cwd=tmp_path)
        shown = "--db agentchat.db"
    else:
        done = cli(cwd=tmp_path, AGENTCHAT_DB="agentchat.db")
        shown = "AGENTCHAT_DB=agentchat.db"
    assert one_line(done) == (
        f"error: {shown} is a relative path, and a stdio server runs in whatever folder its client starts it in "
        f"(here: {tmp_path.resolve()}/agentchat.db): set {how} to an absolute path"
    )
    assert list(tmp_path.iterdir()) == []


# --- configurations that cannot work (point 9) ------------------------------------------------------


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_stripe_payments_without_a_key_refuse_to_start(tmp_path: Path, transport: str) -> None:
    done = cli(
        "serve",
        "--transport",
        transport,
        "--port",
        "0",
        AGENTCHAT_DB=str(tmp_path / "a.db"),
        AGENTCHAT_PAYMENTS="stripe",
    )
    assert one_line(done) == STRIPE_LINE


def test_every_entry_that_builds_payments_refuses_stripe_without_a_key(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "a.db", payments="stripe", stripe_api_key=None)
    with pytest.raises(ConfigurationError) as refused:
        build_provider(settings)
    assert f"error: {refused.value}" == STRIPE_LINE
    keyed = settings.model_copy(update={"stripe_api_key": SecretStr("sk_test_x")})
    assert build_provider(keyed).name == "stripe"


def test_a_port_in_use_is_one_line_and_no_url(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = cli("serve", "--transport", "http", "--port", str(port), AGENTCHAT_DB=str(tmp_path / "a.db"))
    assert one_line(done) == (
        f"error: cannot listen on 127.0.0.1:{port} (Address already in use): stop whatever uses it, or choose "
        "another --port (or --host)"
    )


async def test_the_hub_prints_its_url_once_it_accepts_there(tmp_path: Path) -> None:
    """With --port 0 the port is known only after the bind: the printed URL is the one that answers."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AGENTCHAT_")},
        "AGENTCHAT_DB": str(tmp_path / "hub.db"),
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    command = [sys.executable, "-m", "agentchat_mcp", "serve", "--transport", "http", "--port", "0"]
    async with await anyio.open_process(command, env=env) as process:
        assert process.stderr is not None
        text = ""
        try:
            with anyio.fail_after(60):
                while "\n" not in text:
                    text += (await process.stderr.receive()).decode()
            first = text.splitlines()[0]
            found = re.fullmatch(
                r"agentchat hub on http://127\.0\.0\.1:(\d+)/mcp \(also /sse, /healthz\); database (.+)", first
            )
            assert found, first
            assert found.group(2) == str((tmp_path / "hub.db").resolve())
            async with httpx2.AsyncClient() as http:
                health = await http.get(f"http://127.0.0.1:{found.group(1)}/healthz")
            assert health.status_code == 200 and health.json()["status"] == "ok"
        finally:
            process.terminate()
            with anyio.fail_after(30):
                await process.wait()
