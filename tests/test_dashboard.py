"""The /dashboard and the analytics MCP App in headless Chromium (Debian's chromium, driven by Playwright):
one seeded hub served over real HTTP and one browser for the whole module. Each test saves a screenshot
under its temporary folder and asserts on what the page shows."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import PROJECT_ROOT, Hub
from tests.support_analytics import Small, call, seed_small
from tests.support_http import serving

pytestmark = pytest.mark.anyio
CHROMIUM = os.environ.get("AGENTCHAT_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT_FOR_README = PROJECT_ROOT / "docs" / "dashboard.png"

try:
    from playwright.async_api import Browser, Page, async_playwright
except ImportError:  # pragma: no cover - playwright is a dev dependency
    async_playwright = None  # type: ignore[assignment]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, Hub, Small]]:
    hub = Hub(tmp_path_factory.mktemp("dashboard"), shared=True)
    seeded = await seed_small(hub)
    async with serving(hub) as base:
        yield base, hub, seeded


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if async_playwright is None or not Path(CHROMIUM).exists():
        pytest.skip(f"no headless browser: {CHROMIUM} (apt-get install chromium) or playwright missing")
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield launched
        await launched.close()


async def signed_in(browser: Browser, base: str, key: str, width: int = 1280) -> tuple[Any, Page]:
    context = await browser.new_context(viewport={"width": width, "height": 900})
    page = await context.new_page()
    await page.goto(f"{base}/dashboard")
    await page.wait_for_selector("#signin:not([hidden])")
    await page.fill("#key", key)
    await page.click("#signin button[type=submit]")
    return context, page


async def test_an_agent_signs_in_and_sees_its_charts_with_real_numbers(
    site: tuple[str, Hub, Small], browser: Browser, tmp_path: Path
) -> None:
    base, hub, s = site
    async with hub.client(s.alice) as a:
        expected = await call(a, "get_agent_analytics")
    context, page = await signed_in(browser, base, s.alice.api_key)
    await page.wait_for_selector("body[data-view=agent]")
    await page.wait_for_selector("[data-chart=earnings] canvas")
    await page.screenshot(path=str(tmp_path / "agent.png"), full_page=True)
    text = await page.inner_text("main")
    assert expected["earnings"]["period_cents"] == 200 and "$2.00" in text
    assert "Funnel: quote to read" in text and "Top peekers" in text and "uma" in text
    funnel = await page.locator("[data-chart=funnel] .bar-value").all_inner_texts()
    assert funnel == [str(v) for v in expected["funnel"].values()]
    cells = await page.locator("[data-chart=heatmap] .heat-cell[data-value]").count()
    assert cells == sum(1 for row in expected["earnings"]["heatmap"] for v in row if v)
    assert "alice (agent)" in await page.inner_text("#who")
    (cookie,) = [c for c in await context.cookies() if c["name"] == "agentchat_dashboard"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
    assert s.alice.api_key not in cookie["value"] and s.alice.api_key not in page.url
    await page.click("#signout")
    await page.wait_for_selector("#signin:not([hidden])")
    await context.close()


async def test_an_admin_sees_the_platform_view(site: tuple[str, Hub, Small], browser: Browser, tmp_path: Path) -> None:
    base, hub, s = site
    async with hub.client(s.admin) as c:
        expected = await call(c, "get_platform_analytics")
    context, page = await signed_in(browser, base, s.admin.api_key)
    await page.wait_for_selector("body[data-view=platform]")
    await page.wait_for_selector("[data-chart=gmv] canvas")
    await page.screenshot(path=str(tmp_path / "platform.png"), full_page=True)
    text = await page.inner_text("main")
    assert f"${expected['gmv_cents'] / 100:.2f}" in text and "Popular peek times" in text
    assert "MCP tool usage" in text and "send_message" in text
    assert "coding" in text and "research" in text  # revenue by category
    assert await page.locator("[data-chart=heatmap] .heat-cell[data-value]").count() >= 1
    await context.close()


async def test_the_dashboard_works_on_a_phone(site: tuple[str, Hub, Small], browser: Browser, tmp_path: Path) -> None:
    base, _, s = site
    context, page = await signed_in(browser, base, s.alice.api_key, width=390)
    await page.wait_for_selector("[data-chart=earnings] canvas")
    await page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the screen
    box = await page.locator("[data-chart=funnel]").bounding_box()
    assert box is not None and box["width"] <= 390
    await context.close()


async def test_a_bad_key_or_a_user_key_is_refused(
    site: tuple[str, Hub, Small], browser: Browser, tmp_path: Path
) -> None:
    base, _, s = site
    context, page = await signed_in(browser, base, "acp_" + "x" * 43)
    await page.wait_for_selector("#error:has-text('not valid')")
    await page.screenshot(path=str(tmp_path / "refused.png"))
    assert await page.locator("#signin").is_visible() and await page.inner_text("main") == ""
    assert not [c for c in await context.cookies() if c["name"] == "agentchat_dashboard"]
    await page.fill("#key", s.uma.api_key)
    await page.click("#signin button[type=submit]")
    await page.wait_for_selector("#error:has-text('agent and admin keys')")
    await context.close()


async def test_the_dashboard_is_csp_locked_and_csrf_safe(
    site: tuple[str, Hub, Small], caplog: pytest.LogCaptureFixture
) -> None:
    base, _, s = site
    caplog.set_level(logging.DEBUG)
    async with httpx2.AsyncClient(base_url=base) as http:
        page = await http.get("/dashboard")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "unsafe-inline" not in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        form = await http.post(
            "/dashboard/session",
            content=f"api_key={s.alice.api_key}",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert form.status_code == 415 and "set-cookie" not in form.headers
        evil = await http.post(
            "/dashboard/session", json={"api_key": s.alice.api_key}, headers={"origin": "http://evil.example.com"}
        )
        assert evil.status_code == 403 and "set-cookie" not in evil.headers
        assert (await http.get("/dashboard/data")).status_code == 401
        assert (await http.get("/dashboard/assets/../server.py")).status_code == 404
        ok = await http.post("/dashboard/session", json={"api_key": s.alice.api_key})
        assert ok.status_code == 200
        got = await http.get("/dashboard/data", params={"period": "week"})
        assert got.json()["role"] == "agent" and got.json()["data"]["period"] == "week"
        assert (await http.get("/dashboard/data", params={"period": "decade"})).status_code == 400
        assert (
            await http.delete("/dashboard/session", headers={"content-type": "application/json"})
        ).status_code == 200
        assert (await http.get("/dashboard/data")).status_code == 401  # signed out: the session is gone
    assert s.alice.api_key not in caplog.text  # the key is never logged, at any level


HOST_PAGE = """<!doctype html><html><body><iframe id="app" sandbox="allow-scripts" style="width:960px;height:1400px;border:0"></iframe>
<script>
const html = %(html)s, result = %(result)s;
const frame = document.getElementById("app");
window.addEventListener("message", (event) => {
  if (event.source !== frame.contentWindow) return;
  const m = event.data;
  if (m.method === "ui/initialize") {
    frame.contentWindow.postMessage({jsonrpc: "2.0", id: m.id, result: {protocolVersion: "2026-01-26",
      hostCapabilities: {}, hostInfo: {name: "test-host", version: "1"}, hostContext: {theme: "light"}}}, "*");
  } else if (m.method === "ui/notifications/initialized") {
    frame.contentWindow.postMessage({jsonrpc: "2.0", method: "ui/notifications/tool-result", params: result}, "*");
  } else if (m.method === "ui/notifications/size-changed") {
    document.body.setAttribute("data-app-height", String(m.params.height));
  }
});
frame.srcdoc = html;
</script></body></html>"""


@pytest.mark.parametrize("tool", ["get_agent_analytics", "get_platform_analytics", "get_earnings"])
async def test_the_mcp_app_draws_a_real_tool_result_inside_a_host_page(
    site: tuple[str, Hub, Small], browser: Browser, tmp_path: Path, tool: str
) -> None:
    _, hub, s = site
    who = s.admin if tool == "get_platform_analytics" else s.alice
    async with hub.client(who) as c:
        listed = {t.name: t for t in (await c.list_tools()).tools}
        uri = listed[tool].meta["ui"]["resourceUri"]
        resource = (await c.read_resource(uri)).contents[0]
        result = (await c.call_tool(tool, {})).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert resource.mime_type == "text/html;profile=mcp-app"
    assert resource.meta["ui"]["csp"] == {"connectDomains": [], "resourceDomains": []}
    context = await browser.new_context(viewport={"width": 1000, "height": 1500})
    page = await context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    inline = {k: json.dumps(v).replace("</", "<\\/") for k, v in {"html": resource.text, "result": result}.items()}
    await page.set_content(HOST_PAGE % inline)  # as JSON inside the host's script ("</" escaped)
    frame = page.frame_locator("#app")
    kind = {"get_agent_analytics": "agent", "get_platform_analytics": "platform", "get_earnings": "earnings"}[tool]
    await frame.locator(f"body[data-rendered={kind}]").wait_for()
    await page.wait_for_selector("body[data-app-height]")
    await page.screenshot(path=str(tmp_path / f"app-{kind}.png"), full_page=True)
    text = await frame.locator("main").inner_text()
    if kind == "agent":
        await frame.locator("[data-chart=earnings] canvas").wait_for()
        assert "Funnel: quote to read" in text and "uma" in text
        assert await frame.locator("[data-chart=heatmap] .heat-cell[data-value]").count() >= 1
    elif kind == "platform":
        await frame.locator("[data-chart=gmv] canvas").wait_for()
        assert f"${result['structuredContent']['gmv_cents'] / 100:.2f}" in text
    else:
        assert f"${result['structuredContent']['earned']}" in text and "uma" in text
    assert [u for u in requests if not u.startswith(("about:", "data:"))] == []  # the App loads nothing
    await context.close()


async def test_the_readme_screenshot_comes_from_the_dashboard(
    site: tuple[str, Hub, Small], browser: Browser, tmp_path: Path
) -> None:
    """Makes docs/dashboard.png when AGENTCHAT_WRITE_SCREENSHOT=1; otherwise checks the committed one exists."""
    base, _, s = site
    context, page = await signed_in(browser, base, s.alice.api_key, width=1100)
    await page.wait_for_selector("[data-chart=earnings] canvas")
    shot = tmp_path / "dashboard.png"
    await page.screenshot(path=str(shot), full_page=True)
    await context.close()
    if os.environ.get("AGENTCHAT_WRITE_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT_FOR_README)
    assert SCREENSHOT_FOR_README.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_behind_tls_the_session_cookie_is_secure(hub: Hub) -> None:
    alice = await hub.register_agent("alice")
    async with serving(hub, behind_tls=True) as base, httpx2.AsyncClient(base_url=base) as http:
        signed = await http.post("/dashboard/session", json={"api_key": alice.api_key})
    cookie = signed.headers["set-cookie"]
    assert signed.status_code == 200 and alice.api_key not in cookie
    assert all(part in cookie for part in ("HttpOnly", "Secure", "SameSite=strict", "Path=/dashboard"))
