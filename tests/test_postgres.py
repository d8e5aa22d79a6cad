"""Two stores on one PostgreSQL database, as two hub replicas: money and wake-ups behave as on one hub.

Those need PostgreSQL (AGENTCHAT_TEST_DB=postgresql://...) and skip, saying so, on SQLite-only runs;
how a postgresql:// AGENTCHAT_DB is read and refused runs everywhere.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import literal, select

from agentchat_mcp.errors import AgentChatError
from agentchat_mcp.server import AppContext, build_app_context
from agentchat_mcp.services.identity import Caller
from agentchat_mcp.settings import PostgresUrl, Settings
from agentchat_mcp.store import open_store
from agentchat_mcp.telemetry import Telemetry
from tests import support_db
from tests.conftest import run_cli

pytestmark = pytest.mark.anyio
HIDDEN = "hunter2-not-shown"


def test_a_postgresql_url_names_postgresql_and_anything_else_stays_an_sqlite_path(tmp_path: Path) -> None:
    for scheme in ("postgresql", "postgresql+asyncpg", "postgres"):
        settings = Settings(db=f"{scheme}://app:{HIDDEN}@db.internal:5432/agentchat", secret_file=tmp_path / "s")
        assert isinstance(settings.postgres, PostgresUrl) and settings.postgres.secret.endswith("/agentchat")
        shown = f"{settings.db} {settings.db!r} {settings!r} {settings.model_dump()}"
        assert HIDDEN not in shown and "app:***@db.internal:5432" in shown
    sqlite = Settings(db=tmp_path / "agentchat.db")
    assert sqlite.postgres is None and sqlite.sqlite_path == tmp_path / "agentchat.db"
    assert sqlite.resolved_secret_file() == tmp_path / "agentchat.secret"


def test_postgresql_without_a_shared_secret_file_stops_in_one_line(tmp_path: Path) -> None:
    env = {"AGENTCHAT_DB": f"postgresql://app:{HIDDEN}@127.0.0.1:1/agentchat", "PATH": os.environ["PATH"]}
    done = run_cli("db", "status", env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: a PostgreSQL database needs AGENTCHAT_SECRET_FILE: set it to one server secret file that every "
        "replica shares (API-key hashes depend on it; created 0600 on first use, then copy it to each host)"
    ]


def test_an_unreachable_postgresql_and_sqlite_only_chores_stop_in_one_line_without_the_password(
    tmp_path: Path,
) -> None:
    env = {
        "AGENTCHAT_DB": f"postgresql://app:{HIDDEN}@127.0.0.1:1/agentchat",  # nothing listens on port 1
        "AGENTCHAT_SECRET_FILE": str(tmp_path / "s"),
        "PATH": os.environ["PATH"],
    }
    down = run_cli("db", "status", env=env)
    assert down.returncode == 2 and len(down.stderr.splitlines()) == 1 and HIDDEN not in down.stderr
    assert down.stderr.startswith(
        "error: cannot use the PostgreSQL database postgresql://app:***@127.0.0.1:1/agentchat ("
    )
    for chore in (["db", "backup", str(tmp_path / "b.db")], ["db", "verify", str(tmp_path / "b.db")]):
        done = run_cli(*chore, env=env)
        assert done.returncode == 2 and done.stderr.splitlines() == [
            f"error: db {chore[1]} works on SQLite files only: use pg_dump / pg_restore (or your provider's "
            "snapshots) for PostgreSQL"
        ]


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[AppContext, AppContext]]:
    """Two stores (two engines, two LISTEN connections) on one database, each with its own services."""
    settings = Settings(db=support_db.database_for(tmp_path / "r.db"), secret_file=tmp_path / "r.secret")
    async with open_store(settings.db) as one, open_store(settings.db) as two:
        yield build_app_context(settings, one, Telemetry()), build_app_context(settings, two, Telemetry())


async def caller(app: AppContext, role: str, name: str, **kw: object) -> Caller:
    _, key = await app.identity.register(role, name, **kw)  # type: ignore[arg-type]
    return await app.identity.authenticate(key)


@pytest.mark.postgres_only
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


@pytest.mark.postgres_only
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


@pytest.mark.postgres_only
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


def test_a_postgresql_url_without_a_database_or_with_a_bad_port_is_refused_in_one_line(tmp_path: Path) -> None:
    for url, why in (
        ("postgresql://app@127.0.0.1/", "a postgresql:// URL must name its database"),
        (f"postgresql://app:{HIDDEN}@127.0.0.1:port/agentchat", "the port of a postgresql:// URL must be a number"),
    ):
        done = run_cli("db", "status", env={"AGENTCHAT_DB": url, "AGENTCHAT_SECRET_FILE": str(tmp_path / "s")})
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith(f"error: AGENTCHAT_DB is not valid: {why}") and HIDDEN not in done.stderr


@pytest.mark.postgres_only
async def test_the_migrations_build_on_postgresql_exactly_the_tables_the_code_queries(
    replicas: tuple[AppContext, AppContext],
) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from agentchat_mcp.store.tables import metadata

    def differences(conn: Any) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return [
            d
            for d in compare_metadata(context, metadata)
            if not (d[0] == "remove_table" and d[1].name == "alembic_version")
        ]

    async with replicas[0].store.read() as conn:
        assert await conn.run_sync(differences) == []
    types = support_db.query(
        replicas[0].settings.db,
        "SELECT DISTINCT data_type FROM information_schema.columns WHERE table_schema = 'public' "
        "AND column_name IN ('sealed', 'wrapped_key', 'can_refuse', 'created_at')",
    )
    assert sorted(t for (t,) in types) == ["boolean", "bytea", "character varying"]  # times are ISO text, as on SQLite


@pytest.mark.postgres_only
async def test_a_dropped_listen_connection_reports_a_change_then_listens_again(
    replicas: tuple[AppContext, AppContext],
) -> None:
    one, two = replicas
    dropped = two.store._listener  # type: ignore[attr-defined]
    before = two.store.data_version()
    support_db.query(one.settings.db, "SELECT pg_terminate_backend(?)", dropped.get_server_pid())
    with anyio.fail_after(5):  # the loss itself counts as a change: pollers rescan what they may have missed
        while two.store.data_version() == before:
            await two.store.wait_for_change(0.5)
    await two.store.wait_for_change(0.01)  # the next wait listens again (and reports a change once more)
    listening = two.store.data_version()
    async with one.store.write() as conn:
        await conn.exec_driver_sql("SELECT 1")
    with anyio.fail_after(5):
        while two.store.data_version() == listening:
            await two.store.wait_for_change(1.0)
    assert two.store._listener is not dropped and not two.store._listener.is_closed()  # type: ignore[attr-defined]


@pytest.mark.postgres_only
async def test_a_listen_connection_that_stops_answering_is_replaced_and_counts_as_a_change(
    replicas: tuple[AppContext, AppContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentchat_mcp.store import postgres

    _, two = replicas
    silent = two.store._listener  # type: ignore[attr-defined]

    class Unanswering:  # the connection as a dead link leaves it: open to us, and no reply ever comes
        def __getattr__(self, name: str) -> Any:
            return getattr(silent, name)

        async def execute(self, *_: object, **__: object) -> None:
            raise TimeoutError  # what asyncpg raises when the ping gets no reply in time

    two.store._listener = Unanswering()  # type: ignore[attr-defined]
    monkeypatch.setattr(postgres, "PING_SECONDS", 0.0)  # check at the first quiet wait
    before = two.store.data_version()
    await two.store.wait_for_change(0.05)  # quiet: the ping finds the line dead
    assert two.store.data_version() > before and silent.is_closed()
    await two.store.wait_for_change(0.05)  # and the next wait listens again
    assert two.store._listener is not silent and not two.store._listener.is_closed()  # type: ignore[attr-defined]


@pytest.mark.postgres_only
async def test_the_change_feed_outlives_a_database_that_drops_every_connection(
    replicas: tuple[AppContext, AppContext],
) -> None:
    """As after a PostgreSQL restart: every pooled and LISTEN connection of replica two dies under it. Its
    feed logs the failures and goes on (before, the first failed scan ended the loop, and with it the
    hub's lifespan: every later request failed), and the next message still wakes its waiter."""
    one, two = replicas
    alice = await caller(one, "agent", "alice", peek_price_cents=100)
    bob = await caller(one, "agent", "bob", peek_price_cents=100)
    conversation, _ = await one.conversations.start(alice, [bob.id], "topic", "hello")
    woke: list[bool] = []
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(two.feed.run)
        with anyio.fail_after(5):
            while two.feed._last_message_id == 0:
                await anyio.sleep(0.01)
        async with two.store.read() as conn:  # replica two's pooled connection, kept for its next use
            await conn.exec_driver_sql("SELECT 1")
        listener_pid = two.store._listener.get_server_pid()  # type: ignore[attr-defined]
        pooled = support_db.query(
            one.settings.db,
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        assert listener_pid in {pid for (pid,) in pooled}
        for (pid,) in pooled:  # one's connections too: the whole database restarts
            support_db.query(one.settings.db, "SELECT pg_terminate_backend(?)", pid)

        async def wait() -> None:
            woke.append(await two.feed.wait(frozenset({conversation.id}), timeout=10.0))

        tasks.start_soon(wait)
        await anyio.sleep(0.5)  # the feed meets the dead connections first
        for _attempt in range(3):  # replica one's own stale connections fail once each, as clients would see
            try:
                await one.conversations.send(alice, conversation.id, "still there?")
                break
            except Exception:
                await anyio.sleep(0.1)
        with anyio.fail_after(10):
            while not woke:
                await anyio.sleep(0.05)
        tasks.cancel_scope.cancel()
    assert woke == [True]


@pytest.mark.postgres_only
async def test_a_store_with_no_free_connection_refuses_as_busy_with_the_wait_not_an_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spike that keeps every pooled connection busy past the pool's timeout: the next unit of work is
    refused as Busy (retryable, nothing done), which tools and the HTTP layer pass on with the wait."""
    from agentchat_mcp.errors import Busy
    from agentchat_mcp.store import postgres

    monkeypatch.setattr(postgres, "POOL_TIMEOUT_SECONDS", 0.2)
    settings = Settings(db=support_db.database_for(tmp_path / "b.db"), secret_file=tmp_path / "b.secret")
    async with open_store(settings.db, pool=(1, 0)) as store, store.read() as held:
        await held.exec_driver_sql("SELECT 1")
        for attempt in (store.read(), store.write()):
            with pytest.raises(Busy) as refused:
                async with attempt:
                    pass
            assert refused.value.retry_after_seconds > 0 and "nothing was done" in str(refused.value)
        with pytest.raises(Busy):
            await store.quick_first(select(literal(1)), {})
