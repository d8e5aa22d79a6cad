"""send_message over HTTP with many concurrent sessions, beside an echo-tool floor served the same way.

    python bench/send.py --http                   # adds these rows to the send benchmark
    python bench/send_http.py                     # these rows alone (a temp database)
    python bench/send_http.py --seconds 5 --sessions 100

Two server processes in turn, each `build_app` from agentchat_mcp.http under uvicorn on a loopback
port, with the same middleware, bearer auth (alice's key) and transports: first the floor (a bare
MCPServer with one `echo` tool), then agentchat-mcp itself. In this process, `--sessions` sessions
(each its own HTTP connection, raw JSON-RPC) call as fast as they can for `--seconds`, once in
each protocol era: `legacy` (2025-11-25 handshake sessions) and `auto` (2026-07-28, per request).
Rows: calls/s, latency p50/p95/p99, and the server's CPU time per call (Linux /proc). Target:
send_message keeps >= 0.7 x the floor's calls/s in each era.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentchat_mcp.settings import Settings  # noqa: E402

TEXT = "Benchmark message: the quick brown fox jumps over the lazy dog, then asks for a code review. " * 2
TARGET_RATIO = 0.7
BENCH_RATE_LIMIT = "100000000/minute"  # limits stay on (their check is part of a call's cost), out of reach
WARMUP_CALLS = 3  # per session, before the clock starts
ERAS = ("legacy", "auto")


@dataclass(frozen=True)
class Load:
    label: str
    calls: int
    seconds: float
    latencies_ms: list[float]
    server_cpu_s: float | None

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    def row(self) -> str:
        cpu = f"   server CPU {self.server_cpu_s / self.calls * 1000:5.2f} ms/call" if self.server_cpu_s else ""
        return (
            f"  {self.label:<24} {self.per_second:>9.0f}/s   p50 {self.pct(50):7.2f} ms   "
            f"p95 {self.pct(95):7.2f} ms   p99 {self.pct(99):7.2f} ms{cpu}"
        )


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_settings(db: Path, secret: Path) -> Settings:
    return Settings(db=db, secret_file=secret, rate_limit_principal=BENCH_RATE_LIMIT, rate_limit_ip=BENCH_RATE_LIMIT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the server process ---------------------------------------------------------------------------


def serve(kind: str, port: int, db: Path, secret: Path) -> None:
    """Child process: the hub app with the agentchat server or the echo floor, as `serve` runs it."""
    import uvicorn

    from agentchat_mcp import logs
    from agentchat_mcp.http import HttpOptions, build_app

    settings = bench_settings(db, secret)
    logs.configure(settings.log_level, access_log=settings.access_log)
    factory = None
    if kind == "echo":
        from send import echo_server  # bench/send.py: the floor the other legs use

        factory = lambda _app_ctx: echo_server()  # noqa: E731
    app = build_app(settings, HttpOptions(port=port), server_factory=factory)
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")).run()


@asynccontextmanager
async def server_process(kind: str, settings: Settings) -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--port", str(port)]
    command += ["--db", str(settings.db), "--secret", str(settings.resolved_secret_file())]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx2.AsyncClient() as http:
            with anyio.fail_after(60):
                while True:
                    if process.poll() is not None:
                        raise SystemExit(f"the {kind} server exited with {process.returncode}")
                    try:
                        if (await http.get(f"{base}/healthz")).status_code == 200:
                            break
                    except httpx2.TransportError:
                        pass
                    await anyio.sleep(0.1)
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the load -----------------------------------------------------------------------------------
# Raw JSON-RPC over httpx2 rather than the mcp Client: with 50 sessions in one Python process the
# Client's own per-call work (validation, SSE parsing, tools/list for output schemas) costs more
# than the server's, and the bench would measure the client. Every reply is still checked.

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
MODERN = "2026-07-28"
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


class Session:
    """One client session speaking raw Streamable HTTP in one era."""

    def __init__(self, http: httpx2.AsyncClient, url: str, mode: str) -> None:
        self.http, self.url, self.mode = http, url, mode
        self.headers = dict(MCP_HEADERS)
        self.next_id = 0

    async def open(self) -> None:
        if self.mode == "legacy":  # the 2025-11-25 handshake: a session id for every later request
            params = {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0"},
            }
            got = await self.http.post(self.url, json=self._request("initialize", params), headers=self.headers)
            got.raise_for_status()
            self.headers |= {"mcp-session-id": got.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
            done = await self.http.post(
                self.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=self.headers
            )
            done.raise_for_status()
        else:  # 2026-07-28: no session, every request carries the protocol version
            self.headers |= {"mcp-protocol-version": MODERN, "mcp-method": "tools/call"}

    async def close(self) -> None:
        if self.mode == "legacy":
            await self.http.delete(self.url, headers={k: v for k, v in self.headers.items() if k != "Content-Type"})

    def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        return {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}

    async def call(self, tool: str, args: dict[str, Any]) -> None:
        params: dict[str, Any] = {"name": tool, "arguments": args}
        headers = self.headers
        if self.mode != "legacy":
            params["_meta"] = MODERN_META
            headers = {**headers, "mcp-name": tool}
        got = await self.http.post(self.url, json=self._request("tools/call", params), headers=headers)
        body = got.text
        if got.headers.get("content-type", "").startswith("text/event-stream"):
            body = [line for line in body.splitlines() if line.startswith("data: ")][-1][len("data: ") :]
        message = json.loads(body)
        if got.status_code != 200 or "result" not in message or message["result"].get("isError"):
            raise SystemExit(f"{tool} failed ({got.status_code}): {body[:300]}")


@dataclass
class Pool:
    """`sessions` open sessions against one server, all calling one tool; measured in slices."""

    label: str
    pid: int
    tool: str
    args: dict[str, Any]
    sessions: list[Session]
    calls: int = 0
    seconds: float = 0.0
    cpu_s: float | None = 0.0

    def __post_init__(self) -> None:
        self.latencies_ms: list[float] = []

    async def warm_up(self) -> None:
        async with anyio.create_task_group() as tasks:
            for session in self.sessions:
                for _ in range(WARMUP_CALLS):
                    tasks.start_soon(session.call, self.tool, self.args)

    async def run(self, seconds: float) -> None:
        """Every session calls back to back for `seconds`; adds to the totals."""
        cpu_before = cpu_seconds(self.pid)
        start = time.perf_counter()
        deadline = start + seconds

        async def worker(session: Session) -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                await session.call(self.tool, self.args)
                self.latencies_ms.append((time.perf_counter() - t0) * 1000)
                self.calls += 1

        async with anyio.create_task_group() as tasks:
            for session in self.sessions:
                tasks.start_soon(worker, session)
        self.seconds += time.perf_counter() - start
        cpu_after = cpu_seconds(self.pid)
        if self.cpu_s is not None and cpu_before is not None and cpu_after is not None:
            self.cpu_s += cpu_after - cpu_before
        else:
            self.cpu_s = None

    def result(self) -> Load:
        return Load(self.label, self.calls, self.seconds, self.latencies_ms, self.cpu_s)


async def open_pool(
    stack: AsyncExitStack,
    label: str,
    base: str,
    pid: int,
    api_key: str,
    tool: str,
    args: dict[str, Any],
    *,
    mode: str,
    sessions: int,
) -> Pool:
    opened: list[Session] = []
    for _ in range(sessions):
        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {api_key}"}, timeout=httpx2.Timeout(60))
        )
        opened.append(Session(http, f"{base}/mcp", mode))
    async with anyio.create_task_group() as tasks:
        for session in opened:
            tasks.start_soon(session.open)
            stack.push_async_callback(session.close)
    pool = Pool(label, pid, tool, args, opened)
    await pool.warm_up()
    return pool


async def http_figures(
    settings: Settings,
    api_key: str,
    conversation_id: str,
    *,
    seconds: float = 2.0,
    sessions: int = 50,
    rounds: int = 4,
) -> list[str]:
    """The HTTP rows for bench/send.py: echo floor and send_message per era, and their ratios.

    Both servers run at once and the four rows take turns in `rounds` short slices, so a change in
    background load on the machine falls on floor and send alike.
    """
    send_args = {"conversation_id": conversation_id, "text": TEXT}
    async with (
        server_process("echo", settings) as (echo_base, echo_pid),
        server_process("agentchat", settings) as (send_base, send_pid),
        AsyncExitStack() as stack,
    ):
        pools: dict[tuple[str, str], Pool] = {}
        for era in ERAS:
            pools["echo", era] = await open_pool(
                stack,
                f"http {era} echo (floor)",
                echo_base,
                echo_pid,
                api_key,
                "echo",
                {"text": TEXT},
                mode=era,
                sessions=sessions,
            )
            pools["send", era] = await open_pool(
                stack,
                f"http {era} send_message",
                send_base,
                send_pid,
                api_key,
                "send_message",
                send_args,
                mode=era,
                sessions=sessions,
            )
        for _ in range(rounds):
            for pool in pools.values():
                await pool.run(seconds / rounds)
    lines = [
        f"agentchat-mcp bench over HTTP: {sessions} concurrent sessions, {seconds:g} s per row "
        f"(in {rounds} interleaved slices), {len(TEXT)}-char text"
    ]
    for era in ERAS:
        floor, send = pools["echo", era].result(), pools["send", era].result()
        ratio = send.per_second / floor.per_second
        met = "met" if ratio >= TARGET_RATIO else "NOT met"
        lines += [
            floor.row(),
            send.row(),
            f"  http {era} ratio send/echo: {ratio:.2f}  (target >= {TARGET_RATIO:.1f}: {met})",
        ]
    return lines


# --- standalone -----------------------------------------------------------------------------------


async def standalone(seconds: float, sessions: int) -> int:
    from send import open_hub  # bench/send.py: a temp database with alice and bob in one conversation

    async with open_hub() as hub:
        for line in await http_figures(
            hub.settings, hub.api_key, hub.conversation_id, seconds=seconds, sessions=sessions
        ):
            print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per row (default 2)")
    parser.add_argument("--sessions", type=int, default=50, help="concurrent client sessions (default 50)")
    parser.add_argument("--serve", choices=["echo", "agentchat"], help=argparse.SUPPRESS)  # the server child
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--secret", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.db, args.secret)
        return 0
    if args.seconds <= 0 or args.sessions < 1:
        parser.error("--seconds must be > 0 and --sessions >= 1")
    return anyio.run(standalone, args.seconds, args.sessions)


if __name__ == "__main__":
    sys.exit(main())
