"""The supply-chain checks' own rules (scripts/supply_chain.py), offline: the lock pins everything
pyproject.toml asks for within its ranges, and the audit fails exactly on fixable vulnerabilities that
are not allow-listed with a reason."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
import supply_chain


def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (PROJECT_ROOT / "requirements" / "dev.lock").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", line)
        if m:
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def test_the_lock_pins_every_dependency_within_pyproject_ranges() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    pins = locked()
    for spec in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements/dev.lock: re-lock (docs/development.md)"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {spec}"


def finding(vuln_id: str, fixes: tuple[str, ...] = (), aliases: tuple[str, ...] = ()) -> supply_chain.Finding:
    return supply_chain.Finding("pkg", "1.0", vuln_id, aliases, fixes)


def test_a_fixable_vulnerability_fails_unless_allow_listed_and_one_without_a_fix_must_be_listed() -> None:
    failures, notes = supply_chain.judge(
        [finding("PYSEC-1", ("1.1",)), finding("GHSA-2", ("2.0",), aliases=("CVE-2",)), finding("PYSEC-3")],
        {"CVE-2": "not reachable: we never parse untrusted input with it", "OLD-9": "gone"},
    )
    assert failures == [
        "FIXABLE   pkg 1.0: PYSEC-1: upgrade to 1.1 (then re-lock)",
        "NO FIX    pkg 1.0: PYSEC-3: add it to audit-allowlist.txt with a reason",
    ]
    assert notes == [
        "allowed   pkg 1.0: GHSA-2 (CVE-2): not reachable: we never parse untrusted input with it",
        "stale     OLD-9 is allow-listed but no longer found: remove it",
    ]


def test_packages_the_service_could_not_look_up_are_not_counted_as_audited() -> None:
    report = {
        "dependencies": [
            {"name": "a", "skip_reason": "Dependency not found on PyPI and could not be audited: a (1)"},
            {"name": "b", "version": "2", "vulns": [{"id": "X", "fix_versions": ["3"], "aliases": []}]},
        ]
    }
    found, skipped, audited = supply_chain.findings(report)
    assert (skipped, audited, [f.vuln_id for f in found]) == (["a"], 1, ["X"])


def test_an_allow_list_entry_without_a_reason_is_refused(tmp_path: Path) -> None:
    listed = tmp_path / "allow.txt"
    listed.write_text("# comment\nPYSEC-1  # fixed upstream only in 3.x, which drops py3.11\nPYSEC-2\n")
    with pytest.raises(SystemExit, match="PYSEC-2 needs a reason"):
        supply_chain.read_allowlist(listed)
    listed.write_text("PYSEC-1  # reason\n")
    assert supply_chain.read_allowlist(listed) == {"PYSEC-1": "reason"}
