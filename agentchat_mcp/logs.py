"""JSON-lines logging on stderr (stdout is the stdio protocol), without secrets or message text.

Every line is one JSON object: ``ts``, ``level``, ``logger``, ``msg``, plus the fields of the
request being served (``request_id``, ``principal_id``, ``tool``; see `bind`) and any of
``latency_ms`` / ``outcome`` / ``jsonrpc_id`` passed as ``extra``. The access line (one per tool
call, INFO) follows the level unless ``access_log`` says otherwise: at the default WARNING a
desktop client, which shows a stdio server's stderr as its log, gets no line per call. Two rules
keep secrets out:

- an exception is logged as its type and stack frames (file, line, function) only: exception texts
  can carry SQL parameters, validation inputs or a message's plaintext, so they are never written;
- every text is passed through `redact`, which masks API keys, bearer tokens and Stripe secrets.

Third-party loggers that may echo request payloads are held at INFO (HTTP libraries) or WARNING
(the MCP SDK, SQLAlchemy) whatever the configured level.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TextIO

ACCESS_LOGGER = "agentchat_mcp.access"
FIELDS = ("request_id", "jsonrpc_id", "principal_id", "tool", "latency_ms", "outcome", "transport", "method")
_NOISY = ("httpx", "httpx2", "httpcore", "httpcore2", "hpack", "sse_starlette", "stripe", "uvicorn")
# Their INFO lines carry user data: the SDK logs tool-error texts (validation errors quote the input),
# SQLAlchemy logs SQL parameters. Held at WARNING whatever the level.
_QUIET = ("mcp", "sqlalchemy", "aiosqlite")
_SECRETS = re.compile(
    r"(acp_[A-Za-z0-9_\-]{8,})"  # our API keys
    r"|((?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9]{8,})"  # Stripe API keys
    r"|(whsec_[A-Za-z0-9]{8,})"  # Stripe webhook secrets
    r"|((?i:bearer)\s+[A-Za-z0-9._~+/=\-]{8,})"  # Authorization header values
)

_EMPTY: Mapping[str, Any] = MappingProxyType({})
# Built once: json.dumps(obj, **options) builds a new encoder for every line.
_encode = json.JSONEncoder(default=str, ensure_ascii=False).encode
request_context: ContextVar[Mapping[str, Any]] = ContextVar("agentchat_log_context", default=_EMPTY)


# Every credential _SECRETS matches contains one of these (in lower case): a cheap test that
# spares the regex for the many lines that hold none (the regex is most of a log line's cost).
_MARKERS = ("acp_", "_test_", "_live_", "whsec_", "bearer")


def redact(text: str) -> str:
    """Mask anything shaped like a credential."""
    lowered = text.lower()
    if not any(marker in lowered for marker in _MARKERS):
        return text
    return _SECRETS.sub(lambda m: m.group(0)[:4] + "***", text)


def bind(**fields: Any) -> Token[Mapping[str, Any]]:
    """Add fields (request_id, principal_id, tool ...) to every log line written until `unbind`."""
    return request_context.set({**request_context.get(), **{k: v for k, v in fields.items() if v is not None}})


def unbind(token: Token[Mapping[str, Any]]) -> None:
    request_context.reset(token)


def _frames(exc: BaseException) -> list[str]:
    return [f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(exc.__traceback__)]


def _exception_fields(exc: BaseException) -> dict[str, Any]:
    chain: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 5:
        chain.append(f"{type(cause).__module__}.{type(cause).__qualname__}")
        cause = cause.__cause__ or cause.__context__
    return {"error_type": chain[0], "error_chain": chain[1:], "stack": _frames(exc)[-12:]}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; texts redacted, exception texts left out on purpose."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),  # before JSON escapes a "Bearer\n<token>" apart
        }
        out.update(request_context.get())
        for key in FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            out.update(_exception_fields(record.exc_info[1]))
        return redact(_encode(out))


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler `configure` installed, so a second call replaces it instead of doubling lines."""


def configure(level: str | int = "WARNING", *, access_log: bool | None = None, stream: TextIO | None = None) -> None:
    """Send every log record to `stream` (stderr) as JSON lines; idempotent.

    `access_log`: the one INFO line per tool call. None follows `level` (shown at INFO and DEBUG,
    so a default WARNING start, e.g. a desktop client's stdio server, writes nothing per call);
    True shows it at any level (a hub's access log beside warnings only); False never.
    """
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"log level {level!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    # Our lines carry none of the caller's file and line, thread, process or task: skip collecting
    # them for every record (the logging HOWTO's "Optimization" list; findCaller walks the stack).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    if hasattr(logging, "logAsyncioTasks"):
        logging.logAsyncioTasks = False
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _OurHandler) or type(h) is logging.StreamHandler]:
        root.removeHandler(handler)
    handler = _OurHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.getLogger("agentchat_mcp").setLevel(numeric)
    access = numeric if access_log is None else logging.INFO if access_log else max(numeric, logging.WARNING)
    logging.getLogger(ACCESS_LOGGER).setLevel(access)
    for name in _NOISY:  # their DEBUG lines can hold raw payloads
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
