"""The send benchmark runs end to end (tiny sizes): every leg prints its rows and its ratio."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def test_bench_send_prints_every_row_and_ratio_in_memory_and_over_http() -> None:
    tiny = ["--legs", "memory,ceiling", "--n", "30", "--http", "--http-seconds", "0.4", "--http-sessions", "4"]
    done = subprocess.run(
        [sys.executable, "bench/send.py", *tiny],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for label in ("in-memory echo (floor)", "in-memory send_message", "minimal send (ceiling)"):
        assert re.search(rf"{re.escape(label)}\s+\d+/s\s+p50", out), out
    assert re.search(r"memory ratio send/echo: \d\.\d\d  \(target >= 0\.7: (met|NOT met)\)", out), out
    assert re.search(r"ceiling ratio send/echo: \d\.\d\d", out), out
    for era in ("legacy", "auto"):
        assert re.search(rf"http {era} ratio send/echo: \d\.\d\d .*by server CPU per call: \d\.\d\d", out), out
        assert re.search(rf"http {era} ceiling ratio: \d\.\d\d", out), out
        assert re.search(rf"http {era} echo via agentchat / echo: \d\.\d\d", out), out


def test_bench_flags_prints_every_row_and_the_overhead_a_tool_call_pays() -> None:
    done = subprocess.run(
        [sys.executable, "bench/flags.py", "--n", "2000"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for label in ("pipeline check per tool call", "per evaluation, memoised", "OpenFeature client alone"):
        assert re.search(rf"{re.escape(label)}.*\s\d+\.\d\d us", out), out
    assert re.search(r"feature flags add to a tool call: \d+\.\d\d us \(target < 5 us: (met|NOT met)\)", out), out


def test_bench_writes_prints_the_serialized_write_rate_of_the_store() -> None:
    done = subprocess.run(
        [sys.executable, "bench/writes.py", "--seconds", "0.3", "--processes", "2", "--concurrency", "2"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(
        r"sqlite: 2 process\(es\) x 2 writers, .* [1-9]\d* ledger transactions, [\d,]+/s, \d+\.\d\d ms each",
        done.stdout,
    ), done.stdout
