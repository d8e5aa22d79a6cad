"""What the SDK raises. Every error carries the text the server wrote, unchanged.

AgentChatClientError      base of everything below
├── ToolFailed            the tool answered with an error (isError): .tool, .message
│   └── RateLimited       refused by a rate limit: .retry_after seconds (tool error or JSON-RPC -32010)
├── ProtocolError         any other JSON-RPC error: .code, .message
├── ConnectionLost        the transport failed and the call could not be (safely) retried
├── ContractError         the result did not match the SDK's result model (client and server versions differ)
└── ClientClosed          the AgentChat was closed
"""

from __future__ import annotations

__all__ = [
    "AgentChatClientError",
    "ClientClosed",
    "ConnectionLost",
    "ContractError",
    "ProtocolError",
    "RateLimited",
    "ToolFailed",
]

_PREFIX = "Error executing tool "


class AgentChatClientError(Exception):
    """Base of every error the SDK raises."""


class ToolFailed(AgentChatClientError):
    """A tool call that the server answered with an error result; `message` is its text, minus the SDK's prefix."""

    def __init__(self, tool: str, message: str) -> None:
        self.tool = tool
        prefix = f"{_PREFIX}{tool}: "
        self.message = message[len(prefix) :] if message.startswith(prefix) else message
        super().__init__(f"{tool}: {self.message}")


class RateLimited(ToolFailed):
    """A call refused by a rate limit; `retry_after` is the number of seconds the server asked to wait."""

    def __init__(self, tool: str, message: str, retry_after: float) -> None:
        super().__init__(tool, message)
        self.retry_after = retry_after


class ProtocolError(AgentChatClientError):
    """A JSON-RPC error response (not a tool result): `code` and the server's `message`."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"JSON-RPC error {code}: {message}")


class ConnectionLost(AgentChatClientError):
    """The connection failed during a call that was not safe to repeat, or stayed down through every retry."""


class ContractError(AgentChatClientError):
    """A result that does not fit the SDK's model of it: the client and the server are different versions."""


class ClientClosed(AgentChatClientError):
    """The AgentChat was closed (or never opened with `async with`)."""
