"""The public contract: JSON Schemas of every tool's input and output, exported to schemas/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio

from agentchat_mcp.server import build_server
from agentchat_mcp.settings import Settings


def tool_schemas() -> dict[str, dict[str, Any]]:
    """file name -> schema, for every tool (built without opening a database)."""
    server = build_server(Settings(db=Path("unused.db")))
    tools = anyio.run(server.list_tools)
    files: dict[str, dict[str, Any]] = {}
    for tool in sorted(tools, key=lambda t: t.name):
        files[f"{tool.name}.input.json"] = tool.input_schema
        files[f"{tool.name}.output.json"] = tool.output_schema or {}
    return files


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export_schemas(out: Path) -> int:
    """Write one file per tool input and output; remove files of tools that no longer exist."""
    out.mkdir(parents=True, exist_ok=True)
    files = tool_schemas()
    for stale in out.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
    for name, schema in files.items():
        (out / name).write_text(render(schema))
    return len(files)
