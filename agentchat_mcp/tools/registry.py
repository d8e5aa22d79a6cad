"""Which roles may call which tool: the tools/list filter and the tools/call check (pipeline.py runs both)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from mcp.server import MCPServer
from mcp.server.context import HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool as RegisteredTool
from mcp_types import CallToolResult, ListToolsResult, TextContent, Tool, ToolAnnotations
from pydantic import ValidationError

from agentchat_mcp.app import AppContext
from agentchat_mcp.errors import AgentChatError
from agentchat_mcp.tools import arguments
from agentchat_mcp.tools.listing import clean_description, listed, untrusted_fields, untrusted_note
from agentchat_mcp.versioning import Deprecation

logger = logging.getLogger(__name__)
# The request being served, for handlers the SDK gives no Context (static resources).
current_request: ContextVar[ServerRequestContext[AppContext, Any] | None] = ContextVar("current_request", default=None)

ANONYMOUS = "anonymous"
AGENT, USER, ADMIN = "agent", "user", "admin"
EVERYONE = frozenset({ANONYMOUS, AGENT, USER, ADMIN})
_A = {AGENT: "an", ADMIN: "an", USER: "a"}  # the article before each signed-in role
SIGNED_IN = frozenset({AGENT, USER, ADMIN})


def app_of(ctx: Context[AppContext, Any]) -> AppContext:
    """The running server's services."""
    return ctx.request_context.lifespan_context


def _error(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _build(
    fn: Callable[..., Any],
    title: str,
    read_only: bool,
    destructive: bool,
    idempotent: bool,
    open_world: bool,
    meta: dict[str, Any] | None = None,
) -> tuple[RegisteredTool, Tool]:
    """The SDK's Tool for `fn` (what tools/call runs), and what tools/list shows of it (listing.py)."""
    annotations = ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=open_world,
    )
    tool = RegisteredTool.from_function(
        fn, title=title, description=clean_description(fn.__doc__ or ""), annotations=annotations, meta=meta
    )
    tool.parameters["additionalProperties"] = False  # unknown arguments are refused (middleware)
    untrusted = untrusted_fields(tool.output_schema)
    if untrusted:  # it returns another principal's text: say which fields, and what that means
        tool.description = f"{tool.description}\n{untrusted_note(untrusted)}"
    shown = Tool(
        name=tool.name,
        title=tool.title,
        description=tool.description,
        input_schema=tool.parameters,
        annotations=tool.annotations,
        meta=meta,  # e.g. _meta.ui.resourceUri: the MCP App that draws this tool's result
    )
    return tool, listed(shown)


# Building a Tool (its argument model and JSON schemas, with pydantic) is most of what build_server costs,
# ~5 ms a tool. A process that builds many servers (the tests build one per in-memory client; bench, SSE
# hubs) builds each tool once: nothing changes a Tool once it is registered, so the servers share it.
_built: dict[tuple[Callable[..., Any], str, bool, bool, bool, bool], tuple[RegisteredTool, Tool]] = {}


class ToolRegistry:
    """Registers tools with their roles and annotations; `visible` and `refusal` are the checks."""

    def __init__(self, server: MCPServer[Any]) -> None:
        self.server = server
        self.roles: dict[str, frozenset[str]] = {}
        self._accepted: dict[str, frozenset[str]] = {}
        self._listed: dict[str, Tool] = {}  # what tools/list shows of each tool (listing.py)
        self._inputs: dict[str, dict[str, Any]] = {}  # each tool's full input schema
        self._old_tools: dict[str, Deprecation] = {}  # an old tool name -> its deprecation (versioning.py)
        self._old_arguments: dict[str, list[Deprecation]] = {}  # a tool -> its renamed arguments

    def add(
        self,
        fn: Callable[..., Any],
        *,
        roles: frozenset[str],
        title: str,
        read_only: bool = False,
        destructive: bool = False,
        idempotent: bool = False,
        open_world: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> None:
        name = fn.__name__
        key = (fn, title, read_only, destructive, idempotent, open_world)
        if key not in _built:
            _built[key] = _build(fn, title, read_only, destructive, idempotent, open_world, meta)
        tool, self._listed[name] = _built[key]
        # The SDK's add_tool only takes a function (and builds the Tool again): put the built one in.
        self.server._tool_manager._tools[name] = tool
        self.roles[name] = roles
        self._accepted[name] = frozenset(tool.parameters.get("properties", {}))
        self._inputs[name] = tool.parameters

    def deprecate(self, old: Deprecation) -> None:
        """Keep an old tool name, or an old argument name, answering until its sunset (versioning.py):
        listed, described as deprecated, and noticed on every call (deprecations, server.py)."""
        tools = self.server._tool_manager._tools
        target = old.tool or old.new
        current = tools[target]
        if old.tool is None:  # a renamed tool: the same tool under its old name
            description = f"{old.description_line()}\n{current.description}"
            tools[old.old] = current.model_copy(update={"name": old.old, "description": description})
            self._listed[old.old] = self._listed[target].model_copy(
                update={"name": old.old, "description": description}
            )
            self.roles[old.old] = self.roles[target]
            self._accepted[old.old] = self._accepted[target]
            self._inputs[old.old] = self._inputs[target]
            self._old_tools[old.old] = old
            return
        # A renamed argument: accepted (and listed) under its old name too; renamed before the tool runs.
        description = f"{current.description}\n{old.description_line()}"
        note = {"description": f"Deprecated: use {old.new} (answers until {old.sunset.isoformat()})."}
        parameters = copy.deepcopy(current.parameters)
        parameters["properties"][old.old] = {**parameters["properties"][old.new], **note}
        tools[target] = current.model_copy(update={"description": description, "parameters": parameters})
        shown = self._listed[target]
        schema = copy.deepcopy(shown.input_schema)
        schema["properties"][old.old] = {**schema["properties"][old.new], **note}
        self._listed[target] = shown.model_copy(update={"description": description, "input_schema": schema})
        self._accepted[target] = self._accepted[target] | {old.old}
        self._inputs[target] = parameters
        self._old_arguments.setdefault(target, []).append(old)

    def deprecations(self, name: str, arguments: dict[str, Any]) -> tuple[dict[str, Any], list[Deprecation]]:
        """A call's arguments with renamed ones under their new names, and the deprecations the call used."""
        used: list[Deprecation] = []
        renamed_tool = self._old_tools.get(name)
        if renamed_tool is not None:
            used.append(renamed_tool)
        for old in self._old_arguments.get(renamed_tool.new if renamed_tool else name, ()):
            if old.old in arguments:
                arguments = dict(arguments)
                value = arguments.pop(old.old)
                arguments.setdefault(old.new, value)  # given both, the new name wins
                used.append(old)
        return arguments, used

    def accepted_arguments(self, name: str) -> frozenset[str]:
        return self._accepted.get(name, frozenset())

    def callable_by(self, role: str) -> frozenset[str]:
        """The names of the tools `role` may call (and sees in tools/list)."""
        return frozenset(name for name, roles in self.roles.items() if role in roles)

    def explain(self, name: str, error: ValidationError, role: str) -> str:
        """Tool `name`'s argument error, as `role`'s model should read it (tools/arguments.py)."""
        return arguments.explain(error, self._inputs.get(name, {}), self.callable_by(role), self.roles)

    def visible(
        self, result: HandlerResult, role: str, *, again: str | None = None, hidden: frozenset[str] = frozenset()
    ) -> HandlerResult:
        """A tools/list result with only the tools `role` may call, each as listing.py lists it; `again`: the
        registration tool this session called before it ever listed tools, shown once more (app.py);
        `hidden`: tools a feature flag switched off and hides (services/flags.py)."""

        def allowed(name: str) -> bool:
            return (role in self.roles.get(name, frozenset()) or name == again) and name not in hidden

        if isinstance(result, ListToolsResult):
            tools = [self._listed[t.name] for t in result.tools if allowed(t.name)]
            return result.model_copy(update={"tools": tools})
        if isinstance(result, dict) and isinstance(result.get("tools"), list):
            names = [t.get("name", "") for t in result["tools"]]
            wire = [
                self._listed[n].model_dump(by_alias=True, mode="json", exclude_none=True) for n in names if allowed(n)
            ]
            return {**result, "tools": wire}
        return result

    def refusal(self, name: str, arguments: Any, role: str | AgentChatError) -> CallToolResult | None:
        """None if `role` may call tool `name` with these arguments, else the tool error to answer with.
        `role`: the caller's, ANONYMOUS, or why the caller could not be told (a bad key)."""
        if name not in self.roles:
            return None  # the SDK answers an unknown tool
        if isinstance(arguments, dict):
            unknown = sorted(arguments.keys() - self.accepted_arguments(name))
            if unknown:
                accepted = ", ".join(sorted(self.accepted_arguments(name))) or "none"
                return _error(
                    f"Error executing tool {name}: unknown argument(s) {', '.join(unknown)}; accepted: {accepted}."
                )
        if isinstance(role, AgentChatError):
            return _error(f"Error executing tool {name}: {role}")
        allowed = self.roles[name]
        if role in allowed:
            return None
        if role == ANONYMOUS:
            return _error(
                f"Error executing tool {name}: it needs an identity. Call register_agent or register_user first, "
                "or connect with your API key."
            )
        signed_in = f"you are signed in as {_A[role]} {role}"
        if allowed == {ANONYMOUS}:  # registration: this session has an identity already
            return _error(f"Error executing tool {name}: {signed_in} already; whoami shows who.")
        who = " or ".join(sorted(allowed - {ANONYMOUS}))
        return _error(f"Error executing tool {name}: it is for {who} accounts; {signed_in}.")
