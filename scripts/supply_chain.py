"""Supply-chain checks that CI runs (.ci/run): known vulnerabilities in the locked dependency set,
and secrets in the tree.

    python scripts/supply_chain.py audit     # pip-audit on requirements/dev.lock
    python scripts/supply_chain.py secrets   # detect-secrets on the tracked files vs .secrets.baseline

audit: pip-audit on the pinned lock (no resolution, no install). A known vulnerability with a fix
available fails, unless requirements/audit-allowlist.txt lists its id with a reason; one without a
fix is reported and must be allow-listed with a reason too, so nobody forgets it. When no
vulnerability service answers for the locked releases (PyPI's per-release JSON API, then OSV), the
check says so in capitals and passes: it never reports "no known vulnerabilities" for packages it
could not look up.

secrets: a fresh detect-secrets scan of the tracked files; a secret whose hash is not in the
committed baseline fails (line moves do not: they are compared by file and hash, not line).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "dev.lock"
ALLOWLIST = ROOT / "requirements" / "audit-allowlist.txt"
BASELINE = ROOT / ".secrets.baseline"
SERVICES = ("pypi", "osv")


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    vuln_id: str
    aliases: tuple[str, ...]
    fix_versions: tuple[str, ...]


def read_allowlist(path: Path = ALLOWLIST) -> dict[str, str]:
    """`ID  # reason` per line; an entry without a reason is an error (the reason is the point)."""
    allowed: dict[str, str] = {}
    if not path.exists():
        return allowed
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        vuln_id, _, reason = line.partition("#")
        if not reason.strip():
            raise SystemExit(f"{path}:{number}: {vuln_id.strip()} needs a reason after '#'")
        allowed[vuln_id.strip()] = reason.strip()
    return allowed


def findings(report: dict[str, object]) -> tuple[list[Finding], list[str], int]:
    """(vulnerabilities, packages that could not be looked up, packages looked up) from pip-audit's JSON."""
    found: list[Finding] = []
    skipped: list[str] = []
    audited = 0
    for dep in report.get("dependencies", []):  # type: ignore[attr-defined]
        if "skip_reason" in dep:
            skipped.append(f"{dep['name']} {dep.get('version', '')}".strip())
            continue
        audited += 1
        for vuln in dep.get("vulns", []):
            found.append(
                Finding(
                    package=dep["name"],
                    version=dep["version"],
                    vuln_id=vuln["id"],
                    aliases=tuple(vuln.get("aliases") or ()),
                    fix_versions=tuple(vuln.get("fix_versions") or ()),
                )
            )
    return found, skipped, audited


def judge(found: list[Finding], allowed: dict[str, str]) -> tuple[list[str], list[str]]:
    """(failures, notes): a fixable vulnerability not allow-listed fails; the rest are notes."""
    failures: list[str] = []
    notes: list[str] = []
    used: set[str] = set()
    for f in found:
        ids = {f.vuln_id, *f.aliases}
        listed = sorted(ids & allowed.keys())
        what = f"{f.package} {f.version}: {f.vuln_id}" + (f" ({', '.join(f.aliases)})" if f.aliases else "")
        if listed:
            used.update(listed)
            notes.append(f"allowed   {what}: {allowed[listed[0]]}")
        elif f.fix_versions:
            failures.append(f"FIXABLE   {what}: upgrade to {', '.join(f.fix_versions)} (then re-lock)")
        else:
            failures.append(f"NO FIX    {what}: add it to {ALLOWLIST.name} with a reason")
    notes += [
        f"stale     {vuln_id} is allow-listed but no longer found: remove it" for vuln_id in allowed.keys() - used
    ]
    return failures, notes


def _pip_audit(service: str) -> dict[str, object] | None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip_audit",
            "--requirement",
            str(LOCK),
            "--no-deps",  # the lock is fully pinned: nothing to resolve, nothing to install
            "--disable-pip",
            "--vulnerability-service",
            service,
            "--timeout",
            "20",
            "--progress-spinner",
            "off",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return dict(json.loads(done.stdout))
    except json.JSONDecodeError:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"pip-audit via {service}: no answer ({last[:200]})")
        return None


def audit() -> int:
    allowed = read_allowlist()
    for service in SERVICES:
        report = _pip_audit(service)
        if report is None:
            continue
        found, skipped, audited = findings(report)
        if audited == 0:
            print(f"pip-audit via {service}: none of the {len(skipped)} locked packages could be looked up")
            continue
        failures, notes = judge(found, allowed)
        print(f"pip-audit via {service}: {audited} locked packages audited, {len(found)} known vulnerabilities")
        if skipped:
            print(f"NOT AUDITED ({len(skipped)}): {', '.join(skipped)}")
        for line in notes + failures:
            print(f"  {line}")
        return 1 if failures else 0
    print(
        "VULNERABILITY AUDIT SKIPPED: no vulnerability service answered for the locked releases "
        f"({', '.join(SERVICES)}). The locked dependency set was NOT checked for known vulnerabilities; "
        "run `python scripts/supply_chain.py audit` where PyPI's JSON API or OSV is reachable."
    )
    return 0


def _tracked_files() -> list[str]:
    git = ["git", "ls-files", "-z"]  # git from PATH, as in the CI clone
    out = subprocess.run(git, cwd=ROOT, capture_output=True, check=True).stdout
    names = [name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]
    return [name for name in names if name != BASELINE.name]  # its hashes are not secrets


def secrets() -> int:
    if not BASELINE.exists():
        print(f"{BASELINE.name} is missing: run `detect-secrets scan > {BASELINE.name}` and audit it")
        return 1
    baseline = json.loads(BASELINE.read_text())
    known = {(name, s["hashed_secret"]) for name, found in baseline.get("results", {}).items() for s in found}
    done = subprocess.run(
        [sys.executable, "-m", "detect_secrets", "scan", *_tracked_files()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        print(f"detect-secrets scan failed: {done.stderr.strip()[-300:]}")
        return 1
    fresh = json.loads(done.stdout).get("results", {})
    new = [
        f"{name}:{s['line_number']}: {s['type']}"
        for name, found in fresh.items()
        for s in found
        if (name, s["hashed_secret"]) not in known
    ]
    total = sum(len(found) for found in fresh.values())
    print(f"detect-secrets: {len(_tracked_files())} tracked files, {total} findings, {len(new)} not in the baseline")
    for line in new:
        print(
            f"  NEW SECRET? {line}: remove it, or if it is not a secret: detect-secrets scan --baseline "
            f"{BASELINE.name} && detect-secrets audit {BASELINE.name}"
        )
    return 1 if new else 0


def main(argv: list[str]) -> int:
    checks = {"audit": audit, "secrets": secrets}
    if len(argv) != 2 or argv[1] not in checks:
        print(f"usage: python scripts/supply_chain.py {'|'.join(checks)}", file=sys.stderr)
        return 2
    return checks[argv[1]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
