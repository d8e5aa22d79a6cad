"""A demo-like run on the real HTTP hub, logging at DEBUG: no canary plaintext or API key in the logs or
/metrics (0 hits), and /metrics shows every instrument the operators' alerts and dashboards use."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import httpx2
import pytest
from pydantic import SecretStr

from agentchat_mcp import logs
from agentchat_mcp.telemetry import Telemetry
from tests.conftest import Hub, structured
from tests.support_http import http_client, register_over_http, serving
from tests.support_metrics import INSTRUMENTS, family_names, samples

pytestmark = pytest.mark.anyio

CANARIES = ("canary-7e1f: the merger closes friday", "canary-9b2c: password is tulip", "canary-peek-4d0a")
METRICS_TOKEN = "metrics-token-5a1c3f"


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    levels = {
        name: logging.getLogger(name).level
        for name in ("agentchat_mcp", logs.ACCESS_LOGGER, *logs._NOISY, *logs._QUIET)
    }
    buffer = io.StringIO()
    logs.configure("DEBUG", stream=buffer)  # the most an operator can turn on
    yield buffer
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


async def test_logs_and_metrics_hold_no_canary_and_no_api_key_after_a_demo_like_run(
    hub: Hub, log_buffer: io.StringIO
) -> None:
    hub.settings = hub.settings.model_copy(
        update={"metrics_token": SecretStr(METRICS_TOKEN), "rate_limit_tools": {"find_agents": "2/minute"}}
    )
    telemetry = Telemetry()
    async with serving(hub, telemetry=telemetry) as base:
        alice, bob = await register_over_http(base, "alice"), await register_over_http(base, "bob")
        uma = await hub.register_user("uma")
        keys = [alice.api_key, bob.api_key, uma.api_key]
        async with http_client(base, alice) as a, http_client(base, bob, mode="legacy") as b:
            started = structured(
                await a.call_tool(
                    "start_conversation", {"participants": [bob.id], "topic": "merger", "first_message": CANARIES[0]}
                )
            )
            conversation_id = started["conversation"]["id"]
            structured(await b.call_tool("send_message", {"conversation_id": conversation_id, "text": CANARIES[1]}))
            page = structured(await b.call_tool("read_messages", {"conversation_id": conversation_id}))
            assert [m["text"] for m in page["messages"]] == list(CANARIES[:2])
            for _ in range(3):  # the third is rate limited
                await a.call_tool("find_agents", {"query": CANARIES[2]})
            await a.call_tool("send_message", {"conversation_id": "cnv_" + "0" * 20, "text": CANARIES[2]})
            await a.call_tool("send_message", {"conversation_id": conversation_id, "text": ""})  # invalid
            tools = {t.name for t in (await a.list_tools()).tools}
            async with httpx2.AsyncClient() as http:
                with_session = (await http.get(f"{base}/metrics", headers=_token())).text
            if "respond_to_peek" in tools:
                await _peek(hub, base, uma, conversation_id, [a, b])
        wrong_key = "acp_" + "w" * 43
        async with httpx2.AsyncClient() as http:
            intruder = await http.post(f"{base}/mcp", json={}, headers={"Authorization": f"Bearer {wrong_key}"})
            refused = await http.get(f"{base}/metrics")
            metrics = (await http.get(f"{base}/metrics", headers=_token())).text

    assert (intruder.status_code, refused.status_code) == (401, 401)
    # bob's handshake-era connection is a Streamable HTTP session (alice's 2026-07-28 era has none)
    assert samples(with_session)["mcp_sessions_active"] == 1
    assert samples(metrics)["mcp_sessions_active"] == 0  # and it ended with its client
    missing = [name for name in INSTRUMENTS if name not in family_names(metrics)]
    assert missing == []
    values = samples(metrics)
    assert values['mcp_tool_calls_total{outcome="rate_limited",tool="find_agents"}'] == 1
    assert values['mcp_tool_calls_total{outcome="ok",tool="send_message"}'] >= 1

    log_text = log_buffer.getvalue()
    assert '"logger": "agentchat_mcp.access"' in log_text  # the logs were captured
    for text, where in ((log_text, "logs"), (metrics, "/metrics"), (with_session, "/metrics")):
        hits = [s[:16] for s in (*CANARIES, *keys, wrong_key, METRICS_TOKEN) if s in text]
        assert hits == [], f"{where} hold {hits}"


def _token() -> dict[str, str]:
    return {"Authorization": f"Bearer {METRICS_TOKEN}"}


async def _peek(hub: Hub, base: str, uma: object, conversation_id: str, agents: list[object]) -> None:
    """A paid peek: credit, request, consent, read (so peek and earnings metrics are recorded)."""
    admin = await hub.register_admin("root")
    async with http_client(base, admin) as root:
        structured(await root.call_tool("grant_credits", {"user_id": uma.id, "amount": "20.00"}))  # type: ignore[attr-defined]
    async with http_client(base, uma) as u:  # type: ignore[arg-type]
        peek = structured(await u.call_tool("request_peek", {"conversation_id": conversation_id, "max_price": "20.00"}))
        for agent in agents:
            await agent.call_tool("respond_to_peek", {"peek_id": peek["id"], "decision": "accept"})  # type: ignore[attr-defined]
        page = structured(await u.call_tool("read_messages", {"conversation_id": conversation_id}))
        assert CANARIES[0] in [m["text"] for m in page["messages"]]
