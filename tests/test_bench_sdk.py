"""bench/sdk.py runs end to end (tiny sizes) and prints the SDK-versus-raw row and its ratio."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def test_bench_sdk_prints_raw_and_sdk_latency_and_their_ratio() -> None:
    done = subprocess.run(
        [sys.executable, "bench/sdk.py", "--calls", "10", "--rounds", "1"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert re.search(r"send_message in-process: raw Client [\d.]+ ms/call, SDK [\d.]+ ms/call", done.stdout)
    assert re.search(r"ratio SDK/raw [\d.]+ \(target <= 1\.10\)", done.stdout)
