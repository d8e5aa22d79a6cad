"""Wake-up latency across replicas: from send_message acknowledged on replica A to wait_for_messages
returning on replica B.

    python bench/replicas.py                            # 2 replicas on a temp SQLite file, 100 samples a leg
    python bench/replicas.py --poll 0.02 --n 200        # change_poll_seconds 0.02 (default 0.1)
    python bench/replicas.py --db postgresql://127.0.0.1/rep_bench   # an empty PostgreSQL database

Two real `agentchat-mcp serve --transport http` processes on one store (tests/support_replicas.py, the
harness of tests/test_replicas.py). Agent bob waits (wait_for_messages) on a conversation; once his call
is in flight, alice sends to it; the sample is the time from alice's send returning to bob's wait
returning. Legs: `cross` (alice on replica 1, bob on replica 2: the other process finds the message by
its change signal; on SQLite a poll of PRAGMA data_version every change_poll_seconds) and `same` (both on
replica 1: the send wakes the waiter in-process), for comparison. Target: cross p95 <= 50 ms.
Prints one line per leg and a JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/replicas.py` from a checkout

from tests.support_replicas import Replicas, call, running_replicas  # noqa: E402

TARGET_P95_MS = 50.0
SETTLE_SECONDS = 0.15  # bob's wait is in flight by then (else it would return at once, not wake)
# A random extra pause before each send: samples spaced evenly would meet the replicas' change poll at
# the same point of its period every time, and measure one phase of it instead of all of them.
JITTER_SECONDS = 0.1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def sample(alice: Client, bob: Client, conversation: str, seq: int) -> float:
    """One wake-up, in ms: alice's send acknowledged -> bob's wait returned."""
    woke: list[float] = []

    async def wait() -> None:
        got = await call(bob, "wait_for_messages", conversation_id=conversation, timeout_s=10)
        woke.append(time.perf_counter())
        assert not got["timed_out"], "bob's wait timed out: the message never woke him"

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(wait)
        await anyio.sleep(SETTLE_SECONDS + random.uniform(0, JITTER_SECONDS))
        assert not woke, "bob's wait returned before anything was sent: an unread message was left over"
        await call(alice, "send_message", conversation_id=conversation, text=f"ping {seq}")
        acknowledged = time.perf_counter()
    await call(bob, "mark_read", conversation_id=conversation, up_to_seq=seq)
    return (woke[0] - acknowledged) * 1000


async def leg(replicas: Replicas, name: str, alice_on: int, bob_on: int, n: int) -> dict[str, Any]:
    alice = replicas.create("agent", f"alice-{name}")
    bob = replicas.create("agent", f"bob-{name}")
    async with replicas.client(alice_on, alice) as a, replicas.client(bob_on, bob) as b:
        started = await call(a, "start_conversation", participants=[bob.id], topic="bench")
        conversation = started["conversation"]["id"]
        took = [await sample(a, b, conversation, seq) for seq in range(1, n + 1)]
    return {
        "leg": name,
        "alice_on": alice_on,
        "bob_on": bob_on,
        "n": n,
        "p50_ms": round(statistics.median(took), 2),
        "p95_ms": round(percentile(took, 95), 2),
        "p99_ms": round(percentile(took, 99), 2),
        "max_ms": round(max(took), 2),
    }


async def run(args: argparse.Namespace) -> int:
    env = {"AGENTCHAT_CHANGE_POLL_SECONDS": str(args.poll), "AGENTCHAT_RATE_LIMITS_ENABLED": "false"}
    with tempfile.TemporaryDirectory(prefix="agentchat-bench-replicas-") as folder:
        # the temp SQLite file by default, named here: left to running_replicas, a test run's
        # AGENTCHAT_TEST_DB (inherited) would make it a PostgreSQL database nobody drops
        database = args.db or str(Path(folder) / "agentchat.db")
        async with running_replicas(Path(folder), 2, database=database, redis=None, env=env) as replicas:
            store = "postgresql" if database.startswith("postgresql") else "sqlite"
            rows = []
            for name, alice_on, bob_on in (("cross", 1, 2), ("same", 1, 1)):
                if name in args.legs.split(","):
                    rows.append(await leg(replicas, name, alice_on, bob_on, args.n))
    cross = next((r for r in rows if r["leg"] == "cross"), None)
    for r in rows:
        print(
            f"{r['leg']:<6} replica {r['alice_on']} -> {r['bob_on']}  n={r['n']}  p50 {r['p50_ms']:.1f} ms  "
            f"p95 {r['p95_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  max {r['max_ms']:.1f} ms"
        )
    met = cross is not None and cross["p95_ms"] <= TARGET_P95_MS
    if cross is not None:
        verdict = "met" if met else "NOT met"
        print(f"cross-replica wake-up p95 {cross['p95_ms']:.1f} ms (target <= {TARGET_P95_MS:g} ms: {verdict})")
    print(json.dumps({"store": store, "change_poll_seconds": args.poll, "legs": rows, "target_met": met}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=100, help="wake-ups timed per leg (default 100)")
    parser.add_argument("--poll", type=float, default=0.1, help="change_poll_seconds of the replicas (default 0.1)")
    parser.add_argument("--db", default=None, help="the store: an empty PostgreSQL URL; default a temp SQLite file")
    parser.add_argument("--legs", default="cross,same", help="cross, same, or both (default)")
    return anyio.run(run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
