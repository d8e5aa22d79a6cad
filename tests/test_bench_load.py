"""bench/load.py runs end to end at toy size, on one hub and on two replicas behind bench/proxy.py:
every call succeeds and the exactly-once money check passes. Behaviour only, never timings."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

TINY = ["--users", "10", "--duration", "3", "--ramp", "0.5", "--think-scale", "0.1", "--scenarios", "normal,frenzy"]


def run_bench(*extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "bench/load.py", *TINY, *extra],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def assert_clean_run(out: str) -> None:
    for scenario in ("normal", "frenzy"):
        assert re.search(rf"scenario {scenario}: \d+ virtual users", out), out
    assert re.findall(r"calls in [\d.]+ s: [\d.]+ calls/s; errors (\d+)", out) == ["0", "0"], out
    for tool in ("send_message", "wait_for_messages (long poll)", "read_messages", "request_peek", "quote_peek"):
        assert re.search(rf"  {re.escape(tool)}\s+\d+\s+[\d.]+", out), f"{tool} never called:\n{out}"
    assert re.search(r"hub [\d.]+ s = [\d.]+ ms/call", out), out
    assert "frenzy peeks paid: 30" in out, out  # 10 users x credit for 3 of the 5 hot conversations
    assert "money check: ok" in out, out


def test_the_load_bench_runs_every_call_and_the_money_adds_up_on_one_hub() -> None:
    assert_clean_run(run_bench())


@pytest.mark.parametrize("era", ["modern", "legacy"])
def test_the_load_bench_runs_on_two_replicas_behind_the_proxy(era: str) -> None:
    out = run_bench("--replicas", "2", "--era", era)
    # handshake-era sessions live in one replica: stateful hubs, and the proxy must stick to each session
    assert ("2 stateless hubs" if era == "modern" else "2 stateful hubs") + " behind bench/proxy.py" in out, out
    assert re.search(r"proxy [\d.]+ s = [\d.]+ ms/call", out), out
    assert_clean_run(out)
