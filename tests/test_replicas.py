"""Three real hub processes on one store, secret file and Redis, each on its own port, with real MCP
clients on each: what a user of a scaled-out hub notices (docs/deploy.md). Also through the sample nginx
config in deploy/ (skipped without nginx), and the wake-up bench end to end.

The replicas are shared by the module's tests (starting three processes costs seconds on CI's two
cores); a test that kills or stops one starts it again on its port before it ends.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ResourceUpdatedNotification
from sqlalchemy import func, select

from agentchat_mcp.http import listen
from agentchat_mcp.settings import Settings
from agentchat_mcp.store import open_settings_store
from agentchat_mcp.store.tables import ledger_lines
from tests import support_db
from tests.conftest import PROJECT_ROOT, Account, error_text
from tests.support_http import bearer
from tests.support_replicas import (
    Nginx,
    Replica,
    Replicas,
    call,
    redis_problem,
    redis_url,
    running_nginx,
    running_replicas,
    stopwatch,
)

pytestmark = pytest.mark.anyio

LIMITED_TOOL = "find_agents"
LIMITED_TOOL_RATE = 6  # per minute and principal, shared by every replica through Redis
MISSING_CONVERSATION = "cnv_" + "0" * 20
PUBLIC_HOST = "chat.example.com"  # the sample configs' public name


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def replicas(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Replicas]:
    why_not = redis_problem(redis_url())
    if why_not is not None:
        pytest.skip(f"{why_not}: these tests share rate limits through Redis (AGENTCHAT_TEST_REDIS)")
    generous = "100000/minute"  # the scenarios are about sharing, not about the default limits
    env = {
        "AGENTCHAT_RATE_LIMIT_IP": generous,
        "AGENTCHAT_RATE_LIMIT_PRINCIPAL": generous,
        "AGENTCHAT_RATE_LIMIT_REQUEST_PEEK": generous,
        "AGENTCHAT_RATE_LIMIT_REGISTRATION": generous,
        "AGENTCHAT_RATE_LIMIT_TOOLS": json.dumps({LIMITED_TOOL: f"{LIMITED_TOOL_RATE}/minute"}),
        "AGENTCHAT_ANALYTICS_INTERVAL_SECONDS": "0",
    }
    args = ("--allowed-host", PUBLIC_HOST)  # as deploy/systemd/agentchat@.service, for the nginx tests
    async with running_replicas(tmp_path_factory.mktemp("replicas"), 3, env=env, args=args) as started:
        yield started


@pytest.fixture(scope="module")
async def nginx(replicas: Replicas, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Nginx]:
    """deploy/nginx/agentchat.conf in front of the replicas."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light): the sample config is not exercised")
    async with running_nginx(replicas, tmp_path_factory.mktemp("nginx")) as base:
        yield base


async def started_conversation(client: Client, others: list[Account], first: str | None = None) -> str:
    args: dict[str, Any] = {"participants": [o.id for o in others], "topic": "replicas"}
    if first is not None:
        args["first_message"] = first
    return str((await call(client, "start_conversation", **args))["conversation"]["id"])


async def texts(client: Client, conversation: str) -> list[tuple[int, str]]:
    """Every message of a conversation as (seq, text), read page by page."""
    found: list[tuple[int, str]] = []
    after = 0
    while True:
        page = await call(client, "read_messages", conversation_id=conversation, after_seq=after, limit=100)
        found += [(m["seq"], m["text"]) for m in page["messages"]]
        if not page["messages"]:
            return found
        after = page["messages"][-1]["seq"]


# --- conversations and wake-ups ---------------------------------------------------------------------


async def test_agents_on_replicas_1_and_3_converse_and_a_waiter_on_replica_2_wakes_on_a_send(
    replicas: Replicas,
) -> None:
    alice, bob, carol = (replicas.create("agent", n) for n in ("alice", "bob", "carol"))
    woke: list[dict[str, Any]] = []
    async with (
        replicas.client(1, alice) as a,
        replicas.client(2, carol) as c,
        replicas.client(3, bob) as b,
    ):
        conversation = await started_conversation(a, [bob, carol])
        assert (await call(c, "wait_for_messages", conversation_id=conversation, timeout_s=0.2))["timed_out"]

        async def wait() -> None:
            woke.append(await call(c, "wait_for_messages", conversation_id=conversation, timeout_s=15))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait)
            await anyio.sleep(0.5)  # carol's call is in flight (it would return at once if it came later)
            assert woke == []
            with stopwatch() as took:
                await call(a, "send_message", conversation_id=conversation, text="hello from replica 1")
                with anyio.fail_after(5):
                    while not woke:
                        await anyio.sleep(0.005)
        (result,) = woke
        assert not result["timed_out"] and result["conversations"][0]["conversation_id"] == conversation
        assert took[0] < 2.0  # the poll interval is 0.1 s; seconds would mean it woke by its timeout

        assert await texts(b, conversation) == [(1, "hello from replica 1")]
        await call(b, "send_message", conversation_id=conversation, text="hi alice, from replica 3")
        assert await texts(a, conversation) == [(1, "hello from replica 1"), (2, "hi alice, from replica 3")]
        assert await texts(c, conversation) == await texts(a, conversation)


# --- subscriptions, peek notifications and key release ----------------------------------------------


class Heard:
    """The resource URIs a client was told changed (notifications/resources/updated)."""

    def __init__(self) -> None:
        self.uris: list[str] = []

    async def __call__(self, message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            self.uris.append(str(message.params.uri))

    async def at_least(self, n: int, seconds: float = 5) -> None:
        with anyio.fail_after(seconds):
            while len(self.uris) < n:
                await anyio.sleep(0.01)


async def subscribed_client(
    replica: Replica, account: Account, mode: str, uri: str, heard: Heard, stack: Any
) -> Client:
    """A client on `replica` subscribed to `uri` the way its era does (resources/subscribe, or listen)."""
    http = await stack.enter_async_context(
        httpx2.AsyncClient(headers=bearer(account), timeout=httpx2.Timeout(30, read=300))
    )
    transport = streamable_http_client(f"{replica.base}/mcp", http_client=http)
    client = await stack.enter_async_context(
        Client(transport, mode=mode, message_handler=heard, cache=None)  # type: ignore[arg-type]
    )
    if mode == "legacy":
        await client.subscribe_resource(uri)
    else:
        await stack.enter_async_context(client.listen(resource_subscriptions=[uri]))
    return client


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_subscriber_on_replica_2_hears_of_a_message_sent_on_replica_1(replicas: Replicas, mode: str) -> None:
    alice, bob = replicas.create("agent", "alice"), replicas.create("agent", "bob")
    async with replicas.client(1, alice) as a, AsyncExitStack() as stack:
        conversation = await started_conversation(a, [bob])
        uri = f"agentchat://conversations/{conversation}"
        heard = Heard()
        await subscribed_client(replicas[2], bob, mode, uri, heard, stack)
        for n in (1, 2):
            await call(a, "send_message", conversation_id=conversation, text=f"news {n}")
            await heard.at_least(n)
    assert heard.uris == [uri, uri]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("listening_on", [1, 2], ids=["same", "other"])
async def test_a_peek_request_made_on_replica_1_is_heard_by_a_subscribed_agent(
    replicas: Replicas, mode: str, listening_on: int
) -> None:
    alice, bob = replicas.create("agent", "alice"), replicas.create("agent", "bob")  # both may refuse
    user = replicas.create("user", "uma")
    replicas.grant(user, "5.00")
    async with replicas.client(3, alice) as a, replicas.client(1, user) as u, AsyncExitStack() as stack:
        conversation = await started_conversation(a, [bob])  # no message: the peek request is the only news
        uri = f"agentchat://conversations/{conversation}"
        heard = Heard()
        await subscribed_client(replicas[listening_on], bob, mode, uri, heard, stack)
        peek = await call(u, "request_peek", conversation_id=conversation, max_price="3.00")
        assert peek["status"] == "awaiting_consent"
        await heard.at_least(1, seconds=2)  # on the same replica it takes milliseconds
    assert heard.uris == [uri]


async def test_a_peek_granted_on_one_replica_releases_keys_on_another_and_the_user_reads_on_a_third(
    replicas: Replicas,
) -> None:
    alice = replicas.create("agent", "alice", "--no-refuse")
    bob = replicas.create("agent", "bob", "--no-refuse")
    user = replicas.create("user", "uma")
    replicas.grant(user, "5.00")
    async with (
        replicas.client(1, alice) as a,
        replicas.client(1, user) as u1,
        replicas.client(2, user) as u2,
        replicas.client(3, bob) as b,
    ):
        conversation = await started_conversation(a, [bob], first="m1")
        # Replica 3 now remembers "nothing to release for bob" (peeks.on_request), until the store changes.
        await call(b, "check_inbox")
        peek = await call(u1, "request_peek", conversation_id=conversation, max_price="2.00")
        assert peek["status"] == "active" and not peek["keys_released"]
        page = await call(u2, "read_messages", conversation_id=conversation)
        assert page["messages"][0]["text"] is None  # no key yet: only a participant's request releases it
        await call(b, "check_inbox")  # bob's next request, on replica 3, wraps the key for the peeker
        page = await call(u2, "read_messages", conversation_id=conversation)
        assert [m["text"] for m in page["messages"]] == ["m1"]
        assert (await call(u1, "get_peek", peek_id=peek["id"]))["keys_released"]


# --- money under concurrency across replicas ------------------------------------------------------------


async def ledger_sums(replicas: Replicas) -> tuple[int, int]:
    """(sum of every ledger line, number of user accounts below zero), read from the store by an auditor."""
    settings = Settings(db=replicas.database, secret_file=replicas.folder / "agentchat.secret")
    async with open_settings_store(settings, upgrade=False) as store, store.read() as conn:
        total = (await conn.execute(select(func.coalesce(func.sum(ledger_lines.c.amount_cents), 0)))).scalar_one()
        per_user = (
            select(ledger_lines.c.account, func.sum(ledger_lines.c.amount_cents).label("s"))
            .where(ledger_lines.c.account.like("user:%"))
            .group_by(ledger_lines.c.account)
            .subquery()
        )
        negative = (await conn.execute(select(func.count()).select_from(per_user).where(per_user.c.s < 0))).scalar_one()
    return int(total), int(negative)


async def test_20_concurrent_peeks_over_three_replicas_against_a_balance_for_3_hold_exactly_3(
    replicas: Replicas,
) -> None:
    agents = [replicas.create("agent", f"a{i}") for i in range(2)]  # 1.00 each, consent needed: a hold
    user = replicas.create("user", "uma")
    replicas.grant(user, "6.50")  # 2.00 a peek: three fit, a fourth does not
    async with replicas.client(1, agents[0]) as a:
        conversations = [await started_conversation(a, [agents[1]]) for _ in range(20)]
    outcomes: list[bool] = []
    async with replicas.client(1, user) as u1, replicas.client(2, user) as u2, replicas.client(3, user) as u3:
        clients = (u1, u2, u3)

        async def one(i: int) -> None:
            result = await clients[i % 3].call_tool(
                "request_peek", {"conversation_id": conversations[i], "max_price": "2.00"}
            )
            outcomes.append(not result.is_error)
            if result.is_error:
                assert "Not enough funds" in error_text(result)

        async with anyio.create_task_group() as tasks:
            for i in range(20):
                tasks.start_soon(one, i)
        balances = [await call(c, "get_balance") for c in clients]
    assert sum(outcomes) == 3
    assert {(b["credit"], b["held"]) for b in balances} == {("0.50", "6.00")}  # every replica sees the same
    assert await ledger_sums(replicas) == (0, 0)


# --- rate limits and flags ------------------------------------------------------------------------------


async def test_a_rate_limit_is_one_limit_across_replicas(replicas: Replicas) -> None:
    dave = replicas.create("agent", "dave")
    admitted: list[int] = []
    refused: list[str] = []
    async with replicas.client(1, dave) as d1, replicas.client(2, dave) as d2, replicas.client(3, dave) as d3:
        for n, client in zip(range(3 * LIMITED_TOOL_RATE), itertools.cycle((d1, d2, d3)), strict=False):
            result = await client.call_tool(LIMITED_TOOL, {"query": "x"})
            if result.is_error:
                refused.append(error_text(result))
            else:
                admitted.append(n)
    # one shared window: each replica alone would have admitted LIMITED_TOOL_RATE (3x as many)
    assert admitted == list(range(LIMITED_TOOL_RATE))
    assert len(refused) == 2 * LIMITED_TOOL_RATE and all("retry_after_seconds=" in r for r in refused)


async def paused_within(client: Client, seconds: float) -> float:
    """Call request_peek (on a conversation that does not exist: no money moves) until the peeks kill
    switch refuses it; how long that took."""
    with stopwatch() as took:
        with anyio.fail_after(seconds):
            while True:
                result = await client.call_tool(
                    "request_peek", {"conversation_id": MISSING_CONVERSATION, "max_price": "1.00"}
                )
                text = error_text(result)
                if "paused" in text:
                    break
                assert "No conversation" in text
                await anyio.sleep(0.05)
    return took[0]


async def test_a_kill_switch_flipped_through_one_replica_or_the_cli_holds_on_the_others(replicas: Replicas) -> None:
    admin = replicas.create("admin", "ops")
    user = replicas.create("user", "uma")
    async with replicas.client(1, admin) as a, replicas.client(2, user) as u2, replicas.client(3, user) as u3:
        try:
            await call(a, "set_feature_flag", flag="peeks", value=False, reason="drill")
            for other in (u2, u3):
                assert await paused_within(other, 3) < 2  # flags are polled every 0.5 s
            done = replicas.cli("flags", "set", "peeks", "on", "--reason", "drill over")
            assert done.returncode == 0, done.stderr
            with anyio.fail_after(3):
                for other in (u2, u3):
                    while "paused" in (
                        text := error_text(
                            await other.call_tool(
                                "request_peek", {"conversation_id": MISSING_CONVERSATION, "max_price": "1.00"}
                            )
                        )
                    ):
                        await anyio.sleep(0.05)
                    assert "No conversation" in text
            done = replicas.cli("flags", "set", "peeks", "off", "--reason", "cli drill")
            assert done.returncode == 0, done.stderr
            for other in (u2, u3):
                assert await paused_within(other, 3) < 2
        finally:
            assert replicas.cli("flags", "set", "peeks", "on").returncode == 0


# --- failures: kill -9, sessions of the handshake era, rolling restarts --------------------------------------


async def test_kill_9_of_a_replica_during_a_send_burst_loses_no_acknowledged_message_and_doubles_none(
    replicas: Replicas,
) -> None:
    reader = replicas.create("agent", "reader")
    senders = [replicas.create("agent", f"sender{i}") for i in range(6)]
    async with replicas.client(1, senders[0]) as s:
        conversation = await started_conversation(s, [reader, *senders[1:]])
    acknowledged: list[tuple[int, str]] = []
    failed_on: list[int] = []
    victim = replicas[2]

    async def burst(i: int, sender: Account) -> None:
        index = 1 + i % 3  # two senders on each replica
        try:
            async with replicas.client(index, sender) as c:
                for n in itertools.count():
                    text = f"{sender.name} #{n}"
                    sent = await call(c, "send_message", conversation_id=conversation, text=text)
                    acknowledged.append((sent["seq"], text))
                    if n >= 40 and index != 2:
                        return
        except Exception:  # the connection to the killed replica breaks: those sends are not acknowledged
            failed_on.append(index)

    async with anyio.create_task_group() as tasks:
        for i, sender in enumerate(senders):
            tasks.start_soon(burst, i, sender)
        with anyio.fail_after(30):
            while len(acknowledged) < 40:
                await anyio.sleep(0.01)
        replicas.kill(victim)
    try:
        assert set(failed_on) == {2}  # only the killed replica's senders saw errors
        async with replicas.client(3, reader) as r:
            stored = await texts(r, conversation)
        seqs = [seq for seq, _ in stored]
        assert seqs == list(range(1, len(stored) + 1))  # no gap, nothing twice
        assert len({text for _, text in stored}) == len(stored)
        assert set(acknowledged) <= set(stored)  # every acknowledged send, with the seq it was told
    finally:
        await replicas.restart(victim)


class Balancer(httpx2.AsyncBaseTransport):
    """A load balancer in the client's HTTP stack. `sticky`: as nginx's `hash $http_authorization consistent`
    (docs/deploy.md), every request with the same Authorization header goes to the same live replica,
    the session-opening one included (rendezvous hashing: a replica going away moves only its own
    clients). Else round-robin. A replica that refuses the connection is skipped, as
    `proxy_next_upstream error` does: the request never reached it, so passing it on is safe."""

    def __init__(self, replicas: Replicas, *, sticky: bool, prefer: int | None = None) -> None:
        self.replicas = replicas
        self.sticky = sticky
        self.prefer = prefer  # a weight: this replica first while it is up (as nginx's `backup` servers)
        self.inner = httpx2.AsyncHTTPTransport()
        self.turn = itertools.count()
        self.served_by: list[int] = []
        self.tool_calls: list[int] = []  # the replica of each tools/call (a Client also lists tools on its own)

    def order(self, request: httpx2.Request) -> list[Replica]:
        live = [r for r in self.replicas.members if r.alive and r.in_rotation]
        if self.sticky:
            key = request.headers.get("authorization", "")

            def weight(r: Replica) -> str:
                return hashlib.sha256(f"{key}|{r.index}".encode()).hexdigest()

            return sorted(live, key=weight, reverse=True)
        if self.prefer is not None:
            return sorted(live, key=lambda r: (r.index - self.prefer) % len(self.replicas.members))
        start = next(self.turn)
        return [live[(start + k) % len(live)] for k in range(len(live))]

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        error: Exception | None = None
        for replica in self.order(request):
            request.url = request.url.copy_with(port=replica.port)
            request.headers["host"] = f"127.0.0.1:{replica.port}"
            try:
                response = await self.inner.handle_async_request(request)
            except httpx2.ConnectError as exc:
                error = exc
                continue
            self.served_by.append(replica.index)
            if b'"method":"tools/call"' in request.content:
                self.tool_calls.append(replica.index)
            return response
        assert error is not None
        raise error

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def balanced(replicas: Replicas, account: Account, balancer: Balancer, mode: str) -> AsyncIterator[Client]:
    """A real mcp Client whose requests go through `balancer`."""
    async with httpx2.AsyncClient(
        headers=bearer(account), timeout=httpx2.Timeout(30, read=300), transport=balancer
    ) as http:
        transport = streamable_http_client(f"{replicas[1].base}/mcp", http_client=http)
        async with Client(transport, mode=mode, cache=None) as client:  # type: ignore[arg-type]
            yield client


async def test_a_handshake_session_is_known_only_to_its_replica(replicas: Replicas) -> None:
    alice = replicas.create("agent", "alice")
    async with replicas.client(1, alice, mode="legacy") as a:
        await call(a, "whoami")
        async with httpx2.AsyncClient(headers=bearer(alice)) as http:
            opened = await http.post(
                f"{replicas[1].base}/mcp",
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "probe", "version": "0"},
                    },
                },
                headers={"accept": "application/json, text/event-stream"},
            )
            session = opened.headers["mcp-session-id"]
            ask = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
            headers = {
                "accept": "application/json, text/event-stream",
                "mcp-session-id": session,
                "mcp-protocol-version": "2025-11-25",
            }
            elsewhere = await http.post(f"{replicas[2].base}/mcp", json=ask, headers=headers)
            home = await http.post(f"{replicas[1].base}/mcp", json=ask, headers=headers)
    assert (elsewhere.status_code, elsewhere.json()["error"]["message"]) == (404, "Session not found")
    assert home.status_code == 200


async def test_when_the_replica_holding_a_session_dies_the_client_is_told_and_a_new_session_loses_nothing(
    replicas: Replicas,
) -> None:
    alice, bob = replicas.create("agent", "alice"), replicas.create("agent", "bob")
    balancer = Balancer(replicas, sticky=True)
    async with replicas.client(3, bob) as b:
        conversation = await started_conversation(b, [alice], first="before the crash")
    async with balanced(replicas, alice, balancer, "legacy") as a:
        for n in range(3):  # the session's calls all land on its replica
            await call(a, "send_message", conversation_id=conversation, text=f"alice {n}")
        home = replicas[balancer.served_by[-1]]
        assert len(set(balancer.served_by)) == 1
        replicas.kill(home)
        try:
            with pytest.raises(MCPError) as gone:
                await a.call_tool("read_messages", {"conversation_id": conversation})
            assert gone.value.error.message == "Session not found"  # the 404 of the replica it now reaches
            async with balanced(replicas, alice, balancer, "legacy") as again:  # re-initialise
                stored = await texts(again, conversation)
                assert balancer.served_by[-1] != home.index
        finally:
            await replicas.restart(home)
    assert stored == [(1, "before the crash"), (2, "alice 0"), (3, "alice 1"), (4, "alice 2")]


async def test_a_replica_stopped_with_sigterm_finishes_its_calls_while_the_others_take_the_new_ones(
    replicas: Replicas,
) -> None:
    """SIGTERM replica 2 while calls are in flight through all three (2026-07-28 era: per request, any
    replica), right after the balancer stopped sending it new ones: the long call it has finishes (the hub
    drains), nothing fails, and it comes back. (The whole rotation runs through nginx below.)"""
    alice, bob = replicas.create("agent", "alice"), replicas.create("agent", "bob")
    balancer = Balancer(replicas, sticky=False)
    failures: list[str] = []
    sent: list[int] = []
    waits: list[tuple[int, float, float]] = []  # (replica, started, ended) of each wait that timed out as asked
    terminated: dict[int, float] = {}
    stop = anyio.Event()
    async with replicas.client(1, bob) as b:
        busy = await started_conversation(b, [alice])
        quiet = await started_conversation(b, [alice])  # nothing arrives: each wait lasts its whole timeout
    async with balanced(replicas, alice, balancer, "auto") as a:

        async def sender() -> None:
            while not stop.is_set():
                try:
                    sent.append((await call(a, "send_message", conversation_id=busy, text="x"))["seq"])
                except Exception as exc:
                    failures.append(repr(exc))

        async def waiter(home: int) -> None:  # long calls on `home` while it is up: in flight when its SIGTERM lands
            own = Balancer(replicas, sticky=False, prefer=home)  # one call at a time: its last choice served it
            async with balanced(replicas, bob, own, "auto") as b:
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        got = await call(b, "wait_for_messages", conversation_id=quiet, timeout_s=0.7)
                    except Exception as exc:
                        failures.append(repr(exc))
                        continue
                    assert got["timed_out"]
                    waits.append((own.tool_calls[-1], started, time.monotonic()))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sender)
            tasks.start_soon(sender)
            for replica in replicas.members:
                tasks.start_soon(waiter, replica.index)
            with anyio.fail_after(20):  # every waiter has its connection and is calling its replica
                while {r for r, _, _ in waits} != {1, 2, 3}:
                    await anyio.sleep(0.05)
            for replica in (replicas[2],):
                await anyio.sleep(0.3)
                replica.in_rotation = False  # the balancer sends it nothing new (docs/deploy.md: rolling restarts)
                replicas.terminate(replica)
                terminated[replica.index] = time.monotonic()
                assert replica.process is not None
                with anyio.fail_after(20):
                    while replica.process.poll() is None:
                        await anyio.sleep(0.05)
                # uvicorn re-raises the signal once it has drained: "terminated by SIGTERM", a clean stop
                assert replica.process.returncode == -signal.SIGTERM, replica.log.read_text()[-2000:]
                await replicas.restart(replica)
                replica.in_rotation = True
            await anyio.sleep(0.5)
            stop.set()
    assert failures == []
    assert len(sent) > 20 and sorted(sent) == list(range(1, len(sent) + 1))
    for index, at in terminated.items():  # a wait was in flight on the replica when its SIGTERM came, and finished
        assert any(r == index and started < at < ended for r, started, ended in waits), (index, waits)


# --- through the sample nginx config (deploy/nginx/agentchat.conf) --------------------------------------------


@asynccontextmanager
async def via_nginx(
    nginx: Nginx, account: Account | None, mode: str = "auto", *, keep_alive: bool = True
) -> AsyncIterator[Client]:
    """A real mcp Client talking to the hub through nginx. `keep_alive=False`: a new connection per request."""
    limits = httpx2.Limits() if keep_alive else httpx2.Limits(max_keepalive_connections=0)
    headers = {**bearer(account), "Host": PUBLIC_HOST}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300), limits=limits) as http:
        transport = streamable_http_client(f"{nginx.base}/mcp", http_client=http)
        async with Client(transport, mode=mode, cache=None) as client:  # type: ignore[arg-type]
            yield client


async def test_through_the_sample_nginx_config_a_handshake_session_sticks_and_its_subscription_streams(
    replicas: Replicas, nginx: Nginx
) -> None:
    alice, bob = replicas.create("agent", "alice"), replicas.create("agent", "bob")
    heard = Heard()
    async with via_nginx(nginx, bob, "legacy") as b:
        conversation = await started_conversation(b, [alice])
        for _ in range(6):  # every call of the session finds it: a replica that did not open it answers 404
            await call(b, "check_inbox")
    async with via_nginx(nginx, None, "legacy") as anonymous:  # no key yet: registers inside its session
        carol = await call(anonymous, "register_agent", name="carol", peek_price="1.00")
        for _ in range(6):  # and acts as carol for the rest of the session, wherever it lives
            assert (await call(anonymous, "whoami"))["id"] == carol["id"]
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers={**bearer(bob), "Host": PUBLIC_HOST}, timeout=httpx2.Timeout(30, read=300))
        )
        listener = await stack.enter_async_context(
            Client(
                streamable_http_client(f"{nginx.base}/mcp", http_client=http),
                mode="legacy",
                message_handler=heard,
                cache=None,
            )  # type: ignore[arg-type]
        )
        await listener.subscribe_resource(f"agentchat://conversations/{conversation}")
        for n, replica in enumerate((1, 2, 3), start=1):  # sent on every replica; heard through nginx's stream
            async with replicas.client(replica, alice) as a:
                await call(a, "send_message", conversation_id=conversation, text=f"via {replica}")
            await heard.at_least(n)


async def test_through_the_sample_nginx_config_a_rolling_restart_fails_no_call(
    replicas: Replicas, nginx: Nginx
) -> None:
    """The rolling restart of docs/deploy.md while agents call through nginx: each replica in turn is marked
    `down` (reload), stopped with SIGTERM (it finishes the calls it has), started, and put back.

    The agents open a connection per request: an nginx reload closes idle client keep-alive connections, and
    a request racing that close fails in any nginx deployment, whatever is behind it (docs/deploy.md)."""
    agents = [replicas.create("agent", f"agent{i}") for i in range(6)]  # six keys: spread over the replicas
    failures: list[str] = []
    done: list[int] = []
    stop = anyio.Event()
    async with replicas.client(1, agents[0]) as a:
        conversation = await started_conversation(a, agents[1:])

    async def agent(account: Account) -> None:
        async with via_nginx(nginx, account, keep_alive=False) as c:
            while not stop.is_set():
                try:
                    await call(c, "send_message", conversation_id=conversation, text=account.name)
                    await call(c, "wait_for_messages", conversation_id=conversation, timeout_s=0.3)
                    done.append(1)
                except Exception as exc:
                    failures.append(repr(exc))

    async with anyio.create_task_group() as tasks:
        for account in agents:
            tasks.start_soon(agent, account)
        for replica in replicas.members:
            await nginx.rotate(replica, in_rotation=False)
            replicas.terminate(replica)
            assert replica.process is not None
            with anyio.fail_after(30):
                while replica.process.poll() is None:
                    await anyio.sleep(0.05)
            await replicas.restart(replica)
            await nginx.rotate(replica, in_rotation=True)
        stop.set()
    assert failures == []
    assert len(done) > 30


# --- bench/replicas.py ---------------------------------------------------------------------------------------


async def test_the_wake_up_bench_prints_both_legs_and_its_verdict() -> None:
    """By default on a temp SQLite file, even when it inherits a PostgreSQL test run's AGENTCHAT_TEST_DB
    (it used to make a PostgreSQL database there, which nothing dropped)."""
    prefix = f"{support_db.PREFIX}bench_{os.getpid()}_"
    env = {**os.environ, "AGENTCHAT_TEST_DB_PREFIX": prefix}
    done = await anyio.run_process(
        [sys.executable, "bench/replicas.py", "--n", "3"], cwd=PROJECT_ROOT, check=False, env=env
    )
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    for leg, route in (("cross", "1 -> 2"), ("same", "1 -> 1")):
        assert re.search(rf"{leg}\s+replica {route}\s+n=3\s+p50 -?\d+\.\d ms\s+p95 -?\d+\.\d ms", out), out
    assert re.search(r"cross-replica wake-up p95 \d+\.\d ms \(target <= 50 ms: (met|NOT met)\)", out), out
    figures = json.loads(out.splitlines()[-1])
    assert figures["store"] == "sqlite" and figures["change_poll_seconds"] == 0.1
    assert [leg["leg"] for leg in figures["legs"]] == ["cross", "same"]
    if support_db.ON_POSTGRES:
        assert support_db.database_names(prefix) == []


async def test_an_api_key_rotated_through_one_replica_stops_working_at_once_on_the_others(replicas: Replicas) -> None:
    bob = replicas.create("agent", "bob")
    async with replicas.client(2, bob) as old:
        await call(old, "whoami")  # replica 2 has authenticated this key (and keeps the answer for 10 s)
    async with replicas.client(1, bob) as b1:
        await b1.list_tools()  # the Client checks a result against the listing: list while the key works
        new_key = (await call(b1, "rotate_api_key"))["api_key"]
    async with httpx2.AsyncClient() as http:  # the bearer check in front of /mcp, with the old key
        refused = await http.post(
            f"{replicas[2].base}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
            headers={**bearer(bob), "accept": "application/json, text/event-stream"},
        )
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"
    async with replicas.client(2, Account(bob.id, "agent", "bob", new_key)) as new:
        assert (await call(new, "whoami"))["id"] == bob.id


# --- the listening socket of `serve` -------------------------------------------------------------------------


def test_connections_accepted_by_serve_s_socket_send_without_waiting_for_delayed_acks() -> None:
    with listen("127.0.0.1", 0) as server, socket.create_connection(server.getsockname()) as client:
        accepted, _ = server.accept()
        with client, accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_calls_on_a_kept_alive_connection_answer_in_milliseconds(replicas: Replicas) -> None:
    """With Nagle on, each answer after a connection's first waited for the client's delayed ACK (40 ms
    at least, on Linux): a floor under every call, and under every cross-replica wake-up."""
    alice = replicas.create("agent", "alice")
    took: list[float] = []
    async with replicas.client(1, alice) as a:
        for _ in range(10):
            with stopwatch() as one:
                await call(a, "whoami")
            took.append(one[0])
    assert sorted(took)[len(took) // 2] < 0.03, took


# --- deploy/rolling-restart.sh ---------------------------------------------------------------------------------


def test_the_rolling_restart_script_takes_one_server_out_of_the_sample_config_and_puts_it_back(tmp_path: Path) -> None:
    sample = (PROJECT_ROOT / "deploy" / "nginx" / "agentchat.conf").read_text()
    conf = tmp_path / "agentchat.conf"
    conf.write_text(sample)
    script = PROJECT_ROOT / "deploy" / "rolling-restart.sh"

    def rotate(port: int, way: str) -> str:
        # The script's own rotate(), with nginx and sleep stubbed: only its edit of the config is under test.
        shell = (
            f'nginx() {{ :; }}; sleep() {{ :; }}; source <(sed -n "/^rotate()/,/^}}/p" {script}); rotate {port} {way}'
        )
        subprocess.run(["bash", "-c", shell], env={**os.environ, "NGINX_CONF": str(conf)}, check=True)
        return conf.read_text()

    out = rotate(8802, "out")
    changed = [(a, b) for a, b in zip(sample.splitlines(), out.splitlines(), strict=True) if a != b]
    assert changed == [
        (
            "    server 127.0.0.1:8802 max_fails=1 fail_timeout=5s;",
            "    server 127.0.0.1:8802 max_fails=1 fail_timeout=5s down;",
        )
    ]
    assert rotate(8802, "out") == out  # twice out is out
    assert rotate(8802, "in") == sample
