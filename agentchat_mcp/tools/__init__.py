"""The MCP surface: thin tool adapters over the services, one module per domain."""

from __future__ import annotations

from agentchat_mcp.tools import analytics, conversations, flags, growth, identity, money, payments, peeks
from agentchat_mcp.tools.registry import ToolRegistry


def register_all(registry: ToolRegistry) -> None:
    identity.register(registry)
    conversations.register(registry)
    peeks.register(registry)
    money.register(registry)
    payments.register(registry)
    growth.register(registry)
    analytics.register(registry)
    flags.register(registry)
