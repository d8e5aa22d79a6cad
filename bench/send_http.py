"""send_message over HTTP with many concurrent sessions, beside an echo-tool floor served the same way.

    python bench/send.py --http                   # adds these rows to the send benchmark
    python bench/send_http.py                     # these rows alone (a temp database)
    python bench/send_http.py --seconds 5 --sessions 100

Three server processes, each `build_app` from agentchat_mcp.http under uvicorn on a loopback port,
with the same middleware, bearer auth (alice's key) and transports: the floor (a bare MCPServer with
one `echo` tool), agentchat-mcp itself, and the ceiling (bench/send.py minimal_server: the least a
send_message can be, with no auth, limits, telemetry or log of its own). In this process, `--sessions` sessions
(raw JSON-RPC, one keep-alive connection each) call as fast as they can for `--seconds`, once in
each protocol era: `legacy` (2025-11-25 handshake sessions) and `auto` (2026-07-28, per request).
A fourth row per era calls `echo` on the agentchat server itself (bench-only, see with_echo): the
cost of our per-call duties without any send work. Rows: calls/s, latency p50/p95/p99, and the
server's CPU time per call (Linux /proc). Target:
send_message keeps >= 0.7 x the floor's calls/s in each era.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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
from anyio.streams.buffered import BufferedByteStream

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentchat_mcp.settings import Settings  # noqa: E402

TEXT = "Benchmark message: the quick brown fox jumps over the lazy dog, then asks for a code review. " * 2
TARGET_RATIO = 0.7
BENCH_RATE_LIMIT = "100000000/minute"  # limits stay on (their check is part of a call's cost), out of reach
WARMUP_CALLS = 1  # per session, before the clock starts (opens its connection, fills caches)
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
    from agentchat_mcp.http import HttpOptions, build_app, uvicorn_config
    from agentchat_mcp.server import build_server, settle_startup_heap
    from agentchat_mcp.telemetry import Telemetry

    settings = bench_settings(db, secret)
    logs.configure(settings.log_level, access_log=settings.access_log)
    telemetry = Telemetry()
    factory = lambda app_ctx: with_echo(build_server(settings, telemetry=telemetry, shared=app_ctx))  # noqa: E731
    if kind == "echo":
        from send import echo_server  # bench/send.py: the floor the other legs use

        factory = lambda _app_ctx: echo_server()  # noqa: E731
    elif kind == "minimal":
        from send import minimal_server  # bench/send.py: the least a send_message can be (the ceiling)

        factory = lambda _app_ctx: minimal_server(db.parent)  # noqa: E731
    app = build_app(settings, HttpOptions(port=port), telemetry=telemetry, server_factory=factory)
    # every leg under uvicorn as `serve` configures it (its loop and HTTP parser)
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=port, log_level="warning"))
    settle_startup_heap()  # as `agentchat-mcp serve` does, for both servers alike
    profile = os.environ.get("BENCH_PROFILE_SERVER")  # a path prefix: see profile_between_signals
    if profile:
        profile_between_signals(f"{profile}.{kind}.prof")
    server.run()


def with_echo(server: Any) -> Any:
    """The agentchat server plus the floor's `echo` tool (open to anyone): echo called through it
    pays every per-call duty of ours (caller, rate limit, role check, metrics, access line) and no
    send work, so its row splits send_message's cost between those duties and the send itself."""
    from send import echo  # bench/send.py: the floor's tool itself

    server.add_tool(echo)
    return server


def profile_between_signals(path: str) -> None:
    """CPU-profile this process from SIGUSR1 to SIGUSR2 (then write `path`): a timed window only,
    without start-up or shutdown. bench/send.py --http --profile-hub PREFIX does it over the timed
    rounds; by hand: BENCH_PROFILE_SERVER=/tmp/p, then kill -USR1/-USR2."""
    import cProfile
    import signal

    profiler = cProfile.Profile(time.process_time)

    def start(*_: Any) -> None:
        profiler.enable()

    def stop(*_: Any) -> None:
        profiler.disable()
        profiler.dump_stats(path)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


async def stop_profile(pid: int, path: Path) -> None:
    """SIGUSR2 to a profiled server, then wait until it has written its profile."""
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    with anyio.fail_after(30):
        while not path.exists():
            await anyio.sleep(0.05)
    await anyio.sleep(0.2)  # dump_stats writes in one go; let it finish


@asynccontextmanager
async def server_processes(kinds: list[str], settings: Settings) -> AsyncIterator[list[tuple[str, int]]]:
    """Start one server child per kind at once; yields (base URL, pid) each once all answer /healthz."""
    started: list[tuple[str, str, subprocess.Popen[bytes]]] = []
    try:
        for kind in kinds:
            port = free_port()
            command = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--port", str(port)]
            command += ["--db", str(settings.db), "--secret", str(settings.resolved_secret_file())]
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            started.append((kind, f"http://127.0.0.1:{port}", process))
        async with httpx2.AsyncClient() as http:
            for kind, base, process in started:
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
        yield [(base, process.pid) for _, base, process in started]
    finally:
        for _, _, process in started:
            process.terminate()
        for _, _, process in started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- the load -----------------------------------------------------------------------------------
# A minimal HTTP/1.1 keep-alive client, one TCP connection per session, rather than the mcp Client
# or httpx: with 50 sessions in one Python process on a small machine, their own per-call work
# would make the load generator, not the server, the bottleneck. Every reply is still checked.

MODERN = "2026-07-28"
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


class Connection:
    """One keep-alive HTTP/1.1 connection: send a request, read the whole response."""

    def __init__(self, host: str, port: int, api_key: str) -> None:
        self.host, self.port = host, port
        self.fixed = (
            f"Host: {host}:{port}\r\nAuthorization: Bearer {api_key}\r\nAccept: application/json, text/event-stream\r\n"
        )
        self.stream: BufferedByteStream | None = None

    async def request(
        self, method: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head = f"{method} /mcp HTTP/1.1\r\n{self.fixed}{extra}Content-Length: {len(body)}\r\n\r\n"
        for attempt in (1, 2):
            if self.stream is None:
                self.stream = BufferedByteStream(await anyio.connect_tcp(self.host, self.port))
            try:
                await self.stream.send(head.encode() + body)
                status_line = await self.stream.receive_until(b"\r\n", 65536)
                break
            except (anyio.BrokenResourceError, anyio.EndOfStream, anyio.IncompleteRead):
                # the server closed an idle keep-alive connection (uvicorn: after 5 s): it had no
                # request of ours in flight, so reconnecting and sending again is safe
                await self.aclose()
                if attempt == 2:
                    raise
        assert self.stream is not None
        status = int(status_line.split()[1])
        got: dict[str, str] = {}
        while line := await self.stream.receive_until(b"\r\n", 65536):
            name, _, value = line.decode("latin-1").partition(":")
            got[name.strip().lower()] = value.strip()
        if "content-length" in got:
            data = await self.stream.receive_exactly(int(got["content-length"]))
        elif got.get("transfer-encoding") == "chunked":
            parts = []
            while size := int((await self.stream.receive_until(b"\r\n", 65536)).split(b";")[0], 16):
                parts.append(await self.stream.receive_exactly(size))
                await self.stream.receive_exactly(2)
            await self.stream.receive_exactly(2)
            data = b"".join(parts)
        else:
            data = b""
        return status, got, data

    async def aclose(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            await stream.aclose()


class Session:
    """One MCP session over its own connection, in one protocol era."""

    def __init__(self, connection: Connection, mode: str) -> None:
        self.connection, self.mode = connection, mode
        self.headers = {"Content-Type": "application/json"}
        self.next_id = 0

    async def open(self) -> None:
        if self.mode == "legacy":  # the 2025-11-25 handshake: a session id for every later request
            params = {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0"},
            }
            status, headers, body = await self.post(self._request("initialize", params), self.headers)
            if status != 200:
                raise SystemExit(f"initialize failed ({status}): {body[:300]!r}")
            self.headers |= {"mcp-session-id": headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
            status, _, body = await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, self.headers)
            if status != 202:
                raise SystemExit(f"initialized failed ({status}): {body[:300]!r}")
        else:  # 2026-07-28: no session, every request carries the protocol version
            self.headers |= {"mcp-protocol-version": MODERN, "mcp-method": "tools/call"}

    async def close(self) -> None:
        if self.mode == "legacy":
            await self.connection.request("DELETE", {k: v for k, v in self.headers.items() if k != "Content-Type"})
        await self.connection.aclose()

    def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        return {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}

    async def post(self, message: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        return await self.connection.request("POST", headers, json.dumps(message).encode())

    async def call(self, tool: str, args: dict[str, Any]) -> None:
        params: dict[str, Any] = {"name": tool, "arguments": args}
        headers = self.headers
        if self.mode != "legacy":
            params["_meta"] = MODERN_META
            headers = {**headers, "mcp-name": tool}
        status, got, raw = await self.post(self._request("tools/call", params), headers)
        body = raw.decode()
        if got.get("content-type", "").startswith("text/event-stream"):
            body = [line for line in body.splitlines() if line.startswith("data: ")][-1][len("data: ") :]
        message = json.loads(body)
        if status != 200 or "result" not in message or message["result"].get("isError"):
            raise SystemExit(f"{tool} failed ({status}): {body[:300]}")


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

    async def close(self) -> None:
        async with anyio.create_task_group() as tasks:
            for session in self.sessions:
                tasks.start_soon(session.close)

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
    host, port = base.removeprefix("http://").rsplit(":", 1)
    opened = [Session(Connection(host, int(port), api_key), mode) for _ in range(sessions)]
    pool = Pool(label, pid, tool, args, opened)
    stack.push_async_callback(pool.close)
    async with anyio.create_task_group() as tasks:
        for session in opened:
            tasks.start_soon(session.open)
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
    profile_hub: str | None = None,
) -> list[str]:
    """The HTTP rows for bench/send.py: echo floor and send_message per era, and their ratios.

    The servers run at once and the rows take turns in `rounds` short slices, so a change in
    background load on the machine falls on every row alike. `profile_hub`: a path prefix; the
    agentchat server is cProfiled (CPU time) over the timed rounds only, into PREFIX.agentchat.prof.
    """
    send_args = {"conversation_id": conversation_id, "text": TEXT}
    kinds = ["echo", "agentchat", "minimal"]
    if profile_hub:
        os.environ["BENCH_PROFILE_SERVER"] = profile_hub  # the children install profile_between_signals
    async with server_processes(kinds, settings) as servers, AsyncExitStack() as stack:
        (echo_base, echo_pid), (send_base, send_pid), (ceiling_base, ceiling_pid) = servers
        pools: dict[tuple[str, str], Pool] = {}
        for era in ERAS:
            pools["ceiling", era] = await open_pool(
                stack,
                f"http {era} minimal send (ceiling)",
                ceiling_base,
                ceiling_pid,
                api_key,
                "send_message",
                {"conversation_id": "cnv_minimal", "text": TEXT},
                mode=era,
                sessions=sessions,
            )
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
            pools["duties", era] = await open_pool(
                stack,
                f"http {era} echo via agentchat",
                send_base,
                send_pid,
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
        if profile_hub:
            os.kill(send_pid, signal.SIGUSR1)
        for _ in range(rounds):
            for pool in pools.values():
                await pool.run(seconds / rounds)
        if profile_hub:
            await stop_profile(send_pid, Path(f"{profile_hub}.agentchat.prof"))
    lines = [
        f"agentchat-mcp bench over HTTP: {sessions} concurrent sessions, {seconds:g} s per row "
        f"(in {rounds} interleaved slices), {len(TEXT)}-char text"
    ]
    for era in ERAS:
        floor, send = pools["echo", era].result(), pools["send", era].result()
        ratio = send.per_second / floor.per_second
        met = "met" if ratio >= TARGET_RATIO else "NOT met"
        cpu = ""
        if floor.server_cpu_s and send.server_cpu_s:  # what a saturated server would see, whatever else runs
            cpu_ratio = (floor.server_cpu_s / floor.calls) / (send.server_cpu_s / send.calls)
            cpu = f"; by server CPU per call: {cpu_ratio:.2f}"
        ceiling, duties = pools["ceiling", era].result(), pools["duties", era].result()
        lines += [
            floor.row(),
            send.row(),
            f"  http {era} ratio send/echo: {ratio:.2f}  (target >= {TARGET_RATIO:.1f}: {met}){cpu}",
            ceiling.row(),
            f"  http {era} ceiling ratio: {ceiling.per_second / floor.per_second:.2f}  "
            "(bench/send.py minimal_server: no auth, limits, telemetry or log)",
            duties.row(),
            f"  http {era} echo via agentchat / echo: {duties.per_second / floor.per_second:.2f}  "
            "(our per-call duties alone: caller, rate limit, role check, metrics, access line)",
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
    parser.add_argument("--serve", choices=["echo", "agentchat", "minimal"], help=argparse.SUPPRESS)  # a child
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
