"""The alerting rules: valid for Prometheus, firing on the situations they name, about metrics we expose,
and each explained in the runbook."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from agentchat_mcp.telemetry import Telemetry
from tests.conftest import PROJECT_ROOT, Hub
from tests.support_metrics import demo_run, family_names

pytestmark = pytest.mark.anyio

RULES = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = PROJECT_ROOT / "deploy" / "prometheus" / "alerts_test.yml"
RUNBOOK = PROJECT_ROOT / "docs" / "runbook.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)"
)


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run([str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout


@needs_promtool
def test_each_alert_fires_on_its_situation_and_not_on_healthy_traffic() -> None:
    done = subprocess.run(
        [str(PROMTOOL), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), flags=re.MULTILINE)


def test_every_alert_has_a_runbook_section_and_a_rule_test() -> None:
    runbook = RUNBOOK.read_text()
    tests = RULE_TESTS.read_text()
    for name in alert_names():
        assert f"\n## {name}\n" in runbook, f"docs/runbook.md has no '## {name}' section"
        assert f"docs/runbook.md#{name.lower()}" in RULES.read_text()
        assert f"alertname: {name}" in tests, f"alerts_test.yml never tests {name}"
    assert len(alert_names()) == 9


@pytest.mark.sqlite_only("the rules watch SQLite's WAL file size, which a PostgreSQL hub does not expose")
async def test_the_rules_only_use_metrics_the_hub_exposes(hub: Hub) -> None:
    telemetry = Telemetry()
    hub.telemetry = telemetry
    await demo_run(hub)
    from agentchat_mcp.store import open_store

    async with open_store(hub.settings.db) as store, telemetry.watching(store):
        exposed = family_names((await telemetry.render_prometheus(store)).decode())
    exprs = " ".join(re.findall(r"expr: \|?\n?((?:.|\n)*?)\n\s+(?:for|labels):", RULES.read_text()))
    used = set(re.findall(r"\b([a-z][a-z0-9_]*(?:_total|_bucket|_bytes|_active))\b", exprs))
    assert used, "no metric names found in the rules"
    missing = sorted(used - exposed - {"up"})
    assert missing == []
