"""Shared fixtures: a real server on a temp SQLite file, and clients that act as anyone."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from pydantic import SecretStr

from agentchat_mcp import clock
from agentchat_mcp.server import build_server
from agentchat_mcp.settings import Settings
from agentchat_mcp.telemetry import Telemetry

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiosqlite is asyncio-only


@dataclass(frozen=True)
class Account:
    id: str
    role: str
    name: str
    api_key: str


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = PROJECT_ROOT, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`agentchat-mcp ARGS` in a subprocess, as an operator runs it (output captured, never raises)."""
    return subprocess.run(
        [sys.executable, "-m", "agentchat_mcp", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        check=False,
    )


def structured(result: Any) -> dict[str, Any]:
    """A tool result's structured content, failing the test with the error text if it is an error."""
    assert not result.is_error, result.content[0].text
    return dict(result.structured_content)


def error_text(result: Any) -> str:
    """A tool result's error text, failing the test if the call succeeded."""
    assert result.is_error, f"expected an error, got {result.structured_content}"
    return str(result.content[0].text)


class Hub:
    """One database; each client gets its own server lifespan (like separate processes on one file)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.settings = Settings(db=tmp_path / "agentchat.db", secret_file=tmp_path / "agentchat.secret")
        self.metrics = InMemoryMetricReader()
        self.telemetry = Telemetry(MeterProvider(metric_readers=[self.metrics]))

    def settings_for(self, api_key: str | None) -> Settings:
        return self.settings.model_copy(update={"api_key": SecretStr(api_key) if api_key else None})

    def client(self, account: Account | None = None, *, mode: str = "auto", **kwargs: Any) -> Client:
        server = build_server(self.settings_for(account.api_key if account else None), telemetry=self.telemetry)
        return Client(server, mode=mode, **kwargs)  # type: ignore[arg-type]

    async def register_agent(
        self, name: str, *, peek_price: str = "1.00", can_refuse: bool = True, tags: list[str] | None = None
    ) -> Account:
        async with self.client() as c:
            args: dict[str, Any] = {"name": name, "peek_price": peek_price, "can_refuse": can_refuse}
            if tags:
                args["tags"] = tags
            got = structured(await c.call_tool("register_agent", args))
        return Account(id=got["id"], role="agent", name=name, api_key=got["api_key"])

    async def register_user(self, name: str) -> Account:
        async with self.client() as c:
            got = structured(await c.call_tool("register_user", {"display_name": name}))
        return Account(id=got["id"], role="user", name=name, api_key=got["api_key"])

    async def register_admin(self, name: str) -> Account:
        """Admins are made by the operator (CLI `admin create`), never through a tool: the same service call."""
        from agentchat_mcp.server import build_app_context
        from agentchat_mcp.store import open_store

        async with open_store(self.settings.db) as store:
            app = build_app_context(self.settings, store, self.telemetry)
            principal, api_key = await app.identity.register("admin", name)
        return Account(id=principal.id, role="admin", name=name, api_key=api_key)

    def counter(self, name: str) -> int:
        """The current total of a counter instrument (0 if never recorded)."""
        data = self.metrics.get_metrics_data()
        total = 0
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        total += sum(int(p.value) for p in metric.data.data_points)
        return total

    def stdio(self, account: Account | None, **env: str) -> StdioServerParameters:
        """Parameters for a real `agentchat-mcp` subprocess on this hub's database."""
        child_env = {
            "AGENTCHAT_DB": str(self.settings.db),
            "AGENTCHAT_SECRET_FILE": str(self.settings.resolved_secret_file()),
            "PYTHONPATH": str(PROJECT_ROOT),
            "PATH": os.environ.get("PATH", ""),
            **env,
        }
        if account is not None:
            child_env["AGENTCHAT_API_KEY"] = account.api_key
        return StdioServerParameters(command=sys.executable, args=["-m", "agentchat_mcp"], env=child_env)


def rows(hub: Hub, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the hub's database directly, as an auditor would (not through the server)."""
    with sqlite3.connect(hub.settings.db) as db:
        found = db.execute(sql, args).fetchall()
    db.close()
    return found


def ledger_total(hub: Hub) -> int:
    """The sum of every ledger line: 0 whenever the books balance."""
    return int(rows(hub, "SELECT COALESCE(SUM(amount_cents), 0) FROM ledger_lines")[0][0])


class TravelClock:
    """clock.now() shifted by an offset the test moves forward (expiry, windows, renewals)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@pytest.fixture
def travel(monkeypatch: pytest.MonkeyPatch) -> Iterator[TravelClock]:
    fake = TravelClock()
    monkeypatch.setattr(clock, "now", fake)
    yield fake


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    yield Hub(tmp_path)
