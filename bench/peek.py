"""Peek latency: request -> accept -> first read, p50/p95, server side and through an MCP client.

    python bench/peek.py              # 200 peeks per leg (~10 s)
    python bench/peek.py --n 500

Each timed peek, on a fresh conversation between alice (decides each request) and bob (standing
consent) holding a few messages: the user requests it (credit held), alice accepts (capture,
ledger entries, epoch keys wrapped to the user during her request), the user reads the first
page (decrypted with those keys). Two legs time the same three steps:

- server: the service calls themselves (what the server spends; no MCP framing);
- mcp: an in-memory MCP client per principal (adds the SDK, auth and the middleware).

Target: server p95 <= 20 ms.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from pydantic import SecretStr
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/peek.py` from a checkout, installed or not

from agentchat_mcp.server import build_app_context, build_server  # noqa: E402
from agentchat_mcp.services.identity import Caller  # noqa: E402
from agentchat_mcp.settings import Settings  # noqa: E402
from agentchat_mcp.store import open_store  # noqa: E402
from agentchat_mcp.telemetry import Telemetry  # noqa: E402

TARGET_P95_MS = 20.0
WARMUP = 10
MESSAGES = 5
NO_LIMIT = "1000000/minute"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass
class Leg:
    label: str
    request: list[float]
    accept: list[float]
    read: list[float]
    cpu_ms_per_peek: float = 0.0  # process CPU time (every thread) per timed peek: load-independent

    def rows(self) -> list[str]:
        total = [a + b + c for a, b, c in zip(self.request, self.accept, self.read, strict=True)]
        out = []
        for name, values in (("request_peek", self.request), ("respond_to_peek", self.accept)):
            out.append(f"  {self.label:<7} {name:<28} p50 {pct(values, 50):6.2f} ms   p95 {pct(values, 95):6.2f} ms")
        out.append(
            f"  {self.label:<7} {'read_messages (first page)':<28} p50 {pct(self.read, 50):6.2f} ms   "
            f"p95 {pct(self.read, 95):6.2f} ms"
        )
        out.append(
            f"  {self.label:<7} {'request -> accept -> read':<28} p50 {pct(total, 50):6.2f} ms   "
            f"p95 {pct(total, 95):6.2f} ms   (CPU {self.cpu_ms_per_peek:.2f} ms per peek)"
        )
        return out

    def total_p95(self) -> float:
        return pct([a + b + c for a, b, c in zip(self.request, self.accept, self.read, strict=True)], 95)


@dataclass
class World:
    settings: Settings
    keys: dict[str, str]
    conversations: list[str]


@asynccontextmanager
async def world(n: int) -> AsyncIterator[World]:
    """A temp database: two agents, a user with plenty of credit, n conversations with messages."""
    with tempfile.TemporaryDirectory(prefix="agentchat-bench-") as folder:
        settings = Settings(
            db=Path(folder) / "agentchat.db",
            secret_file=Path(folder) / "agentchat.secret",
            rate_limit_principal=NO_LIMIT,
            rate_limit_request_peek=NO_LIMIT,
        )
        async with open_store(settings.db) as store:
            app = build_app_context(settings, store, Telemetry())
            keys: dict[str, str] = {}
            for name, role, price, refuse in (
                ("alice", "agent", 150, True),
                ("bob", "agent", 250, False),
                ("uma", "user", None, None),
            ):
                _, keys[name] = await app.identity.register(role, name, peek_price_cents=price, can_refuse=refuse)
            alice = await app.identity.authenticate(keys["alice"])
            bob = await app.identity.authenticate(keys["bob"])
            uma = await app.identity.authenticate(keys["uma"])
            await app.earnings.grant(uma.id, 1_000_000)
            conversations = []
            for i in range(n):
                conv, _ = await app.conversations.start(alice, [bob.id], f"topic {i}", "first message")
                for j in range(MESSAGES - 1):
                    await app.conversations.send(bob if j % 2 == 0 else alice, conv.id, f"message {j}")
                conversations.append(conv.id)
        yield World(settings, keys, conversations)


async def server_leg(w: World, conversations: list[str]) -> Leg:
    leg = Leg("server", [], [], [])
    async with open_store(w.settings.db) as store:
        app = build_app_context(w.settings, store, Telemetry())
        callers: dict[str, Caller] = {n: await app.identity.authenticate(k) for n, k in w.keys.items()}
        for i, conv in enumerate(conversations):
            if i == WARMUP:
                cpu = time.process_time()
            t0 = time.perf_counter()
            peek = await app.peeks.request(callers["uma"], conv, max_price_cents=400)
            t1 = time.perf_counter()
            await app.peeks.respond(callers["alice"], peek.id, "accept", None)
            t2 = time.perf_counter()
            page = await app.conversations.read(callers["uma"], conv, 0, 50)
            t3 = time.perf_counter()
            if page.messages[0].text != "first message":
                raise SystemExit(f"the peeker could not read: {page.messages[0].error}")
            if i >= WARMUP:
                leg.request.append((t1 - t0) * 1000)
                leg.accept.append((t2 - t1) * 1000)
                leg.read.append((t3 - t2) * 1000)
        leg.cpu_ms_per_peek = (time.process_time() - cpu) * 1000 / max(1, len(leg.request))
    return leg


async def _call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    if result.is_error:
        raise SystemExit(f"{tool} failed: {result.content[0].text}")  # type: ignore[union-attr]
    return dict(result.structured_content or {})


async def mcp_leg(w: World, conversations: list[str]) -> Leg:
    leg = Leg("mcp", [], [], [])
    async with AsyncExitStack() as stack:
        clients = {
            n: await stack.enter_async_context(
                Client(build_server(w.settings.model_copy(update={"api_key": SecretStr(k)})))
            )
            for n, k in w.keys.items()
        }
        for i, conv in enumerate(conversations):
            if i == WARMUP:
                cpu = time.process_time()
            t0 = time.perf_counter()
            peek = await _call(clients["uma"], "request_peek", {"conversation_id": conv, "max_price": "4.00"})
            t1 = time.perf_counter()
            await _call(clients["alice"], "respond_to_peek", {"peek_id": peek["id"], "decision": "accept"})
            t2 = time.perf_counter()
            page = await _call(clients["uma"], "read_messages", {"conversation_id": conv})
            t3 = time.perf_counter()
            if page["messages"][0]["text"] != "first message":
                raise SystemExit(f"the peeker could not read: {page['messages'][0]['error']}")
            if i >= WARMUP:
                leg.request.append((t1 - t0) * 1000)
                leg.accept.append((t2 - t1) * 1000)
                leg.read.append((t3 - t2) * 1000)
        leg.cpu_ms_per_peek = (time.process_time() - cpu) * 1000 / max(1, len(leg.request))
    return leg


async def statement_floor(w: World) -> float:
    """p50 of one `SELECT 1` through the same async driver: what a statement costs on this machine now."""
    async with open_store(w.settings.db) as store:
        times = []
        async with store.read() as conn:
            for _ in range(300):
                t0 = time.perf_counter()
                await conn.execute(text("SELECT 1"))
                times.append((time.perf_counter() - t0) * 1000)
    return pct(times, 50)


async def run(n: int) -> int:
    per_leg = n + WARMUP
    started = time.perf_counter()
    async with world(2 * per_leg) as w:
        setup = time.perf_counter() - started
        floor = await statement_floor(w)
        server = await server_leg(w, w.conversations[:per_leg])
        mcp = await mcp_leg(w, w.conversations[per_leg:])
    print(
        f"agentchat-mcp peek bench: {n} peeks per leg after {WARMUP} warm-up, {MESSAGES} messages each, "
        f"2 agents (one decides, one standing consent); setup {setup:.1f} s"
    )
    print(f"  one SQL statement through the store (sqlite_driver=inline) here and now: p50 {floor:.3f} ms")
    for line in [*server.rows(), *mcp.rows()]:
        print(line)
    met = server.total_p95() <= TARGET_P95_MS
    print(
        f"  target: server request -> accept -> first read p95 <= {TARGET_P95_MS:.0f} ms: {'met' if met else 'NOT met'}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=200, help="timed peeks per leg (default 200)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be >= 1")
    return anyio.run(run, args.n)


if __name__ == "__main__":
    sys.exit(main())
