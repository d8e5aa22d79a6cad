"""The Python SDK (agentchat_mcp.client) against real hubs: every method, errors, retries, reconnects, the stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentchat_mcp.client import (
    TOOL_RESULTS,
    AgentChat,
    ClientClosed,
    ConnectionLost,
    ConnectionState,
    IncomingMessage,
    ProtocolError,
    RateLimited,
    RetryPolicy,
    ToolFailed,
)
from agentchat_mcp.sdkgen import DOCS_FILE, EXPORT_COMMAND, SDK_MODULE, render_docs, render_sdk, tool_specs
from tests import support_db
from tests.conftest import PROJECT_ROOT, Account, Hub
from tests.support_cli import cli
from tests.support_http import hub_process, serving

pytestmark = pytest.mark.anyio
FAST = RetryPolicy(attempts=6, base_delay=0.05, max_delay=0.5)


@pytest.fixture
async def base(hub: Hub) -> AsyncIterator[str]:
    async with serving(hub) as url:
        yield f"{url}/mcp"


# --- the SDK cannot drift from the server -----------------------------------------------------------


async def test_every_tool_each_role_sees_has_an_sdk_method_returning_its_schema(hub: Hub) -> None:
    accounts: list[Account | None] = [
        None,
        await hub.register_agent("alice"),
        await hub.register_user("uma"),
        await hub.register_admin("root"),
    ]
    listed: set[str] = set()
    for account in accounts:
        async with hub.client(account) as client:
            listed |= {t.name for t in (await client.list_tools()).tools}
    missing = sorted(name for name in listed if not callable(getattr(AgentChat, name, None)))
    assert not missing, f"tools without an SDK method: {missing}; run `{EXPORT_COMMAND}`"
    for name in sorted(listed):
        on_disk = json.loads((PROJECT_ROOT / "schemas" / f"{name}.output.json").read_text())
        assert TOOL_RESULTS[name].model_json_schema(mode="serialization") == on_disk, name


def test_the_generated_sdk_methods_and_tool_reference_are_current() -> None:
    specs = tool_specs()
    for path, text in ((SDK_MODULE, render_sdk(specs)), (DOCS_FILE, render_docs(specs))):
        assert (PROJECT_ROOT / path).read_text() == text, f"{path} is out of date: run `{EXPORT_COMMAND}`"


def test_one_command_writes_the_schemas_the_sdk_methods_and_the_tool_reference(tmp_path: Path) -> None:
    done = cli("schemas", "export", "--docs", "--out", str(tmp_path / "schemas"))
    assert done.returncode == 0, done.stderr
    for path in (SDK_MODULE, DOCS_FILE, Path("schemas") / "send_message.output.json"):
        assert (tmp_path / path).read_text() == (PROJECT_ROOT / path).read_text(), path


# --- every method against a real hub ----------------------------------------------------------------


class Recording(AgentChat):
    """An AgentChat that notes which tools it called (through any method)."""

    called: set[str] = set()  # noqa: RUF012 -- shared on purpose: one set for every client of a test

    async def _call_tool(self, name: str, arguments: dict[str, Any], result: Any, *, safe: bool) -> Any:
        Recording.called.add(name)
        return await super()._call_tool(name, arguments, result, safe=safe)


def recording(base: str, api_key: str | None = None) -> Recording:
    return Recording(AgentChat.connect(base, api_key=api_key)._connector, api_key=api_key, retry=FAST)


async def test_every_sdk_method_works_against_a_real_hub(hub: Hub, base: str) -> None:
    Recording.called = set()
    admin = await hub.register_admin("root")
    async with recording(base) as a, recording(base) as b, recording(base) as u, recording(base, admin.api_key) as op:
        alice = await a.register("alice", peek_price="2.00", can_refuse=True, tags=["pricing"])
        bob = await b.register_agent("bob", peek_price="1.00", can_refuse=False)
        uma = await u.register_user("uma")
        assert a.api_key == alice.api_key and (await a.whoami()).id == alice.id
        assert (await a.update_profile(description="I sell widgets")).description == "I sell widgets"
        assert alice.id in [p.id for p in (await u.find_agents(tag="pricing")).agents]
        assert (await u.get_agent(bob.id)).name == "bob"

        started = await a.start_conversation([bob.id], "widgets", first_message="hello")
        cid = started.conversation.id
        assert (await a.send_message(cid, "price is 5")).seq == 2
        assert (await b.wait_for_messages(conversation_id=cid, timeout_s=1)).conversations[0].unread == 2
        assert (await b.check_inbox()).total_unread == 2
        assert [m.text for m in (await b.read_messages(cid)).messages] == ["hello", "price is 5"]
        assert (await b.mark_read(cid)).read_seq == 2
        assert [c.id for c in (await b.list_conversations()).conversations] == [cid]

        assert (await op.grant_credits(uma.id, "50.00", memo="welcome")).balance
        assert (await u.get_balance()).credit == "50.00"
        assert [c.conversation_id for c in (await u.list_peekable_conversations(alice.id)).conversations] == [cid]
        quote = await u.quote_peek(cid)
        peek = await u.request_peek(cid, quote.total)
        assert [p.id for p in (await a.list_peek_requests()).peeks] == [peek.id]
        assert (await a.respond_to_peek(peek.id, "accept")).status == "active"
        assert (await u.get_peek(peek.id)).status == "active"
        assert [m.text for m in (await u.read_messages(cid)).messages] == ["hello", "price is 5"]
        second = await u.request_peek(cid, quote.total, start_at=datetime.now(UTC) + timedelta(days=2))
        assert (await u.cancel_peek(second.id)).status == "cancelled"

        offers = (await u.buy_peek_pack()).offers
        bought = await u.buy_peek_pack(pack=offers[0].name, pay_with="credit")
        assert bought.purchase is not None and bought.purchase.status == "completed"
        plans = (await u.subscribe_to_agent(bob.id)).plans
        sub = await u.subscribe_to_agent(bob.id, plan=plans[-1].name, pay_with="credit")
        assert sub.subscription is not None
        assert (await u.cancel_subscription(sub.subscription.agent_id)).agent_id == bob.id
        with pytest.raises(ToolFailed):
            await u.buy_credits("10.00")  # the embedded ledger provider takes no cards: the message says how
        assert (await u.list_transactions()).transactions

        assert (await a.get_earnings(period="lifetime")).period == "lifetime"
        with pytest.raises(ToolFailed, match="payout"):
            await a.set_payout_account("acct_123")
        with pytest.raises(ToolFailed):
            await a.request_payout()  # below the minimum
        assert (await op.create_invite(role="agent")).code.startswith("aci_")
        await drive_growth_refund_and_analytics_tools(a, u, op, bob.id, peek.id)
        assert (await a.leave_conversation(cid)).left
        rotated = await b.rotate_api_key()
        assert b.api_key == rotated.api_key and (await b.whoami()).id == bob.id

    assert Recording.called == set(TOOL_RESULTS), sorted(set(TOOL_RESULTS) - Recording.called)


async def drive_growth_refund_and_analytics_tools(
    agent: Any, user: Any, admin: Any, other_agent: str, peek_id: str
) -> None:
    """Referrals, ratings and badges (issue 12), refunds and feature flags (issue 14), analytics (issue 13)."""
    assert (await agent.get_referral_code()).code.startswith("ref_")
    assert (await user.get_referral_stats()).pending == 0
    await admin.verify_agent(other_agent, True, "checked by the SDK test")
    assert (await user.find_agents(verified_only=True)).agents[0].id == other_agent
    assert (await agent.rate_agent(other_agent, 5)).stars == 5  # they conversed: the agent may rate
    assert (await agent.get_agent_analytics(period="month")).period == "month"
    assert (await admin.get_platform_analytics(period="week")).period == "week"
    assert (await admin.refund_peek(peek_id, "refunded by the SDK test")).replayed is False
    await admin.set_feature_flag("tool.rate_agent", False, reason="paused by the SDK test")
    assert "tool.rate_agent" in [f.key for f in (await admin.list_feature_flags()).flags]


# --- errors -----------------------------------------------------------------------------------------


async def test_a_tool_error_is_a_typed_exception_with_the_servers_message(base: str) -> None:
    async with AgentChat.connect(base) as chat:
        with pytest.raises(ToolFailed) as failed:
            await chat.whoami()
    assert failed.value.tool == "whoami"
    assert failed.value.message.startswith("it needs an identity. Call register_agent or register_user first")


async def test_a_rate_limited_call_waits_retry_after_then_succeeds_or_raises_it(hub: Hub) -> None:
    settings = hub.settings.model_copy(update={"rate_limit_principal": "3/second"})
    async with serving(hub, settings=settings) as url:
        alice = await hub.register_agent("alice")
        async with AgentChat.connect(f"{url}/mcp", api_key=alice.api_key, retry=FAST) as chat:
            started = anyio.current_time()
            for _ in range(5):  # two over the limit: each waits for the window
                await chat.whoami()
            assert anyio.current_time() - started >= 0.9
        impatient = RetryPolicy(max_rate_limit_wait=0)
        async with AgentChat.connect(f"{url}/mcp", api_key=alice.api_key, retry=impatient) as chat:
            with pytest.raises(RateLimited) as limited:
                for _ in range(5):
                    await chat.whoami()
    assert limited.value.retry_after >= 1
    assert "retry_after_seconds=" in limited.value.message


async def test_the_hubs_per_address_limit_http_429_is_rate_limited_too(hub: Hub) -> None:
    settings = hub.settings.model_copy(update={"rate_limit_ip": "6/second"})
    async with serving(hub, settings=settings) as url:
        alice = await hub.register_agent("alice")
        async with AgentChat.connect(f"{url}/mcp", api_key=alice.api_key, retry=FAST) as chat:
            for _ in range(8):  # over the limit: each waits for Retry-After, then goes through
                await chat.whoami()
        await anyio.sleep(1.1)
        impatient = RetryPolicy(max_rate_limit_wait=0)
        async with AgentChat.connect(f"{url}/mcp", api_key=alice.api_key, retry=impatient) as chat:
            with pytest.raises(RateLimited) as limited:
                for _ in range(8):
                    await chat.whoami()
    assert limited.value.retry_after >= 1 and "Too many requests from your address" in limited.value.message


async def test_templates_come_as_text_and_an_unknown_one_is_a_protocol_error(base: str) -> None:
    async with AgentChat.connect(base) as chat:
        text = await chat.prompt("coding-assistant", name="Quill", focus="Rust")
        assert text.startswith("You are Quill, a coding assistant on agentchat")
        with pytest.raises(ProtocolError) as refused:
            await chat.prompt("no-such-template")
        found = await chat.call("find_agents", {"limit": 1}, safe=True)  # a tool by name, as a dict
    assert refused.value.code == -32602 and "the prompts are: customer-service-agent" in refused.value.message
    assert found == {"agents": [], "next_cursor": None}


async def test_calls_outside_async_with_say_so() -> None:
    with pytest.raises(ClientClosed, match="async with"):
        await AgentChat.connect("http://127.0.0.1:9/mcp").whoami()


async def test_a_hub_that_is_not_there_fails_to_connect_quickly() -> None:
    policy = RetryPolicy(connect_attempts=2, base_delay=0.01)
    with pytest.raises(ConnectionLost, match="could not connect"):
        async with AgentChat.connect("http://127.0.0.1:9/mcp", retry=policy):
            pass


# --- reconnects -------------------------------------------------------------------------------------


async def test_the_message_stream_survives_a_hub_restart_without_loss_or_duplicates(hub: Hub) -> None:
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    states: list[ConnectionState] = []
    received: list[IncomingMessage] = []
    async with hub_process(hub) as (url, first):
        port = int(url.rsplit(":", 1)[1])
        bob_chat = AgentChat.connect(
            f"{url}/mcp", api_key=bob.api_key, retry=FAST, heartbeat_interval=0.2, on_state_change=states.append
        )
        async with AgentChat.connect(f"{url}/mcp", api_key=alice.api_key, retry=FAST) as a, bob_chat as b:
            cid = (await a.start_conversation([bob.id], "restart")).conversation.id

            async def read_all() -> None:
                async for message in b.messages(wait_s=1):
                    received.append(message)
                    if len(received) == 10:
                        return

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read_all)
                for n in range(5):
                    await a.send_message(cid, f"before {n}")
                with anyio.fail_after(20):
                    while len(received) < 5:
                        await anyio.sleep(0.05)
                first.kill()
                first.wait()
                with pytest.raises(ConnectionLost):
                    await a.send_message(cid, "lost: not safe to retry")  # sent to a dead hub: raised, not retried
                with anyio.fail_after(10):
                    while ConnectionState.RECONNECTING not in states:  # the heartbeat noticed
                        await anyio.sleep(0.05)
                async with hub_process(hub, port=port) as (_, second):
                    for n in range(5):
                        await a.send_message(cid, f"after {n}")
                    with anyio.fail_after(30):
                        while len(received) < 10:
                            await anyio.sleep(0.05)
                    second.kill()
                    second.wait()
    texts = [m.text for m in received]
    assert texts == [f"before {n}" for n in range(5)] + [f"after {n}" for n in range(5)]
    assert [m.seq for m in received] == list(range(1, 11))
    assert states[-1] is ConnectionState.CLOSED and b.reconnects >= 1


# --- stdio ------------------------------------------------------------------------------------------


async def test_local_spawns_the_embedded_server_and_keeps_the_new_identity(hub: Hub) -> None:
    env = {"AGENTCHAT_SECRET_FILE": str(hub.settings.resolved_secret_file()), "PYTHONPATH": str(PROJECT_ROOT)}
    db = hub.settings.db if isinstance(hub.settings.db, Path) else None  # local() names an SQLite file
    env["AGENTCHAT_DB"] = support_db.db_value(hub.settings.db)
    async with AgentChat.local(db, env=env, retry=FAST) as chat:
        me = await chat.register("carol", peek_price=2.5)
        assert chat.state is ConnectionState.CONNECTED
        mine = await chat.whoami()  # after the switch to its key: a new process, started with AGENTCHAT_API_KEY
        assert chat.api_key == me.api_key and (mine.id, mine.peek_price) == (me.id, "2.50")


def test_every_public_name_of_the_sdk_has_a_docstring() -> None:
    import inspect

    import agentchat_mcp.client as sdk

    missing = [name for name in sdk.__all__ if not inspect.getdoc(getattr(sdk, name))]
    for name in sdk.__all__:
        value = getattr(sdk, name)
        ours = [c for c in getattr(value, "__mro__", ()) if c.__module__.startswith("agentchat_mcp")]
        for cls in ours:
            for attr, member in vars(cls).items():
                public = not attr.startswith("_") and (callable(member) or isinstance(member, property | classmethod))
                if public and not inspect.getdoc(member):
                    missing.append(f"{name}.{attr}")
    assert not missing, missing
