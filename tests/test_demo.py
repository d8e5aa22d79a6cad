"""`agentchat-mcp demo` runs as a user would run it, judged by what it prints and leaves.

The command runs through the CLI's main() in this process (conftest.run_cli); the two agents it starts
are real `agentchat-mcp` stdio subprocesses, as for a user.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentchat_mcp import demo
from tests.conftest import run_cli


def run_demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("demo", *args, env={**os.environ, **(env or {})}, timeout=180)


def database_of(stdout: str) -> Path:
    match = re.search(r"^database: (.+)$", stdout, re.MULTILINE)
    assert match, stdout
    return Path(match.group(1))


@pytest.fixture(scope="session")  # not module: an xdist worker may finish a module's fixtures between its tests
def kept() -> Iterator[subprocess.CompletedProcess[str]]:
    """One demo run with --keep, shared by the tests that inspect its transcript and files (once per
    xdist worker that runs one of them: xdist_group cannot pin them to one worker under pytest 9.2)."""
    done = run_demo("--keep")
    yield done
    shutil.rmtree(database_of(done.stdout).parent, ignore_errors=True)


def test_the_demo_exits_0_with_a_clean_transcript(kept: subprocess.CompletedProcess[str]) -> None:
    assert kept.returncode == 0, kept.stderr
    assert "Traceback" not in kept.stdout + kept.stderr
    assert kept.stderr == "", kept.stderr  # server logs of the stdio child go to a file, not the terminal
    out = kept.stdout
    assert re.search(r"alice +register_agent -> agt_[a-z0-9]{20}", out)
    assert re.search(r"bob +register_agent -> agt_[a-z0-9]{20}", out)
    assert "find_agents(tag='python') -> bob" in out


def test_the_agents_converse_both_ways_and_each_message_is_decrypted_by_the_other(
    kept: subprocess.CompletedProcess[str],
) -> None:
    out = kept.stdout
    sent = re.findall(r"^  (alice|bob) +#(\d+) \"", out, re.MULTILINE)
    assert {who for who, _ in sent} == {"alice", "bob"}
    assert len(sent) >= 6
    for who, seq in sent:
        reader = "bob" if who == "alice" else "alice"
        assert re.search(rf"^  {reader} +read_messages -> #{seq} from {who}, decrypted and verified", out, re.MULTILINE)
    woke = re.findall(r"wait_for_messages woke (\d+\.\d+) s after the send \(another process\)", out)
    assert len(woke) == len(sent) - 1  # every reply after the first was awaited with a long poll
    assert all(float(s) < 1.0 for s in woke), woke
    assert out.count("check_inbox -> 0 unread") == 2


def test_the_demo_reports_zero_plaintext_hits_and_the_kept_files_agree(kept: subprocess.CompletedProcess[str]) -> None:
    out = kept.stdout
    hits = re.findall(r"^    (\S+) +[\d,]+ bytes +(\d+) hits$", out, re.MULTILINE)
    names = {name for name, _ in hits}
    assert {"agentchat.db", "agentchat.db-wal", "backup.db"} <= names, out
    assert all(count == "0" for _, count in hits)
    assert "no message text and no API key is stored in plaintext" in out
    # Check independently: every message text the transcript shows, searched in the kept files.
    texts = re.findall(r"^  (?:alice|bob) +#\d+ \"(.+)\"$", out, re.MULTILINE)
    assert len(texts) >= 6
    folder = database_of(out).parent
    files = [p for p in folder.iterdir() if p.name.startswith(("agentchat.db", "backup"))]
    for path in files:
        data = path.read_bytes()
        for text in texts:
            assert text.encode() not in data, (path.name, text)
    assert "Kept " in out


def test_without_keep_the_temp_database_is_removed_and_the_environment_cannot_steer_it(tmp_path: Path) -> None:
    done = run_demo(env={"AGENTCHAT_REGISTRATION": "closed", "AGENTCHAT_DB": str(tmp_path / "mine.db")})
    assert done.returncode == 0, done.stderr
    assert not database_of(done.stdout).parent.exists()
    assert not (tmp_path / "mine.db").exists()
    assert "Temp database removed" in done.stdout


@pytest.mark.anyio
async def test_a_failing_act_ends_the_demo_with_one_line_and_keeps_the_files(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def broken(run: demo.DemoRun) -> None:
        await run.call("alice", "send_message", {"conversation_id": "cnv_" + "0" * 20, "text": "anyone?"})

    out = io.StringIO()
    code = await demo.run_demo(out=out, script=[*demo.acts(), broken])
    err = capsys.readouterr().err
    assert code == 1
    assert "-> no message text and no API key is stored in plaintext." in out.getvalue()  # the real acts ran
    assert "demo failed: alice's send_message failed: " in err
    assert "No conversation cnv_00000000000000000000 that you can see" in err
    assert "Traceback" not in err
    folder = database_of(out.getvalue()).parent
    assert (folder / "agentchat.db").exists()
    shutil.rmtree(folder)


@pytest.mark.anyio
async def test_an_unexpected_error_is_one_line_on_screen_and_a_traceback_in_a_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def crash(run: demo.DemoRun) -> None:
        raise ValueError("boom")

    out = io.StringIO()
    assert await demo.run_demo(out=out, script=[crash]) == 1
    err = capsys.readouterr().err
    assert "demo failed: ValueError: boom" in err and "Traceback" not in err
    folder = database_of(out.getvalue()).parent
    assert "Traceback" in (folder / "demo-error.log").read_text()
    shutil.rmtree(folder)
