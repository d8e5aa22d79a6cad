"""OpenTelemetry instruments; the only module that imports opentelemetry.

The provider is passed in (tests give one with an in-memory reader); without one the
instruments record into a provider with no reader, which costs next to nothing.
"""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider


class Telemetry:
    """The product's counters and histograms, created once per server."""

    def __init__(self, provider: MeterProvider | None = None) -> None:
        self.provider = provider or MeterProvider()
        meter = self.provider.get_meter("agentchat_mcp")
        self.encryption_failures = meter.create_counter(
            "encryption_failures", description="Stored messages or keys that failed to open or verify."
        )
        self.messages_sent = meter.create_counter("messages_sent_total", description="Messages stored.")
