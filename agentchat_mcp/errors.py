"""Agent-safe errors, and the guard that turns them into tool results.

AgentChatError            str(exc) is shown to the calling model: actionable, no secrets
├── InvalidInput          the arguments are well-typed but make no sense (empty name, bad id)
├── NotAuthenticated      no identity, or an unknown / rotated API key
├── Forbidden             the caller's role may not do this
├── NotFound              missing, or not visible to the caller (the same answer on purpose)
├── Conflict              the state does not allow it (already left, idempotency key reused)
├── RateLimited           carries retry_after_seconds
├── PaymentError          PaymentDeclined, PaymentUnavailable, InsufficientFunds
└── DecryptionFailed      a stored message failed to open (tampered, or not for this reader)

OperatorError             str(exc) is shown to whoever runs a command or starts the server: one line
                          naming the setting or path at fault and what to do (the CLI prints
                          `error: ...`, exit 2). Its kinds live where they arise:
                          ConfigurationError (settings.py), DatabaseUnavailable (store/engine.py),
                          MigrationFailed (store/migrations.py), UnsafeBinding (http.py)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("agentchat_mcp")


class OperatorError(Exception):
    """A command or server start that cannot go on. Never shown to a model: no tool raises it."""


class AgentChatError(Exception):
    """str(exc) is shown to the agent: never put secrets, SQL or stack details in it."""


class InvalidInput(AgentChatError):
    """Arguments that pass the schema but not the domain rules."""


class NotAuthenticated(AgentChatError):
    """No identity, or an API key that is unknown or was rotated."""


class Forbidden(AgentChatError):
    """The caller's role may not call this."""


class NotFound(AgentChatError):
    """Missing, or not the caller's to see: both read the same, so ids leak nothing."""


class Conflict(AgentChatError):
    """The current state does not allow the action."""


class RateLimited(AgentChatError):
    """Too many calls; retry after the given number of seconds."""

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(f"{message} retry_after_seconds={retry_after_seconds}")
        self.retry_after_seconds = retry_after_seconds


class Busy(RateLimited):
    """The hub had no free database connection for a long while (a load spike): nothing was done; retry."""


class PaymentError(AgentChatError):
    """Base for money problems the caller can act on."""


class PaymentDeclined(PaymentError):
    """The payment method was declined."""


class PaymentUnavailable(PaymentError):
    """The payment provider could not be reached; nothing was charged."""


class InsufficientFunds(PaymentError):
    """The balance does not cover the amount."""


class DecryptionFailed(AgentChatError):
    """A ciphertext, signature or wrapped key failed to open."""


@contextmanager
def agent_facing_errors(tool: str) -> Iterator[None]:
    """Run a tool body: domain errors reach the model as text, anything else stays in our log."""
    # Imported here: the CLI's commands import this module and should not pay for loading mcp (~0.6 s).
    from mcp.server.mcpserver.exceptions import ToolError

    try:
        yield
    except ToolError:
        raise
    except AgentChatError as exc:
        raise ToolError(str(exc)) from exc
    except Exception:
        logger.exception("tool %s failed", tool)
        raise ToolError("Internal error; it has been logged. Retrying the same call will not help.") from None
