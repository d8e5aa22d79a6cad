"""Rate limits: exact moving windows per principal, per tool, per IP; tool errors in MCP, 429 over HTTP."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp_types import ResourceTemplateReference
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentchat_mcp.errors import RateLimited
from agentchat_mcp.ratelimit import LOCAL, RATE_LIMITED, HttpRateLimit, RateLimiter, RequestLimits
from agentchat_mcp.settings import Settings
from tests.conftest import Hub, error_text, structured
from tests.support_http import http_client, register_over_http, serving

pytestmark = pytest.mark.anyio


def limited_hub(hub: Hub, **limits: Any) -> Hub:
    hub.settings = hub.settings.model_copy(update=limits)
    return hub


async def test_200_concurrent_calls_from_one_principal_admit_exactly_100(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    results: list[Any] = []
    async with hub.client(alice) as client:

        async def call() -> None:
            results.append(await client.call_tool("whoami", {}))

        async with anyio.create_task_group() as tasks:
            for _ in range(200):
                tasks.start_soon(call)
    admitted = [r for r in results if not r.is_error]
    refused = [r for r in results if r.is_error]
    assert (len(admitted), len(refused)) == (100, 100)
    assert all(structured(r)["id"] == alice.id for r in admitted)
    for r in refused:
        assert r.structured_content["error"] == "rate_limited"
        assert 1 <= r.structured_content["retry_after_seconds"] <= 60
        assert "retry_after_seconds=" in error_text(r) and "100 per minute" in error_text(r)
    assert hub.counter("rate_limited") == 100


async def test_a_per_tool_limit_refuses_the_11th_call_within_a_minute_with_a_retry_hint(hub: Hub) -> None:
    limited_hub(hub, rate_limit_tools={"find_agents": "10/minute"})
    alice = await hub.register_agent("alice")
    async with hub.client(alice) as client:
        first_ten = [await client.call_tool("find_agents", {}) for _ in range(10)]
        eleventh = await client.call_tool("find_agents", {})
        other_tool = await client.call_tool("whoami", {})
    assert not any(r.is_error for r in first_ten)
    assert "Too many find_agents calls: at most 10 per minute" in error_text(eleventh)
    assert 50 <= eleventh.structured_content["retry_after_seconds"] <= 60
    assert not other_tool.is_error  # only that tool's window is full


async def test_the_request_peek_limit_is_ten_a_minute_by_default() -> None:
    limiter = RateLimiter.from_settings(Settings())
    assert [(i.amount, i.get_expiry()) for i in limiter.per_tool["request_peek"]] == [(10, 60)]
    for _ in range(10):
        await limiter.check_tool_call("request_peek", principal_id="usr_a", client=LOCAL)
    with pytest.raises(Exception, match="Too many request_peek calls") as refused:
        await limiter.check_tool_call("request_peek", principal_id="usr_a", client=LOCAL)
    assert refused.value.retry_after_seconds >= 59  # type: ignore[attr-defined]
    await limiter.check_tool_call("request_peek", principal_id="usr_b", client=LOCAL)  # per user


async def test_the_window_moves_a_refused_caller_gets_in_again_after_retry_after(hub: Hub) -> None:
    limited_hub(hub, rate_limit_principal="3/second")
    alice = await hub.register_agent("alice")
    async with hub.client(alice) as client:
        ok = [await client.call_tool("whoami", {}) for _ in range(3)]
        refused = await client.call_tool("whoami", {})
        await anyio.sleep(refused.structured_content["retry_after_seconds"] + 0.05)
        again = await client.call_tool("whoami", {})
    assert not any(r.is_error for r in ok) and refused.is_error and not again.is_error


async def test_principals_have_separate_windows_and_anonymous_sessions_share_the_local_one(hub: Hub) -> None:
    limited_hub(hub, rate_limit_principal="2/minute")
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    async with hub.client(alice) as a, hub.client(bob) as b, hub.client() as anonymous:
        alice_calls = [(await a.call_tool("whoami", {})).is_error for _ in range(3)]
        bob_calls = [(await b.call_tool("whoami", {})).is_error for _ in range(2)]
        anon_calls = [(await anonymous.call_tool("find_agents", {})).is_error for _ in range(3)]
    assert alice_calls == [False, False, True]
    assert bob_calls == [False, False]
    assert anon_calls == [False, False, True]


async def test_the_limit_holds_in_the_legacy_protocol_too(hub: Hub) -> None:
    limited_hub(hub, rate_limit_principal="1/minute")
    alice = await hub.register_agent("alice")
    async with hub.client(alice, mode="legacy") as client:
        first, second = await client.call_tool("whoami", {}), await client.call_tool("whoami", {})
    assert not first.is_error
    assert second.structured_content["retry_after_seconds"] >= 1


async def test_disabled_limits_admit_everything(hub: Hub) -> None:
    limited_hub(hub, rate_limit_principal="1/minute", rate_limits_enabled=False)
    alice = await hub.register_agent("alice")
    async with hub.client(alice) as client:
        assert not any([(await client.call_tool("whoami", {})).is_error for _ in range(5)])


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_reads_subscriptions_and_completions_count_against_the_principal_limit_over_http(
    hub: Hub, mode: str
) -> None:
    limited_hub(hub, rate_limit_principal="4/minute")
    alice = await hub.register_agent("alice")
    me, agent_ref = "agentchat://me", ResourceTemplateReference(uri="agentchat://agents/{agent_id}")

    async def subscribe(client: Client) -> None:
        if mode == "legacy":
            await client.subscribe_resource(me)
        else:
            async with client.listen(resource_subscriptions=[me]):
                pass

    async with serving(hub) as base, http_client(base, alice, mode=mode) as a:
        await a.read_resource(me)
        await a.complete(agent_ref, {"name": "agent_id", "value": "agt_"})
        await subscribe(a)
        await a.read_resource(me)  # the 4th request of this minute
        refusals = []
        for over in (a.read_resource(me), a.complete(agent_ref, {"name": "agent_id", "value": "agt_"}), subscribe(a)):
            with pytest.raises(MCPError) as refused:
                await over
            refusals.append(refused.value.error)
        tool = await a.call_tool("whoami", {})  # tool calls share the window
    for error in refusals:
        assert error.code == RATE_LIMITED
        assert error.data["error"] == "rate_limited" and 1 <= error.data["retry_after_seconds"] <= 60
        assert "4 per minute" in error.message
        assert f"retry_after_seconds={error.data['retry_after_seconds']}" in error.message
    assert tool.structured_content is not None and tool.structured_content["error"] == "rate_limited"


async def test_a_bad_limit_setting_is_refused_with_the_setting_named() -> None:
    with pytest.raises(ValueError, match="rate_limit_principal = 'lots' is not a rate limit"):
        RateLimiter.from_settings(Settings(rate_limit_principal="lots"))
    with pytest.raises(ValueError, match="rate_limit_storage = 'nosuch://x' is not usable"):
        RateLimiter.from_settings(Settings(rate_limit_storage="nosuch://x"))


# --- registration per IP and the HTTP 429 ------------------------------------------------------


class FakeRequest:
    def __init__(self, host: str) -> None:
        self.client = type("Client", (), {"host": host})()
        self.headers: dict[str, str] = {}


async def test_registration_is_limited_per_ip_address_over_http() -> None:
    limits = RequestLimits(RateLimiter(registration="2/hour", principal="1000/minute"))
    from_one = [await limits.refusal("register_agent", None, FakeRequest("203.0.113.7")) for _ in range(3)]
    from_other = await limits.refusal("register_user", None, FakeRequest("203.0.113.8"))
    assert from_one[:2] == [None, None]
    third = from_one[2]
    assert third is not None and third.is_error
    assert "Too many registrations from your address" in third.content[0].text  # type: ignore[union-attr]
    assert third.structured_content is not None and third.structured_content["retry_after_seconds"] > 3000
    assert from_other is None


async def test_registration_over_stdio_is_not_limited_by_address(hub: Hub) -> None:
    limited_hub(hub, rate_limit_registration="1/hour")
    async with hub.client() as client:
        # one session registers once; a second client (another process) registers again
        assert not (await client.call_tool("register_user", {"display_name": "u1"})).is_error
    async with hub.client() as client:
        assert not (await client.call_tool("register_user", {"display_name": "u2"})).is_error


def http_app(limiter: RateLimiter) -> Any:
    async def ok(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/mcp", ok, methods=["GET", "POST"]), Route("/healthz", ok)])
    return HttpRateLimit(app, limiter=limiter)


async def test_over_http_the_ip_limit_is_a_429_with_retry_after_and_ratelimit_headers() -> None:
    limiter = RateLimiter(ip="5/minute")
    transport = httpx2.ASGITransport(app=http_app(limiter), client=("198.51.100.1", 5000))
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        responses = [await http.post("/mcp", json={}) for _ in range(6)]
        health = await http.get("/healthz")
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    first, last = responses[0], responses[-1]
    assert first.headers["ratelimit-limit"] == "5" and first.headers["ratelimit-remaining"] == "4"
    assert first.headers["ratelimit-policy"] == "5;w=60"
    assert 55 <= int(last.headers["retry-after"]) <= 60
    assert last.headers["ratelimit-remaining"] == "0"
    refused = last.json()  # a JSON-RPC error, which MCP clients surface at any HTTP status
    assert (refused["jsonrpc"], refused["id"], refused["error"]["code"]) == ("2.0", None, RATE_LIMITED)
    assert refused["error"]["data"] == {
        "error": "rate_limited",
        "retry_after_seconds": int(last.headers["retry-after"]),
    }
    assert health.status_code == 200 and "ratelimit-limit" not in health.headers  # never counted


async def test_each_ip_address_has_its_own_http_window() -> None:
    limiter = RateLimiter(ip="1/minute")
    app = http_app(limiter)
    codes = []
    for host in ("198.51.100.1", "198.51.100.2", "198.51.100.1"):
        transport = httpx2.ASGITransport(app=app, client=(host, 5000))
        async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            codes.append((await http.get("/mcp")).status_code)
    assert codes == [200, 200, 429]


# --- storage: redis works, an outage fails open -----------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Any) -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_a_redis_storage_is_shared_by_two_limiters_and_never_admits_more_than_the_limit(
    redis_url: str,
) -> None:
    one, two = (
        RateLimiter(storage_uri=redis_url, principal="10/minute"),
        RateLimiter(storage_uri=redis_url, principal="10/minute"),
    )
    admitted = 0

    async def call(limiter: RateLimiter) -> None:
        nonlocal admitted
        with contextlib.suppress(RateLimited):
            await limiter.check_tool_call("whoami", principal_id="agt_shared", client=LOCAL)
            admitted += 1

    async with anyio.create_task_group() as tasks:
        for i in range(40):
            tasks.start_soon(call, one if i % 2 else two)
    # The Lua script is atomic, so never more than 10. Under heavy load the Redis client retries a
    # script whose answer timed out, which counts that call twice: the limit errs on the strict side.
    assert 1 <= admitted <= 10


async def test_a_storage_outage_lets_calls_through_and_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimiter(storage_uri=f"redis://127.0.0.1:{free_port()}", principal="1/minute")
    for _ in range(3):
        await limiter.check_tool_call("whoami", principal_id="agt_x", client=LOCAL)
    assert "rate limit storage failed" in caplog.text


async def test_inside_a_stdio_process_the_limit_is_a_tool_error_with_retry_after(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    params = hub.stdio(alice, AGENTCHAT_RATE_LIMIT_PRINCIPAL="2/minute")
    async with Client(params) as client:
        calls = [await client.call_tool("whoami", {}) for _ in range(3)]
    assert [c.is_error for c in calls] == [False, False, True]
    assert calls[2].structured_content["retry_after_seconds"] >= 1
    assert "retry_after_seconds=" in calls[2].content[0].text


# --- the real thing: request_peek, and the hub over HTTP ----------------------------------------


async def test_the_11th_request_peek_within_a_minute_is_refused_with_a_retry_hint(hub: Hub) -> None:

    alice, bob = await hub.register_agent("alice", peek_price="0.50"), await hub.register_agent("bob")
    uma = await hub.register_user("uma")
    admin = await hub.register_admin("root")
    async with hub.client(admin) as root:
        names = {t.name for t in (await root.list_tools()).tools}
        if "grant_credits" not in names:
            pytest.skip("the peek tools are not in this tree yet")
        structured(await root.call_tool("grant_credits", {"user_id": uma.id, "amount": "100.00"}))
    conversations = []
    async with hub.client(alice) as a:
        for i in range(11):
            started = await a.call_tool("start_conversation", {"participants": [bob.id], "topic": f"t{i}"})
            conversations.append(structured(started)["conversation"]["id"])
    async with hub.client(uma) as u:
        results = [
            await u.call_tool("request_peek", {"conversation_id": c, "max_price": "5.00"}) for c in conversations
        ]
    assert [r.is_error for r in results[:10]] == [False] * 10  # ten real peek requests
    refused = results[10]
    assert "Too many request_peek calls: at most 10 per minute" in error_text(refused)
    assert 50 <= refused.structured_content["retry_after_seconds"] <= 60


async def test_over_real_http_the_ip_limit_answers_429_and_registration_is_limited_per_address(hub: Hub) -> None:
    hub.settings = hub.settings.model_copy(update={"rate_limit_ip": "30/minute", "rate_limit_registration": "2/hour"})
    async with serving(hub) as base:
        await register_over_http(base, "a1")
        await register_over_http(base, "a2")
        async with http_client(base) as anonymous:
            third = await anonymous.call_tool("register_agent", {"name": "a3", "peek_price": "1.00"})
        assert "Too many registrations from your address (2 per hour)" in error_text(third)
        assert third.structured_content["retry_after_seconds"] > 3000
        async with httpx2.AsyncClient() as http:
            codes = []
            for _ in range(40):
                got = await http.get(f"{base}/mcp")
                codes.append(got.status_code)
                if got.status_code == 429:
                    break
            health = await http.get(f"{base}/healthz")
    assert codes[-1] == 429 and 429 not in codes[:-1]
    assert 1 <= int(got.headers["retry-after"]) <= 60 and got.headers["ratelimit-remaining"] == "0"
    assert got.json()["error"]["data"]["retry_after_seconds"] == int(got.headers["retry-after"])
    assert health.status_code == 200  # health checks are never limited


async def test_an_mcp_client_over_the_ip_limit_gets_rate_limited_with_the_wait_not_a_server_error(hub: Hub) -> None:
    hub.settings = hub.settings.model_copy(update={"rate_limit_ip": "5/minute"})
    async with serving(hub) as base, http_client(base) as anonymous:
        with pytest.raises(MCPError) as refused:
            for _ in range(10):
                await anonymous.list_tools()
    assert refused.value.error.code == RATE_LIMITED
    assert refused.value.error.message.startswith("Too many requests from your address; retry after ")
    assert 1 <= refused.value.error.data["retry_after_seconds"] <= 60


async def test_several_windows_in_one_setting_all_hold_and_an_operator_can_reset_them() -> None:
    limiter = RateLimiter(principal="2/second;5/minute")
    decisions = [await limiter.hit("principal", limiter.principal, "agt_a") for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[1].remaining == 0 and decisions[1].limit == 2  # the tightest window is reported
    assert decisions[2].window_seconds == 1
    await limiter.reset()
    assert (await limiter.hit("principal", limiter.principal, "agt_a")).allowed


async def test_a_caller_with_a_bad_key_is_counted_as_anonymous_from_its_address(hub: Hub) -> None:
    limited_hub(hub, rate_limit_principal="1/minute")
    alice = await hub.register_agent("alice")
    rotated = dataclasses.replace(alice, api_key=alice.api_key[:-4] + "xxxx")
    async with hub.client(rotated) as client:
        first = await client.call_tool("whoami", {})
        second = await client.call_tool("whoami", {})
    assert first.is_error and "API key is not valid" in first.content[0].text  # type: ignore[union-attr]
    assert second.is_error and second.structured_content is not None
    assert second.structured_content["error"] == "rate_limited"  # the bad key's calls share one window
    async with hub.client(alice) as client:  # alice's own window was never touched
        assert not (await client.call_tool("whoami", {})).is_error


def test_the_in_process_windows_move_exactly_and_forget_idle_keys() -> None:
    """memory:// windows (LocalMovingWindows): at most N hits in any window-long span, the same
    boundary as limits' moving window, a retry time from the oldest hit, and no unbounded growth."""
    from limits import parse

    from agentchat_mcp.ratelimit import LocalMovingWindows

    now = [1000.0]
    windows = LocalMovingWindows(clock=lambda: now[0])
    three = parse("3/10 seconds")
    admitted = []
    for at in (1000.0, 1001.0, 1002.0, 1003.0, 1010.0, 1010.5, 1011.5, 1012.5, 1012.6):
        now[0] = at
        admitted.append(windows.hit(three, "principal", "agt_a"))
    # 1003: three in the last 10 s; 1010: the hit at 1000 is exactly 10 s old and still counts;
    # 1010.5, 1011.5, 1012.5: one earlier hit has left the window each time; 1012.6: full again.
    assert admitted == [True, True, True, False, False, True, True, True, False]
    stats = windows.get_window_stats(three, "principal", "agt_a")
    assert (stats.remaining, stats.reset_time) == (0, 1010.5 + 10)
    assert windows.hit(three, "principal", "agt_b")  # another key has its own window

    for i in range(LocalMovingWindows.SWEEP_EVERY):  # a sweep runs; every key above is long idle
        now[0] = 5000.0 + i * 0.001
        windows.hit(parse("100000/day"), "ip", "10.0.0.1")
    assert set(windows._hits) == {("100000 per 1 day", "ip", "10.0.0.1")}
