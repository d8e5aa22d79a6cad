"""Shared fixtures: a real server on a temp SQLite file (or its own PostgreSQL database, with
AGENTCHAT_TEST_DB set: tests/support_db.py), and clients that act as anyone."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from pydantic import SecretStr

from agentchat_mcp import clock, logs
from agentchat_mcp.server import build_server
from agentchat_mcp.settings import Settings
from agentchat_mcp.telemetry import Telemetry
from tests import support_db
from tests.support_db import database_for, db_value

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def pytest_report_header() -> str:
    return f"database: {'PostgreSQL (AGENTCHAT_TEST_DB), one per test' if support_db.ON_POSTGRES else 'SQLite files'}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The few long tests (marked slow) first: pytest-xdist hands tests to its workers in this order,
    and a long test handed out last would run on alone after every other test had finished.
    On PostgreSQL, tests marked sqlite_only("why") are skipped with their reason."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: the rest keep their order
    for item in items:
        if support_db.ON_POSTGRES and (marker := item.get_closest_marker("sqlite_only")) is not None:
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {marker.args[0] if marker.args else ''}"))
        if not support_db.ON_POSTGRES and item.get_closest_marker("postgres_only") is not None:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL: set AGENTCHAT_TEST_DB=postgresql://..."))


@pytest.fixture(autouse=True)
def _test_databases() -> Iterator[None]:
    """Drop the PostgreSQL databases a test made (database_for), when it ends."""
    yield
    support_db.drop_made()


@pytest.fixture(autouse=True, scope="session")
def _template_database() -> Iterator[None]:
    yield
    support_db.drop_template()


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
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path = PROJECT_ROOT,
    timeout: float = 120,
    process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`agentchat-mcp ARGS` as an operator runs it: output captured, exit code returned, never raises.

    In this process by default (`agentchat_mcp.cli.main(ARGS)`, with `env` as the whole environment, `cwd`
    as the working directory, stdout and stderr captured): a subprocess costs 1.5-3 s of start-up, and most
    tests are about what a command does. `process=True` runs the real `python -m agentchat_mcp` instead, for
    tests about the process itself (start-up checks, stdio, exit codes of the binary, signals, concurrency).
    """
    env = support_db.with_secret_file(list(args), env)
    if process:
        return subprocess.run(
            [sys.executable, "-m", "agentchat_mcp", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=env,
            check=False,
        )
    return _run_cli_in_process(list(args), env=env, cwd=cwd, timeout=timeout)


def _run_cli_in_process(
    args: list[str], *, env: dict[str, str] | None, cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    # A thread of its own: the CLI runs its own event loop (anyio.run), which cannot start in a thread
    # whose loop is running (an async test). The test waits for it, as it waited for the subprocess.
    out, err = io.StringIO(), io.StringIO()
    result: list[int] = []

    def run() -> None:
        from agentchat_mcp import cli

        try:
            cli.main(args)
            result.append(0)
        except SystemExit as exc:  # what the interpreter does with sys.exit(code)
            if exc.code is None or isinstance(exc.code, int):
                result.append(exc.code or 0)
            else:
                print(exc.code, file=sys.stderr)
                result.append(1)
        except BaseException:
            traceback.print_exc(file=sys.stderr)  # as an uncaught exception ends a process
            result.append(1)

    with _process_state(args, env=env, cwd=cwd), redirect_stdout(out), redirect_stderr(err):
        worker = threading.Thread(target=run, name="agentchat-mcp " + " ".join(args[:2]))
        worker.start()
        worker.join(timeout)
    if worker.is_alive():
        raise subprocess.TimeoutExpired(["agentchat-mcp", *args], timeout, out.getvalue(), err.getvalue())
    return subprocess.CompletedProcess(["agentchat-mcp", *args], result[0], out.getvalue(), err.getvalue())


@contextmanager
def _process_state(args: list[str], *, env: dict[str, str] | None, cwd: Path) -> Iterator[None]:
    """What a process of its own would have had to itself: argv, environment, working directory, and
    the logging set-up cli.main() configures (logs.configure). All put back afterwards."""
    root = logging.getLogger()
    names = ("agentchat_mcp", logs.ACCESS_LOGGER, *logs._NOISY, *logs._QUIET)
    levels = {name: logging.getLogger(name).level for name in (*names, "")}
    handlers = list(root.handlers)
    flags = {name: getattr(logging, name) for name in _LOGGING_FLAGS if hasattr(logging, name)}
    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv, Path.cwd()
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    sys.argv = ["agentchat-mcp", *args]
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        if env is not None:
            os.environ.clear()
            os.environ.update(saved_env)
        root.handlers[:] = handlers
        for name, level in levels.items():
            logging.getLogger(name or None).setLevel(level)
        for name, value in flags.items():
            setattr(logging, name, value)


_LOGGING_FLAGS = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing", "logAsyncioTasks")


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

    def __init__(self, tmp_path: Path, *, shared: bool = False) -> None:
        """`shared`: a hub several tests use (a module-scoped fixture); on PostgreSQL it gets a database of
        its own that is not emptied when each test ends."""
        self.tmp_path = tmp_path
        db = support_db.kept_database("shared") if shared and support_db.ON_POSTGRES else None
        self.settings = Settings(
            db=db or database_for(tmp_path / "agentchat.db"), secret_file=tmp_path / "agentchat.secret"
        )
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

    async def start_conversation(
        self, starter: Account, others: list[Account], *, topic: str = "t", first_message: str | None = "hi"
    ) -> str:
        """`starter` opens a conversation with `others`; returns its id."""
        args: dict[str, Any] = {"participants": [o.id for o in others], "topic": topic}
        if first_message is not None:
            args["first_message"] = first_message
        async with self.client(starter) as c:
            return str(structured(await c.call_tool("start_conversation", args))["conversation"]["id"])

    async def grant_credits(self, admin: Account, user: Account, amount: str) -> None:
        """`admin` grants `user` peek credit (grant_credits)."""
        async with self.client(admin) as c:
            structured(await c.call_tool("grant_credits", {"user_id": user.id, "amount": amount}))

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
            "AGENTCHAT_DB": db_value(self.settings.db),
            "AGENTCHAT_SECRET_FILE": str(self.settings.resolved_secret_file()),
            "PYTHONPATH": str(PROJECT_ROOT),
            "PATH": os.environ.get("PATH", ""),
            **env,
        }
        if account is not None:
            child_env["AGENTCHAT_API_KEY"] = account.api_key
        return StdioServerParameters(command=sys.executable, args=["-m", "agentchat_mcp"], env=child_env)


def rows(hub: Hub, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the hub's database directly, as an auditor would (not through the server); `?` placeholders."""
    return support_db.query(hub.settings.db, sql, *args)


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
