"""Shared by the HTTP tests: the hub served over real HTTP, and the mcp Client that talks to it.

`serving(hub)` runs the app under uvicorn in-process (same event loop as the test); `hub_process(hub)` runs
the real `agentchat-mcp serve --transport http` command as a subprocess. Here rather than in test_http.py so
that other test modules use them without importing (and coupling to) another test module.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from agentchat_mcp.http import HttpOptions, build_app, uvicorn_config
from agentchat_mcp.telemetry import Telemetry
from tests.conftest import PROJECT_ROOT, Account, Hub, structured


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bearer(account: Account | str | None) -> dict[str, str]:
    if account is None:
        return {}
    key = account if isinstance(account, str) else account.api_key
    return {"Authorization": f"Bearer {key}"}


@asynccontextmanager
async def serving_app(
    hub: Hub, *, settings: Any = None, telemetry: Telemetry | None = None, payments: Any = None, **options: Any
) -> AsyncIterator[tuple[str, Any]]:
    """The hub app under uvicorn on 127.0.0.1:<free port>, in this event loop; yields (base URL, app).
    uvicorn is configured as `serve` configures it (uvicorn_config: its proxy headers off).
    `payments`: a payment provider the test owns (see payments_support.pay_hub)."""
    port = free_port()
    app = build_app(
        settings or hub.settings,
        HttpOptions(port=port, **options),
        telemetry=telemetry or hub.telemetry,
        payments=payments,
    )
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=port, log_level="warning"))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve)
        with anyio.fail_after(20):
            while not server.started:
                await anyio.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}", app
        finally:
            server.should_exit = True


@asynccontextmanager
async def serving(hub: Hub, **kwargs: Any) -> AsyncIterator[str]:
    """serving_app, yielding only the base URL."""
    async with serving_app(hub, **kwargs) as (base, _):
        yield base


@asynccontextmanager
async def http_client(
    base: str, account: Account | str | None = None, *, mode: str = "auto", headers: dict[str, str] | None = None
) -> AsyncIterator[Client]:
    """The mcp Client over Streamable HTTP, carrying the account's bearer key."""
    async with httpx2.AsyncClient(
        headers={**bearer(account), **(headers or {})}, timeout=httpx2.Timeout(30, read=300)
    ) as http:
        transport = streamable_http_client(f"{base}/mcp", http_client=http)
        async with Client(transport, mode=mode, cache=None) as client:  # type: ignore[arg-type]
            yield client


async def register_over_http(base: str, name: str) -> Account:
    async with http_client(base, mode="legacy") as c:
        got = structured(await c.call_tool("register_agent", {"name": name, "peek_price": "1.00"}))
    return Account(id=got["id"], role="agent", name=name, api_key=got["api_key"])


@asynccontextmanager
async def hub_process(
    hub: Hub, *args: str, port: int | None = None
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """`agentchat-mcp serve --transport http` on this hub's database (on `port`, else a free one); stderr to a file."""
    port = port or free_port()
    env = {
        **os.environ,
        "AGENTCHAT_DB": str(hub.settings.db),
        "AGENTCHAT_SECRET_FILE": str(hub.settings.resolved_secret_file()),
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    log = (hub.tmp_path / f"hub-{port}.log").open("wb")
    command = [sys.executable, "-m", "agentchat_mcp", "serve", "--transport", "http", "--port", str(port), *args]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx2.AsyncClient() as http:
            with anyio.fail_after(60):
                while True:
                    assert process.poll() is None, (hub.tmp_path / f"hub-{port}.log").read_text()
                    try:
                        if (await http.get(f"{base}/healthz")).status_code == 200:
                            break
                    except httpx2.TransportError:
                        pass
                    await anyio.sleep(0.1)
        yield base, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
