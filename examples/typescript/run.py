"""Run agent.ts (TypeScript, the official MCP SDK) against a Python agent (the Python SDK), on one database.

    python examples/typescript/run.py          # a fresh temp database; --db PATH to choose one

Needs npm on PATH. Node 22 (it runs TypeScript directly, --experimental-strip-types) and
@modelcontextprotocol/sdk are installed with npm once into ~/.cache/agentchat-mcp-examples-ts
($AGENTCHAT_EXAMPLES_TS_HOME), as the Inspector and conformance tests install theirs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _common import database, parser  # noqa: E402

from agentchat_mcp.client import AgentChat  # noqa: E402

HOME = Path(os.environ.get("AGENTCHAT_EXAMPLES_TS_HOME", Path.home() / ".cache" / "agentchat-mcp-examples-ts"))


def install() -> Path:
    """node 22 and the package.json's dependencies, with npm, once; returns the node binary."""
    wanted = json.loads((HERE / "package.json").read_text())["dependencies"]
    marker = HOME / (".installed-" + "-".join(f"{k.replace('/', '+')}@{v}" for k, v in sorted(wanted.items())))
    node = HOME / "node_modules" / ".bin" / "node"
    if marker.exists() and node.exists():
        return node
    if shutil.which("npm") is None:
        sys.exit("npm is not installed: it installs node 22 and @modelcontextprotocol/sdk for this example")
    HOME.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "package.json", HOME / "package.json")
    npm = ["npm", "--prefix", str(HOME), "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=error"]
    subprocess.run([*npm, "install", "node@22"], cwd=HOME, check=True, timeout=900)
    subprocess.run([*npm, "install"], cwd=HOME, check=True, timeout=900)  # package.json's dependencies
    marker.touch()
    return node


async def python_agent(db: Path, node: Path) -> None:
    """A Python agent that answers arithmetic and then runs agent.ts against itself."""
    async with AgentChat.local(db) as chat:
        me = await chat.register("Python agent", peek_price="1.00", description="Answers with the Python SDK.")
        print(f"py: registered as {me.name} ({me.id})", flush=True)
        env = {**os.environ, "AGENTCHAT_DB": str(db), "AGENTCHAT_PYTHON": sys.executable, "NODE_PATH": str(HOME)}
        command = [str(node), "--experimental-strip-types", "--no-warnings", str(HOME / "agent.ts"), me.id]
        shutil.copy(HERE / "agent.ts", HOME / "agent.ts")  # beside its node_modules, where imports resolve
        bye = anyio.Event()

        async def answer() -> None:
            async for message in chat.messages():
                print(f"py: read {message.text!r} from {message.sender_name}", flush=True)
                if message.text == "bye":
                    bye.set()
                    return
                await chat.send_message(message.conversation_id, "6 x 7 = 42")

        ts = await anyio.open_process(command, env=env, stdout=None, stderr=None)
        async with ts, anyio.create_task_group() as tasks:
            tasks.start_soon(answer)
            if await ts.wait() != 0:
                tasks.cancel_scope.cancel()
            else:
                with anyio.fail_after(30):  # its last message, "bye", is on its way
                    await bye.wait()
        if ts.returncode != 0:
            sys.exit(f"agent.ts failed with exit code {ts.returncode}")


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--install", action="store_true", help="only install node 22 and the SDK (CI does this first)")
    opts = args.parse_args()
    node = install()
    if not opts.install:
        anyio.run(python_agent, database(opts.db), node)


if __name__ == "__main__":
    main()
