"""OpenTelemetry metrics and traces; the only module that imports opentelemetry.

Metrics: the product's counters and histograms (below), plus business gauges read from the
database at scrape time. Exporters: every Telemetry renders Prometheus text for ``/metrics`` from
its own registry (no global state, no port opened); OTLP is added only when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the metrics/traces variant) is set, so nothing leaves a stdio
process unless configured. Traces: one INTERNAL span per tool call, a child of the SERVER span the
SDK opens per message when a TracerProvider is installed.

Tests pass a MeterProvider with an in-memory reader; without one, a provider with the Prometheus
reader is built here. The Prometheus exporter and prometheus_client are loaded by the first scrape
of /metrics, not at start (PrometheusOnScrape): a process nobody scrapes never holds them.
"""

from __future__ import annotations

import bisect
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from agentchat_mcp import __version__, clock, logs
from agentchat_mcp.errors import PaymentDeclined, PaymentUnavailable

if TYPE_CHECKING:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry

    from agentchat_mcp.store import Store

logger = logging.getLogger(__name__)
access_logger = logging.getLogger(logs.ACCESS_LOGGER)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BUSINESS_REFRESH_SECONDS = 15.0
INTERNAL_ERROR_TEXT = "Internal error; it has been logged"
OTLP_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)
_tracing_installed = False


def otlp_configured(environ: dict[str, str] | None = None) -> bool:
    """True when the operator asked for OTLP export (the standard OpenTelemetry variables)."""
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in OTLP_VARIABLES)


def _otlp_metric_reader() -> MetricReader | None:
    try:  # an optional extra: agentchat-mcp[otlp]
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    except ImportError:
        logger.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed: pip install 'agentchat-mcp[otlp]'"
        )
        return None
    return PeriodicExportingMetricReader(OTLPMetricExporter())


def install_otlp_tracing() -> bool:
    """Install a global TracerProvider exporting spans over OTLP (once per process), so the SDK's
    SERVER spans and ours are exported together. Only called when OTLP is configured."""
    global _tracing_installed
    if _tracing_installed:
        return True
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        return False
    provider = TracerProvider(resource=_resource())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracing_installed = True
    return True


def _resource() -> Resource:
    return Resource.create({"service.name": "agentchat-mcp", "service.version": __version__})


# --- business gauges --------------------------------------------------------------------------


@dataclass
class BusinessSnapshot:
    """Figures read from the database; 0 where the tables they need do not exist (yet)."""

    daily_active_agents: float = 0.0
    daily_active_users: float = 0.0
    revenue_per_day: float = 0.0
    conversion_rate_signup_to_peek: float = 0.0
    average_peek_duration: float = 0.0


BUSINESS_DESCRIPTIONS = {
    "daily_active_agents": ("Agents that sent a message in the last 24 hours.", ""),
    "daily_active_users": ("Users that requested a peek in the last 24 hours.", ""),
    "revenue_per_day": ("Platform fee revenue booked in the last 24 hours, in USD.", ""),
    "conversion_rate_signup_to_peek": ("Share of registered users with at least one paid peek (0-1).", ""),
    "average_peek_duration": ("Mean length of peek windows that ended in the last 24 hours, in seconds.", "s"),
}


async def read_business(store: Store) -> BusinessSnapshot:
    """Compute the business gauges; each figure independently, so a missing table zeroes only its own."""
    from sqlalchemy import text

    since = clock.iso(clock.now() - timedelta(days=1))
    queries = {
        "daily_active_agents": "SELECT COUNT(DISTINCT sender_id) FROM messages WHERE created_at >= :since",
        "daily_active_users": "SELECT COUNT(DISTINCT user_id) FROM peeks WHERE requested_at >= :since",
        "revenue_per_day": (
            "SELECT COALESCE(SUM(l.amount_cents), 0) / 100.0 FROM ledger_lines l "
            "JOIN ledger_entries e ON e.id = l.entry_id "
            "WHERE l.account = 'platform:revenue' AND e.created_at >= :since"
        ),
        "conversion_rate_signup_to_peek": (
            "SELECT CASE WHEN u.n = 0 THEN 0.0 ELSE CAST(p.n AS FLOAT) / u.n END FROM "
            "(SELECT COUNT(*) AS n FROM principals WHERE role = 'user') u, "
            "(SELECT COUNT(DISTINCT user_id) AS n FROM peeks WHERE window_start IS NOT NULL) p"
        ),
    }
    snapshot = BusinessSnapshot()
    # One transaction per figure: on PostgreSQL a failed statement ends its transaction's usefulness.
    for name, sql in queries.items():
        try:
            async with store.read() as conn:
                value = (await conn.execute(text(sql), {"since": since})).scalar()
        except Exception:  # table not there yet (older schema): the gauge reads 0
            logger.debug("business gauge %s unavailable", name, exc_info=True)
            continue
        setattr(snapshot, name, float(value or 0))
    try:
        async with store.read() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT window_start, window_end FROM peeks WHERE status = 'completed' "
                        "AND window_start IS NOT NULL AND window_end >= :since ORDER BY window_end DESC LIMIT 10000"
                    ),
                    {"since": since},
                )
            ).all()
    except Exception:
        rows = []
    durations = [(clock.parse(end) - clock.parse(start)).total_seconds() for start, end in rows]
    snapshot.average_peek_duration = sum(durations) / len(durations) if durations else 0.0
    return snapshot


# --- the instruments --------------------------------------------------------------------------


class PrometheusOnScrape(MetricReader):
    """The provider's Prometheus reader, with the exporter built at the first scrape.

    Until then this is a plain MetricReader: cumulative for every instrument (MetricReader's
    default, the temporality PrometheusMetricReader asks for too), collecting nothing by itself.
    `render()` builds the exporter's PrometheusMetricReader once, outside any provider, and wires
    its collection through this reader: the same families, rendered by the same code.
    """

    def __init__(self) -> None:
        super().__init__()
        self.registry: CollectorRegistry | None = None
        self._exporter: PrometheusMetricReader | None = None
        self._collected: MetricsData | None = None

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        self._collected = metrics_data

    def _collect_for_exporter(self, _: MetricReader, timeout_millis: float = 10_000) -> MetricsData | None:
        self.collect(timeout_millis=timeout_millis)  # the provider hands this reader its data
        collected, self._collected = self._collected, None
        return collected

    def render(self) -> bytes:
        """The Prometheus text exposition of every instrument."""
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry, generate_latest

        if self.registry is None:
            registry = CollectorRegistry(auto_describe=True)
            exporter = PrometheusMetricReader(registry=registry, scope_info_enabled=False)
            # How a MeterProvider wires its readers; here the exporter collects through this reader.
            # (its annotation names a temporality as second argument; collect() passes timeout_millis)
            exporter._set_collect_callback(self._collect_for_exporter)  # type: ignore[arg-type]
            self.registry, self._exporter = registry, exporter
        return generate_latest(self.registry)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self._exporter is not None:
            self._exporter.shutdown(timeout_millis=timeout_millis)


def prometheus_content_type() -> str:
    """The media type of `PrometheusOnScrape.render()`'s text."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return str(CONTENT_TYPE_LATEST)


class Tally:
    """A counter for the hottest paths: tallied in a dict, read by an ObservableCounter.

    Why: a synchronous OTel Counter spends ~60 Python calls on every add (attribute cleaning,
    hashing, view matching), a tenth of a send_message; this spends one dict update. Readers see
    the same thing: a monotonic sum per attribute set, collected at each scrape or export.
    """

    def __init__(self, meter: Any, name: str, description: str) -> None:
        self._totals: dict[tuple[tuple[str, str], ...], float] = {}
        meter.create_observable_counter(name, callbacks=[self._observe], description=description)

    def add(self, amount: float, attributes: dict[str, str] | None = None) -> None:
        key = tuple(attributes.items()) if attributes else ()
        self._totals[key] = self._totals.get(key, 0) + amount

    def _observe(self, _: CallbackOptions) -> Iterable[Observation]:
        for key, total in list(self._totals.items()):
            yield Observation(total, dict(key))


class Telemetry:
    """The product's instruments, created once per server; renders /metrics."""

    def __init__(
        self,
        provider: MeterProvider | None = None,
        *,
        readers: Sequence[MetricReader] = (),
        tracer_provider: Any = None,
    ) -> None:
        self.prometheus: PrometheusOnScrape | None = None
        self.tool_usage = ToolUsageBuffer()  # drained into the database by services/analytics.py
        self.readers: list[MetricReader] = []  # the readers built here (none when a provider is passed in)
        if provider is None:
            self.prometheus = PrometheusOnScrape()
            all_readers: list[MetricReader] = [self.prometheus, *readers]
            if otlp_configured():
                otlp = _otlp_metric_reader()
                if otlp is not None:
                    all_readers.append(otlp)
                install_otlp_tracing()
            self.readers = all_readers
            provider = MeterProvider(metric_readers=all_readers, resource=_resource())
        self.provider = provider
        self.tracer = trace.get_tracer("agentchat_mcp", __version__, tracer_provider=tracer_provider)
        meter = self.provider.get_meter("agentchat_mcp", __version__)

        # crypto and conversations
        self.encryption_failures = meter.create_counter(
            "encryption_failures", description="Stored messages or keys that failed to open or verify."
        )
        self.messages_sent = Tally(meter, "messages_sent_total", description="Messages stored.")
        self.flag_evaluations = Tally(
            meter, "feature_flag_evaluations_total", description="Feature flag evaluations, by flag and variant."
        )
        # peeks and money (recorded by the peek and ledger services)
        self.peek_initiated = meter.create_counter("peek_initiated_total", description="Peek requests accepted.")
        self.peek_completed = meter.create_counter("peek_completed_total", description="Peek windows that ended.")
        self.peek_refused = meter.create_counter(
            "peek_refused_total", description="Peeks refused, expired or cancelled before their window."
        )
        self.agent_earnings_usd = meter.create_counter(
            "agent_earnings_usd", description="Earnings credited to agents, in USD (after the platform fee)."
        )
        self.payment_failures = meter.create_counter(
            "payment_failures", description="Payment attempts that failed, by kind and reason."
        )
        self.payment_attempts = meter.create_counter(
            "payment_attempts", description="Payment attempts (the denominator of the failure rate)."
        )
        # the MCP surface
        self.tool_calls = Tally(
            meter, "mcp_tool_calls", "Tool calls by tool and outcome (ok, error, internal_error, rate_limited)."
        )
        self.tool_duration = meter.create_histogram(
            "mcp_tool_duration",
            unit="s",
            description="Tool call latency, by tool and outcome.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self.rate_limited = meter.create_counter("rate_limited", description="Calls refused by a rate limit, by scope.")
        self._sessions_open = 0
        self._session_probes: list[Callable[[], int]] = []
        meter.create_observable_up_down_counter(
            "mcp_sessions_active",
            callbacks=[self._observe_sessions],
            description="Live MCP sessions (stdio processes, in-memory clients, HTTP and SSE sessions).",
        )
        self.sessions_closed = meter.create_counter("mcp_sessions_closed", description="MCP sessions that ended.")
        # database saturation
        self.db_write_wait = meter.create_histogram(
            "db_write_wait",
            unit="s",
            description="How long a write transaction waited for the database write lock.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self._db_files: list[Path] = []
        meter.create_observable_gauge(
            "db_size_bytes", callbacks=[self._observe_db(suffix="")], description="Size of the SQLite database file."
        )
        meter.create_observable_gauge(
            "db_wal_bytes",
            callbacks=[self._observe_db(suffix="-wal")],
            description="Size of the SQLite write-ahead log (grows when checkpoints cannot keep up).",
        )
        for counter in (
            self.encryption_failures,
            self.messages_sent,
            self.peek_initiated,
            self.peek_completed,
            self.peek_refused,
            self.agent_earnings_usd,
            self.payment_failures,
            self.payment_attempts,
            self.rate_limited,
            self.sessions_closed,
        ):
            counter.add(0)  # start every series at 0, so /metrics lists it and rate() works from the first scrape
        # business gauges, read from the database by refresh_business()
        self.business = BusinessSnapshot()
        self._business_at = 0.0
        for field in fields(BusinessSnapshot):
            description, unit = BUSINESS_DESCRIPTIONS[field.name]
            meter.create_observable_gauge(
                field.name, callbacks=[self._gauge_callback(field.name)], unit=unit, description=description
            )

    # sessions -----------------------------------------------------------------------------------

    def count_flag_evaluation(self, attributes: dict[str, str]) -> None:
        """One feature flag evaluation (services/flags.py), by flag and variant."""
        self.flag_evaluations.add(1, attributes)

    def add_session_probe(self, probe: Callable[[], int]) -> None:
        """Count sessions someone else holds (e.g. the Streamable HTTP session manager's table)."""
        self._session_probes.append(probe)

    def session_opened(self) -> None:
        self._sessions_open += 1

    def session_closed(self) -> None:
        self._sessions_open = max(0, self._sessions_open - 1)
        self.sessions_closed.add(1)

    def _observe_sessions(self, _: CallbackOptions) -> Iterable[Observation]:
        total = self._sessions_open
        for probe in self._session_probes:
            try:
                total += int(probe())
            except Exception:  # a probe must never break a scrape
                logger.debug("session probe failed", exc_info=True)
        yield Observation(total)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """Around one session's lifespan (a stdio process, an in-memory client): counted while open."""
        self.session_opened()
        try:
            yield
        finally:
            self.session_closed()

    @asynccontextmanager
    async def watching(self, store: Store) -> AsyncIterator[None]:
        """While a store is open: its write-lock waits and file sizes; with OTLP, fresh business gauges."""
        store.write_wait_observers.append(self.db_write_wait.record)
        files = [store.path] if store.path is not None else []  # PostgreSQL: sizes are its own to report
        self._db_files.extend(files)
        try:
            if otlp_configured():
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._refresh_forever, store)
                    try:
                        yield
                    finally:
                        tasks.cancel_scope.cancel()
            else:
                yield
        finally:
            store.write_wait_observers.remove(self.db_write_wait.record)
            for path in files:
                self._db_files.remove(path)

    def _observe_db(self, *, suffix: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            for path in dict.fromkeys(self._db_files):  # one reading per file, however many sessions
                try:
                    size = path.with_name(path.name + suffix).stat().st_size
                except OSError:
                    size = 0
                yield Observation(size, {"db": path.name})

        return observe

    # business gauges ----------------------------------------------------------------------------

    def _gauge_callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            yield Observation(getattr(self.business, name))

        return observe

    async def refresh_business(self, store: Store, *, max_age: float = BUSINESS_REFRESH_SECONDS) -> BusinessSnapshot:
        """Re-read the business gauges if the last reading is older than `max_age` seconds."""
        if time.monotonic() - self._business_at >= max_age:
            try:
                self.business = await read_business(store)
            except Exception:
                logger.warning("business gauges could not be read", exc_info=True)
            self._business_at = time.monotonic()
        return self.business

    async def _refresh_forever(self, store: Store) -> None:
        while True:
            await self.refresh_business(store, max_age=0)
            await anyio.sleep(BUSINESS_REFRESH_SECONDS)

    # exposition ---------------------------------------------------------------------------------

    async def render_prometheus(self, store: Store | None = None) -> bytes:
        """The Prometheus text exposition of every instrument (business gauges refreshed first)."""
        if self.prometheus is None:
            raise RuntimeError("this Telemetry was built with an external MeterProvider; it has no Prometheus reader")
        if store is not None:
            await self.refresh_business(store)
        return self.prometheus.render()

    # tool calls ---------------------------------------------------------------------------------

    def record_tool_call(self, tool: str, outcome: str, seconds: float) -> None:
        attributes = {"tool": tool, "outcome": outcome}
        self.tool_calls.add(1, attributes)
        self.tool_duration.record(seconds, attributes)
        # an unknown name is the caller's text: one row for all of them, not one per name tried
        self.tool_usage.record("(unknown)" if outcome == "unknown_tool" else tool, outcome != "ok", seconds)


# Upper bounds of the tool-latency buckets kept in the database (tool_usage_daily.bucket), in ms;
# the last one catches everything slower.
USAGE_BUCKETS_MS = (*(int(b * 1000) for b in LATENCY_BUCKETS), 1_000_000_000)
_USAGE_BOUNDS_S = LATENCY_BUCKETS  # bisect_left over these picks the index into USAGE_BUCKETS_MS


class ToolUsageBuffer:
    """Tool calls counted in memory, per UTC day, tool and latency bucket, until the analytics flush
    (every few seconds, services/analytics.py) adds them to tool_usage_daily in one transaction: the
    hot path pays a dict update (~1 us), never a database write. Days are wall-clock UTC days."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, int], list[int]] = {}
        self._day_number = -1
        self._day = ""

    def record(self, tool: str, failed: bool, seconds: float) -> None:
        day_number = int(time.time() // 86400)
        if day_number != self._day_number:
            self._day_number = day_number
            self._day = datetime.fromtimestamp(day_number * 86400, UTC).date().isoformat()
        bucket = USAGE_BUCKETS_MS[bisect.bisect_left(_USAGE_BOUNDS_S, seconds)]
        key = (self._day, tool[:64], bucket)
        found = self._counts.get(key)
        if found is None:
            found = self._counts[key] = [0, 0]
        found[0] += 1
        found[1] += failed

    def drain(self) -> dict[tuple[str, str, int], list[int]]:
        """Everything counted since the last drain: (day, tool, bucket) -> [calls, errors]."""
        counts, self._counts = self._counts, {}
        return counts

    def restore(self, counts: dict[tuple[str, str, int], list[int]]) -> None:
        """Put back counts a failed flush could not write."""
        for key, (calls, errors) in counts.items():
            found = self._counts.setdefault(key, [0, 0])
            found[0] += calls
            found[1] += errors


def outcome_of(tool: str, result: Any) -> str:
    """ok | error | internal_error | rate_limited | unknown_tool, read from a tools/call result."""
    if isinstance(result, dict):
        is_error = bool(result.get("isError") or result.get("is_error"))
        content = result.get("content") or []
        structured = result.get("structuredContent") or result.get("structured_content")
        first = content[0] if content else {}
        text = str(first.get("text", "")) if isinstance(first, dict) else str(getattr(first, "text", ""))
    else:
        is_error = bool(getattr(result, "is_error", False))
        content = getattr(result, "content", None) or []
        structured = getattr(result, "structured_content", None)
        text = str(getattr(content[0], "text", "")) if content else ""
    if not is_error:
        return "ok"
    if isinstance(structured, dict) and structured.get("error") == "rate_limited":
        return "rate_limited"
    if INTERNAL_ERROR_TEXT in text or text.strip() == f"Error executing tool {tool}":
        return "internal_error"
    if text.startswith("Unknown tool"):
        return "unknown_tool"
    return "error"


class ToolCallObserver:
    """Around each tool call (see pipeline.py): a span, a counter, a latency and a log line."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def observe(self, tool: str, principal_id: str | None, jsonrpc_id: Any) -> ToolCallObservation:
        """`with observer.observe(...) as seen: ...; seen.result = result` (unset: "exception")."""
        return ToolCallObservation(self, tool, principal_id, jsonrpc_id)

    def _span(self, tool: str, request_id: str) -> AbstractContextManager[Span]:
        """Our span, a child of the SDK's tools/call span; when that one records nothing (no tracing
        configured), ours would not either, and making it is skipped (~35 Python calls a tool call)."""
        parent = trace.get_current_span()
        if not parent.is_recording():
            return nullcontext(parent)
        return self.telemetry.tracer.start_as_current_span(
            f"agentchat.tool {tool}",
            kind=SpanKind.INTERNAL,
            attributes={"gen_ai.tool.name": tool, "agentchat.request_id": request_id},
        )


_NO_RESULT = object()


class ToolCallObservation:
    """One tool call being observed: log fields bound and a span open while inside; on the way out
    the outcome (read from `result`) is counted, timed and written as the access line.

    A class rather than a generator context manager: it runs on every call, and this is the
    cheapest shape Python has for it.
    """

    __slots__ = (
        "_jsonrpc_id",
        "_log_token",
        "_observer",
        "_principal_id",
        "_span",
        "_span_cm",
        "_start",
        "_tool",
        "result",
    )

    def __init__(self, observer: ToolCallObserver, tool: str, principal_id: str | None, jsonrpc_id: Any) -> None:
        self._observer = observer
        self._tool = tool
        self._principal_id = principal_id
        self._jsonrpc_id = None if jsonrpc_id is None else str(jsonrpc_id)
        self.result: Any = _NO_RESULT

    def __enter__(self) -> ToolCallObservation:
        request_id = secrets.token_hex(8)
        self._log_token = logs.bind(request_id=request_id, principal_id=self._principal_id, tool=self._tool)
        self._span_cm = self._observer._span(self._tool, request_id)
        self._span = self._span_cm.__enter__()
        if self._principal_id and self._span.is_recording():
            self._span.set_attribute("agentchat.principal.id", self._principal_id)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        seconds = time.perf_counter() - self._start
        outcome = "exception" if self.result is _NO_RESULT else outcome_of(self._tool, self.result)
        try:
            if self._span.is_recording():
                self._span.set_attribute("agentchat.outcome", outcome)
                if outcome in ("internal_error", "exception"):
                    self._span.set_status(Status(StatusCode.ERROR, outcome))
            self._observer.telemetry.record_tool_call(self._tool, outcome, seconds)
            access_logger.info(
                "tools/call",
                extra={"jsonrpc_id": self._jsonrpc_id, "latency_ms": round(seconds * 1000, 2), "outcome": outcome},
            )
        finally:
            self._span_cm.__exit__(*exc_info)
            logs.unbind(self._log_token)


# --- payments ---------------------------------------------------------------------------------

# Provider calls that move (or try to move) money, by the `kind` label they are counted under.
MONEY_CALLS = {
    "authorize": "charge",
    "capture": "charge",
    "refund": "refund",
    "checkout": "checkout",
    "subscribe": "subscription",
    "transfer": "payout",
}
P = TypeVar("P")


class MeteredPayments:
    """A payment provider that counts its money calls: payment_attempts and payment_failures{kind, reason}."""

    def __init__(self, inner: Any, telemetry: Telemetry) -> None:
        self._inner = inner
        self._telemetry = telemetry

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        kind = MONEY_CALLS.get(name)
        if kind is None or not callable(attribute):
            return attribute

        async def metered(*args: Any, **kwargs: Any) -> Any:
            self._telemetry.payment_attempts.add(1, {"kind": kind})
            try:
                return await attribute(*args, **kwargs)
            except PaymentDeclined:
                self._telemetry.payment_failures.add(1, {"kind": kind, "reason": "declined"})
                raise
            except PaymentUnavailable:
                self._telemetry.payment_failures.add(1, {"kind": kind, "reason": "unavailable"})
                raise
            except Exception:
                self._telemetry.payment_failures.add(1, {"kind": kind, "reason": "error"})
                raise

        return metered


def metered_payments(provider: P, telemetry: Telemetry) -> P:
    """`provider`, counted; the embedded ledger provider moves no outside money and is left as it is."""
    if getattr(provider, "name", None) == "ledger":
        return provider
    return cast(P, MeteredPayments(provider, telemetry))


# --- /metrics over HTTP -----------------------------------------------------------------------


async def metrics_endpoint(request: Any) -> Any:
    """Starlette endpoint for GET /metrics; the AppContext is `request.app.state.agentchat`.

    With ``metrics_token`` set, the scrape needs ``Authorization: Bearer <token>``.
    """
    import hmac

    from starlette.responses import PlainTextResponse, Response

    app = getattr(request.app.state, "agentchat", None)
    if app is None:  # the hub is starting (or stopping): nothing to scrape yet, as /healthz says
        return PlainTextResponse("starting: no metrics yet, scrape again shortly", status_code=503)
    token = app.settings.metrics_token
    if token is not None:
        sent = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            return PlainTextResponse(
                "metrics need 'Authorization: Bearer <metrics token>'",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
    body = await app.telemetry.render_prometheus(app.store)
    return Response(body, media_type=prometheus_content_type())
