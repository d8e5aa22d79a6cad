"""Crash test: SIGKILL real stdio servers while they write, restart them, check nothing acknowledged is lost.

    python bench/kill.py                 # 20 rounds (what CI runs, ~30-50 s)
    python bench/kill.py --rounds 500    # a longer run
    python bench/kill.py --seed 7        # reproduce a run

Each round starts two `agentchat-mcp` stdio processes (agents alice and bob) on one SQLite file.
Each keeps several send_message calls in flight; each process is SIGKILLed at its own random moment
while calls are still in flight. A message counts as acknowledged only when its tool result came
back without error. Then:

1. ``PRAGMA integrity_check`` on the file (with the killed processes' WAL) must say ``ok``;
2. the next round's freshly started alice reads the conversation back: every acknowledged message
   of the previous round must be there with the same seq, sender and text;
3. at the end, one last restart reads everything: seqs are 1..N without a gap or a duplicate, and
   every acknowledged message of every round is present.

Prints one JSON line: rounds, acknowledged, lost, integrity failures, and exits 1 on any loss.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/kill.py` from a checkout, installed or not

from mcp import Client  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from agentchat_mcp.server import build_server  # noqa: E402
from agentchat_mcp.settings import Settings  # noqa: E402

PROTOCOL = "2025-11-25"


class ServerGone(Exception):
    """The server process died (we killed it) before answering."""


class StdioPeer:
    """A minimal JSON-RPC client over a server process's stdin/stdout, so we can SIGKILL it at will."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pid: int, reap: Any) -> None:
        self._stream = reader
        self._writer = writer
        self.pid = pid
        self._reap = reap  # async () -> None: wait for the killed process
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, env: dict[str, str], mode: str = "fork", forks: ForkServer | None = None) -> StdioPeer:
        """A server process: `spawn` runs `python -m agentchat_mcp` with pipes; `fork` forks one from a
        warm fork server (same `cli.main`, stdio on a socket) to skip the ~2 CPU-seconds of imports."""
        if mode == "spawn":
            with open(env.get("KILL_TEST_STDERR", os.devnull), "ab") as errlog:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "agentchat_mcp",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=errlog,
                    env=env,
                    limit=1 << 22,
                )
            assert proc.stdin is not None and proc.stdout is not None
            peer = cls(proc.stdout, proc.stdin, proc.pid, proc.wait)
        else:
            assert forks is not None, "fork mode needs a ForkServer"
            peer = await forks.fork(env)
        await peer.request(
            "initialize",
            {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "kill-test", "version": "1"}},
        )
        await peer.notify("notifications/initialized")
        return peer

    async def _read(self) -> None:
        try:
            while line := await self._stream.readline():
                message = json.loads(line)
                future = self._pending.pop(message.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(message)
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ServerGone())
            self._pending.clear()

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            self._writer.write(json.dumps(message).encode() + b"\n")
            await self._writer.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ServerGone() from exc

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        await self._send({"jsonrpc": "2.0", "method": method, **({"params": params} if params else {})})

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if self._reader.done():
            raise ServerGone()
        self._next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        request_id = self._next_id
        self._pending[request_id] = future
        try:
            await self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        except ServerGone:
            # Nobody will await this future: drop it, or the reader's ServerGone on it is "never retrieved".
            self._pending.pop(request_id, None)
            future.cancel()
            raise
        message = await future
        if "error" in message:
            raise RuntimeError(f"{method}: {message['error']}")
        return dict(message["result"])

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        result = await self.request("tools/call", {"name": tool, "arguments": arguments})
        if result.get("isError"):
            raise RuntimeError(f"{tool}: {result['content'][0]['text']}")
        return dict(result["structuredContent"])

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    async def close(self) -> None:
        self.kill()
        await self._reap()
        with contextlib.suppress(Exception):
            await self._reader
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


# --- the fork server: warm imports, one forked `agentchat-mcp serve` per start -------------------
#
# Importing agentchat_mcp costs ~2 CPU-seconds; two processes a round on 2 cores would make 20
# rounds take minutes. A fork server imports once and forks a child per start: the child is a real,
# separate process running the real entry point (`cli.main(["serve"])`, stdio transport), with its
# stdin/stdout on a Unix socket instead of a pipe, and it dies by SIGKILL like any other.


def _serve_child(socket_path: str, env: dict[str, str]) -> None:
    """In the forked child: stdio is the socket, then `agentchat-mcp serve`."""
    import socket

    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(socket_path)
    os.dup2(conn.fileno(), 0)
    os.dup2(conn.fileno(), 1)
    conn.close()
    errlog = os.open(env.get("KILL_TEST_STDERR", os.devnull), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(errlog, 2)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    os.environ.clear()
    os.environ.update(env)
    from agentchat_mcp import cli

    cli.main(["serve"])


def fork_server() -> None:
    """`python bench/kill.py --fork-server`: read {"socket", "env"} lines, fork a server for each, print its pid."""
    import threading

    import anyio

    from agentchat_mcp.server import build_server
    from agentchat_mcp.settings import Settings
    from agentchat_mcp.store import open_store

    with tempfile.TemporaryDirectory() as scratch:  # warm what imports lazily: pydantic, alembic, migrations
        settings = Settings(db=Path(scratch) / "warm.db", secret_file=Path(scratch) / "warm.secret")
        build_server(settings)

        async def warm_store() -> None:
            async with open_store(settings.db):
                pass

        anyio.run(warm_store)
    if threading.active_count() != 1:  # fork only from a single-threaded process
        raise RuntimeError("threads survived warming the fork server")

    def reap(*_: Any) -> None:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass

    signal.signal(signal.SIGCHLD, reap)
    print("ready", flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                _serve_child(command["socket"], command["env"])
            finally:
                os._exit(0)
        print(pid, flush=True)


class ForkServer:
    """The test's handle on a `--fork-server` process."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def fork(self, env: dict[str, str]) -> StdioPeer:
        async with self._lock:
            if self._proc is None:
                self._proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--fork-server",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
                assert self._proc.stdout is not None
                if await self._proc.stdout.readline() != b"ready\n":
                    raise RuntimeError("the fork server did not start")
            connected: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
                asyncio.get_running_loop().create_future()
            )

            async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                if not connected.done():
                    connected.set_result((reader, writer))

            folder = tempfile.mkdtemp(prefix="kill-")
            path = os.path.join(folder, "s")
            listener = await asyncio.start_unix_server(accept, path, limit=1 << 22)
            try:
                assert self._proc.stdin is not None and self._proc.stdout is not None
                self._proc.stdin.write(json.dumps({"socket": path, "env": env}).encode() + b"\n")
                await self._proc.stdin.drain()
                pid = int(await self._proc.stdout.readline())
                reader, writer = await asyncio.wait_for(connected, 30)
            finally:
                listener.close()
                os.unlink(path)
                os.rmdir(folder)
        peer: StdioPeer

        async def reap() -> None:  # the fork server reaps it; the socket's EOF says it is gone
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(peer._reader), 10)

        peer = StdioPeer(reader, writer, pid, reap)
        return peer

    async def close(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            await self._proc.wait()
            self._proc = None


@dataclass
class Report:
    rounds: int = 0
    acknowledged: int = 0
    lost: list[str] = field(default_factory=list)
    integrity_failures: list[str] = field(default_factory=list)
    unacknowledged_attempts: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "acknowledged": self.acknowledged,
            "lost": len(self.lost),
            "lost_examples": self.lost[:5],
            "integrity_failures": self.integrity_failures,
            "killed_in_flight": self.unacknowledged_attempts,
            "seconds": round(self.seconds, 1),
        }


@dataclass(frozen=True)
class Scene:
    settings: Settings
    keys: dict[str, str]  # name -> api key
    ids: dict[str, str]  # name -> principal id
    conversation_id: str


async def set_up(folder: Path) -> Scene:
    """Two agents and their conversation, made in-process through a real (in-memory) MCP client."""
    settings = Settings(db=folder / "agentchat.db", secret_file=folder / "agentchat.secret", rate_limits_enabled=False)
    keys, ids = {}, {}
    for name in ("alice", "bob"):
        async with Client(build_server(settings)) as client:
            got = (await client.call_tool("register_agent", {"name": name, "peek_price": "1.00"})).structured_content
            assert got is not None
            keys[name], ids[name] = got["api_key"], got["id"]
    alice = settings.model_copy(update={"api_key": SecretStr(keys["alice"])})
    async with Client(build_server(alice)) as client:
        started = await client.call_tool("start_conversation", {"participants": [ids["bob"]], "topic": "kill test"})
        assert started.structured_content is not None
        conversation_id = started.structured_content["conversation"]["id"]
    return Scene(settings, keys, ids, conversation_id)


def child_env(scene: Scene, name: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "AGENTCHAT_DB": str(scene.settings.db),
        "AGENTCHAT_SECRET_FILE": str(scene.settings.resolved_secret_file()),
        "AGENTCHAT_API_KEY": scene.keys[name],
        "AGENTCHAT_RATE_LIMITS_ENABLED": "false",
        "AGENTCHAT_ACCESS_LOG": "false",
        "KILL_TEST_STDERR": str(scene.settings.db.with_name("servers.log")),
    }


Acked = dict[str, tuple[int, str]]  # text -> (seq, sender id)


async def read_all(peer: StdioPeer, conversation_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        page = await peer.call("read_messages", conversation_id=conversation_id, after_seq=after_seq, limit=100)
        messages.extend(page["messages"])
        if page["next_after_seq"] is None:
            return messages
        after_seq = page["next_after_seq"]


def missing(acked: Acked, messages: list[dict[str, Any]]) -> list[str]:
    found = {m["text"]: (m["seq"], m["sender_id"]) for m in messages}
    return [text for text, where in acked.items() if found.get(text) != where]


def integrity(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


async def sender(peer: StdioPeer, scene: Scene, name: str, prefix: str, counter: list[int], acked: Acked) -> int:
    """Send until the server dies; returns how many sends were in flight when it did."""
    while True:
        counter[0] += 1
        text = f"{prefix}-{name}-{counter[0]}"
        try:
            sent = await peer.call("send_message", conversation_id=scene.conversation_id, text=text)
        except ServerGone:
            return 1
        acked[text] = (int(sent["seq"]), scene.ids[name])


async def one_round(
    scene: Scene,
    number: int,
    rng: random.Random,
    previous: Acked,
    report: Report,
    *,
    in_flight: int,
    window: float,
    mode: str,
    forks: ForkServer | None,
) -> Acked:
    peers = dict(
        zip(
            ("alice", "bob"),
            await asyncio.gather(*(StdioPeer.start(child_env(scene, n), mode, forks) for n in ("alice", "bob"))),
            strict=True,
        )
    )
    try:
        if previous:  # the restart: everything acknowledged before the last kill is still there
            first = min(seq for seq, _ in previous.values())
            report.lost += missing(previous, await read_all(peers["alice"], scene.conversation_id, first - 1))
        acked: Acked = {}
        tasks = []
        for name, peer in peers.items():
            counter = [0]
            tasks += [
                asyncio.create_task(sender(peer, scene, name, f"r{number}", counter, acked)) for _ in range(in_flight)
            ]

        async def kill_later(peer: StdioPeer) -> None:
            await asyncio.sleep(rng.uniform(0.05, window))
            peer.kill()

        await asyncio.gather(*(kill_later(p) for p in peers.values()))
        report.unacknowledged_attempts += sum(await asyncio.gather(*tasks))
    finally:
        await asyncio.gather(*(p.close() for p in peers.values()))
    verdict = integrity(scene.settings.db)
    if verdict != "ok":
        report.integrity_failures.append(f"round {number}: {verdict}")
    report.acknowledged += len(acked)
    report.rounds += 1
    return acked


async def run(
    rounds: int,
    *,
    seed: int | None = None,
    in_flight: int = 3,
    window: float = 0.6,
    mode: str = "fork",
    folder: Path | None = None,
) -> Report:
    """Run `rounds` kill/restart rounds; the returned report says what was lost (nothing, we hope)."""
    rng = random.Random(seed)
    report = Report()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agentchat-kill-") as scratch:
        scene = await set_up(folder or Path(scratch))
        forks = ForkServer() if mode == "fork" else None
        everything: Acked = {}
        previous: Acked = {}
        for number in range(1, rounds + 1):
            try:
                previous = await one_round(
                    scene, number, rng, previous, report, in_flight=in_flight, window=window, mode=mode, forks=forks
                )
            except ServerGone:
                log = scene.settings.db.with_name("servers.log")
                tail = log.read_text()[-3000:] if log.exists() else "(no server log)"
                raise RuntimeError(f"round {number}: a server died before it was killed; its stderr:\n{tail}") from None
            everything.update(previous)
        if forks is not None:
            await forks.close()
        final = await StdioPeer.start(child_env(scene, "bob"), "spawn")  # a cold start reads everything
        try:
            messages = await read_all(final, scene.conversation_id)
        finally:
            await final.close()
        report.lost += [t for t in missing(everything, messages) if t not in report.lost]
        seqs = [m["seq"] for m in messages]
        if seqs != list(range(1, len(seqs) + 1)):
            report.integrity_failures.append(f"seqs are not 1..{len(seqs)} without gaps or duplicates")
        if any(m["text"] is None for m in messages):
            report.integrity_failures.append("a stored message no longer opens")
        verdict = integrity(scene.settings.db)
        if verdict != "ok":
            report.integrity_failures.append(f"final: {verdict}")
    report.seconds = time.monotonic() - began
    return report


def main() -> int:
    if sys.argv[1:] == ["--fork-server"]:
        fork_server()
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=20, help="kill/restart rounds (default 20)")
    parser.add_argument("--seed", type=int, default=None, help="random seed, to reproduce a run")
    parser.add_argument("--in-flight", type=int, default=3, help="concurrent send_message calls per process")
    parser.add_argument("--window", type=float, default=0.6, help="kill each process within this many seconds")
    parser.add_argument(
        "--mode",
        choices=["fork", "spawn"],
        default="fork",
        help="fork: servers forked from a warm fork server (fast); spawn: a fresh `python -m agentchat_mcp` each",
    )
    args = parser.parse_args()
    report = asyncio.run(run(args.rounds, seed=args.seed, in_flight=args.in_flight, window=args.window, mode=args.mode))
    print(json.dumps(report.as_dict()))
    return 1 if report.lost or report.integrity_failures else 0


if __name__ == "__main__":
    sys.exit(main())
