"""Fail when a critical module's line+branch coverage is below its floor (read from coverage.json).

    python scripts/check_coverage.py coverage.json

The critical modules hold keys, money, consent, authentication and limits: a bug there loses
messages, money or trust, so their floor is higher than the project's overall 80%.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FLOOR = 90.0
CRITICAL = {
    "agentchat_mcp/crypto.py": "encryption",
    "agentchat_mcp/services/ledger.py": "money",
    "agentchat_mcp/services/peeks.py": "peeks and consent",
    "agentchat_mcp/services/identity.py": "authentication",
    "agentchat_mcp/services/refunds.py": "refunds",
    "agentchat_mcp/services/referrals.py": "referral money and fraud checks",
    "agentchat_mcp/services/ratings.py": "ratings and agent performance",
    "agentchat_mcp/services/flags.py": "feature flags and kill switches",
    "agentchat_mcp/services/flag_rules.py": "feature flag targeting",
    "agentchat_mcp/ratelimit.py": "rate limits",
    "agentchat_mcp/store/rollups.py": "analytics money figures",
    "agentchat_mcp/services/analytics/__init__.py": "analytics",
    "agentchat_mcp/services/analytics/agent.py": "agent analytics",
    "agentchat_mcp/services/analytics/platform.py": "platform analytics",
}


def main(argv: list[str]) -> int:
    report = Path(argv[1] if len(argv) > 1 else "coverage.json")
    if not report.exists():
        print(f"{report} not found: run pytest with --cov-report=json:{report} first", file=sys.stderr)
        return 2
    files = json.loads(report.read_text())["files"]
    failed = []
    for path, what in CRITICAL.items():
        if path not in files:
            if Path(path).exists():
                failed.append(path)
                print(f"  FAIL {path:<40} not measured at all ({what})")
            else:
                print(f"  skip {path:<40} (not in this tree yet)")
            continue
        percent = float(files[path]["summary"]["percent_covered"])
        ok = percent >= FLOOR
        if not ok:
            failed.append(path)
        print(f"  {'ok  ' if ok else 'FAIL'} {path:<40} {percent:5.1f}%  ({what}, floor {FLOOR:.0f}%)")
    if failed:
        print(f"{len(failed)} critical module(s) below {FLOOR:.0f}% coverage: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
