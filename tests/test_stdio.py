"""Real `agentchat-mcp` stdio subprocesses on one database file: how two desktop assistants talk."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import stdio_client
from mcp_types import ResourceUpdatedNotification

from tests import support_db
from tests.conftest import Account, Hub, structured

pytestmark = pytest.mark.anyio

WAKE_LIMIT_S = 1.0


async def start(client: Client, other: Account, first_message: str) -> str:
    started = structured(
        await client.call_tool(
            "start_conversation", {"participants": [other.id], "topic": "stdio", "first_message": first_message}
        )
    )
    return str(started["conversation"]["id"])


async def texts(client: Client, conversation_id: str) -> list[tuple[str, str]]:
    page = structured(await client.call_tool("read_messages", {"conversation_id": conversation_id}))
    return [(m["sender_name"], m["text"]) for m in page["messages"]]


async def wake_latency(waiter: Client, sender: Client, conversation_id: str, text: str) -> float:
    """Seconds from the start of `sender`'s send to the return of `waiter`'s wait_for_messages."""
    structured(await waiter.call_tool("mark_read", {"conversation_id": conversation_id}))
    woke: dict[str, Any] = {}

    async def wait() -> None:
        args = {"conversation_id": conversation_id, "timeout_s": 10}
        woke["result"] = structured(await waiter.call_tool("wait_for_messages", args))
        woke["at"] = time.monotonic()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(wait)
        await anyio.sleep(0.5)  # let the wait reach the other process and block there
        assert "at" not in woke, "wait_for_messages returned before anything was sent"
        sent_at = time.monotonic()
        structured(await sender.call_tool("send_message", {"conversation_id": conversation_id, "text": text}))
    assert woke["result"]["timed_out"] is False
    assert [c["conversation_id"] for c in woke["result"]["conversations"]] == [conversation_id]
    return float(woke["at"] - sent_at)


async def test_two_stdio_processes_talk_both_ways_and_a_waiting_agent_wakes_within_a_second(
    hub: Hub, tmp_path: Path
) -> None:
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    logs = {name: tmp_path / f"{name}.stderr" for name in ("alice", "bob")}
    with logs["alice"].open("w") as alice_log, logs["bob"].open("w") as bob_log:
        async with (
            Client(stdio_client(hub.stdio(alice), errlog=alice_log)) as a,
            Client(stdio_client(hub.stdio(bob), errlog=bob_log)) as b,
        ):
            conv = await start(a, bob, "hello bob, the launch code is 0000")
            assert await texts(b, conv) == [("alice", "hello bob, the launch code is 0000")]
            structured(await b.call_tool("send_message", {"conversation_id": conv, "text": "hi alice"}))
            assert await texts(a, conv) == [("alice", "hello bob, the launch code is 0000"), ("bob", "hi alice")]

            bob_woke = await wake_latency(b, a, conv, "are you there?")
            alice_woke = await wake_latency(a, b, conv, "yes")
            assert [text for _, text in await texts(b, conv)][2:] == ["are you there?", "yes"]
            rotated = structured(await a.call_tool("rotate_api_key", {}))["api_key"]
    print(f"stdio wake latency: bob {bob_woke * 1000:.0f} ms, alice {alice_woke * 1000:.0f} ms")
    assert bob_woke < WAKE_LIMIT_S
    assert alice_woke < WAKE_LIMIT_S
    # What the servers logged (stderr) holds no key and no message text.
    for log in logs.values():
        text = log.read_text()
        for secret in (alice.api_key, bob.api_key, rotated, "launch code", "are you there"):
            assert secret not in text


def conversation_uri(conversation_id: str) -> str:
    return f"agentchat://conversations/{conversation_id}"


async def test_subscribers_in_both_eras_hear_of_messages_from_their_own_and_from_another_process(hub: Hub) -> None:
    """bob subscribes the handshake-era way, carol listens the 2026 way, each in its own stdio process."""
    alice, bob, carol = [await hub.register_agent(n) for n in ("alice", "bob", "carol")]
    async with hub.client(alice) as a:
        conv = str(
            structured(await a.call_tool("start_conversation", {"participants": [bob.id, carol.id], "topic": "news"}))[
                "conversation"
            ]["id"]
        )
    uri = conversation_uri(conv)
    bob_heard: list[str] = []
    bob_news = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            bob_heard.append(str(message.params.uri))
            bob_news.set()

    async def bob_hears() -> None:
        nonlocal bob_news
        with anyio.fail_after(5):
            await bob_news.wait()
        assert uri in bob_heard
        bob_heard.clear()
        bob_news = anyio.Event()

    async with (
        Client(hub.stdio(bob), mode="legacy", message_handler=on_message) as b,
        Client(hub.stdio(carol)) as c,
        c.listen(resource_subscriptions=[uri]) as subscription,
    ):
        await b.subscribe_resource(uri)
        carol_events = subscription.__aiter__()
        # bob writes: bob hears it from his own process at once, carol through the data_version poller.
        structured(await b.call_tool("send_message", {"conversation_id": conv, "text": "from bob"}))
        await bob_hears()
        with anyio.fail_after(5):
            assert (await carol_events.__anext__()).uri == uri
        # carol writes: the other way round.
        structured(await c.call_tool("send_message", {"conversation_id": conv, "text": "from carol"}))
        with anyio.fail_after(5):
            assert (await carol_events.__anext__()).uri == uri
        await bob_hears()


async def test_an_in_memory_listener_hears_of_a_message_another_server_wrote(hub: Hub) -> None:
    """The same poller, without subprocesses: each hub client has its own store and feed."""
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    async with hub.client(alice) as a, hub.client(bob) as b:
        conv = await start(a, bob, "first")
        uri = conversation_uri(conv)
        async with b.listen(resource_subscriptions=[uri]) as subscription:
            structured(await a.call_tool("send_message", {"conversation_id": conv, "text": "news"}))
            with anyio.fail_after(5):
                assert (await subscription.__aiter__().__anext__()).uri == uri


async def test_a_non_member_cannot_subscribe_to_a_conversation(hub: Hub) -> None:
    alice, bob, eve = [await hub.register_agent(n) for n in ("alice", "bob", "eve")]
    async with hub.client(alice) as a:
        conv = await start(a, bob, "private")
    async with hub.client(eve, mode="legacy") as e:
        with pytest.raises(Exception, match="No conversation") as refused:
            await e.subscribe_resource(conversation_uri(conv))
    assert "eve" not in str(refused.value)


# --- stdout is the protocol -------------------------------------------------------------------------


class RawStdio:
    """A hand-driven stdio server: every stdout line must be a JSON-RPC message."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._buffer = b""

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send((json.dumps(message) + "\n").encode())

    async def response(self, request_id: int) -> dict[str, Any]:
        assert self.process.stdout is not None
        with anyio.fail_after(15):
            while True:
                while b"\n" not in self._buffer:
                    self._buffer += await self.process.stdout.receive()
                line, self._buffer = self._buffer.split(b"\n", 1)
                self.lines.append(line.decode())
                message = json.loads(line)  # anything but JSON on stdout fails here
                assert message.get("jsonrpc") == "2.0", line
                if message.get("id") == request_id:
                    return dict(message)

    async def call(self, request_id: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        await self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
        return await self.response(request_id)


async def test_stdout_carries_only_protocol_and_logs_go_to_stderr(hub: Hub, tmp_path: Path) -> None:
    alice = await hub.register_agent("alice")
    params = hub.stdio(alice)
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        async with await anyio.open_process(
            [params.command, *params.args], env=params.env, stderr=stderr, cwd=tmp_path
        ) as process:
            raw = RawStdio(process)
            init = await raw.call(
                1,
                "initialize",
                {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
            )
            assert init["result"]["serverInfo"]["name"] == "agentchat"
            await raw.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            me = await raw.call(2, "tools/call", {"name": "whoami", "arguments": {}})
            assert me["result"]["structuredContent"]["id"] == alice.id
            # A bare NaN literal (json.dumps writes one) is valid to the JSON parser, never as a price.
            for request_id, price in ((10, float("nan")), (11, float("inf"))):
                bad = await raw.call(
                    request_id, "tools/call", {"name": "update_profile", "arguments": {"peek_price": price}}
                )
                assert bad["result"]["isError"] is True and "peek_price" in bad["result"]["content"][0]["text"]
            # Break the database under the running server: the failure must be logged, on stderr only.
            support_db.query(hub.settings.db, "ALTER TABLE agent_tags RENAME TO agent_tags_gone")
            broken = await raw.call(3, "tools/call", {"name": "find_agents", "arguments": {}})
            assert broken["result"]["isError"] is True
            text = broken["result"]["content"][0]["text"]
            assert "Internal error" in text and "agent_tags" not in text
            assert (await raw.call(4, "tools/list"))["result"]["tools"]  # still serving
            assert process.stdin is not None
            await process.stdin.aclose()
            with anyio.fail_after(15):
                await process.wait()
            assert process.stdout is not None
            async for chunk in process.stdout:
                raw._buffer += chunk
    for line in [*raw.lines, *raw._buffer.decode().splitlines()]:
        assert json.loads(line)["jsonrpc"] == "2.0", line
    log = stderr_path.read_text()
    error = "ProgrammingError" if support_db.ON_POSTGRES else "OperationalError"  # a missing table, as each names it
    assert "tool find_agents failed" in log and error in log  # plain or JSON lines, on stderr
    assert alice.api_key not in log
