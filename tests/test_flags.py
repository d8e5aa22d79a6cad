"""Feature flags: kill switches, per-tool switches, rollouts and groups, across processes, audited."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
import sqlalchemy
from alembic import command
from alembic.script import ScriptDirectory
from mcp import Client, MCPError
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from agentchat_mcp.errors import InvalidInput, NotFound
from agentchat_mcp.server import build_app_context
from agentchat_mcp.services.flag_rules import bucket
from agentchat_mcp.services.flags import FeatureFlags
from agentchat_mcp.settings import ConfigurationError
from agentchat_mcp.store import migrations, open_store
from agentchat_mcp.telemetry import Telemetry
from tests.conftest import Account, Hub, error_text, rows, structured
from tests.support_cli import cli
from tests.test_peeks import scene

pytestmark = pytest.mark.anyio


async def call(c: Client, tool: str, **args: Any) -> dict[str, Any]:
    return structured(await c.call_tool(tool, args))


NO_SUCH_CONVERSATION = {"conversation_id": "cnv_" + "0" * 20, "max_price": "1.00"}


async def refused_within(c: Client, tool: str, args: dict[str, Any], seconds: float) -> float:
    """Call `tool` until a feature flag pauses it; how long that took. Calls every 0.15 s: request_peek
    allows 10 calls a minute."""
    started = time.monotonic()
    while True:
        result = await c.call_tool(tool, args)
        if result.is_error and "paused" in error_text(result):
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, f"{tool} still answers {result.content[0].text!r}"
        await anyio.sleep(0.15)


async def test_an_admin_pauses_peeks_and_users_are_told_so_while_the_tool_stays_listed(hub: Hub) -> None:
    s = await scene(hub)
    admin = await hub.register_admin("ops")
    ask = {"conversation_id": s.conversation_id, "max_price": "3.83"}
    async with hub.client(admin) as a:
        off = await call(a, "set_feature_flag", flag="peeks", value=False, reason="incident 42")
    assert (off["value"], off["is_set"], off["updated_by"]) == (False, True, admin.id)
    async with hub.client(s.user) as u:  # a server started after the change applies it at once
        refused = error_text(await u.call_tool("request_peek", ask))
        assert "New peek requests are paused" in refused and "'peeks' is off" in refused
        assert "request_peek" in {t.name for t in (await u.list_tools()).tools}  # no surprise list change
        assert (await call(u, "quote_peek", conversation_id=s.conversation_id))["total"] == "3.83"
        assert (await call(u, "get_balance"))["credit"] == "10.00"  # nothing was charged

    async with hub.client(admin) as a:
        await call(a, "set_feature_flag", flag="peeks", value=True)
        listed = await call(a, "list_feature_flags", flag="peeks")
    async with hub.client(s.user) as u:
        assert (await call(u, "request_peek", **ask))["status"] == "awaiting_consent"
    (change_on, change_off) = listed["recent_changes"]
    assert (change_off["actor"], change_off["reason"]) == (admin.id, "incident 42")
    assert (change_off["old"]["value"], change_off["new"]["value"]) == (True, False)
    assert (change_on["old"]["value"], change_on["new"]["value"]) == (False, True)
    assert rows(hub, "SELECT subject, actor FROM feature_flag_changes ORDER BY id") == [("flag:peeks", admin.id)] * 2


async def test_a_running_server_applies_an_admins_change_within_a_second(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    admin = await hub.register_admin("ops")
    async with hub.client(admin) as a, hub.client(alice) as c:  # two servers, as two processes would be
        await call(c, "find_agents", query="x")
        await call(a, "set_feature_flag", flag="tool.find_agents", value=False)
        assert await refused_within(c, "find_agents", {"query": "x"}, 1.0) < 1.0
        assert "find_agents" in {t.name for t in (await c.list_tools()).tools}


async def test_a_per_tool_switch_hides_the_tool_from_the_list_only_when_asked_to(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    admin = await hub.register_admin("ops")
    async with hub.client(admin) as a:
        await call(a, "set_feature_flag", flag="tool.find_agents", value=False, hide_when_off=True)
    async with hub.client(alice) as c:
        listed = {t.name for t in (await c.list_tools()).tools}
        assert "find_agents" not in listed and "whoami" in listed
        assert "This tool is paused" in error_text(await c.call_tool("find_agents", {"query": "x"}))


async def test_registration_and_payouts_switches_refuse_with_a_clear_message(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    admin = await hub.register_admin("ops")
    async with hub.client(admin) as a:
        await call(a, "set_feature_flag", flag="registration", value=False)
        await call(a, "set_feature_flag", flag="payouts", value=False)
    async with hub.client() as anon:  # a server started after the change: applies it at once
        refused = error_text(await anon.call_tool("register_user", {"display_name": "late"}))
    assert "Registration is paused" in refused
    async with hub.client(alice) as c:
        assert "Payouts are paused" in error_text(await c.call_tool("request_payout", {}))
    done = cli("payouts", "run", "--db", str(hub.settings.db), AGENTCHAT_SECRET_FILE=str(hub.settings.secret_file))
    assert done.returncode == 2 and "payouts are paused" in done.stderr.lower()


async def test_a_cli_change_reaches_another_server_process_within_a_second(hub: Hub) -> None:
    s = await scene(hub)
    async with Client(hub.stdio(s.user)) as u:  # a real agentchat-mcp process on the same database
        assert "No conversation" in error_text(await u.call_tool("request_peek", NO_SUCH_CONVERSATION))
        done = cli("flags", "set", "peeks", "off", "--reason", "drill", "--db", str(hub.settings.db))
        assert done.returncode == 0, done.stderr
        took = await refused_within(u, "request_peek", NO_SUCH_CONVERSATION, 1.0)
        refused = error_text(
            await u.call_tool("request_peek", {"conversation_id": s.conversation_id, "max_price": "3.83"})
        )
    assert took < 1.0 and "New peek requests are paused" in refused
    ((actor, reason),) = rows(hub, "SELECT actor, reason FROM feature_flag_changes")
    assert actor.startswith("cli") and reason == "drill"


async def test_a_30_percent_rollout_picks_30_percent_of_principals_the_same_way_after_a_restart(hub: Hub) -> None:
    ids = [f"agt_{n:020d}" for n in range(10_000)]
    rules = [{"value": True, "percentage": 30}]
    async with open_store(hub.settings.db) as store:
        first = FeatureFlags(store)
        await first.set_flag("new_inbox", False, actor="test", rules=rules)
        picked = {i for i in ids if first.enabled("new_inbox", i, "agent")}
        first.close()
    assert 2_700 <= len(picked) <= 3_300, len(picked)
    async with open_store(hub.settings.db) as store:  # a fresh process's view: the same principals
        again = FeatureFlags(store)
        await again.load()
        assert {i for i in ids if again.enabled("new_inbox", i, "agent")} == picked
        again.close()
    assert bucket("new_inbox", ids[0]) == bucket("new_inbox", ids[0]) and 0 <= bucket("x", "y") < 10_000


async def test_targeting_by_group_role_and_principal_first_match_wins(hub: Hub) -> None:
    admin = await hub.register_admin("ops")
    tester, other = await hub.register_agent("tester"), await hub.register_agent("other")
    assert cli("flags", "group-add", "beta", tester.id, "--db", str(hub.settings.db)).returncode == 0
    rules = [
        {"value": "blocked", "principals": [other.id]},
        {"value": "beta", "groups": ["beta"]},
        {"value": "staff", "roles": ["admin"]},
    ]
    async with hub.client(admin) as a:
        got = await call(a, "set_feature_flag", flag="inbox_layout", value="classic", rules=rules)
        assert got["kind"] == "string" and len(got["rules"]) == 3
        listing = await call(a, "list_feature_flags")
    assert listing["groups"] == {"beta": [tester.id]}
    async with open_store(hub.settings.db) as store:
        flags = FeatureFlags(store)
        await flags.load()
        seen = {
            who: flags.value("inbox_layout", pid, role)
            for who, pid, role in [("tester", tester.id, "agent"), ("other", other.id, "agent"),
                                   ("admin", admin.id, "admin"), ("anyone", "agt_x", "agent")]
        }  # fmt: skip
        flags.close()
    assert seen == {"tester": "beta", "other": "blocked", "admin": "staff", "anyone": "classic"}
    cli("flags", "group-remove", "beta", tester.id, "--db", str(hub.settings.db))
    history = cli("flags", "history", "group:beta", "--db", str(hub.settings.db)).stdout.splitlines()
    assert len(history) == 2


async def test_advanced_analytics_is_a_plan_gate_only_the_plans_group_passes(hub: Hub) -> None:
    admin = await hub.register_admin("ops")
    pro, basic = await hub.register_agent("pro"), await hub.register_agent("basic")
    for agent in (pro, basic):  # on for everyone by default
        async with hub.client(agent) as c:
            assert (await call(c, "get_agent_analytics"))["period"] == "month"
    assert cli("flags", "group-add", "pro-plan", pro.id, "--db", str(hub.settings.db)).returncode == 0
    async with hub.client(admin) as a:
        rules = [{"value": True, "groups": ["pro-plan"]}]
        await call(a, "set_feature_flag", flag="advanced_analytics", value=False, rules=rules, reason="plans")
    async with hub.client(pro) as p, hub.client(basic) as b:
        assert (await call(p, "get_agent_analytics"))["period"] == "month"
        assert "agentchat://analytics/agent" in (await p.read_resource("agentchat://analytics/agent")).contents[0].uri
        assert error_text(await b.call_tool("get_agent_analytics", {})) == (
            "Error executing tool get_agent_analytics: Advanced analytics are not part of your plan on this server "
            "(feature flag 'advanced_analytics' is off). get_earnings still shows your earnings; the operator can "
            "add you to the plan."
        )
        with pytest.raises(MCPError, match="not part of your plan"):
            await b.read_resource("agentchat://analytics/agent")
        assert (await call(b, "get_earnings"))["earned"] == "0.00"


async def test_bad_flag_values_and_rules_are_refused_with_what_would_work(hub: Hub) -> None:
    admin = await hub.register_admin("ops")
    async with hub.client(admin) as a:
        assert "must be a boolean" in error_text(
            await a.call_tool("set_feature_flag", {"flag": "peeks", "value": "no"})
        )
        bad_role = {"flag": "x", "value": True, "rules": [{"value": True, "roles": ["robot"]}]}
        assert error_text(await a.call_tool("set_feature_flag", bad_role))
        wrong_kind = {"flag": "x", "value": True, "rules": [{"value": 3}]}
        assert "must be a boolean" in error_text(await a.call_tool("set_feature_flag", wrong_kind))
    done = cli("flags", "set", "x", "on", "--rules", "{nope", "--db", str(hub.settings.db))
    assert done.returncode == 2 and "--rules is not JSON" in done.stderr


async def test_evaluations_are_counted_by_flag_and_variant(hub: Hub) -> None:
    alice: Account = await hub.register_agent("alice")
    async with hub.client(alice) as c:
        await call(c, "whoami")
    assert hub.counter("feature_flag_evaluations_total") >= 1


def _flags_revision() -> tuple[str, str]:
    """(the revision that adds the flag tables, the one before it), found by its file name: the numbers
    may change when branches merge."""
    scripts = ScriptDirectory.from_config(migrations.alembic_config())
    (found,) = [r for r in scripts.walk_revisions() if r.path and r.path.endswith("_feature_flags.py")]
    assert isinstance(found.down_revision, str)
    return found.revision, found.down_revision


def _migrate(hub: Hub, revision: str, *, down: bool) -> None:
    engine = sqlalchemy.create_engine(f"sqlite:///{hub.settings.db}")
    try:
        with engine.begin() as conn:
            config = migrations.alembic_config()
            config.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(config, revision)
    finally:
        engine.dispose()


@pytest.mark.sqlite_only("steps the SQLite file down and up through Alembic's batch migrations")
async def test_the_flags_migration_goes_down_and_up_again_on_a_database_holding_data(hub: Hub) -> None:
    s = await scene(hub)
    admin = await hub.register_admin("ops")
    async with hub.client(admin) as a:
        await call(a, "set_feature_flag", flag="peeks", value=False)
    ours, before = _flags_revision()
    _migrate(hub, before, down=True)
    tables = {name for (name,) in rows(hub, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not {t for t in tables if t.startswith("feature_flag")} and "messages" in tables
    _migrate(hub, ours, down=False)
    _migrate(hub, "head", down=False)
    async with hub.client(s.user) as u:  # the flags start from their defaults again; the rest is untouched
        assert (await call(u, "request_peek", conversation_id=s.conversation_id, max_price="3.83"))["id"]
    assert rows(hub, "SELECT COUNT(*) FROM feature_flag_changes") == [(0,)]


async def test_number_and_string_flags_keep_their_kind_and_bad_rules_say_what_a_rule_is(hub: Hub) -> None:
    async with open_store(hub.settings.db) as store:
        flags = FeatureFlags(store)
        await flags.set_flag("max_topics", 10, actor="test")
        assert flags.value("max_topics", "agt_a", "agent") == 10.0
        with pytest.raises(InvalidInput, match="must be a number"):
            await flags.set_flag("max_topics", "ten", actor="test")
        assert flags.value("never_set", "agt_a", "agent") is False  # unknown: the zero of a switch, and no error
        with pytest.raises(NotFound):
            flags.describe("never_set")
        bad_rules: list[Any] = [
            [{"roles": ["agent"]}],
            [{"value": 1, "percentage": 101}],
            [{"value": 1, "roles": ["robot"]}],
            [{"value": 1, "principals": "agt_a"}],
            [{"value": 1}] * 51,
        ]
        for rules in bad_rules:
            with pytest.raises(InvalidInput):
                await flags.set_flag("max_topics", 1, actor="test", rules=rules)
        with pytest.raises(InvalidInput, match="value is true/false"):
            await flags.set_flag("odd", [1], actor="test")
        with pytest.raises(InvalidInput, match="1 to 40"):
            await flags.group("", "agt_a", member=True, actor="test")
        assert await flags.group("beta", "agt_a", member=True, actor="test")
        assert not await flags.group("beta", "agt_a", member=True, actor="test")  # already in: nothing changes
        assert not await flags.refresh()  # nothing changed since this instance's last change: nothing to reload
        flags.close()


async def test_the_provider_answers_any_openfeature_client_and_another_provider_can_replace_it(hub: Hub) -> None:
    async with open_store(hub.settings.db) as store:
        ours = FeatureFlags(store)
        await ours.set_flag("max_topics", 3, actor="test")
        await ours.set_flag("peeks", True, actor="test")
        provider, context = ours.own, EvaluationContext("agt_a", {"role": "agent"})
        assert provider.resolve_integer_details("max_topics", 0, context).value == 3
        assert provider.resolve_string_details("peeks", "", context).error_code == ErrorCode.TYPE_MISMATCH
        assert provider.resolve_boolean_details("nope", True, context).error_code == ErrorCode.FLAG_NOT_FOUND
        assert provider.resolve_object_details("peeks", {}, context).error_code == ErrorCode.TYPE_MISMATCH
        ours.close()

        theirs = FeatureFlags(
            store, provider=InMemoryProvider({"peeks": InMemoryFlag("off", {"on": True, "off": False})})
        )
        assert "New peek requests are paused" in (theirs.paused("request_peek", "usr_a", "user") or "")
        assert theirs.paused("quote_peek", "usr_a", "user") is None
        theirs.close()


def peeks_off_provider() -> InMemoryProvider:
    """An operator's own OpenFeature provider (AGENTCHAT_FLAGS_PROVIDER=tests.test_flags:peeks_off_provider)."""
    return InMemoryProvider({"peeks": InMemoryFlag("off", {"on": True, "off": False})})


async def test_an_operator_serves_the_flags_from_another_openfeature_provider_by_configuration(hub: Hub) -> None:
    s = await scene(hub)
    hub.settings = hub.settings.model_copy(update={"flags_provider": "tests.test_flags:peeks_off_provider"})
    async with hub.client(s.user) as u:
        refused = error_text(
            await u.call_tool("request_peek", {"conversation_id": s.conversation_id, "max_price": "3.83"})
        )
    assert "New peek requests are paused" in refused
    broken = hub.settings.model_copy(update={"flags_provider": "tests.test_flags:no_such_factory"})
    with pytest.raises(ConfigurationError, match="did not give an OpenFeature provider"):
        build_app_context(broken, None, Telemetry())  # type: ignore[arg-type]
