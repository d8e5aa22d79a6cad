"""The hub over real HTTP: uvicorn on a free loopback port, the mcp Client in both eras, raw requests.

`serving(hub)` runs the app in-process (same event loop as the test); `hub_process(hub)` runs the
real `agentchat-mcp serve --transport http` command as a subprocess. Both live in tests/support_http.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ResourceUpdatedNotification
from pydantic import SecretStr

from agentchat_mcp.http import HttpOptions, UnsafeBinding, build_app, transport_security, uvicorn_config
from agentchat_mcp.settings import Settings
from agentchat_mcp.store import migrations
from agentchat_mcp.telemetry import Telemetry
from tests.conftest import PROJECT_ROOT, Account, Hub, error_text, structured
from tests.support_http import bearer, free_port, http_client, hub_process, serving, serving_app

pytestmark = pytest.mark.anyio

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
ANONYMOUS_TOOLS = {"register_agent", "register_user", "find_agents", "get_agent"}
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def sse(base: str, account: Account | str | None = None, *, mode: str = "auto", **headers: str) -> Client:
    """The mcp Client over the legacy SSE endpoint."""
    return Client(sse_client(f"{base}/sse", headers={**bearer(account), **headers}), mode=mode, cache=None)  # type: ignore[arg-type]


async def tool_names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


async def open_session(http: httpx2.AsyncClient, base: str, account: Account | None) -> str:
    """A handshake-era session opened by raw HTTP; returns its mcp-session-id."""
    got = await http.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **bearer(account)})
    assert got.status_code == 200, got.text
    session_id = got.headers["mcp-session-id"]
    done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    headers = {**MCP_HEADERS, **bearer(account), "mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"}
    assert (await http.post(f"{base}/mcp", json=done, headers=headers)).status_code == 202
    return session_id


def sse_result(body: str) -> dict[str, Any]:
    """The JSON-RPC result carried by a one-event SSE response body."""
    data = [line[len("data: ") :] for line in body.splitlines() if line.startswith("data: ")]
    message = json.loads(data[-1])
    assert "result" in message, message
    return dict(message["result"])


def whoami_request(request_id: int = 2) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}


# --- identity over HTTP: both eras, SSE, keys ------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_bearer_key_is_the_identity_in_both_eras_over_http_and_sse(hub: Hub, mode: str) -> None:
    alice = await hub.register_agent("alice")
    async with serving(hub) as base:
        async with http_client(base, alice, mode=mode) as c:
            me = structured(await c.call_tool("whoami", {}))
            assert (me["id"], me["role"]) == (alice.id, "agent")
            assert "send_message" in await tool_names(c)
        async with sse(base, alice, mode=mode) as s:
            assert structured(await s.call_tool("whoami", {}))["id"] == alice.id


async def test_a_bad_or_rotated_key_gets_401_with_www_authenticate(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    async with serving(hub) as base, httpx2.AsyncClient() as http:
        for path in ("/mcp", "/sse"):
            for headers in ({"Authorization": "Bearer acp_not_a_real_key"}, {"Authorization": "Basic YWxpY2U6eA=="}):
                refused = await http.post(base + path, json=INITIALIZE, headers={**MCP_HEADERS, **headers})
                assert refused.status_code == 401, (path, headers)
                challenge = refused.headers["www-authenticate"]
                assert challenge.startswith("Bearer ") and "error=" in challenge
                assert "acp_not_a_real_key" not in refused.text

        # Rotate inside a session opened with the old key: its very next request needs the new one.
        session = await open_session(http, base, alice)
        headers = {**MCP_HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
        rotate = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "rotate_api_key", "arguments": {}},
        }
        rotated = await http.post(f"{base}/mcp", json=rotate, headers={**headers, **bearer(alice)})
        new_key = sse_result(rotated.text)["structuredContent"]["api_key"]
        stale = await http.post(f"{base}/mcp", json=whoami_request(3), headers={**headers, **bearer(alice)})
        assert stale.status_code == 401
        same_session = await http.post(f"{base}/mcp", json=whoami_request(4), headers={**headers, **bearer(new_key)})
        assert (
            same_session.status_code == 200 and alice.id in same_session.text
        )  # the session is alice's, not the key's
        old = await http.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **bearer(alice)})
        assert old.status_code == 401
        assert 'error="invalid_token"' in old.headers["www-authenticate"]
        assert "rotated" in old.json()["error_description"]
        async with http_client(base, new_key) as c:
            assert structured(await c.call_tool("whoami", {}))["id"] == alice.id


async def test_a_key_in_the_query_string_or_two_keys_are_refused(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    async with serving(hub) as base, httpx2.AsyncClient() as http:
        for url in (
            f"{base}/mcp?access_token={alice.api_key}",
            f"{base}/mcp?api_key=anything",
            f"{base}/mcp?x={alice.api_key}",
            f"{base}/sse?token={alice.api_key}",
        ):
            refused = await http.post(url, json=INITIALIZE, headers=MCP_HEADERS)
            assert refused.status_code == 400, url
            assert "Authorization: Bearer" in refused.json()["error_description"]
        two = [*MCP_HEADERS.items(), ("Authorization", f"Bearer {alice.api_key}"), ("Authorization", "Bearer acp_x")]
        assert (await http.post(f"{base}/mcp", json=INITIALIZE, headers=two)).status_code == 400


# --- anonymous sessions and registration -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_without_a_key_a_client_may_only_register_and_read_the_directory(hub: Hub, mode: str) -> None:
    bob = await hub.register_agent("bob", tags=["python"])
    async with serving(hub) as base, http_client(base, mode=mode) as anon:
        names = await tool_names(anon)
        assert names >= ANONYMOUS_TOOLS
        assert not names & {"whoami", "send_message", "read_messages", "start_conversation", "get_balance"}
        found = structured(await anon.call_tool("find_agents", {"tag": "python"}))
        assert [a["id"] for a in found["agents"]] == [bob.id]
        assert structured(await anon.call_tool("get_agent", {"agent_id": bob.id}))["name"] == "bob"
        refused = error_text(await anon.call_tool("whoami", {}))
        assert "register_agent" in refused
        refused = error_text(await anon.call_tool("send_message", {"conversation_id": "cnv_" + "a" * 20, "text": "x"}))
        assert "identity" in refused


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_registering_in_a_session_makes_the_session_act_as_the_new_agent(hub: Hub, transport: str) -> None:
    async with serving(hub) as base:
        client = sse(base, mode="legacy") if transport == "sse" else None
        async with client or http_client(base, mode="legacy") as c:  # type: ignore[attr-defined]
            got = structured(await c.call_tool("register_agent", {"name": "carol", "peek_price": "2.00"}))
            assert got["api_key"].startswith("acp_")
            me = structured(await c.call_tool("whoami", {}))
            assert (me["id"], me["name"]) == (got["id"], "carol")
            assert "send_message" in await tool_names(c)
        # The key works on its own from any new connection.
        async with http_client(base, got["api_key"]) as again:
            assert structured(await again.call_tool("whoami", {}))["id"] == got["id"]


async def test_registration_closed_or_by_invitation_is_refused_over_http(hub: Hub) -> None:
    for policy, word in (("closed", "closed"), ("invite", "invitation")):
        settings = hub.settings.model_copy(update={"registration": policy})
        async with serving(hub, settings=settings) as base, http_client(base, mode="legacy") as anon:
            refused = error_text(await anon.call_tool("register_agent", {"name": "mallory", "peek_price": "1.00"}))
            assert word in refused
            assert not structured(await anon.call_tool("find_agents", {}))["agents"]


# --- sessions belong to their principal -----------------------------------------------------------


async def test_a_session_id_used_with_another_principals_key_is_refused(hub: Hub) -> None:
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    async with serving(hub) as base, httpx2.AsyncClient() as http:
        session = await open_session(http, base, alice)
        own = {**MCP_HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
        ok = await http.post(f"{base}/mcp", json=whoami_request(), headers={**own, **bearer(alice)})
        assert ok.status_code == 200 and alice.id in ok.text
        for intruder in (bob, None):
            hijack = await http.post(f"{base}/mcp", json=whoami_request(3), headers={**own, **bearer(intruder)})
            assert hijack.status_code == 404, intruder
            assert alice.id not in hijack.text


async def test_an_anonymous_sessions_identity_cannot_be_borrowed_by_its_id(hub: Hub) -> None:
    """Carol registers in an anonymous session; a client that sends her session id elsewhere is not carol."""
    eve = await hub.register_agent("eve")
    async with serving(hub) as base, httpx2.AsyncClient() as http:
        session = await open_session(http, base, None)
        headers = {**MCP_HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
        register = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "register_agent", "arguments": {"name": "carol", "peek_price": "1.00"}},
        }
        assert (await http.post(f"{base}/mcp", json=register, headers=headers)).status_code == 200
        assert "carol" in (await http.post(f"{base}/mcp", json=whoami_request(3), headers=headers)).text
        # With eve's key the session is not found; a 2026-07-28 request or an SSE connection ignores the header.
        stolen = {"mcp-session-id": session}
        hijack = await http.post(f"{base}/mcp", json=whoami_request(4), headers={**headers, **bearer(eve)})
        assert hijack.status_code == 404
        async with http_client(base, headers=stolen) as modern:
            assert "register_agent" in error_text(await modern.call_tool("whoami", {}))
        async with sse(base, mode="legacy", **stolen) as legacy_sse:
            assert "register_agent" in error_text(await legacy_sse.call_tool("whoami", {}))
        # Ending the session forgets the identity bound to it.
        app_headers = {k: v for k, v in headers.items() if k != "Content-Type"}
        assert (await http.delete(f"{base}/mcp", headers=app_headers)).status_code == 200
        gone = await http.post(f"{base}/mcp", json=whoami_request(5), headers=headers)
        assert gone.status_code == 404


async def test_identities_bound_to_sessions_that_ended_are_forgotten(hub: Hub) -> None:
    async with serving_app(hub) as (base, app):
        runtime = app.state.runtime
        async with sse(base, mode="legacy") as s:
            structured(await s.call_tool("register_agent", {"name": "dora", "peek_price": "1.00"}))
            slots = [k for k in runtime.app_ctx.session_keys if k.startswith("http:sse-")]
            assert len(slots) == 1
            runtime.prune_session_keys()
            assert slots[0] in runtime.app_ctx.session_keys  # still connected
        with anyio.fail_after(5):
            while runtime.sse._read_stream_writers:  # the stream winds down after the client leaves
                await anyio.sleep(0.02)
        runtime.prune_session_keys()
        assert slots[0] not in runtime.app_ctx.session_keys
        runtime.app_ctx.session_keys["http:0123abcd"] = "acp_gone"  # an expired Streamable HTTP session
        runtime.prune_session_keys()
        assert "http:0123abcd" not in runtime.app_ctx.session_keys


# --- transport security ---------------------------------------------------------------------------


async def test_foreign_origin_and_host_are_refused_before_auth(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    async with serving(hub) as base, httpx2.AsyncClient() as http:
        port = base.rsplit(":", 1)[1]
        for path in ("/mcp", "/sse", "/messages/?session_id=" + "0" * 32):
            headers = {**MCP_HEADERS, **bearer(alice)}
            origin = await http.post(base + path, json=INITIALIZE, headers={**headers, "Origin": "http://evil.example"})
            assert origin.status_code == 403, path
            host = await http.post(base + path, json=INITIALIZE, headers={**headers, "Host": "evil.example"})
            assert host.status_code == 421, path
            # a bad key behind a bad Host is not even looked at
            probe = {**MCP_HEADERS, "Authorization": "Bearer acp_guess", "Host": f"evil.example:{port}"}
            assert (await http.post(base + path, json=INITIALIZE, headers=probe)).status_code == 421
        for good in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
            ok = await http.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Origin": good})
            assert ok.status_code == 200, good
        ok = await http.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Host": f"localhost:{port}"})
        assert ok.status_code == 200


async def test_allow_lists_for_a_proxy_and_the_wildcard_refusal() -> None:
    with pytest.raises(UnsafeBinding, match="--allowed-host"):
        transport_security(HttpOptions(host="0.0.0.0", port=8765))  # noqa: S104
    with pytest.raises(UnsafeBinding):
        transport_security(HttpOptions(host="::", port=8765, allowed_origins=("https://chat.example.com",)))
    proxied = transport_security(
        HttpOptions(host="0.0.0.0", port=8765, allowed_hosts=("chat.example.com",), allowed_origins=("https://x.io",))  # noqa: S104
    )
    assert proxied.enable_dns_rebinding_protection
    assert "chat.example.com" in proxied.allowed_hosts and "127.0.0.1:8765" in proxied.allowed_hosts
    assert {"https://chat.example.com", "https://x.io"} <= set(proxied.allowed_origins)
    lan = transport_security(HttpOptions(host="10.1.2.3", port=9000))
    assert lan.allowed_hosts == ["10.1.2.3:9000", "10.1.2.3"]
    v6 = transport_security(HttpOptions(host="::1", port=9000))
    assert "[::1]:9000" in v6.allowed_hosts


def test_the_hub_parses_http_with_httptools_and_keeps_asyncios_loop_where_uvloop_is_installed() -> None:
    """httptools costs less CPU per call than h11. uvicorn takes uvloop when it can import it; under
    uvloop a saturated hub starved some calls for 20 s and more (uvicorn_config says what was
    measured), so `serve` asks for asyncio's loop."""
    import uvicorn
    import uvloop  # a dev dependency, installed for this test

    app = build_app(Settings(db=Path("unused.db")), HttpOptions(port=0))
    by_default = uvicorn.Config(app).get_loop_factory()
    config = uvicorn_config(app, host="127.0.0.1", port=0)
    config.load()
    assert config.http_protocol_class.__module__ == "uvicorn.protocols.http.httptools_impl"
    ours = config.get_loop_factory()
    assert by_default is not None and ours is not None
    loops = [by_default(), ours()]
    try:
        assert isinstance(loops[0], uvloop.Loop)
        assert isinstance(loops[1], asyncio.BaseEventLoop) and not isinstance(loops[1], uvloop.Loop)
    finally:
        for loop in loops:
            loop.close()


async def test_serving_on_all_interfaces_without_allow_lists_refuses_to_start(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTCHAT_DB": str(tmp_path / "a.db"), "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-m", "agentchat_mcp", "serve", "--transport", "http", "--host", "0.0.0.0"]  # noqa: S104
    done = await anyio.run_process([*command, "--port", str(free_port())], env=env, check=False)
    assert done.returncode == 2
    message = done.stderr.decode()
    assert "--allowed-host" in message and "DNS rebinding" in message
    assert "Traceback" not in message
    assert not (tmp_path / "a.db").exists()


async def test_an_oversize_body_gets_413(hub: Hub) -> None:
    async with serving(hub, max_body_bytes=64 * 1024) as base, httpx2.AsyncClient() as http:
        big = {**INITIALIZE, "params": {**INITIALIZE["params"], "padding": "x" * 70_000}}  # type: ignore[dict-item]
        for path in ("/mcp", "/messages/?session_id=" + "0" * 32, "/webhooks/stripe"):
            refused = await http.post(base + path, json=big, headers=MCP_HEADERS)
            assert refused.status_code == 413, path
            assert refused.headers["x-content-type-options"] == "nosniff"
        # a long message within the cap goes through
        alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
        async with http_client(base, alice) as a:
            args = {"participants": [bob.id], "topic": "big", "first_message": "y" * 16_000}
            assert structured(await a.call_tool("start_conversation", args))["first_message_seq"] == 1


async def test_security_headers_are_on_every_response(hub: Hub) -> None:
    async with serving(hub) as base, httpx2.AsyncClient() as http:
        responses = [
            await http.get(f"{base}/healthz"),
            await http.get(f"{base}/nowhere"),
            await http.post(f"{base}/mcp", json=INITIALIZE, headers=MCP_HEADERS),
            await http.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": "Bearer x"}),
            await http.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Origin": "http://evil.example"}),
            await http.get(f"{base}/payments/return?result=success"),
        ]
        for response in responses:
            for name, value in SECURITY_HEADERS.items():
                if name == "content-security-policy":
                    assert "default-src 'none'" in response.headers[name], response.url
                else:
                    assert response.headers[name] == value, (response.url, name)
            assert "strict-transport-security" not in response.headers
    async with serving(hub, behind_tls=True) as base, httpx2.AsyncClient() as http:
        assert "max-age=" in (await http.get(f"{base}/healthz")).headers["strict-transport-security"]


# --- client addresses: X-Forwarded-For only from trusted proxies ------------------------------------


def forwarded_for(chain: str) -> dict[str, str]:
    return {"X-Forwarded-For": chain}


async def codes_until_429(http: httpx2.AsyncClient, url: str, headers_for: Any, most: int) -> list[int]:
    """GET `url` with headers_for(i) until a 429 or `most` requests; the status codes."""
    codes = []
    for i in range(most):
        codes.append((await http.get(url, headers=headers_for(i))).status_code)
        if codes[-1] == 429:
            break
    return codes


async def test_the_serve_command_counts_a_spoofed_x_forwarded_for_against_the_real_peer(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn's own proxy headers trust 127.0.0.1 (or FORWARDED_ALLOW_IPS); `serve` must not use them."""
    monkeypatch.setenv("AGENTCHAT_RATE_LIMIT_IP", "3/minute")
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    monkeypatch.delenv("AGENTCHAT_TRUSTED_PROXIES", raising=False)
    async with hub_process(hub) as (base, _), httpx2.AsyncClient() as http:
        codes = await codes_until_429(http, f"{base}/mcp", lambda i: forwarded_for(f"203.0.113.{i}"), 6)
    assert codes[-1] == 429 and len(codes) == 4, codes


async def test_without_trusted_proxies_a_spoofed_x_forwarded_for_escapes_neither_ip_limit(hub: Hub) -> None:
    hub.settings = hub.settings.model_copy(update={"rate_limit_ip": "30/minute", "rate_limit_registration": "2/hour"})
    async with serving(hub) as base:
        results = []
        for i in range(3):
            async with http_client(base, mode="legacy", headers=forwarded_for(f"203.0.113.{i}")) as anonymous:
                results.append(await anonymous.call_tool("register_agent", {"name": f"a{i}", "peek_price": "1.00"}))
        assert [r.is_error for r in results[:2]] == [False, False]
        assert "Too many registrations from your address (2 per hour)" in error_text(results[2])
        async with httpx2.AsyncClient() as http:
            codes = await codes_until_429(http, f"{base}/mcp", lambda i: forwarded_for(f"198.51.100.{i}"), 40)
    assert codes[-1] == 429, codes  # the 30 a minute of 127.0.0.1 ran out, whatever the header said


async def test_behind_a_trusted_proxy_the_right_most_untrusted_forwarded_address_is_the_client(hub: Hub) -> None:
    settings = Settings(
        db=hub.settings.db,
        secret_file=hub.settings.secret_file,
        trusted_proxies="127.0.0.0/8, 10.0.0.0/8",  # this test's peer, and a second proxy hop
        rate_limit_ip="12/minute",
        rate_limit_registration="1/hour",
    )
    async with serving(hub, settings=settings) as base, httpx2.AsyncClient() as http:
        mcp = f"{base}/mcp"
        # a client-written entry left of the one our proxy appended changes nothing; trusted hops are skipped
        chains = ["203.0.113.1", "198.51.100.9, 203.0.113.1", "203.0.113.1, 10.1.2.3"]
        codes = await codes_until_429(http, mcp, lambda i: forwarded_for(chains[i % 3]), 14)
        assert codes[-1] == 429 and len(codes) == 13, codes
        assert (await http.get(mcp, headers=forwarded_for("203.0.113.2"))).status_code != 429  # its own window
        assert (await http.get(mcp)).status_code != 429  # no header: the proxy itself
        registered = []
        for address in ("203.0.113.50", "203.0.113.50", "203.0.113.51"):
            async with http_client(base, mode="auto", headers=forwarded_for(address)) as anonymous:
                registered.append(await anonymous.call_tool("register_user", {"display_name": f"u-{address}"}))
    assert not registered[0].is_error and not registered[2].is_error
    assert "Too many registrations from your address" in error_text(registered[1])


# --- /metrics: the Host/Origin allow-lists of /mcp, and an optional scrape token ---------------------


async def test_metrics_refuses_a_foreign_host_or_origin_as_mcp_does(hub: Hub) -> None:
    async with serving(hub, telemetry=Telemetry()) as base, httpx2.AsyncClient() as http:  # as `serve` builds it
        port = base.rsplit(":", 1)[1]
        for foreign in ({"Host": "evil.example"}, {"Host": f"evil.example:{port}"}, {"Origin": "http://evil.example"}):
            metrics = await http.get(f"{base}/metrics", headers=foreign)
            mcp = await http.get(f"{base}/mcp", headers=foreign)
            assert (metrics.status_code, metrics.text) == (mcp.status_code, mcp.text), foreign
            assert metrics.status_code in (403, 421) and "revenue" not in metrics.text
        for good in ({}, {"Host": f"localhost:{port}"}, {"Origin": f"http://127.0.0.1:{port}"}):
            assert (await http.get(f"{base}/metrics", headers=good)).status_code == 200, good


async def test_before_the_hub_has_started_metrics_and_healthz_answer_503_not_an_error(hub: Hub) -> None:
    app = build_app(hub.settings, HttpOptions(port=8765), telemetry=Telemetry())  # its lifespan not run yet
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765") as http:
        metrics, health = await http.get("/metrics"), await http.get("/healthz")
    assert (metrics.status_code, metrics.text) == (503, "starting: no metrics yet, scrape again shortly")
    assert (health.status_code, health.json()) == (503, {"status": "starting"})


async def test_with_a_metrics_token_a_scrape_needs_exactly_that_bearer_token(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    token = "scrape-token-8d1f0c2e"
    caplog.set_level(logging.DEBUG)
    settings = hub.settings.model_copy(update={"metrics_token": SecretStr(token)})
    async with serving(hub, settings=settings, telemetry=Telemetry()) as base, httpx2.AsyncClient() as http:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Bearer {token}x"},
            {"Authorization": f"Basic {token}"},
            {"Authorization": token},
        ):
            refused = await http.get(f"{base}/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert token not in refused.text and "revenue" not in refused.text
        scraped = await http.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"})
        assert scraped.status_code == 200 and "revenue_per_day" in scraped.text
        # the Host check comes first: behind a foreign Host even the right token gets nothing
        foreign = await http.get(
            f"{base}/metrics", headers={"Authorization": f"Bearer {token}", "Host": "evil.example"}
        )
        assert foreign.status_code == 421
    assert token not in caplog.text


# --- health and the extra routes ------------------------------------------------------------------


async def test_healthz_reports_the_database_and_its_schema_revision(hub: Hub) -> None:
    async with serving(hub, telemetry=Telemetry()) as base, httpx2.AsyncClient() as http:  # as `serve` builds it
        got = await http.get(f"{base}/healthz")
        assert got.status_code == 200
        body = got.json()
        assert body["status"] == "ok" and body["db"] == "ok"
        assert body["schema_revision"] == body["schema_head"] == migrations.head_revision()
        assert str(hub.settings.db) not in got.text
        assert (await http.get(f"{base}/metrics")).status_code == 200
        unsigned = await http.post(
            f"{base}/webhooks/stripe", content=b"{}", headers={"Content-Type": "application/json"}
        )
        assert "not enabled" in unsigned.json()["error"]  # routed to the webhook (ledger payments here)


# --- one store, cross-session wake-ups ------------------------------------------------------------


async def test_a_send_over_http_wakes_another_sessions_wait_and_subscriptions_at_once(hub: Hub) -> None:
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    heard = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            heard.set()

    async with serving(hub) as base, http_client(base, alice) as a:
        started = structured(
            await a.call_tool("start_conversation", {"participants": [bob.id], "topic": "t", "first_message": "hi"})
        )
        conv = started["conversation"]["id"]
        uri = f"agentchat://conversations/{conv}"
        async with (
            httpx2.AsyncClient(headers=bearer(bob), timeout=httpx2.Timeout(30, read=300)) as bob_http,
            Client(
                streamable_http_client(f"{base}/mcp", http_client=bob_http), mode="legacy", message_handler=on_message
            ) as b_legacy,  # type: ignore[arg-type]
            http_client(base, bob) as b_modern,
            b_modern.listen(resource_subscriptions=[uri]) as listening,
        ):
            await b_legacy.subscribe_resource(uri)
            structured(await b_legacy.call_tool("mark_read", {"conversation_id": conv}))
            woke: dict[str, Any] = {}

            async def wait() -> None:
                args = {"conversation_id": conv, "timeout_s": 10}
                woke["result"] = structured(await b_legacy.call_tool("wait_for_messages", args))
                woke["at"] = time.monotonic()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(wait)
                await anyio.sleep(0.5)
                assert "at" not in woke
                sent_at = time.monotonic()
                structured(await a.call_tool("send_message", {"conversation_id": conv, "text": "wake up"}))
                with anyio.fail_after(2):
                    await heard.wait()
                    assert (await listening.__aiter__().__anext__()).uri == uri
            assert woke["result"]["timed_out"] is False
            assert woke["at"] - sent_at < 0.5  # in-process publish, no poll interval


async def test_an_agent_on_stdio_and_an_agent_over_http_converse_on_one_database(hub: Hub) -> None:
    alice, bob = await hub.register_agent("alice"), await hub.register_agent("bob")
    async with serving(hub) as base, http_client(base, alice) as a, Client(hub.stdio(bob)) as b:
        started = structured(
            await a.call_tool(
                "start_conversation", {"participants": [bob.id], "topic": "hub", "first_message": "from http"}
            )
        )
        conv = started["conversation"]["id"]
        waited = structured(await b.call_tool("wait_for_messages", {"timeout_s": 10}))
        assert [c["conversation_id"] for c in waited["conversations"]] == [conv]
        page = structured(await b.call_tool("read_messages", {"conversation_id": conv}))
        assert [(m["sender_name"], m["text"]) for m in page["messages"]] == [("alice", "from http")]
        structured(await a.call_tool("mark_read", {"conversation_id": conv}))

        woke: dict[str, Any] = {}

        async def wait() -> None:
            woke["result"] = structured(
                await a.call_tool("wait_for_messages", {"conversation_id": conv, "timeout_s": 10})
            )

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait)
            await anyio.sleep(0.3)
            structured(await b.call_tool("send_message", {"conversation_id": conv, "text": "from stdio"}))
        assert woke["result"]["timed_out"] is False  # the hub's poller saw the other process's write
        page = structured(await a.call_tool("read_messages", {"conversation_id": conv}))
        assert [m["text"] for m in page["messages"]] == ["from http", "from stdio"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stateless_mode_serves_both_eras_and_ignores_session_headers(hub: Hub, mode: str) -> None:
    alice = await hub.register_agent("alice")
    async with serving(hub, stateless=True) as base:
        async with http_client(base, alice, mode=mode) as c:
            assert structured(await c.call_tool("whoami", {}))["id"] == alice.id
        async with http_client(base, mode=mode, headers={"mcp-session-id": "whatever"}) as anon:
            assert "register_agent" in error_text(await anon.call_tool("whoami", {}))


# --- the real command: SIGTERM -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_sigterm_lets_in_flight_calls_finish_and_closes_the_database(hub: Hub, mode: str) -> None:
    alice = await hub.register_agent("alice")
    result: dict[str, Any] = {}
    async with hub_process(hub, "--shutdown-grace", "5") as (base, process):
        try:
            async with http_client(base, alice, mode=mode) as a:
                await a.list_tools()

                async def wait() -> None:
                    result["wait"] = structured(await a.call_tool("wait_for_messages", {"timeout_s": 1.5}))

                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(wait)
                    await anyio.sleep(0.5)
                    process.send_signal(signal.SIGTERM)
        except* httpx2.TransportError:
            pass  # the client's own requests after the call (closing the session) find the server gone
        assert result["wait"]["timed_out"] is True  # the call ran to its end, not cut off
        with anyio.fail_after(15):
            while process.poll() is None:
                await anyio.sleep(0.05)
        # uvicorn re-raises the signal once it has shut down, so the parent sees "terminated by SIGTERM"
        assert process.returncode == -signal.SIGTERM
    log = next(hub.tmp_path.glob("hub-*.log")).read_text()
    assert "Traceback" not in log, log
    if isinstance(hub.settings.db, Path):  # SQLite: the file itself
        assert not Path(f"{hub.settings.db}-wal").exists()  # last connection closed cleanly: WAL checkpointed
        with sqlite3.connect(hub.settings.db) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        db.close()
