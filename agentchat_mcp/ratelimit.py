"""Rate limits: the only module that imports `limits` (moving windows).

What is limited, each a setting (``AGENTCHAT_RATE_LIMIT_*``, ";"-separated for several windows):

- every request of a principal (``rate_limit_principal``, 100/minute): tool calls, resource reads,
  subscriptions, completions, prompts; not the connection's own bookkeeping (``UNCOUNTED``: the
  handshake, discovery, ping and the listings a client library makes on its own). An anonymous
  session is counted by its IP address (HTTP) or as the local process (stdio);
- ``request_peek`` per user (``rate_limit_request_peek``, 10/minute);
- registration per IP address (``rate_limit_registration``; HTTP only: a local stdio process can
  create accounts with the CLI anyway);
- every HTTP request per IP address (``rate_limit_ip``, 1000/minute).

Inside MCP (stdio too) a refused tool call is a tool error whose text ends in
``retry_after_seconds=N`` and whose structured content carries the same number; any other refused
request is a JSON-RPC error ``RATE_LIMITED`` with the same text and ``data`` ``{"error":
"rate_limited", "retry_after_seconds": N}``. Over HTTP the per-IP limit is a 429 with
``Retry-After`` and ``RateLimit-*`` headers. Storage is ``memory://`` (one process) or
``redis://...`` (replicas share their windows). If the storage fails, calls are let through and the
failure is logged: an outage of Redis must not take the hub down with it.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from limits import RateLimitItem, WindowStats, parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError
from limits.storage import storage_from_string

from agentchat_mcp.errors import RateLimited

if TYPE_CHECKING:
    from mcp_types import CallToolResult

    from agentchat_mcp.settings import Settings
    from agentchat_mcp.telemetry import Telemetry

logger = logging.getLogger(__name__)
T = TypeVar("T")

REGISTRATION_TOOLS = frozenset({"register_agent", "register_user"})
# Requests no principal window counts: the connection's own bookkeeping, which client libraries send
# unasked (a listing to validate a tool's output, discovery per connection). The per-IP limit still
# counts them over HTTP.
UNCOUNTED = frozenset(
    {
        "initialize",
        "server/discover",
        "ping",
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
    }
)
RATE_LIMITED = -32010  # JSON-RPC code of a refused request other than tools/call (implementation-defined band)
LOCAL = "local"  # the client "address" of stdio and in-memory sessions

Scope = str  # "principal" | "ip" | "registration" | "tool:<name>"
ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Any]


def parse_limits(text: str, setting: str) -> list[RateLimitItem]:
    """'100/minute;2000/day' -> limit items; a clear error names the setting at fault."""
    try:
        items = parse_many(text)
    except (ValueError, ConfigurationError):
        items = []
    if not items:
        raise ValueError(f"{setting} = {text!r} is not a rate limit; write e.g. '100/minute' or '10/minute;200/day'.")
    return items


def async_storage_uri(uri: str) -> str:
    """`memory://` / `redis://host` as written in settings -> the async storage scheme of `limits`."""
    return uri if uri.startswith("async+") else f"async+{uri}"


@dataclass(frozen=True)
class Decision:
    """The outcome of one hit: allowed or not, and what the RateLimit headers report."""

    allowed: bool
    limit: int
    remaining: int
    reset_after_seconds: int
    window_seconds: int

    @property
    def retry_after_seconds(self) -> int:
        return max(1, self.reset_after_seconds)

    def headers(self) -> list[tuple[bytes, bytes]]:
        """RateLimit headers (draft-ietf-httpapi-ratelimit-headers), plus Retry-After on a refusal."""
        out = [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset_after_seconds).encode()),
            (b"ratelimit-policy", f"{self.limit};w={self.window_seconds}".encode()),
        ]
        if not self.allowed:
            out.append((b"retry-after", str(self.retry_after_seconds).encode()))
        return out


ALLOW_ALL = Decision(allowed=True, limit=0, remaining=0, reset_after_seconds=0, window_seconds=0)


class LocalMovingWindows:
    """Moving windows of one process (`memory://`), with the strategy API of `limits`.

    Why not `limits`' own memory storage: its asyncio variant hands an expiry scan to a worker
    thread on every hit, its threaded variant starts a timer thread every 10 ms under load; either
    cost more than the tool call it guards (~100 us against ~3 us here). The semantics are the
    same: at most `amount` hits in any `expiry`-second span, exactly, per key.
    """

    SWEEP_EVERY = 4096  # hits between sweeps that forget idle keys

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._hits: dict[tuple[str, ...], tuple[int, deque[float]]] = {}  # key -> (window seconds, hit times)
        self._until_sweep = self.SWEEP_EVERY

    def _window(self, item: RateLimitItem, identifiers: tuple[str, ...], now: float) -> deque[float]:
        key = (str(item), *identifiers)
        found = self._hits.get(key)
        if found is None:
            found = self._hits[key] = (item.get_expiry(), deque())
        expiry, window = found
        while window and window[0] < now - expiry:  # as limits: a hit exactly `expiry` ago still counts
            window.popleft()
        return window

    def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self._sweep()
        now = self._clock()
        window = self._window(item, identifiers, now)
        if len(window) >= item.amount:
            return False
        window.append(now)
        return True

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        now = self._clock()
        window = self._window(item, identifiers, now)
        start = window[0] if window else now
        return WindowStats(start + item.get_expiry(), item.amount - len(window))

    def reset(self) -> None:
        self._hits.clear()

    def _sweep(self) -> None:
        """Forget keys with no hit left in their window (idle principals and addresses)."""
        self._until_sweep = self.SWEEP_EVERY
        now = self._clock()
        for key in [k for k, (expiry, window) in self._hits.items() if not window or window[-1] < now - expiry]:
            del self._hits[key]


def _window_text(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return f"{item.amount} per {item.multiples} {unit}" if item.multiples != 1 else f"{item.amount} per {unit}"


class RateLimiter:
    """Moving-window limits over one storage; `hit` is exact (atomic per key) in memory and Redis."""

    def __init__(
        self,
        *,
        storage_uri: str = "memory://",
        principal: str = "100/minute",
        ip: str = "1000/minute",
        registration: str = "20/hour",
        per_tool: dict[str, str] | None = None,
        enabled: bool = True,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._strategy: MovingWindowRateLimiter | LocalMovingWindows
        self._storage: Any
        if storage_uri.rstrip("/") == "memory:":
            self._strategy = self._storage = LocalMovingWindows()
        else:
            try:
                self._storage = storage_from_string(async_storage_uri(storage_uri))
            except ConfigurationError as exc:
                raise ValueError(
                    f"rate_limit_storage = {storage_uri!r} is not usable ({exc}); use memory:// or redis://host:6379."
                ) from None
            self._strategy = MovingWindowRateLimiter(self._storage)
        self.enabled = enabled
        self.telemetry = telemetry
        self.principal = parse_limits(principal, "rate_limit_principal")
        self.ip = parse_limits(ip, "rate_limit_ip")
        self.registration = parse_limits(registration, "rate_limit_registration")
        self.per_tool = {name: parse_limits(text, f"rate limit of {name}") for name, text in (per_tool or {}).items()}

    @classmethod
    def from_settings(cls, settings: Settings, telemetry: Telemetry | None = None) -> RateLimiter:
        """The limits configured in Settings."""
        return cls(
            storage_uri=settings.rate_limit_storage,
            principal=settings.rate_limit_principal,
            ip=settings.rate_limit_ip,
            registration=settings.rate_limit_registration,
            per_tool={"request_peek": settings.rate_limit_request_peek, **settings.rate_limit_tools},
            enabled=settings.rate_limits_enabled,
            telemetry=telemetry,
        )

    async def hit(self, scope: Scope, items: list[RateLimitItem], key: str, *, report: bool = True) -> Decision:
        """Take one entry from every window of `items` for `key`; the first full window refuses.

        `report=False`: an admitted hit skips reading its window back (nothing shows RateLimit
        headers for it); a refusal is always reported in full, for its retry hint.
        """
        if not self.enabled or not items:
            return ALLOW_ALL
        tightest: Decision | None = None
        try:
            for item in items:
                allowed = await _settled(self._strategy.hit(item, scope, key))
                if allowed and not report:
                    continue
                stats = await _settled(self._strategy.get_window_stats(item, scope, key))
                decision = Decision(
                    allowed=allowed,
                    limit=item.amount,
                    remaining=max(0, stats.remaining),
                    reset_after_seconds=max(0, math.ceil(stats.reset_time - time.time())),
                    window_seconds=item.get_expiry(),
                )
                if not allowed:
                    self._count_refusal(scope)
                    return decision
                if tightest is None or decision.remaining < tightest.remaining:
                    tightest = decision
        except Exception:  # storage outage (e.g. Redis down): fail open, loudly
            logger.warning("rate limit storage failed; letting the call through", exc_info=True)
            return ALLOW_ALL
        return tightest or ALLOW_ALL

    def _count_refusal(self, scope: Scope) -> None:
        if self.telemetry is not None:
            self.telemetry.rate_limited.add(1, {"scope": scope.split(":", 1)[0]})

    async def check_request(self, *, principal_id: str | None, client: str) -> str:
        """Count one request (any method) against the principal's windows; raise RateLimited over them.
        `client`: IP address, or LOCAL. Returns the key counted (anonymous callers: by address)."""
        who = principal_id or f"anonymous@{client}"
        decision = await self.hit("principal", self.principal, who, report=False)
        if not decision.allowed:
            raise RateLimited(
                f"Too many requests: this account may make {self._describe(self.principal)} requests "
                "(tool calls, reads, subscriptions). Wait, then retry.",
                decision.retry_after_seconds,
            )
        return who

    async def check_tool_call(self, tool: str, *, principal_id: str | None, client: str) -> None:
        """Raise RateLimited if this call is over a limit. `client`: IP address, or LOCAL."""
        who = await self.check_request(principal_id=principal_id, client=client)
        if tool in REGISTRATION_TOOLS and client != LOCAL:
            decision = await self.hit("registration", self.registration, client, report=False)
            if not decision.allowed:
                raise RateLimited(
                    f"Too many registrations from your address ({self._describe(self.registration)}). "
                    "Wait, then retry, or reuse the API key you already have.",
                    decision.retry_after_seconds,
                )
        items = self.per_tool.get(tool)
        if items:
            decision = await self.hit(f"tool:{tool}", items, who, report=False)
            if not decision.allowed:
                raise RateLimited(
                    f"Too many {tool} calls: at most {self._describe(items)}. Wait, then retry.",
                    decision.retry_after_seconds,
                )

    @staticmethod
    def _describe(items: list[RateLimitItem]) -> str:
        return " and ".join(_window_text(i) for i in items)

    async def reset(self) -> None:
        """Forget every window (tests, or an operator clearing a mistaken lock-out)."""
        outcome = self._storage.reset()
        if inspect.isawaitable(outcome):
            await outcome


async def _settled(outcome: Awaitable[T] | T) -> T:
    """The value of a `limits` call: the memory strategy answers at once, the async ones later."""
    if inspect.isawaitable(outcome):
        return await outcome
    return outcome


# --- inside MCP: before each request ---------------------------------------------------------------


def client_address(request: Any) -> str:
    """The peer address of an HTTP request, or LOCAL for stdio / in-memory sessions."""
    client = getattr(request, "client", None)
    host = getattr(client, "host", None)
    return str(host) if host else LOCAL


def refusal_result(tool: str, exc: RateLimited) -> CallToolResult:
    """A tool error the model can act on: the text and the structured field both carry the wait."""
    from mcp_types import CallToolResult, TextContent  # here, not at the top: the CLI never loads mcp

    return CallToolResult(
        content=[TextContent(type="text", text=f"Error executing tool {tool}: {exc}")],
        structured_content={"error": "rate_limited", "retry_after_seconds": exc.retry_after_seconds},
        is_error=True,
    )


class RequestLimits:
    """Counts every request against the caller's windows (pipeline.py asks before each one)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def refusal(self, tool: str, principal_id: str | None, request: Any) -> CallToolResult | None:
        """For a tools/call: None if the call may go ahead, else the tool error to answer with.
        `principal_id`: None for an anonymous caller (or one whose key is bad), counted by its address."""
        if not self.limiter.enabled:
            return None
        try:
            await self.limiter.check_tool_call(tool, principal_id=principal_id, client=client_address(request))
        except RateLimited as exc:
            return refusal_result(tool, exc)
        return None

    def counts(self, method: str) -> bool:
        """Whether a request of `method` (not tools/call) counts: limits on, and not UNCOUNTED."""
        return self.limiter.enabled and method not in UNCOUNTED

    async def check(self, principal_id: str | None, request: Any) -> None:
        """For a request that `counts`: raise MCPError (RATE_LIMITED, the wait in its text and data)
        when it is over the principal's limit."""
        try:
            await self.limiter.check_request(principal_id=principal_id, client=client_address(request))
        except RateLimited as exc:
            from mcp.shared.exceptions import MCPError

            raise MCPError(
                code=RATE_LIMITED,
                message=str(exc),
                data={"error": "rate_limited", "retry_after_seconds": exc.retry_after_seconds},
            ) from None


# --- over HTTP: an ASGI middleware for the per-IP limit -----------------------------------------


class HttpRateLimit:
    """ASGI middleware: every HTTP request counts against its IP address; over the limit, a 429.

    Responses within the limit carry RateLimit-* headers too, so clients can pace themselves.
    `exempt` paths (health checks, metrics scrapes) are never counted.
    """

    def __init__(
        self, app: ASGIApp, *, limiter: RateLimiter, exempt: tuple[str, ...] = ("/healthz", "/metrics")
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.exempt = exempt

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http" or not self.limiter.enabled or scope.get("path", "") in self.exempt:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = str(client[0]) if client else LOCAL
        decision = await self.limiter.hit("ip", self.limiter.ip, address)
        if not decision.allowed:
            await _too_many_requests(send, decision)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *decision.headers()]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _too_many_requests(send: Callable[[Any], Awaitable[None]], decision: Decision) -> None:
    """A 429 whose body is a JSON-RPC error (RATE_LIMITED, the wait in its data): MCP clients surface a
    JSON-RPC error body at any status, so a model sees the wait instead of a bare "server error"."""
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": None,
            "error": {
                "code": RATE_LIMITED,
                "message": f"Too many requests from your address; retry after {decision.retry_after_seconds} seconds.",
                "data": {"error": "rate_limited", "retry_after_seconds": decision.retry_after_seconds},
            },
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 429, "headers": headers + decision.headers()})
    await send({"type": "http.response.body", "body": body})
