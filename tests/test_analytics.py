"""Agent and platform analytics on a seeded hub: each figure against an answer computed here, from the
base tables with this file's own SQL (money: from ledger_lines, to the cent)."""

from __future__ import annotations

import sqlite3
import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mcp import Client

from agentchat_mcp.store import open_store
from tests.conftest import Account, Hub, TravelClock, error_text, rows, structured

pytestmark = pytest.mark.anyio


async def call(c: Client, tool: str, **args: Any) -> dict[str, Any]:
    return structured(await c.call_tool(tool, args))


@dataclass
class Seeded:
    alice: Account  # consent needed, 2.50, tagged coding
    bob: Account  # standing consent, 1.33, untagged
    carol: Account  # consent needed, 4.00, tagged coding + research
    uma: Account
    ulf: Account
    admin: Account
    ab: str  # alice + bob
    ac: str  # alice + carol


async def seed(hub: Hub, travel: TravelClock) -> Seeded:
    """Two days of activity: messages both ways, quotes, accepted / refused / expired / completed peeks."""
    alice = await hub.register_agent("alice", peek_price="2.50", can_refuse=True, tags=["coding"])
    bob = await hub.register_agent("bob", peek_price="1.33", can_refuse=False)
    carol = await hub.register_agent("carol", peek_price="4.00", can_refuse=True, tags=["coding", "research"])
    uma, ulf = await hub.register_user("uma"), await hub.register_user("ulf")
    admin = await hub.register_admin("root")
    await hub.grant_credits(admin, uma, "50.00")
    await hub.grant_credits(admin, ulf, "50.00")
    ab = await hub.start_conversation(alice, [bob], topic="pricing", first_message="hi bob")
    ac = await hub.start_conversation(alice, [carol], topic="research", first_message="hi carol")
    async with hub.client(alice) as a, hub.client(bob) as b, hub.client(carol) as c:
        travel.advance(seconds=40)
        await call(b, "send_message", conversation_id=ab, text="hello alice")
        travel.advance(seconds=100)
        await call(a, "send_message", conversation_id=ab, text="how are you")
        travel.advance(seconds=7)
        await call(c, "send_message", conversation_id=ac, text="fine")
        travel.advance(seconds=300)
        await call(a, "send_message", conversation_id=ac, text="good")
    async with hub.client(uma) as u, hub.client(ulf) as v, hub.client(alice) as a, hub.client(carol) as c:
        q = await call(u, "quote_peek", conversation_id=ab)
        p1 = await call(u, "request_peek", conversation_id=ab, max_price=q["total"])
        travel.advance(seconds=90)
        await call(a, "respond_to_peek", peek_id=p1["id"], decision="accept")  # captured, keys released
        q = await call(v, "quote_peek", conversation_id=ac)
        p2 = await call(v, "request_peek", conversation_id=ac, max_price=q["total"])
        travel.advance(seconds=30)
        await call(c, "respond_to_peek", peek_id=p2["id"], decision="refuse")
        late = await a.call_tool("respond_to_peek", {"peek_id": p2["id"], "decision": "accept"})
        assert "refused" in error_text(late)  # a tool error: counted in tool usage
        q = await call(v, "quote_peek", conversation_id=ab)
        p3 = await call(v, "request_peek", conversation_id=ab, max_price=q["total"])
        travel.advance(seconds=50)
        await call(a, "respond_to_peek", peek_id=p3["id"], decision="accept")
        await call(u, "quote_peek", conversation_id=ac)  # quoted, never requested
        q = await call(u, "quote_peek", conversation_id=ac)
        await call(u, "request_peek", conversation_id=ac, max_price=q["total"])  # never answered: expires
    travel.advance(days=1, hours=1)  # windows end (completed), the open request expires
    async with hub.client(alice) as a:
        await call(a, "get_balance")  # settles due peeks
        await call(a, "send_message", conversation_id=ab, text="next day")
    async with hub.client(uma) as u:
        await call(u, "get_balance")
    return Seeded(alice, bob, carol, uma, ulf, admin, ab, ac)


def agent_income(hub: Hub, agent_id: str, since: str = "") -> int:
    """Agent income the auditor's way: lines into its pending/available accounts, minus internal moves."""
    return int(
        rows(
            hub,
            "SELECT COALESCE(SUM(l.amount_cents), 0) FROM ledger_lines l JOIN ledger_entries e ON e.id = l.entry_id "
            "WHERE l.account IN (?, ?) AND e.kind NOT IN ('earnings_available', 'payout', 'payout_cancelled') "
            "AND e.created_at >= ?",
            f"agent:{agent_id}:pending",
            f"agent:{agent_id}:available",
            since,
        )[0][0]
    )


def today() -> datetime:
    from agentchat_mcp import clock

    return clock.now()


async def test_agent_analytics_match_the_ledger_and_the_base_tables(hub: Hub, travel: TravelClock) -> None:
    s = await seed(hub, travel)
    async with hub.client(s.alice) as a:
        got = await a.call_tool("get_agent_analytics", {"period": "week", "top": 3})
    assert not got.is_error
    assert got.content[0].text.startswith("Agent analytics ")  # a summary a model can read without charts
    data = dict(got.structured_content)
    e = data["earnings"]
    lifetime = agent_income(hub, s.alice.id)
    assert lifetime == 2 * 200  # two accepted peeks at 2.50 less the 20% fee
    assert e["lifetime_cents"] == lifetime == e["period_cents"] == sum(p["value"] for p in e["series"])
    month_start = today().replace(day=1).strftime("%Y-%m-%d")
    assert e["this_month_cents"] == agent_income(hub, s.alice.id, month_start)
    monday = (today() - timedelta(days=today().weekday())).strftime("%Y-%m-%d")
    assert e["this_week_cents"] == agent_income(hub, s.alice.id, monday)
    assert e["by_source"] == {"credit": lifetime, "pack": 0, "subscription": 0, "referral": 0, "other": 0}
    captures = rows(
        hub,
        "SELECT e.created_at, l.amount_cents FROM ledger_lines l JOIN ledger_entries e ON e.id = l.entry_id "
        "WHERE l.account = ? AND e.kind = 'peek_capture'",
        f"agent:{s.alice.id}:pending",
    )
    hours = [0] * 24
    heat = [[0] * 24 for _ in range(7)]
    for created_at, cents in captures:
        moment = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
        hours[moment.hour] += cents
        heat[moment.weekday()][moment.hour] += cents
    assert e["by_hour"] == hours and e["heatmap"] == heat
    assert e["by_weekday"] == [sum(row) for row in heat]
    assert len(e["series"]) == 7 and e["series"][-1]["start"] == today().strftime("%Y-%m-%d")

    peeks = data["peeks"]
    decisions = Counter(d for (d,) in rows(hub, "SELECT decision FROM peek_consents WHERE agent_id = ?", s.alice.id))
    assert peeks["requested"] == sum(decisions.values()) == 4
    assert peeks["accepted"] == decisions["accepted"] + decisions["standing"]
    assert peeks["refused"] == decisions["refused"]
    statuses = Counter(
        st
        for (st,) in rows(
            hub,
            "SELECT p.status FROM peeks p JOIN peek_consents c ON c.peek_id = p.id WHERE c.agent_id = ?",
            s.alice.id,
        )
    )
    assert (peeks["expired"], peeks["completed"]) == (statuses["expired"], statuses["completed"]) == (1, 2)
    waits = [
        (datetime.fromisoformat(d[:-1]) - datetime.fromisoformat(r[:-1])).total_seconds()
        for r, d in rows(
            hub,
            "SELECT p.requested_at, c.decided_at FROM peeks p JOIN peek_consents c ON c.peek_id = p.id "
            "WHERE c.agent_id = ? AND c.decision = 'accepted'",
            s.alice.id,
        )
    ]
    assert peeks["median_consent_seconds"] == pytest.approx(statistics.median(waits), abs=0.01)
    assert peeks["acceptance_rate"] == pytest.approx(
        peeks["accepted"] / (peeks["accepted"] + peeks["refused"]), abs=1e-4
    )

    conv = data["conversations"]
    sent = rows(hub, "SELECT COUNT(*) FROM messages WHERE sender_id = ?", s.alice.id)[0][0]
    received = rows(
        hub,
        "SELECT COUNT(*) FROM messages m JOIN participants p ON p.conversation_id = m.conversation_id "
        "WHERE p.principal_id = ? AND m.sender_id != ?",
        s.alice.id,
        s.alice.id,
    )[0][0]
    assert (conv["messages_sent"], conv["messages_received"]) == (sent, received) == (5, 2)
    assert conv["conversations"] == conv["active_conversations"] == 2
    assert conv["median_reply_seconds"] == pytest.approx(statistics.median([100, 300]), abs=0.5)

    assert data["funnel"] == {"quotes": 5, "requested": 4, "consented": 2, "captured": 2, "read": 2}
    top = data["top_peekers"]
    assert [(t["name"], t["peeks"], t["cents"]) for t in top] == [("ulf", 1, 200), ("uma", 1, 200)] or [
        (t["name"], t["peeks"], t["cents"]) for t in top
    ] == [("uma", 1, 200), ("ulf", 1, 200)]


async def test_platform_analytics_match_the_ledger_and_the_base_tables(hub: Hub, travel: TravelClock) -> None:
    s = await seed(hub, travel)
    async with hub.client(s.admin) as c:
        for name in ("no_such_tool", "another_made_up_name"):
            assert (await c.call_tool(name, {})).is_error
        got = await c.call_tool("get_platform_analytics", {"period": "month", "granularity": "week"})
        again = await call(c, "get_platform_analytics", period="month")  # the first call was counted by now
    assert got.content[0].text.startswith("Platform analytics ")
    data = dict(got.structured_content)
    gmv = -rows(
        hub,
        "SELECT SUM(l.amount_cents) FROM ledger_lines l JOIN ledger_entries e ON e.id = l.entry_id "
        "WHERE e.kind = 'peek_capture' AND l.account LIKE 'user:%:held'",
    )[0][0]
    assert data["gmv_cents"] == gmv == 2 * 383
    net = rows(hub, "SELECT SUM(amount_cents) FROM ledger_lines WHERE account LIKE 'platform:%'")[0][0]
    assert data["net_revenue_cents"] == net == 2 * (50 + 26)
    assert sum(p["value"] for p in data["gmv_series"]) == gmv
    assert sum(p["value"] for p in data["revenue_series"]) == net
    assert data["refunds"] == {"peek": 0, "refund": 0, "dispute": 0, "dispute_won": 0}
    # categories: each tag counts its agents' peek earnings; bob has no tag
    assert data["categories"] == [
        {"tag": "coding", "cents": agent_income(hub, s.alice.id)},
        {"tag": "untagged", "cents": agent_income(hub, s.bob.id)},
    ]
    heat = [[0] * 24 for _ in range(7)]
    for (created_at,) in rows(hub, "SELECT created_at FROM ledger_entries WHERE kind = 'peek_capture'"):
        moment = datetime.fromisoformat(created_at[:-1]).replace(tzinfo=UTC)
        heat[moment.weekday()][moment.hour] += 1
    assert data["peek_heatmap"] == heat
    assert data["signups"] == {"agents": 3, "users": 2, "users_with_paid_peek": 2}
    assert data["signup_conversion"] == 1.0
    # active: agents that sent a message, users whose money moved for a peek (both days in the month)
    assert data["active"]["agents"]["period"] == 3 and data["active"]["users"]["period"] == 2
    assert data["active"]["agents"]["daily"] == 1  # only alice wrote today
    assert data["churn"]["agents"] == {"previous_active": 0, "churned": 0, "rate": None}
    usage = {t["tool"]: t for t in again["tool_usage"]}
    assert usage["get_platform_analytics"]["calls"] >= 1 and usage["send_message"]["calls"] == 5
    assert usage["respond_to_peek"]["errors"] == 1  # alice answering a refused peek
    assert usage["(unknown)"] == {**usage["(unknown)"], "calls": 2, "errors": 2}  # names tried are not kept
    assert "no_such_tool" not in usage
    assert usage["send_message"]["p95_ms"] in (5, 10, 25, 50, 100, 250, 500, 1000, 2500)


async def test_churn_counts_who_was_active_before_and_not_since(hub: Hub, travel: TravelClock) -> None:
    alice = await hub.register_agent("alice")
    bob = await hub.register_agent("bob")
    admin = await hub.register_admin("root")
    conv = await hub.start_conversation(alice, [bob])  # alice active 8 days ago
    async with hub.client(bob) as b:
        await call(b, "send_message", conversation_id=conv, text="hi")  # bob too
    travel.advance(days=8)
    async with hub.client(bob) as b:
        await call(b, "send_message", conversation_id=conv, text="still here")  # bob active this week
    async with hub.client(admin) as c:
        data = await call(c, "get_platform_analytics", period="week")
    assert data["churn"]["agents"] == {"previous_active": 2, "churned": 1, "rate": 0.5}
    assert data["active"]["agents"] == {"daily": 1, "weekly": 1, "monthly": 2, "period": 1}


async def test_analytics_are_for_their_roles_only(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    uma = await hub.register_user("uma")
    async with hub.client(alice) as a, hub.client(uma) as u:
        assert "for admin accounts" in error_text(await a.call_tool("get_platform_analytics", {}))
        assert "for agent accounts" in error_text(await u.call_tool("get_agent_analytics", {}))
        assert "period" in error_text(await a.call_tool("get_agent_analytics", {"period": "decade"}))


@pytest.mark.sqlite_only("downgrades and upgrades the SQLite file with Alembic directly, and reads sqlite_master")
async def test_the_rollups_are_backfilled_on_upgrade_and_dropped_on_downgrade(hub: Hub, travel: TravelClock) -> None:
    from agentchat_mcp.store.migrations import alembic_config

    s = await seed(hub, travel)
    async with hub.client(s.alice) as a:
        before = await call(a, "get_agent_analytics", period="week")
    cfg = alembic_config()
    db = hub.settings.db
    previous = _previous_revision()
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT COUNT(*) FROM analytics_daily").fetchone()[0] > 0
    _alembic(cfg, db, "downgrade", previous)
    with sqlite3.connect(db) as raw:
        names = {n for (n,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "analytics_daily" not in names and "ledger_lines" in names
    _alembic(cfg, db, "upgrade", "head")  # the backfill runs in the migration
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT COUNT(*) FROM analytics_daily").fetchone()[0] > 0
    async with open_store(db) as store:
        assert store is not None
    async with hub.client(s.alice) as a:
        after = await call(a, "get_agent_analytics", period="week")
    assert after["earnings"] == before["earnings"] and after["conversations"] == before["conversations"]
    # quotes are recorded only in the rollups (no base table holds them): a downgrade loses them
    assert after["funnel"] == {**before["funnel"], "quotes": 0} and before["funnel"]["quotes"] == 5


def _previous_revision() -> str:
    from alembic.script import ScriptDirectory

    from agentchat_mcp.store.migrations import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    for rev in script.walk_revisions():
        if (rev.doc or "").startswith("v1.2 analytics"):  # found by its title: the lead renumbers revisions
            return str(rev.down_revision)
    raise AssertionError("no analytics revision")


def _alembic(cfg: Any, db: Any, action: str, target: str) -> None:
    from alembic import command
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, target)
    engine.dispose()


async def test_the_analytics_resources_read_as_the_tools_answer(hub: Hub, travel: TravelClock) -> None:
    import json

    from mcp import MCPError

    s = await seed(hub, travel)
    async with hub.client(s.alice) as a, hub.client(s.admin) as c:
        mine = json.loads((await a.read_resource("agentchat://analytics/agent")).contents[0].text)
        tool = await call(a, "get_agent_analytics")
        platform = json.loads((await c.read_resource("agentchat://analytics/platform")).contents[0].text)
        with pytest.raises(MCPError, match="for admin accounts"):
            await a.read_resource("agentchat://analytics/platform")
        with pytest.raises(MCPError, match="for agent accounts"):
            await c.read_resource("agentchat://analytics/agent")
    assert mine["earnings"] == tool["earnings"] and mine["funnel"] == tool["funnel"]
    assert platform["gmv_cents"] == 2 * 383 and platform["period"] == "month"


async def test_the_export_gives_operators_the_days_as_csv_and_everything_as_json(hub: Hub, travel: TravelClock) -> None:
    import csv
    import io
    import json

    from tests.support_cli import cli

    s = await seed(hub, travel)
    env = {"AGENTCHAT_DB": str(hub.settings.db), "AGENTCHAT_SECRET_FILE": str(hub.settings.resolved_secret_file())}
    done = cli("analytics", "export", "--period", "week", "--format", "csv", **env)
    assert done.returncode == 0, done.stderr
    table = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(table) == 7 and table[-1]["day"] == today().strftime("%Y-%m-%d")
    gmv = -rows(
        hub,
        "SELECT SUM(l.amount_cents) FROM ledger_lines l JOIN ledger_entries e ON e.id = l.entry_id "
        "WHERE e.kind = 'peek_capture' AND l.account LIKE 'user:%:held'",
    )[0][0]
    assert sum(int(r["gmv_cents"]) for r in table) == gmv
    net = rows(hub, "SELECT SUM(amount_cents) FROM ledger_lines WHERE account LIKE 'platform:%'")[0][0]
    assert sum(int(r["net_revenue_cents"]) for r in table) == net
    messages = rows(hub, "SELECT COUNT(*) FROM messages")[0][0]
    assert sum(int(r["messages"]) for r in table) == messages
    assert sum(int(r["new_agents"]) for r in table) == 3 and sum(int(r["new_users"]) for r in table) == 2
    out = hub.tmp_path / "month.json"
    done = cli("analytics", "export", "--format", "json", "--output", str(out), **env)
    assert done.returncode == 0 and done.stdout == ""
    whole = json.loads(out.read_text())
    assert whole["platform"]["gmv_cents"] == gmv and len(whole["days"]) == 30
    assert whole["platform"]["signups"]["users"] == 2
    del s


async def test_referral_income_is_told_apart_and_reconciles(hub: Hub) -> None:
    """A commission posted the way referrals pay one (platform:referrals -> the agent) counts as referral income."""
    from agentchat_mcp.server import build_app_context
    from agentchat_mcp.services.ledger import Line

    alice = await hub.register_agent("alice")
    admin = await hub.register_admin("root")
    async with open_store(hub.settings.db) as store:
        app = build_app_context(hub.settings, store, hub.telemetry)
        async with store.write() as conn:
            await app.ledger.post(
                conn,
                idempotency_key="referral:test:1",
                kind="referral_commission",
                lines=[Line("platform:referrals", -150), Line(f"agent:{alice.id}:available", 150)],
                ref=alice.id,
            )
    async with hub.client(alice) as a, hub.client(admin) as c:
        mine = await call(a, "get_agent_analytics", period="week")
        platform = await call(c, "get_platform_analytics", period="week")
    assert mine["earnings"]["by_source"]["referral"] == 150 == agent_income(hub, alice.id)
    assert mine["earnings"]["lifetime_cents"] == 150 and mine["earnings"]["series"][-1]["value"] == 150
    assert platform["net_revenue_cents"] == -150 and platform["revenue_by_kind"] == {"referral_commission": -150}


async def test_pack_income_is_apart_from_single_peeks(hub: Hub) -> None:
    alice = await hub.register_agent("alice", peek_price="3.00", can_refuse=True)
    bob = await hub.register_agent("bob", peek_price="6.00", can_refuse=False)  # above the pack's cap: credit
    uma = await hub.register_user("uma")
    admin = await hub.register_admin("root")
    await hub.grant_credits(admin, uma, "50.00")
    conv = await hub.start_conversation(alice, [bob])
    async with hub.client(uma) as u, hub.client(alice) as a, hub.client(bob) as b, hub.client(admin) as c:
        await call(u, "buy_peek_pack", pack="pack-10", idempotency_key="pk-1")
        peek = await call(u, "request_peek", conversation_id=conv, max_price="6.00")
        await call(a, "respond_to_peek", peek_id=peek["id"], decision="accept")
        mine = (await call(a, "get_agent_analytics", period="week"))["earnings"]
        bobs = (await call(b, "get_agent_analytics", period="week"))["earnings"]
        platform = await call(c, "get_platform_analytics", period="week")
    assert mine["by_source"]["pack"] == 240 == agent_income(hub, alice.id) and mine["by_source"]["credit"] == 0
    assert bobs["by_source"]["credit"] == 480 == agent_income(hub, bob.id) and bobs["by_source"]["pack"] == 0
    gmv = -rows(
        hub,
        "SELECT SUM(l.amount_cents) FROM ledger_lines l JOIN ledger_entries e ON e.id = l.entry_id "
        "WHERE e.kind = 'peek_capture' AND l.account LIKE 'user:%:held'",
    )[0][0]
    assert platform["gmv_cents"] == gmv == 400 + 600
    net = rows(hub, "SELECT SUM(amount_cents) FROM ledger_lines WHERE account LIKE 'platform:%'")[0][0]
    assert platform["net_revenue_cents"] == net == (400 - 240) + 120


async def test_a_refunded_peek_shows_as_a_refund_and_nets_out_of_earnings(hub: Hub) -> None:
    from agentchat_mcp.server import build_app_context

    alice = await hub.register_agent("alice", peek_price="2.50", can_refuse=False)
    bob = await hub.register_agent("bob", peek_price="1.00", can_refuse=False)
    uma = await hub.register_user("uma")
    admin = await hub.register_admin("root")
    await hub.grant_credits(admin, uma, "10.00")
    conv = await hub.start_conversation(alice, [bob])
    async with hub.client(uma) as u:
        peek = await call(u, "request_peek", conversation_id=conv, max_price="3.50")  # standing consent: captured
    async with open_store(hub.settings.db) as store:
        app = build_app_context(hub.settings, store, hub.telemetry)
        await app.peeks.refund(peek["id"], reason="dispute")
    async with hub.client(alice) as a, hub.client(admin) as c:
        mine = (await call(a, "get_agent_analytics", period="week"))["earnings"]
        platform = await call(c, "get_platform_analytics", period="week")
    refunded = rows(
        hub,
        "SELECT SUM(l.amount_cents) FROM ledger_lines l JOIN ledger_entries e ON e.id = l.entry_id "
        "WHERE e.kind = 'peek_refund' AND l.account LIKE 'user:%' AND l.amount_cents > 0",
    )[0][0]
    assert platform["refunds"]["peek"] == refunded == 350
    assert mine["period_cents"] == agent_income(hub, alice.id) == 0 and mine["by_source"]["credit"] == 0
    net = rows(hub, "SELECT SUM(amount_cents) FROM ledger_lines WHERE account LIKE 'platform:%'")[0][0]
    assert platform["net_revenue_cents"] == net == 0 and platform["gmv_cents"] == 350  # GMV is gross
