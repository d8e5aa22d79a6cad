"""Run the official MCP conformance suite (server side) against a running Streamable HTTP server.

    python scripts/mcp_conformance.py URL [SCENARIO ...]   e.g. http://127.0.0.1:8765/mcp
    python scripts/mcp_conformance.py --list               the generic scenarios (the default set)
    python scripts/mcp_conformance.py --install            install the suite into the cache, run nothing

The suite is `@modelcontextprotocol/conformance` from the npm registry. On first use it is installed
with npm, together with node 22 (the `node` npm package: the suite needs a newer node than Debian's),
into $AGENTCHAT_CONFORMANCE_HOME (default ~/.cache/agentchat-mcp-conformance), one folder per version;
later runs only use that folder. Only npm itself must be on PATH (Debian: apt-get install npm).

Prints one line per scenario, PASS or FAIL with the failing checks' messages, then
"N/M scenarios passed against URL". Exit status: 0 all passed, 1 a scenario failed, 2 usage error,
3 the suite cannot be had here (no npm, or the npm install failed): the message says why.

Environment: AGENTCHAT_CONFORMANCE_HOME (the cache), AGENTCHAT_CONFORMANCE_TIMEOUT (seconds per
scenario, default 120). Standard library only, so it runs before any virtual environment exists.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

VERSION = "0.1.16"  # the scenario names below are this version's
NODE_MAJOR = "22"
UNAVAILABLE = 3

# They apply to any server. The last four need logging/setLevel, completion/complete and
# resources/(un)subscribe, which agentchat-mcp serves (a bare MCPServer does not).
GENERIC = (
    "server-initialize",
    "ping",
    "tools-list",
    "resources-list",
    "prompts-list",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
    "logging-set-level",
    "completion-complete",
    "resources-subscribe",
    "resources-unsubscribe",
)


class Unavailable(Exception):
    """The suite cannot be installed or started on this machine; str() says why."""


def cache_home() -> Path:
    configured = os.environ.get("AGENTCHAT_CONFORMANCE_HOME")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "agentchat-mcp-conformance"


def install(version: str = VERSION) -> Path:
    """The folder holding node 22 and the suite, installed there with npm unless already done."""
    home = cache_home()
    target = home / f"conformance-{version}"
    if (target / ".installed").exists():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise Unavailable("npm is not installed (Debian: apt-get install npm); it installs node 22 and the suite")
    home.mkdir(parents=True, exist_ok=True)
    # Installed beside the target, then renamed into place: a run that stops half-way, or two runs
    # installing at once, never leave a half-installed folder that looks finished.
    staging = Path(tempfile.mkdtemp(prefix=f".conformance-{version}-", dir=home))
    try:
        (staging / "package.json").write_text(json.dumps({"name": "agentchat-mcp-conformance", "private": True}))
        print(
            f"installing node@{NODE_MAJOR} and @modelcontextprotocol/conformance@{version} into {target}",
            file=sys.stderr,
        )
        done = subprocess.run(
            [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--no-update-notifier",
                "--loglevel=error",
                "--save-exact",
                f"node@{NODE_MAJOR}",
                f"@modelcontextprotocol/conformance@{version}",
            ],
            cwd=staging,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0:
            raise Unavailable(f"npm install failed (exit {done.returncode}): {_npm_error(done.stderr or done.stdout)}")
        node_version = _node_version(staging)
        if not node_version.startswith(f"v{NODE_MAJOR}."):
            raise Unavailable(f"the installed node is {node_version}, not {NODE_MAJOR}.x")
        (staging / ".installed").touch()
        try:
            staging.rename(target)
        except OSError:  # another run finished first: use its folder
            if not (target / ".installed").exists():
                raise
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _npm_error(output: str) -> str:
    """The first lines of npm's error report (npm 10: "npm error ...", npm 9: "npm ERR! ..."), on one line."""
    lines = [line.split(None, 2)[-1] for line in output.splitlines() if line.startswith(("npm error", "npm ERR!"))]
    said = [line for line in lines if line.strip() and " at " not in line][:3] or output.splitlines()[-3:]
    return " / ".join(" ".join(line.split()) for line in said)[:400]


def _node_version(folder: Path) -> str:
    try:
        done = subprocess.run(
            [str(folder / "node_modules" / ".bin" / "node"), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError as exc:
        raise Unavailable(f"the installed node does not start: {exc}") from exc
    return done.stdout.strip()


def _suite(folder: Path) -> list[str]:
    """The command prefix that runs the suite's CLI with its own node."""
    cli = folder / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    return [str(folder / "node_modules" / ".bin" / "node"), str(cli)]


def known_scenarios(folder: Path) -> set[str]:
    listed = subprocess.run([*_suite(folder), "list", "--server"], capture_output=True, text=True, timeout=60)
    # lines like "  - server-initialize [2025-06-18,2025-11-25]"
    return {line.split()[1] for line in listed.stdout.splitlines() if line.strip().startswith("- ")}


def summarize(checks: list[dict[str, object]], exit_code: int, log: str) -> tuple[bool, str]:
    """(passed, one line) for one scenario's checks.json."""
    if not checks:
        tail = " ".join(log.split())[-300:]
        return False, f"FAIL no checks recorded (exit {exit_code}){': ' + tail if tail else ''}"

    def message(check: dict[str, object]) -> str:
        text = str(check.get("errorMessage") or check.get("description") or "")
        return f"{check.get('id')}: {' '.join(text.split())}"

    failed = [c for c in checks if c.get("status") == "FAILURE"]
    warned = [c for c in checks if c.get("status") == "WARNING"]
    ok = [c for c in checks if c.get("status") == "SUCCESS"]
    passed = not failed and exit_code == 0
    line = f"{'PASS' if passed else 'FAIL'} {len(ok)} ok, {len(failed)} failed, {len(warned)} warnings"
    line += "".join(f" | {message(c)}" for c in failed)
    line += "".join(f" | warning {message(c)}" for c in warned)
    return passed, line


def run_scenario(folder: Path, url: str, scenario: str, out: Path, timeout: float) -> tuple[bool, str]:
    out.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            [*_suite(folder), "server", "--url", url, "--scenario", scenario, "-o", str(out)],
            cwd=out,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        code, log = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        code, log = -1, f"timed out after {timeout:g} s"
    found = sorted(out.rglob("checks.json"))
    checks = json.loads(found[0].read_text()) if found else []
    return summarize(checks, code, log)


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def run(url: str, scenarios: list[str], *, timeout: float) -> int:
    folder = install()
    known = known_scenarios(folder)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="agentchat-conformance-") as tmp:
        for scenario in scenarios:
            if scenario not in known:
                passed, line = False, "FAIL unknown scenario (see --list)"
            else:
                passed, line = run_scenario(folder, url, scenario, Path(tmp) / scenario, timeout)
            failed += not passed
            print(f"{scenario:<30} {line}", flush=True)
    print(f"{len(scenarios) - failed}/{len(scenarios)} scenarios passed against {url}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("url", nargs="?", help="the server's Streamable HTTP endpoint, e.g. http://127.0.0.1:8765/mcp")
    parser.add_argument("scenarios", nargs="*", help="scenarios to run (default: the generic ones)")
    parser.add_argument("--install", action="store_true", help="only install the suite into the cache")
    parser.add_argument("--list", action="store_true", help="print the generic scenarios")
    parser.add_argument("--allow-remote", action="store_true", help="allow a URL that is not a loopback address")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(GENERIC))
        return 0
    try:
        if args.install:
            print(f"installed in {install()}")
            return 0
        if not args.url or not args.url.startswith(("http://", "https://")):
            parser.print_usage(sys.stderr)
            print("error: give the server's http:// or https:// URL", file=sys.stderr)
            return 2
        if not (is_loopback(args.url) or args.allow_remote):
            print(f"error: {args.url} is not a loopback address (--allow-remote allows it)", file=sys.stderr)
            return 2
        timeout = float(os.environ.get("AGENTCHAT_CONFORMANCE_TIMEOUT", "120"))
        return run(args.url, args.scenarios or list(GENERIC), timeout=timeout)
    except Unavailable as exc:
        print(f"mcp_conformance: the suite is unavailable here: {exc}", file=sys.stderr)
        return UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
