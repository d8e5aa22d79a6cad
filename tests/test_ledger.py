"""The ledger on a real SQLite file: balanced entries, idempotency, no negative user balance."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentchat_mcp.errors import Conflict, InsufficientFunds
from agentchat_mcp.services.ledger import (
    EXTERNAL_CLEARING,
    PLATFORM_REVENUE,
    Ledger,
    Line,
    agent_pending,
    user_credit,
    user_held,
)
from agentchat_mcp.store import open_store
from tests.support_db import database_for

pytestmark = pytest.mark.anyio


async def test_a_grant_then_a_hold_moves_exact_cents_and_the_ledger_sums_to_zero(tmp_path: Path) -> None:
    async with open_store(database_for(tmp_path / "l.db")) as store:
        ledger = Ledger(store)
        async with store.write() as conn:
            await ledger.post(
                conn,
                idempotency_key="grant:1",
                kind="grant",
                lines=[Line(EXTERNAL_CLEARING, -1000), Line(user_credit("u1"), 1000)],
            )
            await ledger.post(
                conn,
                idempotency_key="hold:p1",
                kind="hold",
                lines=[Line(user_credit("u1"), -250), Line(user_held("u1"), 250)],
            )
        async with store.read() as conn:
            assert await ledger.balance(conn, user_credit("u1")) == 750
            assert await ledger.balances(conn, "user:u1:") == {user_credit("u1"): 750, user_held("u1"): 250}
            assert await ledger.total(conn) == 0
            assert await ledger.unbalanced_entries(conn) == []
            page, cursor = await ledger.entries_for(conn, "user:u1:", 1, None)
            assert [e.kind for e in page] == ["hold"] and page[0].amount_cents == 0 and cursor is not None
            rest, end = await ledger.entries_for(conn, "user:u1:", 10, cursor)
            assert [e.kind for e in rest] == ["grant"] and rest[0].amount_cents == 1000 and end is None


async def test_a_replay_returns_the_first_entry_and_a_reused_key_with_other_lines_is_refused(tmp_path: Path) -> None:
    async with open_store(database_for(tmp_path / "l.db")) as store:
        ledger = Ledger(store)
        lines = [Line(EXTERNAL_CLEARING, -500), Line(user_credit("u1"), 500)]
        async with store.write() as conn:
            first = await ledger.post(conn, idempotency_key="k", kind="grant", lines=lines)
            again = await ledger.post(conn, idempotency_key="k", kind="grant", lines=list(reversed(lines)))
            assert again.replayed and again.entry_id == first.entry_id and not first.replayed
            with pytest.raises(Conflict, match="idempotency key reused"):
                await ledger.post(
                    conn,
                    idempotency_key="k",
                    kind="grant",
                    lines=[Line(EXTERNAL_CLEARING, -501), Line(user_credit("u1"), 501)],
                )
            with pytest.raises(Conflict):
                await ledger.post(conn, idempotency_key="k", kind="refund", lines=lines)
        async with store.read() as conn:
            assert await ledger.balance(conn, user_credit("u1")) == 500


async def test_unbalanced_or_overdrawing_entries_are_refused_and_write_nothing(tmp_path: Path) -> None:
    async with open_store(database_for(tmp_path / "l.db")) as store:
        ledger = Ledger(store)
        async with store.write() as conn:
            with pytest.raises(ValueError, match="does not balance"):
                await ledger.post(conn, idempotency_key="a", kind="x", lines=[Line(user_credit("u1"), 1)])
            with pytest.raises(ValueError, match="moves nothing"):
                await ledger.post(conn, idempotency_key="b", kind="x", lines=[Line(user_credit("u1"), 0)])
            with pytest.raises(InsufficientFunds, match="Not enough funds"):
                await ledger.post(
                    conn,
                    idempotency_key="c",
                    kind="hold",
                    lines=[Line(user_credit("u1"), -1), Line(user_held("u1"), 1)],
                )
            with pytest.raises(InsufficientFunds):
                await ledger.post(
                    conn,
                    idempotency_key="d",
                    kind="x",
                    lines=[Line(agent_pending("a1"), -1), Line(PLATFORM_REVENUE, 1)],
                )
            clawback = await ledger.post(
                conn,
                idempotency_key="e",
                kind="clawback",
                lines=[Line(agent_pending("a1"), -1), Line(PLATFORM_REVENUE, 1)],
                allow_negative=[agent_pending("a1")],
            )
            assert not clawback.replayed
        async with store.read() as conn:
            assert await ledger.balance(conn, user_credit("u1")) == 0
            assert await ledger.balance(conn, agent_pending("a1")) == -1
            assert await ledger.total(conn) == 0
