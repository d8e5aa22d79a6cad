"""Two stores on one PostgreSQL database, as two hub replicas: money and wake-ups behave as on one hub.

Needs PostgreSQL (AGENTCHAT_TEST_DB=postgresql://...); skipped, saying so, on SQLite-only runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from agentchat_mcp.errors import AgentChatError
from agentchat_mcp.server import AppContext, build_app_context
from agentchat_mcp.services.identity import Caller
from agentchat_mcp.settings import Settings
from agentchat_mcp.store import open_store
from agentchat_mcp.telemetry import Telemetry
from tests import support_db

pytestmark = [pytest.mark.anyio, pytest.mark.postgres_only]


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[AppContext, AppContext]]:
    """Two stores (two engines, two LISTEN connections) on one database, each with its own services."""
    settings = Settings(db=support_db.database_for(tmp_path / "r.db"), secret_file=tmp_path / "r.secret")
    async with open_store(settings.db) as one, open_store(settings.db) as two:
        yield build_app_context(settings, one, Telemetry()), build_app_context(settings, two, Telemetry())


async def caller(app: AppContext, role: str, name: str, **kw: object) -> Caller:
    _, key = await app.identity.register(role, name, **kw)  # type: ignore[arg-type]
    return await app.identity.authenticate(key)


async def test_twenty_concurrent_peeks_over_two_replicas_against_a_balance_for_three_hold_exactly_three(
    replicas: tuple[AppContext, AppContext],
) -> None:
    one, two = replicas
    alice = await caller(one, "agent", "alice", peek_price_cents=100, can_refuse=False)
    bob = await caller(one, "agent", "bob", peek_price_cents=100, can_refuse=False)
    conversations = [(await one.conversations.start(alice, [bob.id], f"t{i}", "hi"))[0].id for i in range(20)]
    user = await caller(one, "user", "uma")
    price = (await one.peeks.quote(user, conversations[0])).charged_cents
    await one.earnings.grant(user.id, 3 * price + price // 2)  # three fit, a fourth does not
    outcomes: list[bool] = []

    async def buy(i: int) -> None:
        app = (one, two)[i % 2]
        try:
            await app.peeks.request(user, conversations[i], max_price_cents=price)
        except AgentChatError as exc:
            assert "Not enough funds" in str(exc), exc
            outcomes.append(False)
        else:
            outcomes.append(True)

    async with anyio.create_task_group() as tasks:
        for i in range(20):
            tasks.start_soon(buy, i)
    assert sorted(outcomes) == [False] * 17 + [True] * 3
    lines = support_db.query(one.settings.db, "SELECT account, SUM(amount_cents) FROM ledger_lines GROUP BY account")
    assert sum(total for _, total in lines) == 0
    user_accounts = {account: total for account, total in lines if account.startswith(f"user:{user.id}:")}
    assert sum(user_accounts.values()) == price // 2  # what is left after three peeks
    assert min(user_accounts.values()) >= 0


async def test_a_message_sent_through_one_replica_wakes_a_waiter_on_the_other(
    replicas: tuple[AppContext, AppContext],
) -> None:
    one, two = replicas
    alice = await caller(one, "agent", "alice", peek_price_cents=100)
    bob = await caller(one, "agent", "bob", peek_price_cents=100)
    conversation, _ = await one.conversations.start(alice, [bob.id], "topic", "hello")
    woke: list[bool] = []
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(two.feed.run)  # replica two's poller: waits on LISTEN, not on a timer
        with anyio.fail_after(5):
            while two.feed._last_message_id == 0:  # it has read where the feed stands ("hello")
                await anyio.sleep(0.01)

        async def wait() -> None:
            woke.append(await two.feed.wait(frozenset({conversation.id}), timeout=1.0))

        tasks.start_soon(wait)
        await anyio.sleep(0)  # the waiter is registered before the send
        await one.conversations.send(alice, conversation.id, "are you there?")
        with anyio.fail_after(5):
            while not woke:
                await anyio.sleep(0.01)
        tasks.cancel_scope.cancel()
    assert woke == [True]


async def test_the_store_hears_every_commit_and_only_commits(replicas: tuple[AppContext, AppContext]) -> None:
    one, two = replicas
    before = two.store.data_version()
    with pytest.raises(RuntimeError):
        async with one.store.write() as conn:
            await conn.exec_driver_sql("SELECT 1")
            raise RuntimeError("rolled back")
    async with one.store.write() as conn:
        await conn.exec_driver_sql("SELECT 1")
    with anyio.fail_after(5):
        while two.store.data_version() == before:
            await two.store.wait_for_change(1.0)
    assert two.store.data_version() == before + 1  # the committed write; the rolled-back one sent nothing
