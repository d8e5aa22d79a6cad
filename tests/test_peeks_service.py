"""The peek and money services directly, on a real SQLite file: refunds, covers, payouts, edges."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentchat_mcp import clock
from agentchat_mcp.errors import Conflict, Forbidden, InvalidInput, NotFound, PaymentDeclined
from agentchat_mcp.server import AppContext, build_app_context
from agentchat_mcp.services.identity import Caller
from agentchat_mcp.services.pricing import Cover
from agentchat_mcp.settings import Settings
from agentchat_mcp.store import DbConnection, open_store
from agentchat_mcp.telemetry import Telemetry
from tests import support_db
from tests.conftest import run_cli

pytestmark = pytest.mark.anyio


@dataclass
class World:
    app: AppContext
    picky: Caller  # decides, 2.00
    easy: Caller  # standing consent, 3.00
    user: Caller
    admin: Caller
    conversation_id: str
    settings: Settings

    async def caller(self, role: str, name: str, **kw: Any) -> Caller:
        _, key = await self.app.identity.register(role, name, **kw)  # type: ignore[arg-type]
        return await self.app.identity.authenticate(key)

    def rows(self, sql: str, *args: Any) -> list[Any]:
        return support_db.query(self.settings.db, sql, *args)


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    offset = [timedelta(0)]
    monkeypatch.setattr(clock, "now", lambda: datetime.now(UTC) + offset[0])
    settings = Settings(db=support_db.database_for(tmp_path / "w.db"), secret_file=tmp_path / "w.secret")
    async with open_store(settings.db) as store:
        app = build_app_context(settings, store, Telemetry())
        app.pricing.providers.clear()  # only what a test plugs in
        w = World(app, None, None, None, None, "", settings)  # type: ignore[arg-type]
        w.picky = await w.caller("agent", "picky", peek_price_cents=200, can_refuse=True)
        w.easy = await w.caller("agent", "easy", peek_price_cents=300, can_refuse=False)
        w.user = await w.caller("user", "uma")
        w.admin = await w.caller("admin", "root")
        conv, _ = await app.conversations.start(w.picky, [w.easy.id], "topic", "hello")
        w.conversation_id = conv.id
        w.offset = offset  # type: ignore[attr-defined]
        yield w


def advance(w: World, **delta: float) -> None:
    w.offset[0] += timedelta(**delta)  # type: ignore[attr-defined]


async def test_a_refund_after_payout_returns_everything_and_claws_back_from_the_agent(world: World) -> None:
    w = world
    w.app.earnings.payout_minimum_cents = 100
    await w.app.earnings.grant(w.user.id, 1000)
    peek = await w.app.peeks.request(w.user, w.conversation_id, max_price_cents=500, duration_minutes=5)
    peek = await w.app.peeks.respond(w.picky, peek.id, "accept", "sure")
    assert peek.status == "active" and peek.keys_released
    advance(w, minutes=6)
    payout = await w.app.earnings.request_payout(w.easy, None)
    assert (payout.amount_cents, payout.status) == (240, "recorded")
    refunded = await w.app.peeks.refund(peek.id, reason="chargeback")
    assert refunded.peek.status == "refunded" and refunded.peek.reason == "chargeback"
    again = await w.app.peeks.refund(peek.id, reason="chargeback")
    assert again.peek.status == "refunded" and again.replayed
    balances = {a: c for a, c in w.rows("SELECT account, SUM(amount_cents) FROM ledger_lines GROUP BY account")}
    assert balances[f"user:{w.user.id}:credit"] == 1000
    assert balances[f"agent:{w.easy.id}:available"] == -240  # paid out before the refund: owed back
    assert balances[f"agent:{w.picky.id}:available"] == 0
    assert balances["platform:revenue"] == 0
    assert sum(balances.values()) == 0
    with pytest.raises(Conflict, match="nothing to refund"):
        other = await w.app.peeks.request(w.user, w.conversation_id, max_price_cents=500)
        await w.app.peeks.cancel(w.user, other.id)
        await w.app.peeks.refund(other.id, reason="x")
    with pytest.raises(NotFound):
        await w.app.peeks.refund("pek_" + "x" * 20, reason="x")


async def test_a_refund_during_the_window_cuts_the_peeker_off(world: World) -> None:
    w = world
    await w.app.earnings.grant(w.user.id, 1000)
    peek = await w.app.peeks.request(w.user, w.conversation_id, max_price_cents=500)
    await w.app.peeks.respond(w.picky, peek.id, "accept", None)
    assert (await w.app.conversations.read(w.user, w.conversation_id, 0, 10)).messages[0].text == "hello"
    await w.app.peeks.refund(peek.id, reason="dispute")
    with pytest.raises(NotFound):
        await w.app.conversations.read(w.user, w.conversation_id, 0, 10)


class FakeCovers:
    """An entitlement provider as the payments package would plug in: a prepaid pack account."""

    def __init__(self, account: str, amount: int) -> None:
        self.account, self.amount = account, amount
        self.consumed: list[str] = []
        self.restored: list[str] = []

    async def cover(
        self, conn: DbConnection, *, user_id: str, agent_id: str, price_cents: int, conversation_id: str
    ) -> Cover | None:
        return Cover(source="pack", ref=f"pack-1:{agent_id}", account=self.account, amount_cents=self.amount)

    async def consume(self, conn: DbConnection, *, cover: Cover, peek_id: str) -> None:
        self.consumed.append(cover.ref)

    async def restore(self, conn: DbConnection, *, ref: str, peek_id: str) -> None:
        self.restored.append(ref)


async def test_a_pack_pays_from_its_own_account_and_comes_back_on_refusal(world: World) -> None:
    w = world
    packs = f"user:{w.user.id}:packs"
    covers = FakeCovers(packs, 160)
    w.app.pricing.providers["pack"] = covers
    async with w.app.store.write() as conn:  # the pack was bought: 3.20 prepaid
        from agentchat_mcp.services.ledger import EXTERNAL_CLEARING, Line

        await w.app.ledger.post(
            conn, idempotency_key="pack", kind="pack", lines=[Line(EXTERNAL_CLEARING, -320), Line(packs, 320)]
        )
    quote = await w.app.peeks.quote(w.user, w.conversation_id)
    assert quote.charged_cents == 0 and {line.paid_by for line in quote.lines} == {"pack"}
    peek = await w.app.peeks.request(w.user, w.conversation_id, max_price_cents=0)
    assert len(covers.consumed) == 2
    refused = await w.app.peeks.respond(w.picky, peek.id, "refuse", None)
    assert refused.status == "refused" and sorted(covers.restored) == sorted(covers.consumed)
    assert w.rows("SELECT SUM(amount_cents) FROM ledger_lines WHERE account = ?", packs) == [(320,)]

    second = await w.app.peeks.request(w.user, w.conversation_id, max_price_cents=0)
    await w.app.peeks.respond(w.picky, second.id, "accept", None)
    balances = {a: c for a, c in w.rows("SELECT account, SUM(amount_cents) FROM ledger_lines GROUP BY account")}
    # 3.20 of pack value: each agent earns at most the 1.60 unit that paid its share (easy's 3.00 less
    # 20% would be 2.40), and the platform pays nothing out of its revenue
    assert (balances[packs], balances[f"agent:{w.picky.id}:pending"], balances[f"agent:{w.easy.id}:pending"]) == (
        0,
        160,
        160,
    )
    assert balances.get("platform:revenue", 0) == 0 and sum(balances.values()) == 0


async def test_a_peek_whose_earnings_exceed_its_hold_is_never_captured_and_its_hold_comes_back(world: World) -> None:
    """The capture guard: earnings above what was held (e.g. a request stored before prepaid units held
    their value) would be paid out of platform revenue; the peek ends cancelled instead."""
    w = world
    await w.app.earnings.grant(w.user.id, 500)
    peek = await w.app.peeks.request(w.user, w.conversation_id, max_price_cents=500)
    # as a legacy row would read: easy's share worth 3.00 more
    support_db.query(
        w.settings.db, "UPDATE peek_consents SET price_cents = price_cents + 300 WHERE agent_id = ?", w.easy.id
    )
    done = await w.app.peeks.respond(w.picky, peek.id, "accept", None)
    assert done.status == "cancelled" and done.reason == (
        "Its price no longer matches what was paid for it; the hold went back and a new request pays the price now."
    )
    balances = dict(w.rows("SELECT account, SUM(amount_cents) FROM ledger_lines GROUP BY account"))
    assert balances[f"user:{w.user.id}:credit"] == 500 and balances.get("platform:revenue", 0) == 0
    assert not any(a.startswith("agent:") and c for a, c in balances.items())


async def test_bad_requests_are_refused_with_a_reason(world: World) -> None:
    w = world
    await w.app.earnings.grant(w.user.id, 1000)
    now = clock.now()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"duration_minutes": 0}, "duration_minutes"),
        ({"max_price_cents": -1}, "negative"),
        ({"start_at": datetime(2030, 1, 1)}, "timezone"),
        ({"start_at": now - timedelta(hours=1)}, "in the past"),
        ({"start_at": now + timedelta(days=31)}, "30 days"),
    ]
    for extra, words in cases:
        args = {"max_price_cents": 500, **extra}
        with pytest.raises(InvalidInput, match=words):
            await w.app.peeks.request(w.user, w.conversation_id, **args)
    with pytest.raises(Forbidden):
        await w.app.peeks.request(w.picky, w.conversation_id, max_price_cents=500)
    with pytest.raises(NotFound):
        await w.app.peeks.respond(w.picky, "pek_" + "x" * 20, "accept", None)
    with pytest.raises(NotFound):
        await w.app.peeks.cancel(w.user, "pek_" + "x" * 20)


async def test_answers_are_idempotent_and_final(world: World) -> None:
    w = world
    await w.app.earnings.grant(w.user.id, 1000)
    peek = await w.app.peeks.request(w.user, w.conversation_id, max_price_cents=500)
    first = await w.app.peeks.respond(w.picky, peek.id, "accept", None)
    again = await w.app.peeks.respond(w.picky, peek.id, "accept", None)
    assert first.status == again.status == "active"
    with pytest.raises(Conflict, match="cannot change now"):
        await w.app.peeks.respond(w.picky, peek.id, "refuse", None)
    with pytest.raises(Conflict, match="answer was accepted"):  # standing consent cannot be taken back later
        await w.app.peeks.respond(w.easy, peek.id, "refuse", None)
    with pytest.raises(Conflict, match="only a request still waiting"):
        await w.app.peeks.cancel(w.user, peek.id)
    cancelled = await w.app.peeks.request(
        w.user, w.conversation_id, max_price_cents=500, start_at=clock.now() + timedelta(hours=2)
    )
    assert (await w.app.peeks.cancel(w.user, cancelled.id)).status == "cancelled"
    assert (await w.app.peeks.cancel(w.user, cancelled.id)).status == "cancelled"


async def test_lists_page_for_users_and_agents_and_admins_see_any_peek(world: World) -> None:
    w = world
    await w.app.earnings.grant(w.user.id, 5000)
    convs = [w.conversation_id]
    for i in range(2):
        conv, _ = await w.app.conversations.start(w.picky, [w.easy.id], f"t{i}", None)
        convs.append(conv.id)
    made = [await w.app.peeks.request(w.user, c, max_price_cents=500) for c in convs]
    await w.app.peeks.respond(w.picky, made[0].id, "refuse", None)
    page, cursor = await w.app.peeks.list_for(w.user, None, 2, None)
    rest, end = await w.app.peeks.list_for(w.user, None, 2, cursor)
    assert len(page) == 2 and len(rest) == 1 and end is None
    assert {p.id for p in page + rest} == {p.id for p in made}
    refused, _ = await w.app.peeks.list_for(w.user, "refused", 10, None)
    assert [p.id for p in refused] == [made[0].id]
    incoming, _ = await w.app.peeks.list_for(w.picky, "awaiting_consent", 10, None)
    assert {p.id for p in incoming} == {made[1].id, made[2].id}
    assert len(await w.app.peeks.pending_for(w.picky)) == 2 and await w.app.peeks.pending_for(w.user) == []
    assert (await w.app.peeks.get(w.admin, made[1].id)).id == made[1].id
    with pytest.raises(NotFound):
        await w.app.peeks.get(w.admin, "pek_" + "x" * 20)
    listed, next_cursor = await w.app.peeks.peekable(w.picky.id, 2, None)
    more, _ = await w.app.peeks.peekable(w.picky.id, 2, next_cursor)
    assert len(listed) + len(more) == 3


class RecordingSender:
    def __init__(self, fail_times: int) -> None:
        self.fail_times = fail_times
        self.calls: list[dict[str, Any]] = []

    async def send(self, **kw: Any) -> str:
        self.calls.append(kw)
        if len(self.calls) <= self.fail_times:
            raise PaymentDeclined("The transfer was declined.")
        return "tr_123"


async def test_a_payout_with_a_sender_locks_funds_retries_with_the_same_key_and_can_be_given_back(world: World) -> None:
    w = world
    w.app.earnings.payout_minimum_cents = 100
    sender = RecordingSender(fail_times=1)
    w.app.earnings.sender = sender
    await w.app.earnings.grant(w.user.id, 5000)
    for _ in range(2):
        await w.app.peeks.request(w.user, w.conversation_id, max_price_cents=500, duration_minutes=1)
        peek = (await w.app.peeks.list_for(w.user, "awaiting_consent", 1, None))[0][0]
        await w.app.peeks.respond(w.picky, peek.id, "accept", None)
        advance(w, minutes=2)
    with pytest.raises(InvalidInput, match="connect_account_id"):
        await w.app.earnings.request_payout(w.easy, None)
    async with w.app.store.write() as conn:
        from sqlalchemy import update

        from agentchat_mcp.store.tables import principals

        await conn.execute(update(principals).where(principals.c.id == w.easy.id).values(connect_account_id="acct_1"))
    failed = await w.app.earnings.request_payout(w.easy, 200, "k1")
    assert (failed.status, failed.last_error, failed.available_after_cents) == (
        "failed",
        "The transfer was declined.",
        280,
    )
    paid = await w.app.earnings.retry_payout(failed.id)
    assert (paid.status, paid.transfer_id) == ("paid", "tr_123")
    assert {c["idempotency_key"] for c in sender.calls} == {f"payout:{failed.id}"}
    assert (await w.app.earnings.request_payout(w.easy, None, "k1")).id == failed.id
    with pytest.raises(Conflict, match="reused"):
        await w.app.earnings.request_payout(w.easy, 100, "k1")
    with pytest.raises(Conflict, match="only a failed payout"):
        await w.app.earnings.cancel_payout(paid.id)
    sender.fail_times = 99
    second = await w.app.earnings.request_payout(w.easy, 150)
    assert second.status == "failed" and second.available_after_cents == 130
    given_back = await w.app.earnings.cancel_payout(second.id)
    assert given_back.status == "cancelled" and given_back.available_after_cents == 280
    assert (await w.app.earnings.cancel_payout(second.id)).status == "cancelled"
    with pytest.raises(NotFound):
        await w.app.earnings.retry_payout("pay_" + "x" * 20)
    with pytest.raises(NotFound):
        await w.app.earnings.cancel_payout("pay_" + "x" * 20)
    admin_balance = await w.app.earnings.balance(w.admin)
    assert admin_balance.accounts["platform_revenue"] == 200
    entries, _ = await w.app.earnings.transactions(w.admin, 10, None)
    assert {e.kind for e in entries} == {"peek_capture"}


async def test_earnings_take_a_period_and_grants_have_bounds(world: World) -> None:
    w = world
    with pytest.raises(Forbidden):
        await w.app.earnings.earnings(w.user, "week")
    with pytest.raises(InvalidInput):
        await w.app.earnings.earnings(w.picky, "year")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await w.app.earnings.grant(w.user.id, 0)


def test_the_cli_grants_credit_once_per_idempotency_key(tmp_path: Path) -> None:
    env = {"AGENTCHAT_DB": str(tmp_path / "c.db"), "AGENTCHAT_SECRET_FILE": str(tmp_path / "c.secret")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=env, timeout=60)

    user = json.loads(cli("user", "create", "--name", "uma").stdout)
    first = cli("credits", "grant", user["id"], "25.00", "--idempotency-key", "g1")
    again = cli("credits", "grant", user["id"], "25.00", "--idempotency-key", "g1")
    assert json.loads(first.stdout)["balance"] == json.loads(again.stdout)["balance"] == "25.00"
    assert json.loads(again.stdout)["replayed"] is True
    bad = cli("credits", "grant", user["id"], "1.555")
    assert bad.returncode == 2 and "AMOUNT must be USD" in bad.stderr
    nobody = cli("credits", "grant", "usr_" + "x" * 20, "1.00")
    assert nobody.returncode == 2 and "No user" in nobody.stderr
