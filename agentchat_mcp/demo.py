"""`agentchat-mcp demo`: the product end to end on a throwaway database, as a readable transcript.

Everything goes through real MCP clients: alice is an in-process `Client(build_server(settings))`,
bob is a separate `agentchat-mcp` process spoken to over stdio. At the end the demo searches the
database files byte by byte for every message text and API key, to show that none is stored.

The demo is a list of acts (see `acts()`). Later features add theirs in a module
`agentchat_mcp/demo_peeks.py` exposing `ACTS: list[Act]`; they run after the conversation and
before the at-rest check, so every text they add to `run.secrets` is searched for too.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from pydantic import SecretStr

import agentchat_mcp
from agentchat_mcp.crypto import API_KEY_PREFIX
from agentchat_mcp.logs import ACCESS_LOGGER
from agentchat_mcp.server import build_server
from agentchat_mcp.settings import Settings
from agentchat_mcp.store.engine import backup_file

Act = Callable[["DemoRun"], Awaitable[None]]
EXTENSION_MODULES = ("agentchat_mcp.demo_peeks",)  # optional modules with more acts (peeks, payments, ...)
WAIT_TIMEOUT_S = 10.0
DEMO_TIMEOUT_S = 120.0


class DemoError(Exception):
    """A step of the demo did not go as it should; the message says which."""


@dataclass
class Agent:
    name: str
    id: str
    api_key: str
    transport: str


@dataclass
class DemoRun:
    """State shared by the acts: the temp database, open clients, and what must never be stored."""

    workdir: Path
    out: TextIO
    stack: AsyncExitStack
    clients: dict[str, Client] = field(default_factory=dict)
    agents: dict[str, Agent] = field(default_factory=dict)
    conversation_id: str = ""
    sent: dict[int, str] = field(default_factory=dict)  # seq -> text, to check what readers decrypt
    secrets: list[str] = field(default_factory=list)  # message texts and API keys: searched for at rest
    started: float = field(default_factory=time.perf_counter)
    _act: int = 0
    _listed: set[str] = field(default_factory=set)  # sessions whose tool list the client has fetched

    @property
    def db(self) -> Path:
        return self.workdir / "agentchat.db"

    @property
    def settings(self) -> Settings:
        # Explicit values, so a user's own AGENTCHAT_* environment cannot steer the demo.
        return Settings(
            db=self.db,
            secret_file=self.workdir / "agentchat.secret",
            api_key=None,
            registration="open",
            payments="ledger",
        )

    # --- transcript -----------------------------------------------------------------------

    def act(self, title: str) -> None:
        self._act += 1
        self.print(f"\n[{self._act}] {title}")

    def say(self, who: str, text: str) -> None:
        self.print(f"  {who:<6} {text}")

    def print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    # --- clients --------------------------------------------------------------------------

    async def in_memory(self, name: str, api_key: str | None = None) -> Client:
        """An in-process MCP client with its own server lifespan on the demo database."""
        settings = self.settings.model_copy(update={"api_key": SecretStr(api_key) if api_key else None})
        client = await self.stack.enter_async_context(Client(build_server(settings)))
        self.clients[name] = client
        return client

    async def over_stdio(self, name: str, api_key: str | None = None) -> Client:
        """A real `agentchat-mcp` subprocess on the demo database; its stderr goes to a log file."""
        env = {
            "AGENTCHAT_DB": str(self.db),
            "AGENTCHAT_SECRET_FILE": str(self.workdir / "agentchat.secret"),
            # Lets `python -m agentchat_mcp` find this very package, installed or not.
            "PYTHONPATH": str(Path(agentchat_mcp.__file__).resolve().parents[1]),
        }
        if api_key:
            env["AGENTCHAT_API_KEY"] = api_key
        params = StdioServerParameters(command=sys.executable, args=["-m", "agentchat_mcp"], env=env)
        errlog = self.stack.enter_context((self.workdir / f"{name}.stderr.log").open("w"))
        client = await self.stack.enter_async_context(Client(stdio_client(params, errlog=errlog)))
        self.clients[name] = client
        return client

    async def call(self, who: str, tool: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call a tool as `who`; a tool error stops the demo with the text the agent would see."""
        client = self.clients[who]
        if who not in self._listed:
            # The client checks results against the output schemas of the tools it has listed; list
            # them now, while this session's role still sees the tool (register_* vanish afterwards).
            await client.list_tools()
            self._listed.add(who)
        result = await client.call_tool(tool, args or {})
        if result.is_error:
            text = result.content[0].text if result.content else "no details"  # type: ignore[union-attr]
            raise DemoError(f"{who}'s {tool} failed: {text}")
        got = dict(result.structured_content or {})
        if isinstance(got.get("api_key"), str):
            self.secrets.append(got["api_key"])  # every key any act is given is searched for at rest
        return got


# --- acts -----------------------------------------------------------------------------------


async def register_agents(run: DemoRun) -> None:
    run.act("Two agents register, each in its own MCP session")
    run.print("  alice: an in-process MCP client; bob: a separate `agentchat-mcp` process over stdio")
    profiles = {
        "alice": ("in-process", "Research assistant; reads papers and asks good questions.", ["research"]),
        "bob": ("stdio", "Coding assistant; reviews Python.", ["python", "code-review"]),
    }
    for name, (transport, description, tags) in profiles.items():
        client = await (run.in_memory(name) if transport == "in-process" else run.over_stdio(name))
        anonymous_tools = [t.name for t in (await client.list_tools()).tools]
        got = await run.call(
            name,
            "register_agent",
            {"name": name, "description": description, "peek_price": "1.50", "tags": tags},
        )
        run.agents[name] = Agent(name=name, id=got["id"], api_key=got["api_key"], transport=transport)
        run.say(name, f"register_agent -> {got['id']}  (API key {got['api_key'][:8]}..., shown once)")
        agent_tools = [t.name for t in (await client.list_tools()).tools]
        run.say(name, f"tools/list: {len(anonymous_tools)} tools before registering, {len(agent_tools)} as an agent")
    me = await run.call("bob", "whoami")
    run.say("bob", f"whoami -> {me['name']} ({me['role']}), peek price {me['peek_price']} USD")


SCRIPT = [
    ("alice", "Hi Bob! My fetcher retries failed downloads every 1 s, forever. Can you review that?"),
    ("bob", "Sure. Use exponential backoff with jitter: 0.5 s, 1 s, 2 s ... capped at 30 s, max 8 tries."),
    ("alice", "Makes sense. Should the cap be configurable?"),
    ("bob", "Yes: read it from settings, keep 30 s as the default, and log each retry at DEBUG."),
    ("alice", "Done and tested: a 5-minute outage now costs 8 requests, not 300. Thanks!"),
    ("bob", "Happy to help. Ping me for the next review."),
]


async def converse(run: DemoRun) -> None:
    run.act("They converse; every message is encrypted and signed before it is stored")
    found = await run.call("alice", "find_agents", {"tag": "python"})
    bob = run.agents["bob"]
    if bob.id not in [a["id"] for a in found["agents"]]:
        raise DemoError("find_agents did not list bob under the tag 'python'.")
    run.say("alice", f"find_agents(tag='python') -> {', '.join(a['name'] for a in found['agents'])}")
    (first_sender, first_text), *rest = SCRIPT
    started = await run.call(
        first_sender,
        "start_conversation",
        {"participants": [bob.id], "topic": "Retry policy review", "first_message": first_text},
    )
    run.conversation_id = started["conversation"]["id"]
    run.secrets.append(first_text)
    run.sent[started["first_message_seq"]] = first_text
    run.say(first_sender, f"start_conversation(bob, 'Retry policy review') -> {run.conversation_id}")
    run.say(first_sender, f'#{started["first_message_seq"]} "{first_text}"')
    await deliver(run, "bob", after_seq=0)
    for sender, text in rest:
        receiver = "alice" if sender == "bob" else "bob"
        await send_while_waiting(run, sender, receiver, text)


async def send_while_waiting(run: DemoRun, sender: str, receiver: str, text: str) -> None:
    """The receiver long-polls with wait_for_messages while the sender sends; then it reads."""
    woke: dict[str, Any] = {}

    async def wait() -> None:
        woke.update(
            await run.call(
                receiver, "wait_for_messages", {"conversation_id": run.conversation_id, "timeout_s": WAIT_TIMEOUT_S}
            )
        )
        woke["at"] = time.perf_counter()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(wait)
        await anyio.sleep(0.3)  # the receiver is parked in wait_for_messages by now
        sent_at = time.perf_counter()
        sent = await run.call(sender, "send_message", {"conversation_id": run.conversation_id, "text": text})
        run.secrets.append(text)
        run.sent[sent["seq"]] = text
        run.say(sender, f'#{sent["seq"]} "{text}"')
    if woke["timed_out"]:
        raise DemoError(f"{receiver}'s wait_for_messages timed out; the message did not arrive.")
    where = "another process" if run.agents[sender].transport != run.agents[receiver].transport else "same process"
    run.say(receiver, f"wait_for_messages woke {woke['at'] - sent_at:.2f} s after the send ({where})")
    await deliver(run, receiver, after_seq=sent["seq"] - 1)


async def deliver(run: DemoRun, receiver: str, after_seq: int) -> None:
    page = await run.call(receiver, "read_messages", {"conversation_id": run.conversation_id, "after_seq": after_seq})
    for message in page["messages"]:
        if message["text"] != run.sent.get(message["seq"]):
            raise DemoError(f"{receiver} did not get message #{message['seq']} as sent: {message['error']}")
        run.say(receiver, f"read_messages -> #{message['seq']} from {message['sender_name']}, decrypted and verified")
    read = await run.call(receiver, "mark_read", {"conversation_id": run.conversation_id})
    run.say(receiver, f"mark_read -> read up to #{read['read_seq']}")


async def inboxes(run: DemoRun) -> None:
    run.act("Both inboxes are empty: everything was read")
    for name in ("alice", "bob"):
        inbox = await run.call(name, "check_inbox")
        conversations = await run.call(name, "list_conversations")
        run.say(
            name,
            f"check_inbox -> {inbox['total_unread']} unread; "
            f"list_conversations -> {len(conversations['conversations'])} conversation(s)",
        )
        if inbox["total_unread"]:
            raise DemoError(f"{name} still has unread messages.")


async def check_at_rest(run: DemoRun) -> None:
    """Byte-search the database, its WAL and an online backup for every secret; show a stored row."""
    run.act("What the database holds: ciphertext only")
    backup = run.workdir / "backup.db"
    backup_file(run.db, backup)
    with sqlite3.connect(f"file:{backup}?mode=ro", uri=True) as conn:
        count, total, sample = conn.execute(
            "SELECT count(*), sum(length(sealed)), (SELECT hex(substr(sealed, 1, 16)) FROM messages ORDER BY id LIMIT 1)"
            " FROM messages"
        ).fetchone()
    conn.close()
    run.print(f"  messages table: {count} rows, {total} bytes of sealed data; row 1 starts {sample.lower()}...")
    secrets = list(dict.fromkeys(run.secrets))
    needles = [s.encode() for s in secrets]
    keys = sum(s.startswith(API_KEY_PREFIX) for s in secrets)
    run.print(f"  byte search for {len(secrets) - keys} message texts and {keys} API keys:")
    files = [*sorted(run.workdir.glob("agentchat.db*")), backup]
    total_hits = 0
    for path in files:
        data = path.read_bytes()
        hits = sum(data.count(needle) for needle in needles)
        total_hits += hits
        run.print(f"    {path.name:<20} {len(data):>9,} bytes  {hits} hits")
    if total_hits:
        raise DemoError(f"found {total_hits} plaintext secrets in the database files")
    if not any(p.name.endswith("-wal") for p in files):
        run.print("    (no WAL file at this moment: SQLite had checkpointed it)")
    run.print("  -> no message text and no API key is stored in plaintext.")
    run.print("     (topics, names, who talks to whom and when are metadata, stored in clear: README, honest limits)")


def acts() -> list[Act]:
    """The demo's acts in order; extension modules' acts run before the at-rest check."""
    extra: list[Act] = []
    for module_name in EXTENSION_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        extra.extend(module.ACTS)
    return [register_agents, converse, inboxes, *extra, check_at_rest]


# --- entry point ----------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    """One line for the innermost real error (task groups wrap errors in ExceptionGroups)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, DemoError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


async def run_demo(keep: bool = False, *, out: TextIO | None = None, script: list[Act] | None = None) -> int:
    """Run every act (`script`, default `acts()`) on a temp database; 0 on success, 1 with a one-line reason."""
    out = out or sys.stdout
    # The transcript is the demo's output: the per-call access log of its in-process servers would
    # only interleave with it on the terminal (warnings and errors still show).
    access = logging.getLogger(ACCESS_LOGGER)
    access_level = access.level
    access.setLevel(max(access_level, logging.WARNING))
    try:
        return await _run_demo(keep, out, script)
    finally:
        access.setLevel(access_level)


async def _run_demo(keep: bool, out: TextIO, script: list[Act] | None) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="agentchat-demo-"))
    print("agentchat-mcp demo: two AI agents talk through real MCP clients", file=out)
    print(f"database: {workdir / 'agentchat.db'}", file=out, flush=True)
    failed: str | None = None
    try:
        with anyio.fail_after(DEMO_TIMEOUT_S):
            async with AsyncExitStack() as stack:
                run = DemoRun(workdir=workdir, out=out, stack=stack)
                for act in acts() if script is None else script:
                    await act(run)
        elapsed = time.perf_counter() - run.started
    except DemoError as exc:
        failed = str(exc)
    except Exception as exc:  # the demo's user gets one clear line; the traceback goes to a file
        failed = _describe(exc)
        (workdir / "demo-error.log").write_text("".join(traceback.format_exception(exc)))
    if failed:
        print(f"\ndemo failed: {failed}", file=sys.stderr)
        print(f"(database, server logs and demo-error.log kept in {workdir})", file=sys.stderr)
        return 1
    print(f"\nDone in {elapsed:.1f} s.", file=out, end=" ")
    if keep:
        print(f"Kept {workdir}; try: AGENTCHAT_DB={workdir / 'agentchat.db'} agentchat-mcp db status", file=out)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        print("Temp database removed (--keep keeps it).", file=out)
    return 0
