"""The server middleware: every MCP request passes it once, on its way to the SDK's handler.

For a tools/call, in this order: who is calling (once per request: app.py), then the observation
around everything else (span, metrics, access line: telemetry.py), the rate limit (ratelimit.py) and
the role and argument check (tools/registry.py), then the feature flags that may pause the tool
(services/flags.py); only then the tool. Every other request counts
against the same per-principal limit (resources/read, subscriptions, completions ...; not the
connection's bookkeeping, ratelimit.UNCOUNTED); tools/list is filtered by role and prompts/get
checked (prompts.py).

An unexpected exception from any handler is logged here, with its traceback, and answered as an
opaque -32603 "Internal server error": the SDK would put str(exc) on the wire (as error code 0) in
the handshake era, and SQL, paths or ids with it.

Why one layer and not one per concern: as four server middlewares, each re-read the request and
asked who was calling, and every tool call paid for all of them. The concerns stay in their own
modules; this is only their order.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, CallToolResult, TextContent
from pydantic import ValidationError

from agentchat_mcp import prompts
from agentchat_mcp.app import AppContext, close_caller_memo, open_caller_memo
from agentchat_mcp.errors import AgentChatError
from agentchat_mcp.ratelimit import RequestLimits
from agentchat_mcp.services.identity import Caller
from agentchat_mcp.telemetry import ToolCallObserver
from agentchat_mcp.tools.registry import ANONYMOUS, ToolRegistry, current_request

logger = logging.getLogger(__name__)


class RequestPipeline:
    """MCP server middleware (ours, outermost): the checks and the observation of every request."""

    def __init__(self, registry: ToolRegistry, limits: RequestLimits, observer: ToolCallObserver) -> None:
        self.registry = registry
        self.limits = limits
        self.observer = observer

    async def __call__(self, ctx: ServerRequestContext[AppContext, Any], call_next: CallNext) -> HandlerResult:
        current_request.set(ctx)  # for handlers the SDK gives no Context (static resources)
        memo = open_caller_memo()
        try:
            return await self._serve(ctx, call_next)
        except (MCPError, ValidationError):  # answers the SDK puts on the wire as they are, leaking nothing
            raise
        except Exception:
            if ctx.request_id is None:  # a notification: nobody to answer; the SDK logs it
                raise
            logger.exception("%s failed", ctx.method)
            raise MCPError(code=INTERNAL_ERROR, message="Internal server error") from None
        finally:
            close_caller_memo(memo)

    async def _serve(self, ctx: ServerRequestContext[AppContext, Any], call_next: CallNext) -> HandlerResult:
        method = ctx.method
        if ctx.request_id is None:  # notifications are not requests: nothing to count or check
            return await call_next(ctx)
        if method == "tools/call" and ctx.params:
            return await self._tool_call(ctx, call_next)
        await self._count(ctx)
        if method == "tools/list":
            result = await call_next(ctx)
            try:
                caller = await _caller(ctx)
            except AgentChatError:
                caller = None
            role = caller.role if caller else ANONYMOUS
            app = ctx.lifespan_context
            again = app.listing(getattr(ctx.request, "headers", None), anonymous=role == ANONYMOUS)
            hidden = app.flags.hidden_tools(self.registry.callable_by(role), caller.id if caller else None, role)
            return self.registry.visible(result, role, again=again, hidden=hidden)
        if method == "prompts/get" and ctx.params is not None:
            prompts.check_prompt_request(ctx.params)
        return await call_next(ctx)

    async def _count(self, ctx: ServerRequestContext[AppContext, Any]) -> None:
        """The per-principal rate limit for a request other than tools/call (raises MCPError over it)."""
        if not self.limits.counts(ctx.method):
            return
        try:
            caller = await _caller(ctx)
        except AgentChatError:  # a bad key: counted as anonymous, as tool calls are
            caller = None
        await self.limits.check(caller.id if caller else None, ctx.request)

    async def _tool_call(self, ctx: ServerRequestContext[AppContext, Any], call_next: CallNext) -> HandlerResult:
        params = ctx.params or {}
        name = params.get("name")
        role: str | AgentChatError = ANONYMOUS
        principal_id: str | None = None
        failure: Exception | None = None
        try:
            caller = await _caller(ctx)
        except AgentChatError as exc:  # a bad key: counted as anonymous; the role check says what is wrong
            role = exc
        except Exception as exc:  # e.g. the database failed: observed (and logged) as this call's failure
            failure = exc
        else:
            role = caller.role if caller else ANONYMOUS
            principal_id = caller.id if caller else None
        with self.observer.observe(str(name or ""), principal_id, ctx.request_id) as seen:
            if failure is not None:
                raise failure
            refusal = None
            if isinstance(name, str):
                refusal = (
                    await self.limits.refusal(name, principal_id, ctx.request)
                    or self.registry.refusal(name, params.get("arguments") or {}, role)
                    or self._paused(ctx, name, principal_id, role)
                )
            result = refusal if refusal is not None else await call_next(ctx)
            seen.result = result
            return result

    def _paused(
        self,
        ctx: ServerRequestContext[AppContext, Any],
        name: str,
        principal_id: str | None,
        role: str | AgentChatError,
    ) -> CallToolResult | None:
        """A tool error if a feature flag (kill switch, per-tool switch) has `name` off for this caller."""
        if name not in self.registry.roles or not isinstance(role, str):
            return None
        why = ctx.lifespan_context.flags.paused(name, principal_id, role)
        if why is None:
            return None
        return CallToolResult(
            content=[TextContent(type="text", text=f"Error executing tool {name}: {why}")], is_error=True
        )


async def _caller(ctx: ServerRequestContext[AppContext, Any]) -> Caller | None:
    return await ctx.lifespan_context.maybe_caller(getattr(ctx.request, "headers", None))
