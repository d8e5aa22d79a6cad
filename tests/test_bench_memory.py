"""bench/memory.py runs end to end (a few sessions): idle RSS of each server, growth per session, and --trace."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS is read from /proc")


def test_bench_memory_prints_idle_rss_and_growth_per_session_of_the_hub_and_the_floor() -> None:
    done = subprocess.run(
        [sys.executable, "bench/memory.py", "--sessions", "4", "--concurrency", "2", "--trace"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    for server in ("floor", "hub", "stdio"):
        assert re.search(rf"^  {server} .* [\d.]+ MiB +[\d.]+x$", done.stdout, re.MULTILINE), done.stdout
    for server in ("floor", "hub"):
        assert re.search(rf"^  {server} .* -?[\d.]+ KiB per session .*x floor$", done.stdout, re.MULTILINE), done.stdout
    assert "memory held by what the 4 sessions allocated" in done.stdout
