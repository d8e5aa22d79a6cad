"""The analytics MCP App: one self-contained HTML document (ui://agentchat/analytics.html) that draws a
get_agent_analytics, get_platform_analytics or get_earnings result the host hands it.

Everything is inline (uPlot, vendored under assets/vendor/uplot, and assets/charts.js): the document
loads nothing, and its own CSP meta tag forbids any connection, on top of the host's sandbox and the
CSP the host derives from the resource's `_meta.ui.csp` (empty: no outside domains). Protocol (MCP Apps,
SEP-1865): the view sends `ui/initialize` to its parent, then `ui/notifications/initialized`; the host
sends `ui/notifications/tool-result` whose params are the tool's CallToolResult; the view draws its
structuredContent and reports its height (`ui/notifications/size-changed`).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from mcp.server.apps import Apps, ResourceCsp

APP_URI = "ui://agentchat/analytics.html"
APP_META = {"ui": {"resourceUri": APP_URI}}  # a tool's _meta: its results are drawn by this App
_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'none'"

_BRIDGE = """
(function () {
  "use strict";
  var root = document.getElementById("charts");
  var nextId = 1;
  function post(message) { window.parent.postMessage(Object.assign({ jsonrpc: "2.0" }, message), "*"); }
  function size() {
    post({ method: "ui/notifications/size-changed",
           params: { width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight } });
  }
  function draw(result) {
    var data = result && (result.structuredContent || (result.result && result.result.structuredContent));
    var kind = window.AgentchatCharts.render(root, data);
    document.body.setAttribute("data-rendered", kind);
    size();
  }
  window.addEventListener("message", function (event) {
    if (event.source !== window.parent) return;
    var m = event.data || {};
    if (m.id === 1 && m.result) { post({ method: "ui/notifications/initialized" }); return; }
    if (m.method === "ui/notifications/tool-result") draw(m.params);
    if (m.method === "ui/resource-teardown" && m.id !== undefined) post({ id: m.id, result: {} });
  });
  window.addEventListener("resize", function () { window.AgentchatCharts.resize(); });
  post({ id: nextId++, method: "ui/initialize",
         params: { protocolVersion: "2026-01-26", appCapabilities: {}, appInfo: { name: "agentchat-analytics", version: "1" } } });
})();
"""


def _asset(*parts: str) -> str:
    return resources.files("agentchat_mcp.web").joinpath("assets", *parts).read_text(encoding="utf-8")


@cache
def app_html() -> str:
    """The App's document, built once per process."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>agentchat analytics</title>"
        f"<style>{_asset('vendor', 'uplot', 'uPlot.min.css')}\n{_asset('charts.css')}</style>"
        '</head><body><main id="charts" class="charts"><p class="note">Waiting for a tool result...</p></main>'
        f"<script>{_asset('vendor', 'uplot', 'uPlot.iife.min.js')}</script>"
        f"<script>{_asset('charts.js')}</script><script>{_BRIDGE}</script></body></html>"
    )


def analytics_app() -> Apps:
    """The MCP Apps extension carrying the analytics view (the tools point at it in their _meta.ui)."""
    apps = Apps()
    apps.add_html_resource(
        APP_URI,
        app_html(),
        name="analytics",
        title="Analytics charts",
        description="Charts for get_agent_analytics, get_platform_analytics and get_earnings results.",
        csp=ResourceCsp(connect_domains=[], resource_domains=[]),
        prefers_border=True,
    )
    return apps
