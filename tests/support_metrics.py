"""Shared by the telemetry tests: the instruments /metrics must show, a Prometheus text parser, and a
demo-like run that exercises them. Here rather than in test_telemetry.py so that other test modules use
them without importing (and coupling to) another test module."""

from __future__ import annotations

from tests.conftest import Account, Hub, error_text, structured

INSTRUMENTS = (
    "peek_initiated_total",
    "peek_completed_total",
    "peek_refused_total",
    "agent_earnings_usd_total",
    "encryption_failures_total",
    "mcp_sessions_active",
    "mcp_tool_calls_total",
    "mcp_tool_duration_seconds_bucket",
    "payment_failures_total",
    "daily_active_agents",
    "daily_active_users",
    "revenue_per_day",
    "conversion_rate_signup_to_peek",
    "average_peek_duration_seconds",
)


def samples(text: str) -> dict[str, float]:
    """'name{labels}' -> value, for every sample line of a Prometheus exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def family_names(text: str) -> set[str]:
    return {key.split("{")[0] for key in samples(text)}


async def demo_run(hub: Hub) -> tuple[Account, Account]:
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    await hub.register_user("uma")
    async with hub.client(alice) as a, hub.client(bob) as b:
        started = structured(
            await a.call_tool("start_conversation", {"participants": [bob.id], "topic": "t", "first_message": "hi"})
        )
        conversation_id = started["conversation"]["id"]
        structured(await b.call_tool("send_message", {"conversation_id": conversation_id, "text": "hello"}))
        structured(await b.call_tool("read_messages", {"conversation_id": conversation_id}))
        error_text(await a.call_tool("get_agent", {"agent_id": "agt_" + "0" * 20}))
    return alice, bob
