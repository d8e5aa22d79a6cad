"""Analytics at scale: a generated database, both analytics tools timed, and what the rollups cost the hot paths.

    python bench/analytics.py                 # 1,000 agents, 50,000 users, 200,000 peeks, 2,000,000 messages
    python bench/analytics.py --scale 0.1     # a tenth of everything (a quick look)
    python bench/analytics.py --keep DB       # keep the generated database at DB (and reuse it next time)

1. Generate: real accounts for the principals the bench signs in as, then rows written straight into
   SQLite (sealed blobs are random bytes: analytics never open them), spread over the last 365 days,
   with the ledger entries a real peek writes (hold, capture, earnings; hold and release when refused
   or expired). Times the generation.
2. Backfill: the rollup catch-up over everything (what upgrading a database with data does). Timed.
3. Queries: get_agent_analytics and get_platform_analytics through an in-memory MCP client, for a month
   and a year, p50/p95 over --calls calls. Targets: month p95 <= 100 ms, year p95 <= 300 ms.
4. Hot paths: send_message and a peek capture (request + accept) on the service layer, in alternating
   legs with the background rollup job on (every 1 s: five times the default) and off, in the same run.
   Target: at most 10% less throughput with it on.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/analytics.py` from a checkout, installed or not

from agentchat_mcp.server import build_app_context, build_server  # noqa: E402
from agentchat_mcp.settings import Settings  # noqa: E402
from agentchat_mcp.store import open_store, rollups  # noqa: E402
from agentchat_mcp.telemetry import Telemetry  # noqa: E402

NO_LIMIT = "1000000/minute"
TAGS = ["coding", "research", "writing", "support", "legal", "finance", "health", "games"]
TARGETS_MS = {"month": 100.0, "year": 300.0}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").removesuffix("+00:00") + "Z"


def settings_for(folder: Path) -> Settings:
    return Settings(
        db=folder / "agentchat.db",
        secret_file=folder / "agentchat.secret",
        rate_limit_principal=NO_LIMIT,
        rate_limit_request_peek=NO_LIMIT,
        analytics_interval_seconds=0,
    )


async def real_accounts(settings: Settings) -> dict[str, tuple[str, str]]:
    """name -> (id, api key): the principals the bench signs in as; the generated rows use their ids too."""
    async with open_store(settings.db) as store:
        app = build_app_context(settings, store, Telemetry())
        found = {}
        for name, role, price, refuse in (
            ("alice", "agent", 250, True),
            ("bob", "agent", 133, False),
            ("uma", "user", None, None),
            ("root", "admin", None, None),
        ):
            principal, key = await app.identity.register(role, name, peek_price_cents=price, can_refuse=refuse)
            found[name] = (principal.id, key)
        await app.earnings.grant(found["uma"][0], 1_000_000)
    return found


def generate(db: Path, real: dict[str, tuple[str, str]], scale: float, seed: int = 7) -> dict[str, int]:
    """Rows straight into SQLite; returns how many of each were written."""
    rng = random.Random(seed)
    n_agents, n_users = max(10, int(1000 * scale)), max(20, int(50_000 * scale))
    n_peeks, n_messages = max(100, int(200_000 * scale)), max(1000, int(2_000_000 * scale))
    n_conversations = max(20, int(20_000 * scale))
    now = datetime.now(UTC)
    start = now - timedelta(days=365)

    def moment() -> datetime:
        return start + timedelta(seconds=rng.random() * 365 * 86400 - 60)

    con = sqlite3.connect(db)
    con.execute("PRAGMA synchronous = OFF")
    con.execute("PRAGMA cache_size = -262144")  # 256 MB: index inserts in random order stay in memory
    agents = [real["alice"][0], real["bob"][0]] + [f"agt_g{i:019d}" for i in range(n_agents - 2)]
    users = [real["uma"][0]] + [f"usr_g{i:019d}" for i in range(n_users - 1)]
    price = {a: rng.choice([100, 150, 200, 250, 300, 500]) for a in agents}
    price[real["alice"][0]], price[real["bob"][0]] = 250, 133
    blob = b"\x01" * 32
    principal_rows = []
    for role, ids in (("agent", agents[2:]), ("user", users[1:])):
        for pid in ids:
            at = iso(moment())
            principal_rows.append(
                (
                    pid,
                    role,
                    pid[-6:],
                    price.get(pid),
                    1 if role == "agent" else None,
                    f"h{pid}",
                    blob,
                    blob,
                    blob,
                    at,
                    at,
                )
            )
    con.executemany(
        "INSERT INTO principals (id, role, name, peek_price_cents, can_refuse, api_key_hash, box_public, sign_public, "
        "wrapped_private, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        principal_rows,
    )
    con.executemany(
        "INSERT OR IGNORE INTO agent_tags (principal_id, tag) VALUES (?, ?)",
        [(a, t) for a in agents for t in rng.sample(TAGS, rng.choice([0, 1, 1, 2]))],
    )
    conversations = []
    for i in range(n_conversations):
        a, b = rng.sample(agents, 2)
        conversations.append((f"cnv_g{i:019d}", a, b, moment()))
    con.executemany(
        "INSERT INTO conversations (id, topic, created_by, created_at) VALUES (?, ?, ?, ?)",
        [(c, f"topic {i}", a, iso(at)) for i, (c, a, _, at) in enumerate(conversations)],
    )
    con.executemany(
        "INSERT INTO participants (conversation_id, principal_id, joined_at) VALUES (?, ?, ?)",
        [(c, p, iso(at)) for c, a, b, at in conversations for p in (a, b)],
    )
    # messages: times in order, each after its conversation began; seq per conversation
    seq: dict[str, int] = {}
    times = sorted(rng.random() for _ in range(n_messages))
    batch: list[tuple[Any, ...]] = []
    for fraction in times:
        c, a, b, began = conversations[rng.randrange(n_conversations)]
        at = max(began, start) + (now - max(began, start)) * fraction
        seq[c] = seq.get(c, 0) + 1
        batch.append((c, seq[c], 0, a if seq[c] % 2 else b, b"\x00" * 48, b"\x00" * 64, iso(at)))
        if len(batch) >= 100_000:
            con.executemany(
                "INSERT INTO messages (conversation_id, seq, epoch, sender_id, sealed, signature, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                batch,
            )
            batch.clear()
    con.executemany(
        "INSERT INTO messages (conversation_id, seq, epoch, sender_id, sealed, signature, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        batch,
    )
    con.executemany("UPDATE conversations SET last_seq = ? WHERE id = ?", [(n, c) for c, n in seq.items()])
    # peeks and their ledger entries
    entry_id = int(con.execute("SELECT COALESCE(MAX(id), 0) FROM ledger_entries").fetchone()[0])
    peeks, consents, entries, lines = [], [], [], []

    def post(kind: str, ref: str, at: str, legs: list[tuple[str, int]]) -> None:
        nonlocal entry_id
        entry_id += 1
        entries.append((entry_id, f"g:{entry_id}", "0" * 64, kind, ref, at))
        lines.extend((entry_id, account, cents) for account, cents in legs)

    for i in range(n_peeks):
        c, a, b, began = conversations[rng.randrange(n_conversations)]
        user = rng.choice(users)
        requested = max(began, start) + (now - max(began, start)) * rng.random()
        decided = requested + timedelta(seconds=rng.randint(5, 3600))
        shares = [(a, price[a], price[a] * 20 // 100), (b, price[b], price[b] * 20 // 100)]
        total = sum(p for _, p, _ in shares)
        roll = rng.random()
        status = "completed" if roll < 0.75 else "refused" if roll < 0.87 else "expired" if roll < 0.95 else "cancelled"
        if decided > now - timedelta(minutes=15) and status == "completed":
            status = "active"
        pid = f"pek_g{i:019d}"
        window_start = iso(decided) if status in ("active", "completed") else None
        peeks.append(
            (
                pid,
                c,
                user,
                status,
                total,
                sum(f for _, _, f in shares),
                total,
                total,
                15,
                window_start,
                iso(decided + timedelta(minutes=15)) if window_start else None,
                iso(requested),
                iso(requested + timedelta(days=1)),
                iso(decided),
                window_start,
                iso(decided),
            )
        )
        for j, (agent, p, fee) in enumerate(shares):
            decision = "refused" if status == "refused" and j == 0 else "pending" if status == "expired" else "accepted"
            consents.append((pid, agent, p, fee, "credit", decision, iso(decided) if decision != "pending" else None))
        at_req = iso(requested)
        post("peek_hold", pid, at_req, [(f"user:{user}:held", total), (f"user:{user}:credit", -total)])
        if status in ("active", "completed"):
            earned = [(f"agent:{agent}:pending", p - fee) for agent, p, fee in shares]
            fee_total = total - sum(x for _, x in earned)
            post(
                "peek_capture",
                pid,
                iso(decided),
                [(f"user:{user}:held", -total), *earned, ("platform:revenue", fee_total)],
            )
            if status == "completed":
                post(
                    "earnings_available",
                    pid,
                    iso(decided + timedelta(minutes=15)),
                    [
                        x
                        for agent, p, fee in shares
                        for x in ((f"agent:{agent}:pending", -(p - fee)), (f"agent:{agent}:available", p - fee))
                    ],
                )
        else:
            post("peek_release", pid, iso(decided), [(f"user:{user}:held", -total), (f"user:{user}:credit", total)])
    con.executemany(
        "INSERT INTO peeks (id, conversation_id, user_id, status, price_cents, fee_cents, charged_cents, "
        "max_price_cents, duration_minutes, window_start, window_end, requested_at, expires_at, decided_at, "
        "keys_released_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        peeks,
    )
    con.executemany(
        "INSERT INTO peek_consents (peek_id, agent_id, price_cents, fee_cents, paid_by, decision, decided_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        consents,
    )
    # credit for every user, posted before anything else they did
    grants = []
    for user in users[1:]:
        entry_id += 1
        grants.append((entry_id, user))
    con.executemany(
        "INSERT INTO ledger_entries (id, idempotency_key, request_hash, kind, ref, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        [*entries, *((e, f"g:{e}", "0" * 64, "credit_grant", u, iso(start)) for e, u in grants)],
    )
    con.executemany(
        "INSERT INTO ledger_lines (entry_id, account, amount_cents) VALUES (?, ?, ?)",
        [
            *lines,
            *((e, f"user:{u}:credit", 10_000_000) for e, u in grants),
            *((e, "external:clearing", -10_000_000) for e, u in grants),
        ],
    )
    con.execute("DELETE FROM analytics_daily")
    con.execute("DELETE FROM analytics_active")
    con.execute("DELETE FROM analytics_watermarks")
    con.commit()
    con.close()
    return {
        "agents": len(agents),
        "users": len(users),
        "conversations": n_conversations,
        "messages": n_messages,
        "peeks": n_peeks,
        "ledger_lines": len(lines) + 2 * len(grants),
    }


async def backfill(settings: Settings) -> float:
    async with open_store(settings.db) as store:
        t0 = time.perf_counter()
        async with store.write() as conn:
            await conn.run_sync(rollups.catch_up)
        return time.perf_counter() - t0


async def time_queries(settings: Settings, keys: dict[str, tuple[str, str]], calls: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    async with AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(
                Client(build_server(settings.model_copy(update={"api_key": SecretStr(keys[name][1])})))
            )
            for name in ("alice", "root")
        }
        for tool, who in (("get_agent_analytics", "alice"), ("get_platform_analytics", "root")):
            for period in ("month", "year"):
                times = []
                for i in range(calls + 3):
                    t0 = time.perf_counter()
                    result = await clients[who].call_tool(tool, {"period": period})
                    elapsed = (time.perf_counter() - t0) * 1000
                    if result.is_error:
                        raise SystemExit(f"{tool} failed: {result.content[0].text}")  # type: ignore[union-attr]
                    if i >= 3:
                        times.append(elapsed)
                out[f"{tool} {period}"] = times
    return out


async def hot_paths(
    settings: Settings, keys: dict[str, tuple[str, str]], ops: int, rounds: int
) -> dict[str, dict[str, list[float]]]:
    """ops/s of sends and of peek captures per leg, alternating rollup job off / on."""
    results: dict[str, dict[str, list[float]]] = {"send": {"off": [], "on": []}, "capture": {"off": [], "on": []}}
    async with open_store(settings.db) as store:
        app = build_app_context(settings, store, Telemetry())
        alice = await app.identity.authenticate(keys["alice"][1])
        bob = await app.identity.authenticate(keys["bob"][1])
        uma = await app.identity.authenticate(keys["uma"][1])
        talk, _ = await app.conversations.start(alice, [bob.id], "bench", "hello")
        fresh = []
        for i in range(rounds * 2 * ops):
            conv, _ = await app.conversations.start(alice, [bob.id], f"peek {i}", "hi")
            fresh.append(conv.id)
        await app.analytics.refresh()
        app.analytics.interval = 1.0
        for r in range(rounds):
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                async with anyio.create_task_group() as tasks:
                    if mode == "on":
                        tasks.start_soon(app.analytics.run)
                    t0 = time.perf_counter()
                    for i in range(ops):
                        await app.conversations.send(alice if i % 2 else bob, talk.id, f"message {i}")
                    results["send"][mode].append(ops / (time.perf_counter() - t0))
                    t0 = time.perf_counter()
                    for _ in range(ops):
                        peek = await app.peeks.request(uma, fresh.pop(), max_price_cents=1000)
                        await app.peeks.respond(alice, peek.id, "accept", None)
                    results["capture"][mode].append(ops / (time.perf_counter() - t0))
                    tasks.cancel_scope.cancel()
    return results


async def run(args: argparse.Namespace) -> int:
    folder = Path(tempfile.mkdtemp(prefix="agentchat-analytics-bench-"))
    try:
        settings = settings_for(folder)
        kept = Path(args.keep) if args.keep else None
        if kept is not None and kept.exists() and kept.with_suffix(".keys").exists():
            shutil.copyfile(kept, settings.db)
            shutil.copyfile(kept.with_suffix(".secret"), settings.resolved_secret_file())
            settings.resolved_secret_file().chmod(0o600)
            keys = {
                k: (v.split(" ")[0], v.split(" ")[1])
                for k, v in (line.split("=", 1) for line in kept.with_suffix(".keys").read_text().splitlines())
            }
            print(f"reusing {kept}")
            counts: dict[str, int] = {}
            generated = 0.0
        else:
            t0 = time.perf_counter()
            keys = await real_accounts(settings)
            counts = generate(settings.db, keys, args.scale)
            generated = time.perf_counter() - t0
        backfilled = await backfill(settings)
        if kept is not None and not kept.exists():
            shutil.copyfile(settings.db, kept)
            shutil.copyfile(settings.resolved_secret_file(), kept.with_suffix(".secret"))
            kept.with_suffix(".keys").write_text("\n".join(f"{k}={v[0]} {v[1]}" for k, v in keys.items()))
        size = settings.db.stat().st_size / 1e6
        print(f"agentchat-mcp analytics bench (scale {args.scale}; {os.cpu_count()} CPUs, shared)")
        if counts:
            print(
                "  generated: "
                + ", ".join(f"{n:,} {k}" for k, n in counts.items())
                + f" in {generated:.1f} s ({size:.0f} MB)"
            )
        print(f"  backfill (rollup catch-up over everything, as on upgrade): {backfilled:.1f} s")
        timings = await time_queries(settings, keys, args.calls)
        met = True
        for name, times in timings.items():
            target = TARGETS_MS[name.split()[-1]]
            ok = pct(times, 95) <= target
            met &= ok
            print(
                f"  {name:<30} p50 {pct(times, 50):7.1f} ms   p95 {pct(times, 95):7.1f} ms   "
                f"(target p95 <= {target:.0f} ms: {'met' if ok else 'NOT met'})"
            )
        paths = await hot_paths(settings, keys, args.ops, args.rounds)
        for name, legs in paths.items():
            off, on = statistics.median(legs["off"]), statistics.median(legs["on"])
            loss = 100 * (off - on) / off
            ok = loss <= 10
            met &= ok
            print(
                f"  {name:<8} rollup job off {off:8.1f}/s   on {on:8.1f}/s   loss {loss:5.1f}% "
                f"(target <= 10%: {'met' if ok else 'NOT met'}; medians of {args.rounds} legs each)"
            )
        print(f"  all targets: {'met' if met else 'NOT all met'}")
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the issue's sizes (default 1)")
    parser.add_argument("--calls", type=int, default=30, help="timed calls per tool and period (default 30)")
    parser.add_argument("--ops", type=int, default=150, help="sends and captures per leg (default 150)")
    parser.add_argument("--rounds", type=int, default=4, help="legs per mode (default 4)")
    parser.add_argument("--keep", help="keep the generated database here, and reuse it if it exists")
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1:
        parser.error("--scale must be in (0, 1]")
    return anyio.run(run, args)


if __name__ == "__main__":
    sys.exit(main())
