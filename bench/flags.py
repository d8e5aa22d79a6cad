"""Feature-flag cost on a tool call: what the request pipeline adds per call, and per evaluation.

    python bench/flags.py              # 200,000 checks per row (~5 s)
    python bench/flags.py --n 2000     # a quick run (what tests/test_bench.py runs)

On a temp database with the flags a live hub has (a kill switch set, a 30% rollout, a group), rows:

- pipeline check per tool call: FeatureFlags.paused(tool, principal, role), what pipeline.py runs on
  every tools/call: the tool's kill switch and its own tool.NAME switch, two evaluations, memoised;
- per evaluation (memoised): FeatureFlags.value, the figure the < 5 us target is about;
- per evaluation, first time after a change (memo miss): the OpenFeature client and our provider;
- the OpenFeature client alone, no memo (what each evaluation would cost without the memo);
- a whole in-memory tool call (whoami), for scale.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/flags.py` from a checkout, installed or not

from mcp import Client  # noqa: E402
from openfeature.evaluation_context import EvaluationContext  # noqa: E402

from agentchat_mcp.server import build_app_context, build_server  # noqa: E402
from agentchat_mcp.services.flags import FeatureFlags  # noqa: E402
from agentchat_mcp.settings import Settings  # noqa: E402
from agentchat_mcp.store import open_store  # noqa: E402
from agentchat_mcp.telemetry import Telemetry  # noqa: E402

TARGET_US = 5.0


def per_call_us(fn: Callable[[], Any], n: int, repeats: int = 5) -> float:
    """The best of `repeats` runs of `n` calls, in microseconds per call (the least disturbed run)."""
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - started) / n * 1e6)
    return min(runs)


async def measure(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(db=Path(tmp) / "bench.db", secret_file=Path(tmp) / "bench.secret")
        telemetry = Telemetry()
        async with open_store(settings.db) as store:
            app = build_app_context(settings, store, telemetry)
            user, api_key = await app.identity.register("user", "bench")
            flags: FeatureFlags = app.flags
            await flags.set_flag("peeks", True, actor="bench", rules=[{"value": False, "groups": ["frozen"]}])
            await flags.set_flag("new_inbox", False, actor="bench", rules=[{"value": True, "percentage": 30}])
            await flags.group("beta", user.id, member=True, actor="bench")
            rows = {
                "pipeline check per tool call (2 evaluations)": per_call_us(
                    lambda: flags.paused("request_peek", user.id, "user"), n
                ),
                "per evaluation, memoised": per_call_us(lambda: flags.value("new_inbox", user.id, "user"), n),
            }

            def miss() -> None:
                flags._forget()  # what a flags change does: the next evaluation goes through OpenFeature
                flags.value("new_inbox", user.id, "user")

            rows["per evaluation after a change (memo miss)"] = per_call_us(miss, max(n // 10, 100))
            context_client = flags.client
            context = EvaluationContext(user.id, {"role": "user", "groups": ["beta"]})
            rows["OpenFeature client alone, no memo"] = per_call_us(
                lambda: context_client.get_boolean_value("new_inbox", False, context), max(n // 10, 100)
            )
            flags.close()

        server = build_server(settings.model_copy(update={"api_key": SecretStr(api_key)}), telemetry=telemetry)
        async with Client(server) as client:
            await client.call_tool("whoami", {})
            calls = max(n // 100, 50)
            took = []
            for _ in range(calls):
                started = time.perf_counter()
                await client.call_tool("whoami", {})
                took.append((time.perf_counter() - started) * 1e6)
        rows["whole in-memory tool call (whoami), p50"] = statistics.median(took)

    for label, us in rows.items():
        print(f"{label:<48} {us:9.2f} us")
    added = rows["pipeline check per tool call (2 evaluations)"]
    verdict = "met" if added < TARGET_US else "NOT met"
    print(f"feature flags add to a tool call: {added:.2f} us (target < {TARGET_US:.0f} us: {verdict})")
    share = rows["pipeline check per tool call (2 evaluations)"] / rows["whole in-memory tool call (whoami), p50"]
    print(f"pipeline check share of a tool call: {share * 100:.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=200_000, help="checks per row (default 200000)")
    args = parser.parse_args()
    anyio.run(measure, args.n)


if __name__ == "__main__":
    main()
