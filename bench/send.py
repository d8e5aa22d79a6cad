"""send_message throughput and latency, beside an echo-tool floor measured in the same run.

    python bench/send.py                 # in-memory and stdio, 300 timed calls each (~10-20 s)
    python bench/send.py --n 2000        # more calls
    python bench/send.py --legs memory   # one transport only
    python bench/send.py --profile out.prof   # cProfile the in-memory send loop
    python bench/send.py --http          # also over HTTP: 50 concurrent sessions per era (bench/send_http.py)
    python bench/send.py --http --legs memory --profile-hub /tmp/hub   # cProfile the HTTP hub: /tmp/hub.agentchat.prof

Each leg times N sequential calls from one real MCP client to each of: `echo(text)` on a bare
MCPServer (the floor: what the SDK and transport cost by themselves) and `send_message` on
agentchat-mcp (auth, membership check, encrypt + sign, one SQLite write transaction), over the same
transport, taking turns in slices so that load from elsewhere on the machine hits both alike.
The ratio send/echo in calls per second is the share of the floor that send_message keeps.
Target: in-memory ratio >= 0.7.

The `ceiling` leg serves, in memory beside the same floor, the least any send_message can be on this
SDK (minimal_server: the tool signature and result model ours has, seal + sign + one raw SQLite
write transaction, and nothing else): its ratio is the most a send_message can keep here.

Legs are entries of LEGS; another transport (bench/send_http.py) adds one the same way.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/send.py` from a checkout, installed or not

from agentchat_mcp import clock  # noqa: E402
from agentchat_mcp.crypto import EpochKey, KeyBundle, MessageContext, signed_payload  # noqa: E402
from agentchat_mcp.models import MessageSent  # noqa: E402
from agentchat_mcp.server import build_server, settle_startup_heap  # noqa: E402
from agentchat_mcp.settings import Settings  # noqa: E402

TEXT = "Benchmark message: the quick brown fox jumps over the lazy dog, then asks for a code review. " * 2
WARMUP = 20
SLICES = 10  # echo and send take turns, N/SLICES calls at a time
TARGET_RATIO = 0.7
BENCH_RATE_LIMIT = "1000000/minute"


# --- the floor: a bare MCPServer with one tool ------------------------------------------------


async def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


def echo_server() -> MCPServer:
    server = MCPServer("echo", log_level="WARNING")
    server.add_tool(echo)
    return server


# --- measuring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    label: str
    n: int
    seconds: float
    latencies_ms: list[float]
    cpu_seconds: float = 0.0  # this process's CPU time (all threads): the whole call when in-process

    @property
    def per_second(self) -> float:
        return self.n / self.seconds

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    def row(self) -> str:
        return (
            f"  {self.label:<24} {self.per_second:>9.0f}/s   p50 {self.pct(50):7.2f} ms   "
            f"p95 {self.pct(95):7.2f} ms   p99 {self.pct(99):7.2f} ms   "
            f"client-process CPU {self.cpu_seconds / self.n * 1000:5.2f} ms/call"
        )


async def _slice(label: str, client: Client, tool: str, args: dict[str, Any], n: int) -> Stats:
    """N sequential calls; every call must succeed."""
    latencies: list[float] = []
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        await _call(client, tool, args)
        latencies.append((time.perf_counter() - t0) * 1000)
    return Stats(label, n, time.perf_counter() - start, latencies, time.process_time() - cpu)


async def interleaved(rows: list[tuple[str, Client, str, dict[str, Any]]], n: int, slices: int = SLICES) -> list[Stats]:
    """Each row's N calls in `slices` turns, alternating rows: load changes on a shared machine
    hit every row alike, so the ratio between rows stays meaningful."""
    for _, client, tool, args in rows:
        for _ in range(WARMUP):
            await _call(client, tool, args)
    settle_startup_heap()  # what `agentchat-mcp serve` does once started (in-process servers live here)
    parts: list[list[Stats]] = [[] for _ in rows]
    for turn in range(slices):
        size = n // slices + (1 if turn < n % slices else 0)
        for i, (label, client, tool, args) in enumerate(rows):
            if size:
                parts[i].append(await _slice(label, client, tool, args, size))
    return [
        Stats(
            label,
            sum(p.n for p in done),
            sum(p.seconds for p in done),
            [ms for p in done for ms in p.latencies_ms],
            sum(p.cpu_seconds for p in done),
        )
        for (label, *_), done in zip(rows, parts, strict=True)
    ]


async def _call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    if result.is_error:
        raise SystemExit(f"{tool} failed: {result.content[0].text}")  # type: ignore[union-attr]
    return dict(result.structured_content or {})


# --- the agentchat side: a temp database with two agents in one conversation -------------------


@dataclass(frozen=True)
class Hub:
    settings: Settings
    api_key: str  # alice's
    conversation_id: str

    def stdio_params(self) -> StdioServerParameters:
        env = {
            "AGENTCHAT_DB": str(self.settings.db),
            "AGENTCHAT_SECRET_FILE": str(self.settings.resolved_secret_file()),
            "AGENTCHAT_API_KEY": self.api_key,
            "AGENTCHAT_RATE_LIMIT_PRINCIPAL": BENCH_RATE_LIMIT,
            "PYTHONPATH": str(ROOT),
        }
        return StdioServerParameters(command=sys.executable, args=["-m", "agentchat_mcp"], env=env)

    def in_memory(self) -> Client:
        return Client(build_server(self.settings.model_copy(update={"api_key": SecretStr(self.api_key)})))


@asynccontextmanager
async def open_hub() -> AsyncIterator[Hub]:
    with tempfile.TemporaryDirectory(prefix="agentchat-bench-") as folder:
        # The per-principal rate limit stays on (its check is part of every call's cost) but high
        # enough that thousands of calls a minute pass. extra="ignore": harmless if the field is gone.
        settings = Settings(
            db=Path(folder) / "agentchat.db",
            secret_file=Path(folder) / "agentchat.secret",
            rate_limit_principal=BENCH_RATE_LIMIT,
        )
        keys: dict[str, str] = {}
        ids: dict[str, str] = {}
        for name in ("alice", "bob"):
            async with Client(build_server(settings)) as client:
                await client.list_tools()  # as anonymous, so the client knows register_agent's output schema
                got = await _call(client, "register_agent", {"name": name, "peek_price": "1.00"})
                keys[name], ids[name] = got["api_key"], got["id"]
        hub = Hub(settings, keys["alice"], "")
        async with hub.in_memory() as alice:
            started = await _call(alice, "start_conversation", {"participants": [ids["bob"]], "topic": "bench"})
        yield Hub(settings, keys["alice"], started["conversation"]["id"])


# --- the ceiling: the least any send_message can be on this SDK ------------------------------


def minimal_server(folder: Path) -> MCPServer:
    """A bare MCPServer whose send_message does only what no implementation can skip: seal and sign
    the text (our crypto module) and one SQLite WAL write transaction of the same shape as ours (read
    the conversation's state, insert the message, bump the conversation and the sender's read
    cursor) on raw sqlite3, taking the request context and returning the MessageSent model as ours
    does. No authentication, rate limit, roles, telemetry, access log or key release: its ratio to
    the echo floor is the most any send_message could reach here."""
    key, keys = EpochKey.generate(), KeyBundle.generate()
    db = sqlite3.connect(folder / "minimal.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE c (id TEXT PRIMARY KEY, epoch INT, last_seq INT, at TEXT)")
    db.execute("CREATE TABLE p (c TEXT, who TEXT, read_seq INT, PRIMARY KEY (c, who))")
    db.execute(
        "CREATE TABLE m (id INTEGER PRIMARY KEY, c TEXT, seq INT, epoch INT, sender TEXT, sealed BLOB, "
        "signature BLOB, at TEXT, UNIQUE (c, seq))"
    )
    db.execute("INSERT INTO c VALUES ('cnv_minimal', 1, 0, '')")
    db.execute("INSERT INTO p VALUES ('cnv_minimal', 'agt_minimal', 0)")
    server = MCPServer("minimal", log_level="WARNING")

    @server.tool()
    async def send_message(conversation_id: str, text: str, ctx: Context) -> MessageSent:  # type: ignore[type-arg]
        """Seal, sign and store a message."""
        db.execute("BEGIN IMMEDIATE")
        epoch, seq = db.execute(
            "SELECT c.epoch, c.last_seq FROM c JOIN p ON p.c = c.id AND p.who = ? WHERE c.id = ?",
            ("agt_minimal", conversation_id),
        ).fetchone()
        seq += 1
        place = MessageContext(conversation_id=conversation_id, epoch=epoch, seq=seq, sender_id="agt_minimal")
        sealed = key.seal(text, ctx=place)
        signature = keys.sign(signed_payload(place, sealed))
        now = clock.now_iso()
        db.execute(
            "INSERT INTO m (c, seq, epoch, sender, sealed, signature, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (conversation_id, seq, epoch, "agt_minimal", sealed, signature, now),
        )
        db.execute("UPDATE c SET last_seq = ?, at = ? WHERE id = ?", (seq, now, conversation_id))
        db.execute("UPDATE p SET read_seq = ? WHERE c = ? AND who = ?", (seq, conversation_id, "agt_minimal"))
        db.execute("COMMIT")
        return MessageSent(conversation_id=conversation_id, seq=seq, sent_at=now)

    return server


# --- legs: one transport each -----------------------------------------------------------------

Leg = Callable[[Hub, int], Awaitable[tuple[Stats, Stats]]]


async def pair(
    name: str,
    echo_client: AbstractAsyncContextManager[Client],
    send_client: AbstractAsyncContextManager[Client],
    hub: Hub,
    n: int,
) -> tuple[Stats, Stats]:
    async with echo_client as echo, send_client as send:
        floor, sent = await interleaved(
            [
                (f"{name} echo (floor)", echo, "echo", {"text": TEXT}),
                (f"{name} send_message", send, "send_message", {"conversation_id": hub.conversation_id, "text": TEXT}),
            ],
            n,
        )
    return floor, sent


async def memory_leg(hub: Hub, n: int) -> tuple[Stats, Stats]:
    """In-process Client(server) in auto mode: no JSON-RPC framing, no process boundary."""
    return await pair("in-memory", Client(echo_server()), hub.in_memory(), hub, n)


async def stdio_leg(hub: Hub, n: int) -> tuple[Stats, Stats]:
    """A real subprocess each: `python bench/send.py --echo-server` and `python -m agentchat_mcp`."""
    echo_params = StdioServerParameters(command=sys.executable, args=[str(Path(__file__).resolve()), "--echo-server"])
    with open(os.devnull, "w") as devnull:
        return await pair(
            "stdio",
            Client(stdio_client(echo_params, errlog=devnull)),
            Client(stdio_client(hub.stdio_params(), errlog=devnull)),
            hub,
            n,
        )


async def ceiling_leg(hub: Hub, n: int) -> tuple[Stats, Stats]:
    """In-memory, the echo floor beside minimal_server's send_message: the most any send could keep."""
    with tempfile.TemporaryDirectory(prefix="agentchat-bench-minimal-") as folder:
        minimal = Client(minimal_server(Path(folder)))
        args = {"conversation_id": "cnv_minimal", "text": TEXT}
        async with Client(echo_server()) as echo, minimal as send:
            floor, sent = await interleaved(
                [
                    ("in-memory echo (floor)", echo, "echo", {"text": TEXT}),
                    ("minimal send (ceiling)", send, "send_message", args),
                ],
                n,
            )
        return floor, sent


LEGS: dict[str, Leg] = {"memory": memory_leg, "ceiling": ceiling_leg, "stdio": stdio_leg}


# --- main -------------------------------------------------------------------------------------


async def run(legs: list[str], n: int, profile: str | None, http: argparse.Namespace | None = None) -> int:
    results: list[tuple[str, Stats, Stats]] = []
    http_lines: list[str] = []
    async with open_hub() as hub:
        for name in legs:
            if profile and name == "memory":
                profiler = cProfile.Profile()
                profiler.enable()
                echo, send = await LEGS[name](hub, n)
                profiler.disable()
                profiler.dump_stats(profile)
            else:
                echo, send = await LEGS[name](hub, n)
            results.append((name, echo, send))
        if http is not None:  # bench/send_http.py: 50 concurrent sessions per era over real HTTP
            from send_http import http_figures

            http_lines = await http_figures(
                hub.settings,
                hub.api_key,
                hub.conversation_id,
                seconds=http.http_seconds,
                sessions=http.http_sessions,
                profile_hub=http.profile_hub,
            )
    print(
        f"agentchat-mcp bench: {n} sequential calls per row ({SLICES} alternating slices) after {WARMUP} warm-up calls, "
        f"{len(TEXT)}-char text"
    )
    for name, echo, send in results:
        print(echo.row())
        print(send.row())
        verdict = ""
        if name == "memory":
            met = send.per_second >= TARGET_RATIO * echo.per_second
            verdict = f"  (target >= {TARGET_RATIO:.1f}: {'met' if met else 'NOT met'})"
        if name == "ceiling":
            verdict = "  (no auth, limits, telemetry or log: the most any send_message keeps on this SDK)"
        print(f"  {name} ratio send/echo: {send.per_second / echo.per_second:.2f}{verdict}")
    for line in http_lines:
        print(line)
    if profile:
        print(f"cProfile of the in-memory leg written to {profile} (python -m pstats {profile})")
    if http is not None and http.profile_hub:
        path = f"{http.profile_hub}.agentchat.prof"
        print(f"cProfile of the agentchat HTTP hub over the timed rounds written to {path} (its rows ran profiled)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=300, help="timed calls per row (default 300)")
    parser.add_argument("--legs", default=",".join(LEGS), help=f"comma-separated, from {', '.join(LEGS)}")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the in-memory leg into FILE")
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)  # the stdio floor's child
    parser.add_argument("--http", action="store_true", help="also: send_message over HTTP, concurrent sessions")
    parser.add_argument("--http-seconds", type=float, default=2.0, help="timed seconds per HTTP row (default 2)")
    parser.add_argument("--http-sessions", type=int, default=50, help="concurrent HTTP sessions (default 50)")
    parser.add_argument(
        "--profile-hub",
        metavar="PREFIX",
        help="with --http: cProfile the agentchat server process over the timed rounds into PREFIX.agentchat.prof",
    )
    args = parser.parse_args(argv)
    if args.echo_server:
        echo_server().run("stdio")
        return 0
    legs = [leg.strip() for leg in args.legs.split(",") if leg.strip()]
    unknown = [leg for leg in legs if leg not in LEGS]
    if args.profile_hub and not args.http:
        parser.error("--profile-hub profiles the HTTP hub: add --http")
    if unknown or args.n < 1:
        parser.error(f"unknown legs {unknown}; choose from {list(LEGS)}" if unknown else "--n must be >= 1")
    return anyio.run(run, legs, args.n, args.profile, args if args.http else None)


if __name__ == "__main__":
    sys.exit(main())
