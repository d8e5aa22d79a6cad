"""Every example in examples/ runs in one command against the embedded default, and says what it did."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

EXAMPLES = PROJECT_ROOT / "examples"


def run_example(name: str, *args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd or PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_two_agents_in_two_processes_negotiate_to_a_deal(tmp_path: Path) -> None:
    out = run_example("negotiate.py", "--db", str(tmp_path / "a.db"))
    deal = [line for line in out.splitlines() if "deal at" in line or "bought at" in line]
    assert len(deal) == 2 and deal[0].split()[-1] == deal[1].split()[-1], out
    assert "seller: offered 60.00, counter 90.00" in out


@pytest.mark.slow
def test_the_customer_service_agent_answers_from_its_template(tmp_path: Path) -> None:
    out = run_example("customer_service.py", "--db", str(tmp_path / "a.db"))
    assert out.startswith("template: You are Acme Support, a customer service agent on agentchat")
    assert "customer: got 'Refunds go back to the original payment within 5 working days.'" in out
    assert "support: the customer left" in out


@pytest.mark.slow
def test_a_user_quotes_peeks_and_reads_within_the_window(tmp_path: Path) -> None:
    out = run_example("peek_as_user.py", "--db", str(tmp_path / "a.db"))
    assert "quote for 'How bees navigate': 4.00 (balance 20.00)" in out
    assert "peek active; window until" in out
    assert "  Ben: Thanks, that is the source I needed." in out
    assert out.rstrip().endswith("balance now 16.00")


@pytest.mark.slow
def test_the_earnings_report_prints_the_week_and_writes_a_png(tmp_path: Path) -> None:
    chart = tmp_path / "earnings.png"
    out = run_example("earnings_report.py", "--db", str(tmp_path / "a.db"), "--out", str(chart))
    assert "earned this week        1.60 USD from 1 peek(s)" in out
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and chart.stat().st_size > 100


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("npm") is None, reason="npm is not installed: the example installs node 22 and the MCP SDK with it"
)
def test_the_typescript_client_registers_converses_with_a_python_agent_and_reads(tmp_path: Path) -> None:
    out = run_example("typescript/run.py", "--db", str(tmp_path / "a.db"))
    assert "ts: registered as TypeScript agent (agt_" in out
    assert "py: read 'Hello, Python agent! What is 6 x 7?' from TypeScript agent" in out
    assert "ts: read #2 from Python agent: 6 x 7 = 42" in out
    assert "py: read 'bye' from TypeScript agent" in out


@pytest.mark.slow
def test_the_quickstarts_python_runs_as_written(tmp_path: Path) -> None:
    text = (PROJECT_ROOT / "docs" / "quickstart.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "two_agents.py"
    script.write_text(code.replace("/tmp/agentchat-quickstart.db", str(tmp_path / "quickstart.db")))
    done = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("alice: Hi Bob!\nkeys to keep: acp_")


def test_every_message_the_troubleshooting_page_quotes_is_in_the_code() -> None:
    page = (PROJECT_ROOT / "docs" / "troubleshooting.md").read_text()
    quoted = [row.split("|")[1].strip().split("`")[1] for row in page.splitlines() if row.startswith("| `")]
    code = "\n".join(p.read_text() for p in (PROJECT_ROOT / "agentchat_mcp").rglob("*.py"))
    code = code.replace('"\n    "', "").replace('"\n        "', "").replace('"\n            "', "")
    missing = [text for text in quoted if text not in code]
    assert len(quoted) >= 10 and not missing, missing
