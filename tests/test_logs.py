"""JSON-lines logs on stderr: request fields on every line, never a secret or a message's text."""

from __future__ import annotations

import io
import json
import logging
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import stdio_client

from agentchat_mcp import logs
from agentchat_mcp.settings import Settings
from tests.conftest import Account, Hub, structured

pytestmark = pytest.mark.anyio


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """logs.configure() into a buffer; the root logger is restored afterwards."""
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    levels = {
        name: logging.getLogger(name).level
        for name in ("agentchat_mcp", logs.ACCESS_LOGGER, *logs._NOISY, *logs._QUIET)
    }
    buffer = io.StringIO()
    logs.configure("INFO", stream=buffer)
    yield buffer
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_every_line_is_json_with_the_bound_request_fields(captured: io.StringIO) -> None:
    log = logging.getLogger("agentchat_mcp.test")
    token = logs.bind(request_id="r1", principal_id="agt_x", tool="send_message")
    log.warning("sent %d", 3, extra={"latency_ms": 1.5, "outcome": "ok"})
    logs.unbind(token)
    log.warning("outside")
    inside, outside = lines(captured)
    assert inside["msg"] == "sent 3" and inside["level"] == "WARNING" and inside["logger"] == "agentchat_mcp.test"
    assert (inside["request_id"], inside["principal_id"], inside["tool"]) == ("r1", "agt_x", "send_message")
    assert (inside["latency_ms"], inside["outcome"]) == (1.5, "ok")
    assert inside["ts"].endswith("Z")
    assert "request_id" not in outside


def test_an_exception_is_logged_by_type_and_frames_never_by_its_text(captured: io.StringIO) -> None:
    def fail() -> None:
        try:
            raise KeyError("inner detail")
        except KeyError as exc:
            raise RuntimeError("plaintext: meet me at noon, key acp_supersecretvalue123") from exc

    try:
        fail()
    except RuntimeError:
        logging.getLogger("agentchat_mcp").exception("tool %s failed", "send_message")
    (line,) = lines(captured)
    raw = captured.getvalue()
    assert line["error_type"] == "builtins.RuntimeError" and line["error_chain"] == ["builtins.KeyError"]
    assert any("in fail" in frame for frame in line["stack"])
    assert "meet me at noon" not in raw and "supersecretvalue" not in raw and "inner detail" not in raw


def test_credentials_are_masked_wherever_they_appear(captured: io.StringIO) -> None:
    log = logging.getLogger("agentchat_mcp")
    log.warning(
        "key acp_AbCdEf0123456789_-xyz header Bearer tok.en-123456789 stripe sk_live_abcdef123456 whsec_abcdef12345"
    )
    raw = captured.getvalue()
    for secret in ("AbCdEf0123456789", "tok.en-123456789", "sk_live_abcdef123456", "whsec_abcdef12345"):
        assert secret not in raw
    assert "acp_***" in raw and "Bear***" in raw
    assert logs.redact("no secrets here") == "no secrets here"


def test_configure_is_idempotent_and_refuses_a_bad_level(captured: io.StringIO) -> None:
    logs.configure("INFO", stream=captured)
    logs.configure("INFO", stream=captured)
    logging.getLogger("agentchat_mcp").warning("once")
    assert len(lines(captured)) == 1
    with pytest.raises(ValueError, match="log level"):
        logs.configure("LOUD")


def test_noisy_libraries_never_log_debug_payloads(captured: io.StringIO) -> None:
    logs.configure("DEBUG", stream=captured)
    logging.getLogger("mcp.server.lowlevel").debug("Received message: {'text': 'plaintext'}")
    logging.getLogger("agentchat_mcp.x").debug("ours at debug")
    assert [line["msg"] for line in lines(captured)] == ["ours at debug"]


async def test_each_tool_call_writes_one_access_line(hub: Hub, captured: io.StringIO) -> None:
    alice = await hub.register_agent("alice")
    captured.truncate(0)
    captured.seek(0)
    async with hub.client(alice) as client:
        structured(await client.call_tool("whoami", {}))
        await client.call_tool("get_agent", {"agent_id": "agt_" + "0" * 20})
    access = [line for line in lines(captured) if line["logger"] == logs.ACCESS_LOGGER]
    assert [(a["tool"], a["outcome"], a["principal_id"]) for a in access] == [
        ("whoami", "ok", alice.id),
        ("get_agent", "error", alice.id),
    ]
    assert all(len(a["request_id"]) == 16 and a["latency_ms"] >= 0 for a in access)
    assert access[0]["request_id"] != access[1]["request_id"]
    assert alice.api_key not in captured.getvalue()


async def test_a_stdio_server_writes_only_json_lines_to_stderr(hub: Hub) -> None:
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    canary = "canary-plaintext-7f3a in a stdio message"
    with tempfile.TemporaryFile("w+") as errlog:
        params = hub.stdio(alice, AGENTCHAT_LOG_LEVEL="INFO")
        async with Client(stdio_client(params, errlog=errlog)) as client:  # type: ignore[arg-type]
            started = structured(
                await client.call_tool(
                    "start_conversation", {"participants": [bob.id], "topic": "t", "first_message": canary}
                )
            )
            assert started["first_message_seq"] == 1
            await client.call_tool("no_such_tool", {})
        errlog.seek(0)
        text = errlog.read()
    parsed = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    tools = [p.get("tool") for p in parsed if p["logger"] == logs.ACCESS_LOGGER]
    assert tools == ["start_conversation", "no_such_tool"]
    assert canary not in text and alice.api_key not in text and bob.api_key not in text


async def access_lines(hub: Hub, alice: Account, buffer: io.StringIO) -> list[dict[str, Any]]:
    buffer.truncate(0)
    buffer.seek(0)
    async with hub.client(alice) as client:
        structured(await client.call_tool("whoami", {}))
    return [line for line in lines(buffer) if line["logger"] == logs.ACCESS_LOGGER]


async def test_at_the_default_warning_level_a_tool_call_writes_no_access_line(hub: Hub, captured: io.StringIO) -> None:
    """Decided in issue 11: a desktop client shows a stdio server's stderr as its log, so the INFO
    line per call follows the level unless AGENTCHAT_ACCESS_LOG asks for it (docs/configuration.md)."""
    level, access_log = (Settings.model_fields[name].default for name in ("log_level", "access_log"))
    assert (level, access_log) == ("WARNING", None)
    alice = await hub.register_agent("alice")
    logs.configure(level, access_log=access_log, stream=captured)
    assert await access_lines(hub, alice, captured) == []


async def test_access_log_true_writes_the_line_at_warning_and_false_hides_it_at_info(
    hub: Hub, captured: io.StringIO
) -> None:
    alice = await hub.register_agent("alice")
    logs.configure("WARNING", access_log=True, stream=captured)
    assert [a["tool"] for a in await access_lines(hub, alice, captured)] == ["whoami"]
    logs.configure("INFO", access_log=False, stream=captured)
    assert await access_lines(hub, alice, captured) == []
