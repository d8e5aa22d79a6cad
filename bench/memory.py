"""Memory of a hub: resident set idle, and its growth per open session, beside a bare MCPServer floor.

    python bench/memory.py                        # idle RSS (hub, floor, stdio), then 5,000 sessions each
    python bench/memory.py --sessions 500         # fewer sessions
    python bench/memory.py --hub-only             # the hub alone (no floor, no stdio): quicker to compare
    python bench/memory.py --fresh-db             # the servers create their database (migrate at start)
    python bench/memory.py --trace                # + where the hub's per-session bytes go (tracemalloc;
                                                  #   its hub figures then include the tracing itself)

Processes, each on a temp SQLite database and a free loopback port:
- hub: `agentchat-mcp serve --transport http` (default ledger payments, default settings except
  AGENTCHAT_RATE_LIMIT_IP, see below); idle = once GET /healthz answers and the process settled.
  Its database is brought to the schema's head first by `agentchat-mcp db upgrade` (a process of
  its own): the hub is measured as it restarts on its database, its usual state. `--fresh-db`: the
  hub creates the database itself, migrating at start (what a first start holds afterwards).
- floor: a bare `mcp.server.MCPServer` with one `echo` tool, `run("streamable-http")` under the
  same uvicorn, plus a /healthz route so it is awaited the same way.
- stdio: `agentchat-mcp serve` (stdio), measured once it answered `initialize` (its one session);
  its database prepared as the hub's.

RSS is VmRSS from /proc/<pid>/status (Linux). Sessions are of the 2025-11-25 era: each one
`initialize` + `notifications/initialized` over Streamable HTTP, kept open (its Mcp-Session-Id is
never DELETEd; no GET stream is held, as a client that only calls tools), opened `--concurrency`
at a time by a thin httpx client, not mcp.Client objects. Growth per session = (RSS with the
sessions open - RSS idle) / sessions, in KiB; the floor's growth is the SDK's own per-session cost.

Limits the hub applies, and how this bench sets them:
- the per-IP limit (rate_limit_ip, 1000/minute) would refuse this bench's 10,000 requests from
  127.0.0.1 within a minute: AGENTCHAT_RATE_LIMIT_IP=100000000/minute (limits stay on, out of reach).
- the SDK's session table caps at 10,000 sessions (503 beyond) and ends a session idle for 1,800 s:
  the hub keeps those defaults, and 5,000 sessions fit under both.
Targets (issue 15): hub idle <= 100 MiB; <= 50 KiB per session. No figure here is asserted.

Measured (2 shared cores, Python 3.11, mcp 2.3.0; MiB idle, KiB per session over 5,000):
    floor 69.8 MiB, 38.2 KiB: the SDK's own. Of what a session holds, the SDK keeps each session's
        last starlette Request (ServerSession's dispatch context and its run loop's last message),
        and with it the scope, the receive chain and uvicorn's RequestResponseCycle of that request.
    hub before: 124.5 MiB, 49.5 KiB. Now: 116.4 MiB, 46.1 KiB (stripe loaded only by the stripe
        provider, the Prometheus exporter by the first scrape; no scope copy and no second body
        buffer per request on /mcp). stdio: 117.2 -> 115.8 MiB.
    What the hub still imports beyond the floor (import deltas): sqlalchemy core 11.9, alembic
        11.7 (store/migrations.py, at import, even with nothing to migrate), sqlalchemy.ext.asyncio
        + ORM 7.2 (store/engine.py, though the default inline driver never uses it), our own modules
        ~8.8, opentelemetry SDK 1.7, limits 1.6, pydantic-settings 1.0, nacl 0.9, openfeature 0.5.
        With those two store imports made lazy: hub 97.9, stdio 97.4 MiB (108.9 with --fresh-db:
        a hub that migrates at start has loaded alembic).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = "2025-11-25"
BENCH_RATE_LIMIT_IP = "100000000/minute"
IDLE_TARGET_MIB = 100.0
SESSION_TARGET_KIB = 50.0
SETTLE_SECONDS = 1.5  # after readiness, before the idle reading: start-up tasks finish their first round
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
TRACE_TOP = int(os.environ.get("BENCH_TRACE_TOP", "25"))  # sites listed by --trace


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    """A server process on a loopback port."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        return rss_kib(self.proc.pid)


def wait_healthy(served: Served, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served.proc.poll() is not None:
            raise RuntimeError(f"{served.name} exited with {served.proc.returncode} before it answered /healthz")
        try:
            if httpx2.get(served.url + "/healthz", timeout=2.0).status_code == 200:
                time.sleep(SETTLE_SECONDS)
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{served.name} did not answer /healthz within {timeout:.0f} s")


def prepare_db(folder: Path) -> None:
    """`agentchat-mcp db upgrade` on the folder's database, in its own process."""
    argv = [sys.executable, "-m", "agentchat_mcp", "db", "upgrade"]
    subprocess.run(argv, env=hub_env(folder), check=True, stdout=subprocess.DEVNULL)


def hub_env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTCHAT_", "STRIPE_", "OTEL_"))}
    env.update(AGENTCHAT_DB=str(folder / "agentchat.db"), AGENTCHAT_RATE_LIMIT_IP=BENCH_RATE_LIMIT_IP)
    return env


@contextmanager
def running(name: str, argv: list[str], env: dict[str, str], port: int) -> Iterator[Served]:
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    served = Served(name, proc, port)
    try:
        wait_healthy(served)
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def hub_argv(port: int, trace: bool) -> list[str]:
    if trace:  # the same `serve`, in a process that answers SIGUSR1/SIGUSR2 with tracemalloc snapshots
        return [sys.executable, __file__, "--serve-traced", "--port", str(port)]
    return [sys.executable, "-m", "agentchat_mcp", "serve", "--transport", "http", "--port", str(port)]


def floor_argv(port: int) -> list[str]:
    return [sys.executable, __file__, "--serve-floor", "--port", str(port)]


def serve_floor(port: int) -> None:
    """The floor: a bare MCPServer with one tool, over Streamable HTTP under uvicorn."""
    import uvicorn
    from mcp.server import MCPServer
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    server = MCPServer("floor", log_level="WARNING")  # INFO would log a line per session

    @server.tool()
    def echo(text: str) -> str:
        """Return the text."""
        return text

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    # what server.run("streamable-http") does, with uvicorn's log at warning (no line per request), on
    # asyncio's loop as the hub (uvicorn would take uvloop where it is installed)
    uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=port, log_level="warning", loop="asyncio")


def serve_traced(port: int, out: Path) -> None:
    """`agentchat-mcp serve --transport http`, tracing allocations between two signals: SIGUSR1
    starts tracemalloc (so start-up runs at full speed and only what is allocated later is traced),
    SIGUSR2 writes the sites still holding memory allocated since, by traceback, to `out`."""
    import tracemalloc

    from agentchat_mcp import cli

    def start(*_: Any) -> None:
        tracemalloc.start(12)

    def write(*_: Any) -> None:
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        tracemalloc.stop()
        by_owner: dict[str, list[int]] = {}
        by_site: dict[tuple[str, str], list[int]] = {}
        for trace in snapshot.traces:
            frames = [where(f.filename, f.lineno) for f in trace.traceback]  # most recent last
            ours = [f for f in frames if f.startswith("agentchat_mcp/")]
            for key, table in ((owner(frames[-1]), by_owner), ((frames[-1], ours[-1] if ours else ""), by_site)):
                row = table.setdefault(key, [0, 0])  # type: ignore[attr-defined]
                row[0] += trace.size
                row[1] += 1
        out.write_text(
            json.dumps(
                {
                    "owners": sorted(([k, *v] for k, v in by_owner.items()), key=lambda r: -r[1]),
                    "sites": sorted(([*k, *v] for k, v in by_site.items()), key=lambda r: -r[2])[:TRACE_TOP],
                }
            )
        )

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, write)
    cli.main(["serve", "--transport", "http", "--port", str(port)])


def where(filename: str, lineno: int) -> str:
    """A frame as `package/module.py:line`, relative to site-packages or this checkout."""
    for prefix in (str(ROOT) + "/", "site-packages/"):
        if prefix in filename:
            filename = filename.split(prefix, 1)[1]
    return f"{filename.removeprefix('.venv/lib/').split('site-packages/')[-1]}:{lineno}"


def owner(frame: str) -> str:
    """Who made an allocation: its innermost frame's top-level package ('python' for the stdlib)."""
    if frame.startswith("/") or frame.startswith("<"):
        return "python (stdlib, asyncio)"
    return frame.split("/", 1)[0].split(":", 1)[0].removesuffix(".py")


def stdio_idle(folder: Path) -> int:
    """RSS of `agentchat-mcp serve` (stdio) once it answered initialize: idle, with its one session."""
    argv = [sys.executable, "-m", "agentchat_mcp", "serve"]
    proc = subprocess.Popen(argv, env=hub_env(folder), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write((json.dumps(initialize_message()) + "\n").encode())
        proc.stdin.flush()
        if not proc.stdout.readline():
            raise RuntimeError(f"stdio server exited with {proc.wait()} before answering initialize")
        proc.stdin.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
        proc.stdin.flush()
        time.sleep(SETTLE_SECONDS)
        return rss_kib(proc.pid)
    finally:
        proc.stdin.close()  # end of input ends a stdio server
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def initialize_message() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "bench-memory", "version": "1"},
        },
    }


async def open_session(client: httpx2.AsyncClient, url: str) -> str:
    """initialize + notifications/initialized; returns the Mcp-Session-Id, left open."""
    response = await client.post(url, json=initialize_message(), headers=HEADERS)
    if response.status_code != 200 or "result" not in response.text:
        raise RuntimeError(f"initialize: HTTP {response.status_code} {response.text[:200]}")
    session_id = response.headers["mcp-session-id"]
    headers = {**HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": PROTOCOL}
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    response = await client.post(url, json=note, headers=headers)
    if response.status_code != 202:
        raise RuntimeError(f"notifications/initialized: HTTP {response.status_code} {response.text[:200]}")
    return session_id


async def open_sessions(url: str, count: int, concurrency: int) -> list[str]:
    ids: list[str] = []
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(limits=limits, timeout=60.0) as client:
        remaining = iter(range(count))

        async def worker() -> None:
            for _ in remaining:
                ids.append(await open_session(client, url))

        async with anyio.create_task_group() as tasks:
            for _ in range(min(concurrency, count)):
                tasks.start_soon(worker)
    return ids


@dataclass(frozen=True)
class Growth:
    idle_kib: int
    loaded_kib: int
    sessions: int

    @property
    def per_session_kib(self) -> float:
        return (self.loaded_kib - self.idle_kib) / self.sessions


def session_growth(served: Served, sessions: int, concurrency: int) -> Growth:
    idle = served.rss()
    anyio.run(open_sessions, served.url + "/mcp", sessions, concurrency)
    time.sleep(SETTLE_SECONDS)
    return Growth(idle, served.rss(), sessions)


def mib(kib: float) -> str:
    return f"{kib / 1024:6.1f} MiB"


def print_trace(trace: dict[str, Any], sessions: int) -> None:
    total = sum(row[1] for row in trace["owners"])
    print(f"\nhub: memory held by what the {sessions} sessions allocated (tracemalloc; KiB per session)")
    print(f"  {total / 1024 / sessions:7.2f} KiB in all, by the innermost frame's package:")
    for name, size, count in trace["owners"][:12]:
        print(f"  {size / 1024 / sessions:7.2f} KiB  {count / sessions:6.1f} blocks  {name}")
    print("  top sites (innermost frame; <- our innermost frame on the stack, if any):")
    for site, ours, size, count in trace["sites"]:
        print(
            f"  {size / 1024 / sessions:7.2f} KiB  {count / sessions:6.1f} blocks  {site}"
            + (f"  <- {ours}" if ours else "")
        )


def measure_hub(
    folder: Path, sessions: int, concurrency: int, *, trace: bool, fresh_db: bool
) -> tuple[int, Growth | None, Any]:
    """The hub's idle RSS and growth; with `trace`, tracemalloc's figures for the sessions too."""
    (folder / "hub").mkdir()
    if not fresh_db:
        prepare_db(folder / "hub")
    trace_out = folder / "trace.json"
    port = free_port()
    env = hub_env(folder / "hub")
    if trace:
        env["BENCH_TRACE_OUT"] = str(trace_out)
    with running("hub", hub_argv(port, trace), env, port) as hub:
        idle = hub.rss()
        if trace:
            hub.proc.send_signal(signal.SIGUSR1)
            time.sleep(0.5)
        growth = session_growth(hub, sessions, concurrency) if sessions else None
        if trace:
            hub.proc.send_signal(signal.SIGUSR2)
            for _ in range(1200):
                if trace_out.exists():
                    break
                time.sleep(0.1)
            else:
                print("hub: no tracemalloc figures within 120 s", file=sys.stderr)
    return idle, growth, json.loads(trace_out.read_text()) if trace_out.exists() else None


def run(sessions: int, concurrency: int, *, trace: bool, hub_only: bool, fresh_db: bool) -> int:
    results: dict[str, tuple[int, Growth | None]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        folder = Path(tmp)
        if not hub_only:
            floor_port = free_port()
            with running("floor", floor_argv(floor_port), hub_env(folder), floor_port) as floor:
                results["floor"] = (floor.rss(), session_growth(floor, sessions, concurrency) if sessions else None)
        *hub, traced = measure_hub(folder, sessions, concurrency, trace=trace, fresh_db=fresh_db)
        results["hub"] = (hub[0], hub[1])
        if not hub_only:
            (folder / "stdio").mkdir()
            if not fresh_db:
                prepare_db(folder / "stdio")
            stdio = stdio_idle(folder / "stdio")

    floor = results.get("floor")
    database = "created by the server at start" if fresh_db else "brought to head by `db upgrade` first"
    print(f"idle RSS (VmRSS once ready; database {database}; target hub <= {IDLE_TARGET_MIB:.0f} MiB)")

    def ratio(value: float, base: float | None) -> str:
        return f"{value / base:.2f}x" if base else ""

    floor_idle = floor[0] if floor else None
    if floor_idle:
        print(f"  floor  bare MCPServer, streamable HTTP  {mib(floor_idle)}   1.00x")
    print(f"  hub    serve --transport http          {mib(results['hub'][0])}   {ratio(results['hub'][0], floor_idle)}")
    if not hub_only:
        print(f"  stdio  serve (stdio), initialized      {mib(stdio)}   {ratio(stdio, floor_idle)}")
    if sessions:
        print(
            f"\nopen sessions ({sessions}, {PROTOCOL} era, {min(concurrency, sessions)} at a time; target hub <= {SESSION_TARGET_KIB:.0f} KiB)"
        )
        print(
            f"  (hub: AGENTCHAT_RATE_LIMIT_IP={BENCH_RATE_LIMIT_IP}, as all come from 127.0.0.1; the SDK's "
            "session cap 10,000 and idle timeout 1,800 s left at their defaults)"
        )
        floor_growth = floor[1] if floor else None
        for name, (_, growth) in results.items():
            assert growth is not None
            base = floor_growth.per_session_kib if floor_growth else None
            print(
                f"  {name:5}  {mib(growth.idle_kib)} -> {mib(growth.loaded_kib)}   "
                f"{growth.per_session_kib:6.1f} KiB per session   {ratio(growth.per_session_kib, base) + ' floor' if base else ''}"
            )
    if traced is not None and sessions:
        print_trace(traced, sessions)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=5000, help="sessions to open (default 5000; 0: idle only)")
    parser.add_argument("--concurrency", type=int, default=50, help="sessions opened at a time (default 50)")
    parser.add_argument("--trace", action="store_true", help="tracemalloc the hub: where per-session bytes go")
    parser.add_argument("--hub-only", action="store_true", help="measure the hub alone (no floor, no stdio)")
    parser.add_argument("--fresh-db", action="store_true", help="no `db upgrade` first: the servers migrate at start")
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)  # a child
    parser.add_argument("--serve-traced", action="store_true", help=argparse.SUPPRESS)  # a child
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_floor:
        serve_floor(args.port)
        return 0
    if args.serve_traced:
        serve_traced(args.port, Path(os.environ["BENCH_TRACE_OUT"]))
        return 0
    return run(args.sessions, args.concurrency, trace=args.trace, hub_only=args.hub_only, fresh_db=args.fresh_db)


if __name__ == "__main__":
    sys.exit(main())
