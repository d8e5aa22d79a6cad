"""A hub loads only what its configuration uses (issue 15: idle memory, bench/memory.py).

Each test runs the real `agentchat-mcp serve --transport http` in a fresh interpreter, uses it as a
client would (an MCP session, the Stripe webhook route, /healthz), then reads that process's
`sys.modules`: a library a configuration does not use must not be there. Then it scrapes /metrics,
which loads the Prometheus exporter only then.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT

# Runs in the child: the hub in the main thread, a client in another, then the loaded modules on stdout.
PROBE = r"""
import json, os, sys, threading, time
import httpx2
from agentchat_mcp import cli

PORT, WATCHED = int(sys.argv[1]), sys.argv[2].split(",")

def client():
    url = f"http://127.0.0.1:{PORT}"
    for _ in range(600):
        try:
            if httpx2.get(url + "/healthz").status_code == 200:
                break
        except httpx2.HTTPError:
            time.sleep(0.05)
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25",
            "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}}}
    reply = httpx2.post(url + "/mcp", json=init, headers=headers)
    headers |= {"mcp-session-id": reply.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    httpx2.post(url + "/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    listed = httpx2.post(url + "/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=headers)
    webhook = httpx2.post(url + "/webhooks/stripe", content=b"{}", headers={"stripe-signature": "t=1,v1=0"})
    def loaded():
        return sorted({m for m in WATCHED for n in sys.modules if n == m or n.startswith(m + ".")})
    before_scrape = loaded()
    metrics = httpx2.get(url + "/metrics")
    print(json.dumps({"tools": '"inputSchema"' in listed.text, "webhook": webhook.status_code, "loaded": before_scrape,
                      "metrics": metrics.status_code, "mcp_in_metrics": "mcp_sessions_active" in metrics.text,
                      "loaded_after_scrape": loaded()}))
    sys.stdout.flush()
    os._exit(0)

threading.Thread(target=client, daemon=True).start()
cli.main(["serve", "--transport", "http", "--port", str(PORT)])
"""


def serve_and_probe(tmp_path: Path, watched: list[str], **env: str) -> dict[str, object]:
    from tests.support_http import free_port

    clean = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("AGENTCHAT_", "STRIPE_"))}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(free_port()), ",".join(watched)],
        cwd=PROJECT_ROOT,
        env={**clean, "AGENTCHAT_DB": str(tmp_path / "agentchat.db"), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# Never loaded by a hub in ledger mode: Stripe's SDK (the stripe provider's), and what only tests,
# benchmarks or development tools use.
NOT_IN_A_LEDGER_HUB = ["stripe", "localstripe", "playwright", "numpy", "pytest", "tests", "bench"]
# Loaded by the first scrape of /metrics, not before.
PROMETHEUS = ["prometheus_client", "opentelemetry.exporter.prometheus"]


def test_a_hub_in_ledger_mode_serves_sessions_and_the_webhook_route_without_loading_stripe(tmp_path: Path) -> None:
    probe = serve_and_probe(tmp_path, NOT_IN_A_LEDGER_HUB + PROMETHEUS)
    assert probe["tools"] is True
    assert probe["webhook"] == 404  # "Stripe payments are not enabled on this server."
    assert probe["loaded"] == []


def test_the_prometheus_exporter_is_loaded_by_the_first_scrape_of_metrics(tmp_path: Path) -> None:
    probe = serve_and_probe(tmp_path, PROMETHEUS)
    assert probe["loaded"] == []
    assert probe["metrics"] == 200
    assert probe["mcp_in_metrics"] is True
    assert probe["loaded_after_scrape"] == sorted(PROMETHEUS)
