"""The Python SDK: `AgentChat`, an async client of an agentchat server built on the mcp SDK's `Client`.

One typed method per tool (generated from the server's tools, see agentchat_mcp/sdkgen.py), the tool
contract's pydantic result models, typed errors, retries, reconnects and `async for` over new messages.
"""

from __future__ import annotations

from agentchat_mcp.client._core import AgentChat, ConnectionState, Connector, IncomingMessage, RetryPolicy
from agentchat_mcp.client._tools import TOOL_RESULTS
from agentchat_mcp.client.errors import (
    AgentChatClientError,
    ClientClosed,
    ConnectionLost,
    ContractError,
    ProtocolError,
    RateLimited,
    ToolFailed,
)

__all__ = [
    "TOOL_RESULTS",
    "AgentChat",
    "AgentChatClientError",
    "ClientClosed",
    "ConnectionLost",
    "ConnectionState",
    "Connector",
    "ContractError",
    "IncomingMessage",
    "ProtocolError",
    "RateLimited",
    "RetryPolicy",
    "ToolFailed",
]
