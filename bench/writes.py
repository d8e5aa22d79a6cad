"""How many money-moving write transactions a store commits per second: the ceiling of every write path.

    python bench/writes.py                                         # SQLite (temp file)
    python bench/writes.py --db postgresql://postgres@127.0.0.1/writes_x --create-db --processes 2

Both stores run writers one at a time (SQLite: BEGIN IMMEDIATE; PostgreSQL: one advisory lock taken
at BEGIN, docs/storage.md), so the hub's write capacity is 1 / (time a writer holds the lock), however
many replicas there are. Each transaction here is a real ledger entry (Ledger.post: the idempotency
check, the balance check, one entry and two lines), the shape of a peek hold or capture. `--processes`
runs that many writer processes at once (replicas), each with `--concurrency` writers.

Printed: transactions/s in all, mean lock-held time per transaction (wall / transactions, since they
are serialized), and the PostgreSQL server's CPU per transaction (its backends, from /proc) when the
store is PostgreSQL. docs/scaling.md turns these into capacity per tier.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentchat_mcp.services.ledger import Ledger, Line
from agentchat_mcp.settings import PostgresUrl
from agentchat_mcp.store import open_store


def _database(db: str) -> Path | PostgresUrl:
    return PostgresUrl(db) if db.startswith("postgres") else Path(db)


async def _writer_process(db: str, worker: int, seconds: float, concurrency: int) -> int:
    done = 0
    async with open_store(_database(db), upgrade=False, pool=(concurrency, 0)) as store:
        ledger = Ledger(store)
        deadline = time.perf_counter() + seconds

        async def writer(lane: int) -> None:
            nonlocal done
            n = 0
            while time.perf_counter() < deadline:
                async with store.write() as conn:
                    await ledger.post(
                        conn,
                        idempotency_key=f"bench:{os.getpid()}:{worker}:{lane}:{n}",
                        kind="bench",
                        lines=[Line("platform:bench", -100), Line(f"user:bench{worker}", 100)],
                        allow_negative=["platform:bench"],
                    )
                n += 1
                done += 1

        async with anyio.create_task_group() as tasks:
            for lane in range(concurrency):
                tasks.start_soon(writer, lane)
    return done


def _run_process(db: str, worker: int, seconds: float, concurrency: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put(anyio.run(_writer_process, db, worker, seconds, concurrency))


class PostgresCpu:
    """CPU of every postgres process (user + system) while it runs: sampled from /proc every 0.1 s,
    since a backend's figures vanish with it when its connection closes."""

    def __init__(self) -> None:
        self.first: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)

    def __enter__(self) -> PostgresCpu:
        self.first = _postgres_ticks()
        self.last = dict(self.first)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.last.update(_postgres_ticks())

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(0.1):
            self.last.update(_postgres_ticks())

    @property
    def seconds(self) -> float:
        ticks = sum(t - self.first.get(pid, 0) for pid, t in self.last.items())
        return ticks / os.sysconf("SC_CLK_TCK")


def _postgres_ticks() -> dict[str, int]:
    """pid -> CPU ticks (user + system) of every postgres process on this machine, from /proc."""
    found: dict[str, int] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if name.startswith("postgres"):
            fields = stat[stat.rindex(")") + 2 :].split()
            found[pid] = int(fields[11]) + int(fields[12])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="an SQLite path or postgresql://...; default a temp SQLite file")
    parser.add_argument("--create-db", action="store_true", help="PostgreSQL: CREATE the database first, DROP it after")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8, help="writers per process")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="bench-writes-")
    db = args.db or str(Path(folder) / "agentchat.db")
    name = db.rsplit("/", 1)[-1]
    if args.create_db:
        subprocess.run(["psql", "-qh", "127.0.0.1", "-U", "postgres", "-c", f'CREATE DATABASE "{name}"'], check=True)
    try:

        async def migrate() -> None:
            async with open_store(_database(db)):
                pass

        anyio.run(migrate)
        out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        processes = [
            multiprocessing.Process(target=_run_process, args=(db, w, args.seconds, args.concurrency, out))
            for w in range(args.processes)
        ]
        on_pg = db.startswith("postgres")
        with PostgresCpu() as postgres:
            started = time.perf_counter()
            for p in processes:
                p.start()
            total = sum(out.get() for _ in processes)
            wall = time.perf_counter() - started
            for p in processes:
                p.join()
        pg_cpu = postgres.seconds if on_pg else 0.0
        store = "postgresql" if on_pg else "sqlite"
        print(
            f"{store}: {args.processes} process(es) x {args.concurrency} writers, {wall:.1f} s: {total} ledger "
            f"transactions, {total / wall:,.0f}/s, {1000 * wall / total:.2f} ms each (serialized)"
            + (f", postgres CPU {1000 * pg_cpu / total:.2f} ms each" if on_pg else "")
        )
    finally:
        if args.create_db:
            subprocess.run(
                ["psql", "-qh", "127.0.0.1", "-U", "postgres", "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
                check=False,
            )


if __name__ == "__main__":
    main()
