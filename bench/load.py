"""The roadmap's load scenarios against a real hub over HTTP: normal, peak, spike and peek frenzy.

    python bench/load.py                                   # all four, one hub on a temp SQLite file
    python bench/load.py --scenarios peak --duration 30    # one scenario, shorter
    python bench/load.py --replicas 2                      # two stateless hubs behind bench/proxy.py (shared SQLite)
    python bench/load.py --replicas 2 --era legacy         # 2025-11-25 sessions: stateful hubs, a sticky proxy
    python bench/load.py --replicas 2 --db postgresql://postgres@127.0.0.1/load_x --create-db   # PostgreSQL (the pg store)
    python bench/load.py --users 10 --duration 3 --think-scale 0.1        # a smoke run (tests/test_bench_load.py)

Scenarios (`--users` overrides every size; `--duration`, `--ramp` the times):

- normal: 100 virtual users (half agents, half users) arriving over 10 s, 60 s.
- peak: 1,000 (half and half) arriving over 20 s, 60 s.
- spike: 5,000 (a fifth agents, the rest users arriving for the buzz) arriving over 10 s, 40 s.
- frenzy: 1,000 users arriving over 2 s at 5 hot conversations at once, each with credit for exactly 3
  of the 5 peeks, a fifth of them also sending every request twice with the same idempotency key (a
  client retry); the hot agents keep talking meanwhile. Afterwards the exactly-once money check.

A virtual user is one principal with its own API key and its own keep-alive connection. Agents come
in pairs sharing a conversation: wait_for_messages (a long poll, reported apart, never in the latency
figures: it lasts the partner's think time), read_messages, mark_read, think 2-6 s (the LLM), then
send_message; agents that decide peeks check_inbox and respond_to_peek. Users: find_agents (by tag, 1-3
pages), list_peekable_conversations, quote_peek, request_peek, then read_messages through the window
(think 3-8 s), get_peek while consent is pending (cancel_peek after ~10 s), get_balance now and then.
`--think-scale` multiplies every think time.

Why a thin anyio client (bench/loadclient.py) and not locust: locust runs each user as a gevent
greenlet with requests/urllib3 per call and a stats pipeline; on the 2 cores the hub also needs, 5,000
of them would measure the load generator. Raw JSON-RPC over one HTTP/1.1 keep-alive connection per user
costs a few tens of microseconds per call here (its CPU is printed, beside the hub's).

Seeding: every principal, pair conversation and credit grant goes through the domain services in this
process (loadworld.py), not through thousands of tool calls. Rate limits: every virtual user connects
from 127.0.0.1, so the per-IP limit is raised for the bench (printed); the per-principal limits keep
their defaults (printed), which the think times stay under. Printed per scenario: calls/s, p50/p95/p99
per tool and overall, errors by kind, expected refusals, and CPU per call of the hub process(es), the
proxy, PostgreSQL (when the store is PostgreSQL) and this client process, from /proc.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/load.py` from a checkout, installed or not
sys.path.insert(0, str(ROOT / "bench"))

from loadclient import NOT_MEASURED, CallFailed, McpUser, Refused, Stats  # noqa: E402
from loadworld import FRENZY_AFFORDS, TAGS, Agent, User, World, check_money, seed  # noqa: E402

from agentchat_mcp.settings import Settings  # noqa: E402

BENCH_IP_LIMIT = "100000000/minute"  # one IP for every virtual user: out of reach
TEXT = "Here is my next point about the design review: the retry loop should back off exponentially. " * 2
HOT = 5
# `agentchat-mcp serve` under cProfile, written on SIGTERM: uvicorn re-raises the signal once it has
# stopped, so the handler set here (restored by uvicorn) is what finally runs.
PROFILED_HUB = """
import cProfile, signal, sys
from agentchat_mcp.cli import main
path, sys.argv = sys.argv[1], ["agentchat-mcp", *sys.argv[2:]]
profile = cProfile.Profile()
def stop(*_):
    profile.disable()
    profile.dump_stats(path)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
profile.enable()
main()
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    users: int
    agent_share: float  # the rest are users (peekers)
    ramp_s: float
    duration_s: float

    def sized(self, users: int | None, duration: float | None, ramp: float | None) -> Scenario:
        return Scenario(
            self.name,
            users or self.users,
            self.agent_share,
            self.ramp_s if ramp is None else ramp,
            duration or self.duration_s,
        )

    @property
    def agents(self) -> int:
        return 0 if self.name == "frenzy" else 2 * round(self.users * self.agent_share / 2)


SCENARIOS = {
    "normal": Scenario("normal", 100, 0.5, 10, 60),
    "peak": Scenario("peak", 1000, 0.5, 20, 60),
    "spike": Scenario("spike", 5000, 0.2, 10, 40),
    "frenzy": Scenario("frenzy", 1000, 0.0, 2, 30),
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu(database: str | None) -> tuple[float, float]:
    """(CPU seconds of the backends serving `database`, of every postgres process) on this machine."""
    mine = every = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        used = cpu_seconds(int(entry.name))
        every += used
        if database and f" {database} " in cmdline:
            mine += used
    return mine, every


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the hub(s), and the proxy in front of several --------------------------------------------------


@dataclass
class Deployment:
    host: str
    port: int
    hub_pids: list[int]
    proxy_pid: int | None
    description: str


def hub_env(args: argparse.Namespace, secret: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "AGENTCHAT_DB": args.db,
        "AGENTCHAT_SECRET_FILE": str(secret),
        "AGENTCHAT_RATE_LIMIT_IP": BENCH_IP_LIMIT,
        "AGENTCHAT_LOG_LEVEL": "WARNING",
    }
    if args.replicas > 1:
        env["AGENTCHAT_RATE_LIMIT_STORAGE"] = args.rate_limit_storage
        env["AGENTCHAT_TRUSTED_PROXIES"] = "127.0.0.1"
    return env


async def wait_healthy(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    async with httpx2.AsyncClient() as http:
        with anyio.fail_after(90):
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"{what} exited with {process.returncode}")
                try:
                    if (await http.get(url)).status_code == 200:
                        return
                except httpx2.TransportError:
                    pass
                await anyio.sleep(0.1)


@asynccontextmanager
async def deployment(args: argparse.Namespace, secret: Path) -> AsyncIterator[Deployment]:
    """One hub (`agentchat-mcp serve --transport http`), or N stateless ones behind bench/proxy.py."""
    started: list[subprocess.Popen[bytes]] = []
    log = open(args.log, "ab") if args.log else subprocess.DEVNULL  # noqa: SIM115
    try:
        proxy_port = free_port()
        ports = [free_port() for _ in range(args.replicas)]
        for n, port in enumerate(ports):
            command = [sys.executable, "-m", "agentchat_mcp", "serve", "--transport", "http", "--port", str(port)]
            if args.profile_hub:
                command[1:3] = ["-c", PROFILED_HUB, f"{args.profile_hub}.{n}"]
            if args.replicas > 1:
                command += ["--allowed-host", f"127.0.0.1:{proxy_port}"]
                # 2026-07-28 needs no session: stateless replicas. Handshake-era sessions live in the
                # replica that opened them: stateful replicas, and the proxy sticks to Mcp-Session-Id.
                command += ["--stateless"] if args.era == "modern" else []
            started.append(subprocess.Popen(command, env=hub_env(args, secret), stdout=log, stderr=log, cwd=ROOT))
        for port, process in zip(ports, started, strict=True):
            await wait_healthy(f"http://127.0.0.1:{port}/healthz", process, f"the hub on port {port}")
        hubs = [p.pid for p in started]
        if args.replicas == 1:
            yield Deployment("127.0.0.1", ports[0], hubs, None, "1 hub")
            return
        command = [sys.executable, str(ROOT / "bench" / "proxy.py"), "--listen", f"127.0.0.1:{proxy_port}"]
        for port in ports:
            command += ["--backend", f"127.0.0.1:{port}"]
        command += ["--balance", args.balance]
        proxy = subprocess.Popen(command, stdout=log, stderr=log)
        started.append(proxy)
        await wait_healthy(f"http://127.0.0.1:{proxy_port}/healthz", proxy, "the proxy")
        balance = "round-robin" if args.balance == "round-robin" else "by API key"
        kind = f"stateless hubs behind bench/proxy.py ({balance})"
        if args.era == "legacy":
            kind = f"stateful hubs behind bench/proxy.py ({balance}, sticky on Mcp-Session-Id)"
        yield Deployment("127.0.0.1", proxy_port, hubs, proxy.pid, f"{args.replicas} {kind}")
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=120 if args.profile_hub else 30)  # cProfile writes on the way out
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if log is not subprocess.DEVNULL:
            log.close()


# --- virtual users ------------------------------------------------------------------------------


class Run:
    """One scenario in flight: the clock, the think times and the shared stats."""

    def __init__(self, scenario: Scenario, where: Deployment, args: argparse.Namespace, rng: random.Random) -> None:
        self.scenario, self.where, self.args, self.rng = scenario, where, args, rng
        self.stats = Stats()
        self.start = time.monotonic()
        self.deadline = self.start + scenario.duration_s
        self.elapsed = 0.0
        self.cpu: dict[str, float] = {}
        self.population = (0, 0)

    @property
    def over(self) -> bool:
        return time.monotonic() >= self.deadline

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    async def think(self, low: float, high: float) -> None:
        await anyio.sleep(min(self.remaining(), self.rng.uniform(low, high) * self.args.think_scale))

    def client(self, key: str) -> McpUser:
        return McpUser(self.where.host, self.where.port, key, self.stats, era=self.args.era, timeout=self.args.timeout)

    async def arrive(self, i: int, n: int, body: Callable[[McpUser], Awaitable[None]], key: str) -> None:
        """Arrive at the i-th of n evenly spread moments of the ramp, then run `body` until the end."""
        await anyio.sleep(self.scenario.ramp_s * i / max(1, n))
        user = self.client(key)
        try:
            while not self.over:
                try:
                    await body(user)
                except (CallFailed, Refused):
                    await self.think(1, 2)  # a failed step: counted; start the loop over after a pause
        finally:
            await user.close()


async def agent_body(run: Run, agent: Agent, user: McpUser) -> None:
    """One turn of an agent: wait for the partner, read, mark read, think, answer; decide peeks."""
    conv = agent.conversation_id
    if agent.initiator and agent.last_seq == 0:
        await run.think(0, 2)
        agent.last_seq = (await user.call("send_message", {"conversation_id": conv, "text": TEXT}))["seq"]
    timeout = min(20.0, run.remaining())
    waited = await user.call("wait_for_messages", {"conversation_id": conv, "timeout_s": round(timeout, 1)})
    if run.over:
        return
    if not waited["timed_out"]:
        page = await user.call("read_messages", {"conversation_id": conv, "after_seq": agent.last_seq})
        if page["messages"]:
            agent.last_seq = page["messages"][-1]["seq"]
        await user.call("mark_read", {"conversation_id": conv, "up_to_seq": agent.last_seq})
    if agent.can_refuse and run.rng.random() < 0.5:
        inbox = await user.call("check_inbox", {})
        for pending in inbox["pending_peeks"][:3]:
            decision = "accept" if run.rng.random() < 0.9 else "refuse"
            await user.call(
                "respond_to_peek",
                {"peek_id": pending["peek_id"], "decision": decision},
                refusals=("cannot change",),  # the user cancelled meanwhile (a race users and agents both win)
            )
    await run.think(2, 6)  # the LLM writing its answer
    if not run.over:
        agent.last_seq = (await user.call("send_message", {"conversation_id": conv, "text": TEXT}))["seq"]


async def user_body(run: Run, person: User, user: McpUser) -> None:
    """One round of a user: find an agent, pick a conversation, quote, peek, read through the window."""
    args: dict[str, Any] = {"tag": run.rng.choice(TAGS), "limit": 20}
    page = await user.call("find_agents", args)
    for _ in range(run.rng.randrange(0, 3)):
        if not page["next_cursor"] or run.over:
            break
        await run.think(1, 3)
        page = await user.call("find_agents", {**args, "cursor": page["next_cursor"]})
    if not page["agents"]:
        await run.think(2, 4)
        return
    await run.think(1, 3)
    agent = run.rng.choice(page["agents"])
    listed = await user.call("list_peekable_conversations", {"agent_id": agent["id"]})
    fresh = [c["conversation_id"] for c in listed["conversations"] if c["conversation_id"] not in person.peeked]
    if not fresh or run.over:
        await run.think(2, 4)
        return
    conv = run.rng.choice(fresh)
    await run.think(1, 2)
    quote = await user.call("quote_peek", {"conversation_id": conv})
    await run.think(1, 3)
    if run.over:
        return
    person.peeked.add(conv)
    peek = await user.call(
        "request_peek",
        {"conversation_id": conv, "max_price": quote["total"], "idempotency_key": uuid.uuid4().hex},
    )
    for _ in range(4):
        if peek["status"] != "awaiting_consent" or run.over:
            break
        await run.think(2, 3)
        peek = await user.call("get_peek", {"peek_id": peek["id"]})
    if peek["status"] == "awaiting_consent":
        # the agent may accept meanwhile (the same race, from the other side)
        await user.call("cancel_peek", {"peek_id": peek["id"]}, refusals=("only a request still waiting",))
        return
    if peek["status"] in ("active", "scheduled"):
        run.stats.events["peeks paid"] += 1
        after = 0
        for _ in range(run.rng.randrange(2, 5)):
            if run.over:
                break
            got = await user.call("read_messages", {"conversation_id": conv, "after_seq": after})
            after = got["next_after_seq"] or (got["messages"][-1]["seq"] if got["messages"] else after)
            await run.think(3, 8)
    if run.rng.random() < 0.3 and not run.over:
        await user.call("get_balance", {})


async def frenzy_body(run: Run, world: World, person: User, user: McpUser) -> None:
    """Quote one hot conversation, then ask for all of them at once (some twice, as a retrying client),
    then read the ones paid for until the end."""
    hot = world.hot_conversations
    await user.call("quote_peek", {"conversation_id": hot[0]})
    twice = run.rng.random() < 0.2
    paid: dict[str, str] = {}

    answered = [0]

    async def ask(client: McpUser, conv: str, key: str) -> None:
        try:
            peek = await client.call(
                "request_peek",
                {"conversation_id": conv, "max_price": f"{world.hot_price_cents / 100:.2f}", "idempotency_key": key},
                refusals=("Not enough funds",),
            )
        except Refused:
            answered[0] += 1
            return
        except CallFailed:
            return
        answered[0] += 1
        if peek.get("replayed"):
            run.stats.events["frenzy replays answered with the first peek"] += 1
        if peek["status"] in ("active", "scheduled"):
            paid[conv] = peek["id"]

    # concurrent requests of one user need their own connections (HTTP/1.1: one request at a time);
    # a retrying client sends the same request again, with the same key, while the first is in flight
    attempts = [(conv, f"frenzy-{person.id}-{conv}") for conv in hot] * (2 if twice else 1)
    clients = [user] + [run.client(person.key) for _ in attempts[1:]]
    try:
        async with anyio.create_task_group() as tasks:
            for (conv, key), client in zip(attempts, clients, strict=True):
                tasks.start_soon(ask, client, conv, key)
    finally:
        for client in clients[1:]:
            await client.close()
    if twice:
        run.stats.events["frenzy users sending every request twice"] += 1
    if answered[0] == len(attempts):
        world.answered.add(person.id)
    run.stats.events["frenzy peeks paid"] += len(paid)
    while not run.over and paid:
        await run.think(1, 3)
        if run.over:
            break
        await user.call("read_messages", {"conversation_id": run.rng.choice(list(paid)), "after_seq": 0})
    while not run.over:
        await run.think(5, 5)


async def run_scenario(scenario: Scenario, world: World, where: Deployment, args: argparse.Namespace) -> Run:
    run = Run(scenario, where, args, random.Random(args.seed))
    if scenario.name == "frenzy":
        agents = world.agents[: 2 * HOT]
        people = world.frenzy_users[: scenario.users]

        async def person_loop(p: User, user: McpUser) -> None:
            await frenzy_body(run, world, p, user)

    else:
        agents = world.agents[: scenario.agents]
        people = world.users[: scenario.users - scenario.agents]

        async def person_loop(p: User, user: McpUser) -> None:
            await user_body(run, p, user)

    everyone: list[tuple[str, Callable[[McpUser], Awaitable[None]]]] = []
    for a in agents:
        everyone.append((a.key, lambda u, a=a: agent_body(run, a, u)))
    for p in people:
        everyone.append((p.key, lambda u, p=p: person_loop(p, u)))
    run.rng.shuffle(everyone)
    cpu = snapshot(where, args)
    run.start = time.monotonic()
    run.deadline = run.start + scenario.duration_s
    with anyio.move_on_after(scenario.duration_s + scenario.ramp_s + args.timeout + 10):
        async with anyio.create_task_group() as tasks:
            for i, (key, body) in enumerate(everyone):
                tasks.start_soon(run.arrive, i, len(everyone), body, key)
    run.elapsed = time.monotonic() - run.start
    after = snapshot(where, args)
    run.cpu = {k: after[k] - v for k, v in cpu.items()}
    run.population = (len(agents), len(people))
    return run


def snapshot(where: Deployment, args: argparse.Namespace) -> dict[str, float]:
    out = {"hub": sum(cpu_seconds(p) for p in where.hub_pids), "client": time.process_time()}
    if where.proxy_pid:
        out["proxy"] = cpu_seconds(where.proxy_pid)
    if args.db.startswith("postgresql"):
        mine, every = postgres_cpu(args.db.rsplit("/", 1)[-1].split("?")[0])
        out["postgres (this database's backends)"] = mine
        out["postgres (all processes)"] = every
    return out


# --- the report ---------------------------------------------------------------------------------


def report(run: Run, args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    s, sc = run.stats, run.scenario
    elapsed = run.elapsed
    agents, people = run.population
    measured = [ms for tool, v in s.latencies_ms.items() if tool not in NOT_MEASURED for ms in v]
    errors = sum(s.errors.values())
    lines = [
        f"scenario {sc.name}: {agents + people} virtual users ({agents} agents, {people} users), arriving over "
        f"{sc.ramp_s:g} s, {sc.duration_s:g} s in all; {run.where.description}, era {args.era}",
        f"  {s.calls} calls in {elapsed:.1f} s: {s.calls / elapsed:.1f} calls/s; errors {errors}",
        f"  {'latency ms':<30} {'calls':>7} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}",
        _row("overall (without long polls)", measured),
    ]
    for tool in sorted(s.latencies_ms):
        label = f"{tool} (long poll)" if tool in NOT_MEASURED else tool
        lines.append(_row(label, s.latencies_ms[tool]))
    for kind, n in s.errors.most_common():
        lines.append(f"  error  {n:>6}  {kind}")
    for kind, n in s.refused.most_common():
        lines.append(f"  expected refusal {n:>6}  {kind}")
    for kind, n in sorted(s.events.items()):
        lines.append(f"  {kind}: {n}")
    cpu = run.cpu
    busy = ", ".join(f"{k} {v:.1f} s = {v / max(1, s.calls) * 1000:.2f} ms/call" for k, v in cpu.items())
    lines.append(f"  CPU over the scenario ({os.cpu_count()} cores, {elapsed:.0f} s wall): {busy}")
    summary = {
        "scenario": sc.name,
        "users": agents + people,
        "calls/s": s.calls / elapsed,
        "p50": pct(measured, 50),
        "p95": pct(measured, 95),
        "p99": pct(measured, 99),
        "errors": errors,
        "hub ms/call": cpu["hub"] / max(1, s.calls) * 1000,
    }
    return lines, summary


def _row(label: str, values: list[float]) -> str:
    if not values:
        return f"  {label:<30} {0:>7}"
    return (
        f"  {label:<30} {len(values):>7} {pct(values, 50):>8.1f} {pct(values, 95):>8.1f} {pct(values, 99):>8.1f} "
        f"{max(values):>8.1f}"
    )


@asynccontextmanager
async def fresh_database(url: str, create: bool) -> AsyncIterator[None]:
    """With `create`, a PostgreSQL database made for the run (psql, from the URL) and dropped after it."""
    if not create:
        yield
        return
    if not url.startswith("postgresql") or shutil.which("psql") is None:
        raise SystemExit("--create-db needs a postgresql:// --db and psql on PATH")
    server, _, name = url.split("?")[0].rpartition("/")
    if not re.fullmatch(r"load_\w+", name):
        raise SystemExit(f"--create-db makes and drops databases named load_*, not {name!r}")
    admin = f"{server.replace('postgresql+asyncpg:', 'postgresql:')}/postgres"
    subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True)
    try:
        yield
    finally:
        subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)


def git_describe() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=False)
    except OSError:
        return "unknown"
    return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


async def main_async(args: argparse.Namespace) -> int:
    chosen = [SCENARIOS[n].sized(args.users, args.duration, args.ramp) for n in args.scenarios.split(",")]
    with tempfile.TemporaryDirectory(prefix="agentchat-load-") as folder:
        if args.db is None:
            args.db = str(Path(folder) / "agentchat.db")
        secret = Path(folder) / "agentchat.secret"
        settings = Settings(db=args.db, secret_file=secret, analytics_interval_seconds=0)  # type: ignore[arg-type]
        if args.db.startswith("postgresql") and not str(settings.db).startswith("postgresql://"):
            raise SystemExit(
                f"--db {args.db}: this checkout's store takes SQLite paths only (it would make a file named "
                f"{settings.db}); PostgreSQL needs the pg branch's store"
            )
        async with fresh_database(args.db, args.create_db):
            return await run_all(args, chosen, settings, secret)


async def run_all(args: argparse.Namespace, chosen: list[Scenario], settings: Settings, secret: Path) -> int:
    """Seed, start the deployment, run the scenarios, check the money, print the summary."""
    mixed = [s for s in chosen if s.name != "frenzy"]
    frenzy = [s for s in chosen if s.name == "frenzy"]
    world = await seed(
        settings,
        agents=max([s.agents for s in mixed] + [2 * HOT if frenzy else 0]),
        users=max([s.users - s.agents for s in mixed] + [0]),
        frenzy_users=max([s.users for s in frenzy] + [0]),
        hot=HOT if frenzy else 0,
        seed_=args.seed,
    )
    print(" ".join(shlex.quote(a) for a in ["python", "bench/load.py", *sys.argv[1:]]))
    print(
        f"agentchat-mcp load bench at {git_describe()}: Python {platform.python_version()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} at the start; store {args.db if args.db.startswith('postgresql') else 'SQLite (temp file)'}"
    )
    print(
        f"  seeded {len(world.agents)} agents ({len(world.agents) // 2} pair conversations, 3 messages each), "
        f"{len(world.users)} users with ${100_000 / 100:,.0f} credit, {len(world.frenzy_users)} frenzy users with credit for "
        f"{FRENZY_AFFORDS} peeks at ${world.hot_price_cents / 100:.2f}, in {world.seconds:.1f} s"
    )
    print(
        f"  rate limits: per IP {BENCH_IP_LIMIT} (bench: every virtual user is 127.0.0.1); per principal 100/minute "
        "and request_peek 10/minute (the defaults)"
        + (f"; shared in {args.rate_limit_storage}" if args.replicas > 1 else "")
    )
    print(f"  think times x{args.think_scale:g}; call timeout {args.timeout:g} s; seed {args.seed}")
    summaries = []
    failed = False
    async with deployment(args, secret) as where:
        env = hub_env(args, secret)
        shown = " ".join(f"{k}={env[k]}" for k in sorted(env) if k.startswith("AGENTCHAT_") and k != "AGENTCHAT_DB")
        print(f"  {where.description}: agentchat-mcp serve --transport http with {shown}", flush=True)
        for scenario in chosen:
            run = await run_scenario(scenario, world, where, args)
            lines, summary = report(run, args)
            print("\n".join(lines), flush=True)
            summaries.append(summary)
            failed |= summary["errors"] > 0
    money = await check_money(settings, world)
    print("money check after the run (the store, every scenario):")
    print("\n".join(money.lines))
    for failure in money.failures:
        print(f"  FAILED {failure}")
    print(f"money check: {'ok' if money.ok else 'FAILED'}")
    print(f"summary ({where.description}; load average {os.getloadavg()[0]:.2f} at the end):")
    print(
        f"  {'scenario':<8} {'users':>6} {'calls/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>6} {'hub CPU ms/call':>16}"
    )
    for r in summaries:
        print(
            f"  {r['scenario']:<8} {r['users']:>6} {r['calls/s']:>8.1f} {r['p50']:>7.1f} {r['p95']:>7.1f} {r['p99']:>7.1f} "
            f"{r['errors']:>6} {r['hub ms/call']:>16.2f}"
        )
    return 1 if failed or not money.ok else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenarios", default="normal,peak,spike,frenzy", help="comma-separated (default: all four)")
    parser.add_argument("--users", type=int, help="virtual users of every scenario (default: each scenario's own)")
    parser.add_argument("--duration", type=float, help="seconds each scenario runs (default: each scenario's own)")
    parser.add_argument("--ramp", type=float, help="seconds over which users arrive (default: each scenario's own)")
    parser.add_argument("--think-scale", type=float, default=1.0, help="multiplies every think time (default 1)")
    parser.add_argument(
        "--replicas", type=int, default=1, help="hub processes; more than 1: stateless, behind bench/proxy.py"
    )
    parser.add_argument(
        "--db", help="AGENTCHAT_DB for the hubs: an SQLite path or postgresql://... (default: a temp file)"
    )
    parser.add_argument(
        "--rate-limit-storage",
        default="redis://127.0.0.1:6379/3",
        help="shared limits for replicas (default redis db 3)",
    )
    parser.add_argument(
        "--balance",
        choices=["round-robin", "key"],
        default="round-robin",
        help="replicas: the proxy's choice per request, round-robin (default) or by API key",
    )
    parser.add_argument(
        "--era", choices=["modern", "legacy"], default="modern", help="protocol era (default 2026-07-28)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds before a call counts as timed out (default 300: the mcp client's own read timeout)",
    )
    parser.add_argument(
        "--create-db", action="store_true", help="PostgreSQL: create the --db database (load_*) first, drop it after"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log", help="append the hubs' and proxy's stderr to this file")
    parser.add_argument("--profile-hub", metavar="PATH", help="run each hub under cProfile, writing PATH.0, PATH.1 ...")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    if args.replicas < 1:
        parser.error("--replicas must be >= 1")
    return anyio.run(main_async, args)


if __name__ == "__main__":
    sys.exit(main())
