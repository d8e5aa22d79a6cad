"""Ratings, verified badges, the directory's filters and sorts, and agents' performance figures (issue 12),
through real MCP clients on a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from agentchat_mcp.services.ratings import REPLY_BUCKETS, bayesian, median_bucket
from tests.conftest import Account, Hub, TravelClock, error_text, rows, run_cli, structured

pytestmark = pytest.mark.anyio


async def call(c: Client, tool: str, **args: Any) -> dict[str, Any]:
    return structured(await c.call_tool(tool, args))


async def grant(hub: Hub, user: Account, amount: str) -> None:
    admin = await hub.register_admin(f"admin-{user.name}")
    async with hub.client(admin) as c:
        await call(c, "grant_credits", user_id=user.id, amount=amount)


async def peeked(hub: Hub, travel: TravelClock, user: Account, *agents: Account) -> str:
    """A conversation between `agents` that `user` paid to peek at, its window over."""
    async with hub.client(agents[0]) as a:
        conv = (await call(a, "start_conversation", participants=[x.id for x in agents[1:]], topic="t"))["conversation"]
    async with hub.client(user) as u:
        await call(u, "request_peek", conversation_id=conv["id"], max_price="50.00", duration_minutes=5)
    travel.advance(minutes=6)
    return str(conv["id"])


async def test_only_paying_peekers_and_fellow_agents_may_rate_and_a_rating_moves_the_shown_one(
    hub: Hub, travel: TravelClock
) -> None:
    alice = await hub.register_agent("alice", peek_price="2.00", can_refuse=False)
    bob = await hub.register_agent("bob", peek_price="1.00", can_refuse=False)
    stranger = await hub.register_agent("stranger")
    uma, ned = await hub.register_user("uma"), await hub.register_user("ned")
    await grant(hub, uma, "10.00")
    async with hub.client(ned) as n, hub.client(stranger) as s:
        refused = error_text(await n.call_tool("rate_agent", {"agent_id": alice.id, "stars": 1}))
        assert "completed a paid peek" in refused
        assert "conversed with it" in error_text(await s.call_tool("rate_agent", {"agent_id": alice.id, "stars": 1}))
    await peeked(hub, travel, uma, alice, bob)
    async with hub.client(uma) as u, hub.client(bob) as b, hub.client() as anyone:
        assert (await call(anyone, "get_agent", agent_id=alice.id))["rating"] is None
        first = await call(u, "rate_agent", agent_id=alice.id, stars=5, comment="  great   agent ")
        # one 5-star vote over a prior of 5 votes at 3.5: (17.5 + 5) / 6 = 3.75, not 5
        assert (first["rating"], first["rating_count"]) == (3.75, 1)
        changed = await call(u, "rate_agent", agent_id=alice.id, stars=1)  # one rating per rater, changeable
        assert (changed["rating"], changed["rating_count"]) == (3.08, 1)
        second = await call(b, "rate_agent", agent_id=alice.id, stars=5)  # an agent that conversed with her
        assert (second["rating"], second["rating_count"]) == (bayesian(2, 6), 2) == (3.36, 2)
        shown = await call(anyone, "get_agent", agent_id=alice.id)
        assert (shown["rating"], shown["rating_count"]) == (3.36, 2)
        assert "yourself" in error_text(await b.call_tool("rate_agent", {"agent_id": bob.id, "stars": 5}))
        assert "No agent" in error_text(await u.call_tool("rate_agent", {"agent_id": "agt_" + "0" * 20, "stars": 5}))
    assert rows(hub, "SELECT comment FROM ratings WHERE stars = 1") == [(None,)]


async def test_an_admin_verifies_an_agent_and_find_agents_filters_and_sorts(hub: Hub, travel: TravelClock) -> None:
    cheap = await hub.register_agent("cheap", peek_price="0.50", can_refuse=False)
    dear = await hub.register_agent("dear", peek_price="9.00", can_refuse=False)
    idle = await hub.register_agent("idle", peek_price="3.00")
    uma = await hub.register_user("uma")
    await grant(hub, uma, "50.00")
    await peeked(hub, travel, uma, dear, cheap)
    admin = await hub.register_admin("root")
    async with hub.client(admin) as root, hub.client(uma) as u, hub.client(dear) as d, hub.client() as anyone:
        done = await call(root, "verify_agent", agent_id=dear.id, verified=True, note="checked the operator")
        assert (done["verified"], done["verified_by"]) == (True, admin.id)
        assert "No agent" in error_text(
            await root.call_tool(
                "verify_agent", {"agent_id": uma.id.replace("usr", "agt"), "verified": True, "note": "x"}
            )
        )
        await call(u, "rate_agent", agent_id=dear.id, stars=5)
        await call(u, "rate_agent", agent_id=cheap.id, stars=2)
        await call(
            d,
            "send_message",
            conversation_id=(await call(d, "list_conversations"))["conversations"][0]["id"],
            text="still here",
        )

        async def names(**args: Any) -> list[str]:
            return [a["name"] for a in (await call(anyone, "find_agents", **args))["agents"]]

        assert await names(verified_only=True) == ["dear"]
        assert await names(min_rating=3.6) == ["dear"]
        assert await names(sort="rating") == ["dear", "idle", "cheap"]  # unrated sorts at the prior, 3.50
        assert await names(sort="price") == ["cheap", "idle", "dear"]
        assert (await names(sort="activity"))[0] == "dear"
        assert (await call(anyone, "find_agents", sort="price", limit=1))["next_cursor"] is None
        page = await call(anyone, "find_agents", verified_only=True)
        assert page["agents"][0]["verified"] and page["agents"][0]["rating"] == 3.75
        await call(root, "verify_agent", agent_id=dear.id, verified=False, note="operator gone")
        assert await names(verified_only=True) == []
    assert rows(hub, "SELECT verified, verified_by, verified_note FROM principals WHERE id = ?", dear.id) == [
        (0, admin.id, "operator gone")
    ]
    assert idle.id  # listed above as the unrated agent


def test_the_cli_prints_referral_codes_and_verifies_agents(tmp_path: Path) -> None:
    hub = Hub(tmp_path)
    env = {"AGENTCHAT_DB": str(hub.settings.db), "AGENTCHAT_SECRET_FILE": str(hub.settings.resolved_secret_file())}
    made = run_cli("agent", "create", "--name", "cli-agent", env=env)
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["referral_code"].startswith("ref_")
    user = json.loads(run_cli("user", "create", "--name", "cli-user", env=env).stdout)
    assert user["referral_code"].startswith("ref_") and user["referral_code"] != created["referral_code"]
    done = run_cli("agent", "verify", created["id"], "--note", "met them", env=env)
    assert done.returncode == 0 and json.loads(done.stdout)["verified"] is True
    assert rows(hub, "SELECT verified, verified_by FROM principals WHERE id = ?", created["id"]) == [(1, "cli")]
    missing = run_cli("agent", "verify", "agt_" + "0" * 20, "--note", "x", env=env)
    assert missing.returncode == 2 and "No agent" in missing.stderr


async def test_get_agent_shows_performance_kept_current_as_things_happen(hub: Hub, travel: TravelClock) -> None:
    alice = await hub.register_agent("alice", peek_price="2.00", can_refuse=True)
    bob = await hub.register_agent("bob", peek_price="1.00", can_refuse=False)
    uma = await hub.register_user("uma")
    await grant(hub, uma, "20.00")
    async with hub.client(alice) as a, hub.client(bob) as b, hub.client(uma) as u:
        conv = (await call(a, "start_conversation", participants=[bob.id], topic="t", first_message="hi"))[
            "conversation"
        ]["id"]
        travel.advance(seconds=20)
        await call(b, "send_message", conversation_id=conv, text="hello")  # a reply after 20 s
        travel.advance(seconds=3)
        await call(b, "send_message", conversation_id=conv, text="again")  # not a reply
        refused = await call(u, "request_peek", conversation_id=conv, max_price="3.00")
        await call(a, "respond_to_peek", peek_id=refused["id"], decision="refuse")
        granted = await call(u, "request_peek", conversation_id=conv, max_price="3.00", duration_minutes=5)
        await call(a, "respond_to_peek", peek_id=granted["id"], decision="accept")
        travel.advance(minutes=6)
        await call(u, "get_balance")  # settles the window
        got = await call(u, "get_agent", agent_id=bob.id)
    perf = got["performance"]
    assert (perf["conversations"], perf["messages"], perf["median_reply_seconds"]) == (1, 2, 30)
    assert (perf["peek_acceptance_rate"], perf["peeks_completed"]) == (1.0, 1)  # standing consent
    assert perf["member_since"] == got["created_at"]
    async with hub.client(uma) as u:
        mine = (await call(u, "get_agent", agent_id=alice.id))["performance"]
        read = await u.read_resource(f"agentchat://agents/{alice.id}")
    assert (mine["messages"], mine["median_reply_seconds"], mine["peek_acceptance_rate"]) == (1, None, 0.5)
    assert json.loads(read.contents[0].text)["performance"]["peek_acceptance_rate"] == 0.5


def test_the_median_reply_bucket() -> None:
    assert median_bucket([]) is None
    assert median_bucket([0, 3, 1]) == REPLY_BUCKETS[1]
    assert median_bucket([0] * len(REPLY_BUCKETS) + [4]) == REPLY_BUCKETS[-1] * 2


async def test_register_agent_with_a_template_fills_a_sensible_profile_and_the_prompts_explain_growth(
    hub: Hub,
) -> None:
    async with hub.client() as c:
        got = await call(c, "register_agent", name="quill", template="coding-assistant")
        me = await call(c, "whoami")
    assert (me["peek_price"], me["tags"]) == ("2.00", ["coding", "software"])
    assert me["description"].startswith("Coding assistant")
    async with hub.client() as c:  # what the caller gives wins over the template
        await call(c, "register_agent", name="own", template="research-assistant", peek_price="9.00", tags=["x"])
        assert (await call(c, "whoami"))["peek_price"] == "9.00"
        missing = error_text(await hub_client_call(hub, "register_agent", {"name": "no-price"}))
    assert "peek_price" in missing and "template" in missing
    async with hub.client() as c:
        text = (await c.get_prompt("coding-assistant", {"name": "Quill"})).messages[0].content.text  # type: ignore[union-attr]
    assert "template 'coding-assistant'" in text and "get_referral_code" in text and "rate_agent" in text
    assert got["id"].startswith("agt_")


async def hub_client_call(hub: Hub, tool: str, args: dict[str, Any]) -> Any:
    async with hub.client() as c:
        return await c.call_tool(tool, args)
