"""Several real hub processes on one store: `agentchat-mcp serve --transport http` N times, each on its own
port, sharing the database, the server secret file and Redis (rate limits), as docs/deploy.md runs them.

Used by tests/test_replicas.py and bench/replicas.py. The store every replica shares comes from one
place, `shared_database()`; the Redis URL from `redis_url()`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
from mcp import Client

from tests import support_db
from tests.conftest import PROJECT_ROOT, Account, run_cli, structured
from tests.support_http import free_port, http_client

DEFAULT_REDIS = "redis://127.0.0.1:6379/2"  # this project's db on the shared development Redis


def shared_database(folder: Path) -> str:
    """The one store every replica of a run shares: an SQLite file in `folder`, or, with
    AGENTCHAT_TEST_DB set, a fresh PostgreSQL database of its own (it outlives single tests)."""
    if support_db.ON_POSTGRES:
        return support_db.kept_database("replicas").secret
    return str(folder / "agentchat.db")


def redis_url() -> str:
    """Where the replicas share their rate-limit windows: AGENTCHAT_TEST_REDIS, else db 2 on 127.0.0.1."""
    return os.environ.get("AGENTCHAT_TEST_REDIS", DEFAULT_REDIS)


def redis_problem(url: str) -> str | None:
    """None if the Redis at `url` answers PING, else why not. (Nothing is flushed: the limiters' keys name
    fresh principals, and under pytest-xdist another worker's replicas may be using the same database.)"""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=2) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError as exc:
        return f"Redis at {url} is unreachable ({exc})"
    return None if reply.startswith(b"+PONG") else f"Redis at {url} answered {reply!r}"


@dataclass
class Replica:
    """One `agentchat-mcp serve --transport http` process."""

    index: int
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    in_rotation: bool = True  # whether load balancers send it new requests (docs/deploy.md: rolling restarts)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Replicas:
    """N hub processes on one database, secret file and Redis. `env`: more AGENTCHAT_ settings for all."""

    folder: Path
    database: str
    redis: str | None  # None: each replica limits on its own (memory://)
    count: int = 3
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    members: list[Replica] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.members = [Replica(i, free_port(), self.folder / f"replica-{i}.log") for i in range(1, self.count + 1)]

    def __getitem__(self, index: int) -> Replica:
        """Replica 1 .. N, as the scenarios number them."""
        return self.members[index - 1]

    def environment(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTCHAT_", "STRIPE_"))}
        return {
            **clean,
            "AGENTCHAT_DB": self.database,
            "AGENTCHAT_SECRET_FILE": str(self.folder / "agentchat.secret"),
            "AGENTCHAT_RATE_LIMIT_STORAGE": self.redis or "memory://",
            "PYTHONPATH": str(PROJECT_ROOT),
            **self.env,
        }

    # --- processes ------------------------------------------------------------------------------------

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`agentchat-mcp ARGS` as the operator runs it against the same store (in this process)."""
        return run_cli(*args, env=self.environment())

    def spawn(self, replica: Replica) -> None:
        command = [sys.executable, "-m", "agentchat_mcp", "serve", "--transport", "http"]
        command += ["--port", str(replica.port), *self.args]
        with replica.log.open("ab") as log:
            replica.process = subprocess.Popen(command, env=self.environment(), stdout=log, stderr=subprocess.STDOUT)

    async def ready(self, replica: Replica, timeout: float = 60) -> None:
        """Wait until `replica` answers /healthz with 200."""
        async with httpx2.AsyncClient() as http:
            with anyio.fail_after(timeout):
                while True:
                    assert replica.alive, replica.log.read_text()
                    try:
                        if (await http.get(f"{replica.base}/healthz")).status_code == 200:
                            return
                    except httpx2.TransportError:
                        pass
                    await anyio.sleep(0.1)

    async def start(self) -> None:
        """Migrate the store once, then start every replica and wait for all of them."""
        done = self.cli("db", "upgrade")  # once, before N processes would each try
        assert done.returncode == 0, done.stderr
        for replica in self.members:
            self.spawn(replica)
        async with anyio.create_task_group() as tasks:
            for replica in self.members:
                tasks.start_soon(self.ready, replica)

    async def restart(self, replica: Replica) -> None:
        """Start a stopped replica again on its port."""
        assert not replica.alive
        self.spawn(replica)
        await self.ready(replica)

    def kill(self, replica: Replica) -> None:
        """kill -9: no drain, no goodbye."""
        assert replica.process is not None
        replica.process.send_signal(signal.SIGKILL)
        replica.process.wait()

    def terminate(self, replica: Replica) -> None:
        """SIGTERM, as systemd or a container runtime stops a replica (it drains; see wait_stopped)."""
        assert replica.process is not None
        replica.process.send_signal(signal.SIGTERM)

    def stop_all(self) -> None:
        for replica in self.members:
            if replica.alive:
                assert replica.process is not None
                replica.process.kill()
                replica.process.wait()

    # --- accounts and clients ---------------------------------------------------------------------------

    def create(self, role: str, name: str, *options: str) -> Account:
        """An account made by the operator's CLI (admins can only be made so)."""
        done = self.cli(role, "create", "--name", name, *options)
        assert done.returncode == 0, done.stderr
        made = json.loads(done.stdout)
        return Account(id=made["id"], role=role, name=name, api_key=made["api_key"])

    def grant(self, user: Account, amount: str) -> None:
        """`agentchat-mcp credits grant`: peek credit for a user."""
        done = self.cli("credits", "grant", user.id, amount)
        assert done.returncode == 0, done.stderr

    @asynccontextmanager
    async def client(self, index: int, account: Account | None = None, *, mode: str = "auto") -> AsyncIterator[Client]:
        """A real mcp Client over Streamable HTTP to replica `index` (1..N)."""
        async with http_client(self[index].base, account, mode=mode) as connected:
            yield connected


@asynccontextmanager
async def running_replicas(
    folder: Path, count: int = 3, *, database: str | None = None, redis: str | None = "", **options: Any
) -> AsyncIterator[Replicas]:
    """`count` replicas on one store (default: shared_database(folder)) and Redis (default: redis_url();
    None: none), their secret file and logs in `folder`; stopped (kill) when the block ends."""
    replicas = Replicas(
        folder, database or shared_database(folder), redis_url() if redis == "" else redis, count, **options
    )
    try:
        await replicas.start()
        yield replicas
    finally:
        replicas.stop_all()


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    """A tool call's structured result; fails the test with the error text if it is an error."""
    return structured(await client.call_tool(tool, args))


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """`with stopwatch() as took:` ... `took[0]` is the block's duration in seconds."""
    took: list[float] = []
    started = time.perf_counter()
    try:
        yield took
    finally:
        took.append(time.perf_counter() - started)


NGINX_CONF = PROJECT_ROOT / "deploy" / "nginx" / "agentchat.conf"


def nginx_config(replicas: Replicas, port: int, sample: Path = NGINX_CONF) -> str:
    """deploy/nginx/agentchat.conf as shipped, pointed at these replicas and listening on `port` in plain
    HTTP (TLS is nginx's own business): only the `server` lines, the `listen` line and the ssl_ files change."""
    lines = []
    servers = iter(replicas.members)
    for line in sample.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("server 127.0.0.1:"):
            replica = next(servers)
            line = line.replace(stripped.split()[1], f"127.0.0.1:{replica.port}")
            if not replica.in_rotation:
                line = line.replace(";", " down;")
        elif stripped.startswith("listen "):
            line = f"    listen 127.0.0.1:{port};"
        elif stripped.startswith("ssl_"):
            continue
        lines.append(line)
    assert next(servers, None) is None, "the sample names fewer upstream servers than there are replicas"
    return "\n".join(lines) + "\n"


@dataclass
class Nginx:
    """nginx running the sample config; `rotate` takes an upstream server out of rotation or puts it back."""

    folder: Path
    replicas: Replicas
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> None:
        (self.folder / "agentchat.conf").write_text(nginx_config(self.replicas, self.port))

    async def rotate(self, replica: Replica, *, in_rotation: bool) -> None:
        """Mark `replica` `down` in the upstream block (or not) and reload, as deploy/rolling-restart.sh does."""
        replica.in_rotation = in_rotation
        self.write_config()
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)  # `nginx -s reload`: new workers, old ones finish their requests
        await anyio.sleep(1.0)  # the script's pause: the old workers are done with their requests by then


@asynccontextmanager
async def running_nginx(replicas: Replicas, folder: Path) -> AsyncIterator[Nginx]:
    """nginx with the sample config in front of `replicas`. Stopped when the block ends."""
    nginx = Nginx(folder, replicas, free_port())
    port = nginx.port
    nginx.write_config()
    (folder / "nginx.conf").write_text(
        f"pid {folder}/nginx.pid;\nerror_log {folder}/error.log warn;\nevents {{}}\n"
        f"http {{\n    access_log off;\n    client_body_temp_path {folder};\n    include {folder}/agentchat.conf;\n}}\n"
    )
    command = ["nginx", "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"]
    process = nginx.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        with anyio.fail_after(10):
            while True:
                assert process.poll() is None, (folder / "error.log").read_text()
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    await anyio.sleep(0.05)
        yield nginx
    finally:
        process.terminate()
        process.wait()
