"""Crash safety: SIGKILL stdio servers mid-write, restart them, nothing acknowledged is lost.

The rounds are bench/kill.py's (`python bench/kill.py --rounds N` for longer runs).
"""

from __future__ import annotations

import json

import pytest

from bench import kill

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_twenty_kill_rounds_lose_no_acknowledged_message_and_keep_the_file_intact() -> None:
    report = await kill.run(20, in_flight=3, window=0.5)
    print(json.dumps(report.as_dict()))  # shown with -s / in CI logs: rounds, acknowledged, lost
    assert report.rounds == 20
    assert report.lost == []
    assert report.integrity_failures == []
    assert report.acknowledged >= 20  # the servers did write between kills
    assert report.unacknowledged_attempts > 0  # and were killed with calls still in flight


async def test_a_cold_started_server_process_survives_a_kill_too() -> None:
    """The same round with `python -m agentchat_mcp` started fresh (pipes, no fork server)."""
    report = await kill.run(1, in_flight=2, window=0.4, mode="spawn", seed=3)
    assert (report.rounds, report.lost, report.integrity_failures) == (1, [], [])
