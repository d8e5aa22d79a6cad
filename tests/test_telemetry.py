"""Metrics, business gauges and traces: what an operator's Prometheus and tracing backend see."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.routing import Route

from agentchat_mcp import clock, telemetry
from agentchat_mcp.services.identity import Identity
from agentchat_mcp.store import Store, open_store
from agentchat_mcp.telemetry import Telemetry, metrics_endpoint, otlp_configured, outcome_of, read_business
from tests import support_db
from tests.conftest import Hub, error_text, structured
from tests.support_metrics import INSTRUMENTS, demo_run, family_names, samples

pytestmark = pytest.mark.anyio


def prometheus_hub(hub: Hub) -> Hub:
    """The hub's telemetry as the HTTP server builds it: a Prometheus registry, plus the test reader."""
    hub.metrics = InMemoryMetricReader()
    hub.telemetry = Telemetry(readers=[hub.metrics])
    return hub


async def test_metrics_show_every_instrument_after_a_demo_like_run(hub: Hub) -> None:
    prometheus_hub(hub)
    await demo_run(hub)
    async with open_store(hub.settings.db) as store:
        text = (await hub.telemetry.render_prometheus(store)).decode()
    missing = [name for name in INSTRUMENTS if name not in family_names(text)]
    assert missing == []
    values = samples(text)
    assert values["daily_active_agents"] == 2  # both agents sent a message
    assert values['mcp_tool_calls_total{outcome="ok",tool="send_message"}'] == 1
    assert values['mcp_tool_calls_total{outcome="error",tool="get_agent"}'] == 1
    assert values['mcp_tool_duration_seconds_count{outcome="ok",tool="start_conversation"}'] == 1
    assert values["mcp_sessions_active"] == 0  # every client above has closed
    assert values["mcp_sessions_closed_total"] >= 2


async def test_database_saturation_signals_are_measured_while_a_store_is_open(hub: Hub) -> None:
    prometheus_hub(hub)
    alice = await hub.register_agent("alice")
    async with hub.client(alice) as client:
        structured(await client.call_tool("update_profile", {"description": "writes once"}))
        values = samples((await hub.telemetry.render_prometheus()).decode())
    assert values["db_write_wait_seconds_count"] >= 1
    if support_db.ON_POSTGRES:  # file sizes are SQLite's; PostgreSQL reports its own
        assert not any(key.startswith(("db_size_bytes{", "db_wal_bytes{")) for key in values)
        return
    assert values['db_size_bytes{db="agentchat.db"}'] > 0
    assert 'db_wal_bytes{db="agentchat.db"}' in values
    after = samples((await hub.telemetry.render_prometheus()).decode())
    assert not any(key.startswith("db_size_bytes{") for key in after)  # the store closed with the session


async def test_sessions_are_counted_while_open(hub: Hub) -> None:
    prometheus_hub(hub)
    alice = await hub.register_agent("alice")
    async with hub.client(alice), hub.client(alice):
        assert samples((await hub.telemetry.render_prometheus()).decode())["mcp_sessions_active"] == 2
    hub.telemetry.add_session_probe(lambda: 5)
    hub.telemetry.add_session_probe(lambda: 1 // 0)  # a broken probe never breaks a scrape
    assert samples((await hub.telemetry.render_prometheus()).decode())["mcp_sessions_active"] == 5


async def test_tool_calls_are_counted_by_outcome_including_internal_errors(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    prometheus_hub(hub)
    hub.settings = hub.settings.model_copy(update={"rate_limit_tools": {"find_agents": "1/minute"}})
    alice = await hub.register_agent("alice")

    async def broken(self: Identity, principal_id: str) -> Any:
        raise RuntimeError("database exploded")

    async with hub.client(alice) as client:
        await client.call_tool("find_agents", {})
        await client.call_tool("find_agents", {})  # rate limited
        await client.call_tool("no_such_tool", {})
        monkeypatch.setattr(Identity, "get", broken)
        crashed = await client.call_tool("whoami", {})
    assert "Internal error; it has been logged" in error_text(crashed)
    values = samples((await hub.telemetry.render_prometheus()).decode())
    assert values['mcp_tool_calls_total{outcome="ok",tool="find_agents"}'] == 1
    assert values['mcp_tool_calls_total{outcome="rate_limited",tool="find_agents"}'] == 1
    assert values['mcp_tool_calls_total{outcome="unknown_tool",tool="no_such_tool"}'] == 1
    assert values['mcp_tool_calls_total{outcome="internal_error",tool="whoami"}'] == 1
    assert values['rate_limited_total{scope="tool"}'] == 1


async def test_a_failure_to_tell_who_is_calling_is_counted_and_shows_no_details(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    prometheus_hub(hub)
    alice = await hub.register_agent("alice")

    async def broken(self: Identity, api_key: str) -> Any:
        raise RuntimeError("database exploded at /var/lib/secret.db")

    async with hub.client(alice) as client:
        monkeypatch.setattr(Identity, "authenticate", broken)
        with pytest.raises(MCPError) as refused:  # a JSON-RPC error that names nothing of ours
            await client.call_tool("whoami", {})
    assert refused.value.error.message == "Internal server error"
    values = samples((await hub.telemetry.render_prometheus()).decode())
    assert values['mcp_tool_calls_total{outcome="exception",tool="whoami"}'] == 1


def test_outcome_of_reads_both_result_shapes() -> None:
    def result(text: str, *, error: bool = True, structured: Any = None) -> CallToolResult:
        return CallToolResult(
            content=[TextContent(type="text", text=text)], is_error=error, structured_content=structured
        )

    assert outcome_of("t", result("fine", error=False)) == "ok"
    assert outcome_of("t", result("Error executing tool t")) == "internal_error"
    assert outcome_of("t", result("Error executing tool t: No agent x")) == "error"
    assert outcome_of("t", result("x", structured={"error": "rate_limited"})) == "rate_limited"
    assert (
        outcome_of("t", {"isError": True, "content": [{"type": "text", "text": "Unknown tool: t"}]}) == "unknown_tool"
    )
    assert outcome_of("t", {"isError": False, "content": []}) == "ok"


# --- business gauges ----------------------------------------------------------------------------


async def test_business_gauges_read_zero_when_their_tables_do_not_exist(tmp_path: Path) -> None:
    async with open_store(tmp_path / "empty.db", upgrade=False) as store:
        snapshot = await read_business(store)
    assert snapshot == telemetry.BusinessSnapshot()


async def test_business_gauges_are_computed_from_peeks_and_the_ledger(hub: Hub) -> None:
    await demo_run(hub)
    users = [await hub.register_user(f"u{i}") for i in range(3)]  # 4 users in all, with uma
    now = clock.now()
    start, end = clock.iso(now.replace(microsecond=0) - clock_delta(600)), clock.iso(now)
    db = hub.settings.db
    ((conversation_id,),) = support_db.query(db, "SELECT id FROM conversations")
    for i, (user, status, window) in enumerate(
        [
            (users[0], "completed", (start, end)),
            (users[0], "completed", (start, end)),
            (users[1], "refused", None),
        ]
    ):
        support_db.query(
            db,
            "INSERT INTO peeks (id, conversation_id, user_id, status, price_cents, fee_cents, charged_cents,"
            " max_price_cents, duration_minutes, window_start, window_end, requested_at, expires_at, updated_at)"
            " VALUES (?, ?, ?, ?, 100, 20, 100, 100, 10, ?, ?, ?, ?, ?)",
            *(f"pek_{i}", conversation_id, user.id, status, *(window or (None, None)), end, end, end),
        )
    support_db.query(
        db,
        "INSERT INTO ledger_entries (id, idempotency_key, request_hash, kind, created_at) VALUES (1, 'k', 'h', 'peek', ?)",
        end,
    )
    support_db.query(
        db, "INSERT INTO ledger_lines (entry_id, account, amount_cents) VALUES (1, 'platform:revenue', 250)"
    )
    async with open_store(hub.settings.db) as store:
        snapshot = await read_business(store)
    assert snapshot.daily_active_agents == 2
    assert snapshot.daily_active_users == 2
    assert snapshot.revenue_per_day == 2.5
    assert snapshot.conversion_rate_signup_to_peek == 0.25  # 1 of 4 users had a peek window
    assert snapshot.average_peek_duration == pytest.approx(600, abs=1)


def clock_delta(seconds: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=seconds)


async def test_business_gauges_are_cached_between_scrapes(hub: Hub) -> None:
    prometheus_hub(hub)
    await demo_run(hub)
    async with open_store(hub.settings.db) as store:
        first = await hub.telemetry.refresh_business(store)
        hub.telemetry.business = telemetry.BusinessSnapshot(daily_active_agents=99)
        assert (await hub.telemetry.refresh_business(store)).daily_active_agents == 99  # within max_age
        assert (await hub.telemetry.refresh_business(store, max_age=0)).daily_active_agents == first.daily_active_agents


# --- /metrics endpoint ------------------------------------------------------------------------


class FakeApp:
    def __init__(self, hub: Hub, store: Store, token: str | None) -> None:
        self.settings = hub.settings.model_copy(update={"metrics_token": SecretStr(token) if token else None})
        self.telemetry = hub.telemetry
        self.store = store


async def test_metrics_endpoint_serves_prometheus_text_and_can_require_a_token(hub: Hub) -> None:
    prometheus_hub(hub)
    await demo_run(hub)
    async with open_store(hub.settings.db) as store:
        for token in (None, "s3cret-metrics-token"):
            app = Starlette(routes=[Route("/metrics", metrics_endpoint)])
            app.state.agentchat = FakeApp(hub, store, token)
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
                if token:
                    refused = await http.get("/metrics")
                    wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
                    assert (refused.status_code, wrong.status_code) == (401, 401)
                    assert "s3cret" not in refused.text
                got = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})
            assert got.status_code == 200 and got.headers["content-type"].startswith("text/plain")
            assert "mcp_tool_calls_total" in got.text


async def test_rendering_needs_the_prometheus_reader(hub: Hub) -> None:
    with pytest.raises(RuntimeError, match="no Prometheus reader"):
        await hub.telemetry.render_prometheus()


# --- OTLP only when configured ----------------------------------------------------------------


def test_otlp_is_off_unless_an_endpoint_variable_is_set() -> None:
    assert not otlp_configured({})
    assert not otlp_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": ""})
    assert otlp_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert otlp_configured({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://collector:4318/v1/metrics"})


def test_with_otlp_configured_start_up_opens_no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    monkeypatch.setattr(telemetry, "_tracing_installed", True)  # keep the test session's global tracer
    began = time.monotonic()
    configured = Telemetry()
    assert time.monotonic() - began < 2
    assert [type(r).__name__ for r in configured.readers] == ["PrometheusOnScrape", "PeriodicExportingMetricReader"]
    configured.provider.shutdown(timeout_millis=3000)


# --- traces -----------------------------------------------------------------------------------


class Recorder(SpanProcessor):
    """Collects finished spans while a test is recording (the global provider outlives the test)."""

    def __init__(self) -> None:
        self.recording = False
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        if self.recording:
            self.spans.append(span)


_RECORDER = Recorder()


@pytest.fixture
def spans() -> Iterator[Recorder]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(_RECORDER)
        trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider or _RECORDER not in provider._active_span_processor._span_processors:
        pytest.skip("another global TracerProvider is installed")
    _RECORDER.spans.clear()
    _RECORDER.recording = True
    yield _RECORDER
    _RECORDER.recording = False
    _RECORDER.spans.clear()


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_each_tool_call_has_a_span_that_is_a_child_of_the_sdk_server_span(
    hub: Hub, spans: Recorder, mode: str
) -> None:
    alice = await hub.register_agent("alice")
    spans.spans.clear()
    async with hub.client(alice, mode=mode) as client:
        await client.call_tool("whoami", {})
    ours = [s for s in spans.spans if s.name == "agentchat.tool whoami"]
    server = [s for s in spans.spans if s.name == "tools/call whoami"]
    assert len(ours) == 1 and len(server) == 1
    assert ours[0].parent is not None and ours[0].parent.span_id == server[0].context.span_id
    assert ours[0].context.trace_id == server[0].context.trace_id
    assert ours[0].attributes["agentchat.principal.id"] == alice.id
    assert ours[0].attributes["agentchat.outcome"] == "ok"
    assert alice.api_key not in str(dict(ours[0].attributes)) + str(dict(server[0].attributes))


# --- payments -----------------------------------------------------------------------------------


class FakeProvider:
    name = "stripe"
    takes_cards = True

    def __init__(self) -> None:
        self.outcomes: list[Exception | None] = []

    async def capture(self, *, intent_id: str, idempotency_key: str) -> str:
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return intent_id

    async def retrieve_intent(self, intent_id: str) -> str:
        return intent_id


async def test_payment_attempts_and_failures_are_counted_by_kind_and_reason(hub: Hub) -> None:
    from agentchat_mcp.errors import PaymentDeclined, PaymentUnavailable
    from agentchat_mcp.payments.provider import LedgerProvider
    from agentchat_mcp.telemetry import metered_payments

    prometheus_hub(hub)
    fake = FakeProvider()
    metered = metered_payments(fake, hub.telemetry)
    assert metered.takes_cards and metered.name == "stripe"  # everything else passes through
    fake.outcomes = [None, PaymentDeclined("no"), PaymentUnavailable("down"), RuntimeError("?")]
    assert await metered.capture(intent_id="pi_1", idempotency_key="k") == "pi_1"
    for expected in (PaymentDeclined, PaymentUnavailable, RuntimeError):
        with pytest.raises(expected):
            await metered.capture(intent_id="pi_1", idempotency_key="k")
    assert await metered.retrieve_intent("pi_2") == "pi_2"  # not a money call: not counted
    values = samples((await hub.telemetry.render_prometheus()).decode())
    assert values['payment_attempts_total{kind="charge"}'] == 4
    assert values['payment_failures_total{kind="charge",reason="declined"}'] == 1
    assert values['payment_failures_total{kind="charge",reason="unavailable"}'] == 1
    assert values['payment_failures_total{kind="charge",reason="error"}'] == 1
    ledger = LedgerProvider()
    assert metered_payments(ledger, hub.telemetry) is ledger  # moves no outside money
