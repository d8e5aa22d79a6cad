"""Hub mode: one Starlette app serving MCP over Streamable HTTP (`/mcp`) and SSE (`/sse`).

Routes: `/mcp` (both protocol eras: 2025-11-25 handshake sessions and 2026-07-28 per-request),
`/sse` + `/messages/` (legacy clients), `/healthz`, `/metrics`, `/dashboard` (web/dashboard.py), and whatever `ROUTE_PROVIDERS` or
`build_app(extra_routes=...)` add (`/webhooks/stripe`); those reach the services as
`request.app.state.agentchat` (the AppContext).

One store and one AppContext per process, opened in the outer lifespan and shared by every
transport and session (the SDK would run its lifespan once per SSE connection). Cross-session
wake-ups go through `AppContext.feed` (in-process; the seam for a Redis feed across replicas).

In this order: the client address (X-Forwarded-For only from `trusted_proxies`; uvicorn's own proxy
headers are off), security headers, the per-IP rate limit and a body cap (every request); then, on
the MCP endpoints, Host/Origin checks (DNS rebinding), bearer auth (no token = anonymous, bad
token = 401, token in the URL = 400), and the SDK transport, which also ties a session to the
principal that opened it. `/metrics` gets the same Host/Origin checks, then its own optional token.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from types import FrameType
from typing import Any
from uuid import UUID

import anyio
import uvicorn
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.lowlevel.server import Server as LowLevelServer
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import (
    RequestBodyLimitMiddleware,
    TransportSecurityMiddleware,
    TransportSecuritySettings,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentchat_mcp import __version__, startup
from agentchat_mcp.app import AppContext, close_caller_memo, remember_caller
from agentchat_mcp.auth import ApiKeyVerifier, AuthRefusal, CallerUser, authenticate_request
from agentchat_mcp.errors import OperatorError, RateLimited
from agentchat_mcp.payments import PaymentProvider
from agentchat_mcp.proxies import ClientAddress
from agentchat_mcp.ratelimit import RATE_LIMITED, HttpRateLimit, RateLimiter
from agentchat_mcp.server import build_server, running_app_context, settle_startup_heap
from agentchat_mcp.settings import ConfigurationError, Settings
from agentchat_mcp.store import migrations
from agentchat_mcp.telemetry import Telemetry, metrics_endpoint
from agentchat_mcp.versioning import API_VERSION
from agentchat_mcp.web import dashboard

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"
SSE_PATH = "/sse"
SSE_MESSAGE_PATH = "/messages/"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # a 16 000-character message is < 100 KB of JSON
SESSION_HEADER = "mcp-session-id"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})  # noqa: S104  # we refuse them without allow-lists
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
    "cache-control": "no-store",  # responses may carry a freshly issued API key
}
HSTS = "max-age=63072000; includeSubDomains"

# HTML pages (e.g. the payment return page) may style themselves inline, never run scripts.
HTML_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'"

# Extra routes for the hub, as "package.module:function" with function() -> list of routes; a
# feature appends its entry here. Handlers find the services in `request.app.state.agentchat`.
ROUTE_PROVIDERS: list[str] = [
    "agentchat_mcp.payments.webhook:routes",  # /webhooks/stripe, /payments/return
]

ServerFactory = Callable[[AppContext], MCPServer[Any]]


class UnsafeBinding(OperatorError, ValueError):
    """The listen address would expose the hub without Host/Origin allow-lists."""


@dataclass(frozen=True)
class HttpOptions:
    """How the hub listens and what it accepts; built from the `serve` flags."""

    host: str = "127.0.0.1"
    port: int = 8765
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    behind_tls: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    stateless: bool = False
    shutdown_grace_seconds: float = 10.0
    transport: str = "http"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> HttpOptions:
        return cls(
            host=args.host,
            port=args.port,
            allowed_hosts=tuple(getattr(args, "allowed_host", None) or ()),
            allowed_origins=tuple(getattr(args, "allowed_origin", None) or ()),
            behind_tls=bool(getattr(args, "behind_tls", False)),
            max_body_bytes=getattr(args, "max_body_bytes", None) or DEFAULT_MAX_BODY_BYTES,
            stateless=bool(getattr(args, "stateless", False)),
            shutdown_grace_seconds=getattr(args, "shutdown_grace", None) or 10.0,
            transport=getattr(args, "transport", "http"),
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_header(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def transport_security(options: HttpOptions) -> TransportSecuritySettings:
    """Host/Origin allow-lists: derived from --host, plus --allowed-host/--allowed-origin.

    Binding a wildcard address without --allowed-host is refused: the SDK would silently turn the
    DNS-rebinding check off there.
    """
    hosts: list[str] = []
    if options.host in WILDCARD_HOSTS:
        if not options.allowed_hosts:
            raise UnsafeBinding(
                f"Refusing to listen on {options.host or 'all interfaces'} without --allowed-host: every Host "
                "header would be accepted, which lets a web page reach the hub by DNS rebinding. Pass the public "
                "name clients use, e.g. --allowed-host chat.example.com (and --allowed-origin "
                "https://chat.example.com for browser clients), or bind --host 127.0.0.1."
            )
        names: Sequence[str] = LOOPBACK_NAMES
    elif _is_loopback(options.host):
        names = LOOPBACK_NAMES
    else:
        names = (_host_header(options.host),)
    port = "*" if options.port == 0 else str(options.port)
    for name in names:
        hosts += [f"{name}:{port}", name]
    hosts += options.allowed_hosts
    origins = [f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")]
    origins += options.allowed_origins
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(dict.fromkeys(hosts)),
        allowed_origins=list(dict.fromkeys(origins)),
    )


# --- ASGI building blocks ------------------------------------------------------------------------


class SecurityHeaders:
    """Adds the security headers to every HTTP response (HSTS only behind TLS)."""

    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        self.app = app
        self.headers = {**SECURITY_HEADERS, **({"strict-transport-security": HSTS} if hsts else {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("content-security-policy", HTML_CSP)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HostCheck:
    """The Host/Origin allow-lists of the MCP endpoints (DNS rebinding) in front of another endpoint."""

    def __init__(self, security: TransportSecuritySettings, app: ASGIApp) -> None:
        self.checks = TransportSecurityMiddleware(security)
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = await self.checks.validate_request(Request(scope), is_post=False)
            if refused is not None:  # before the endpoint's own auth, as on /mcp: no token probing
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


@dataclass
class Runtime:
    """What the lifespan opens: the shared services, the MCP server and its transports."""

    app_ctx: AppContext | None = None
    verifier: ApiKeyVerifier | None = None
    server: MCPServer[Any] | None = None
    manager: StreamableHTTPSessionManager | None = None
    sse: SseServerTransport | None = None
    stateless: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # Graceful shutdown (serve): requests being handled now, and whether SIGTERM/SIGINT arrived.
    in_flight: int = 0
    stopping: bool = False
    drain_streams_on_stop: bool = False

    async def count_in_flight(self, ctx: Any, call_next: Any) -> Any:
        """Server middleware: track MCP requests in progress, whatever the transport."""
        if ctx.request_id is None:  # a notification
            return await call_next(ctx)
        self.in_flight += 1
        try:
            return await call_next(ctx)
        finally:
            self.in_flight -= 1

    async def forget_ended_sessions(self, every_seconds: float = 60.0) -> None:
        """Drop identities bound to sessions that ended without a DELETE (idle timeout, SSE closed)."""
        while True:
            await anyio.sleep(every_seconds)
            self.prune_session_keys()

    def prune_session_keys(self) -> None:
        if self.app_ctx is None:
            return
        # The transports' session tables are private; without them, keep everything (safe, bounded
        # by the registration rate limit).
        http_live = getattr(self.manager, "_server_instances", None)
        sse_live = getattr(self.sse, "_read_stream_writers", None)
        for slot in self.app_ctx.session_slots():
            if not slot.startswith("http:"):
                continue
            session = slot.removeprefix("http:")
            if session.startswith("sse-"):
                alive = sse_live is None or _uuid_or_none(session.removeprefix("sse-")) in sse_live
            else:
                alive = http_live is None or session in http_live
            if not alive:
                self.app_ctx.forget_session(slot)

    async def close_streams_when_idle(self) -> None:
        """Once stopping and no call is in progress, end the long-lived SSE streams.

        Streams (standalone GET streams, legacy /sse connections, and the response streams of
        handshake-era calls) are sse-starlette responses; left alone they would close on the signal
        itself and cut calls in flight, or hold the shutdown until the grace period ends.
        """
        # polled: `stopping` is set in a signal handler, where waking an event loop primitive is unsafe
        while not (self.stopping and self.in_flight == 0):  # noqa: ASYNC110
            await anyio.sleep(0.05)
        AppStatus.should_exit = True

    @property
    def lowlevel(self) -> LowLevelServer[Any]:
        assert self.server is not None
        return self.server._lowlevel_server


class BodyLimit:
    """The request body cap (413), except on paths whose SDK transport applies the same cap itself.

    Why not on those: each cap buffers the body and hands a replaying `receive` down, and the SDK
    keeps the last Request of every open session, so a second cap was two more buffers and closures
    per open session (bench/memory.py, --trace). There, the transport's own check answers the 413.
    """

    def __init__(self, app: ASGIApp, *, max_body_size: int, own_limit: Sequence[str]) -> None:
        self.app = app
        self.capped = RequestBodyLimitMiddleware(app, max_body_size=max_body_size)
        self.own_limit = frozenset(own_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") in self.own_limit:
            await self.app(scope, receive, send)
        else:
            await self.capped(scope, receive, send)


def _uuid_or_none(text: str) -> UUID | None:
    try:
        return UUID(hex=text)
    except ValueError:
        return None


def _refusal_response(refusal: AuthRefusal) -> Response:
    return JSONResponse(
        {"error": refusal.error, "error_description": refusal.description},
        status_code=refusal.status,
        headers={"www-authenticate": refusal.www_authenticate()},
    )


def _without_session_header(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k.lower() != SESSION_HEADER.encode()]


class McpGuard:
    """Host/Origin check, bearer auth and session-header hygiene in front of one MCP endpoint.

    `kind`: "mcp" (Streamable HTTP), "sse" (the GET stream) or "sse-post" (its message endpoint).
    The `mcp-session-id` header names the session an anonymous client registered in (see
    AppContext.bind_session), so it is only passed on where the SDK has vouched for it: on
    handshake-era Streamable HTTP (the session exists and belongs to this principal). Elsewhere a
    client-sent value is dropped; an SSE message gets its SSE session id instead.
    """

    def __init__(self, runtime: Runtime, kind: str, security: TransportSecuritySettings, app: ASGIApp) -> None:
        self.runtime = runtime
        self.kind = kind
        self.checks = TransportSecurityMiddleware(security)
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refused = await self.checks.validate_request(request, is_post=False)  # before auth: no key probing
        if refused is not None:
            await refused(scope, receive, send)
            return
        if self.runtime.verifier is None or self.runtime.app_ctx is None:
            await JSONResponse({"error": "starting"}, status_code=503)(scope, receive, send)
            return
        try:
            auth = await authenticate_request(
                request.headers.getlist("authorization"), request.query_params.multi_items(), self.runtime.verifier
            )
        except RateLimited as exc:  # Busy: no database connection free for a long while (a spike)
            await _busy_response(exc)(scope, receive, send)
            return
        if isinstance(auth, AuthRefusal):
            await _refusal_response(auth)(scope, receive, send)
            return
        # In place, not a copy: the SDK keeps each session's last Request (and so its scope) for as long
        # as the session lives, and a copy per request would be one more dict per open session.
        scope["headers"] = self._sanitized_headers(scope, request)
        scope.pop("user", None)
        scope.pop("auth", None)
        remembered = None
        if isinstance(auth, CallerUser):
            scope["user"] = auth
            scope["auth"] = AuthCredentials(auth.scopes)
            remembered = remember_caller(auth.access_token.token, auth.caller)
        reset = auth_context_var.set(auth)  # get_access_token() in tools; None when anonymous
        try:
            if self.kind == "mcp" and request.method == "DELETE":
                await self._delete(scope, receive, send, request.headers.get(SESSION_HEADER))
            else:
                await self.app(scope, receive, send)
        finally:
            auth_context_var.reset(reset)
            close_caller_memo(remembered)

    def _sanitized_headers(self, scope: Scope, request: Request) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if self.kind == "mcp":
            version = request.headers.get("mcp-protocol-version")
            modern = version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS
            if modern or self.runtime.stateless:
                headers = _without_session_header(headers)
        elif self.kind == "sse-post":
            headers = _without_session_header(headers)
            sse_session = request.query_params.get("session_id")
            if sse_session:
                headers.append((SESSION_HEADER.encode(), f"sse-{sse_session}".encode("latin-1")))
        else:
            headers = _without_session_header(headers)
        return headers

    async def _delete(self, scope: Scope, receive: Receive, send: Send, session_id: str | None) -> None:
        """A client ends its session: forget the identity it registered in it, if any."""
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        app_ctx = self.runtime.app_ctx
        if session_id and status < 400 and app_ctx is not None:
            slot = app_ctx.session_slot({SESSION_HEADER: session_id})
            if slot is not None:
                app_ctx.forget_session(slot)


# --- endpoints ---------------------------------------------------------------------------------


def _mcp_endpoint(runtime: Runtime) -> ASGIApp:
    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        assert runtime.manager is not None
        await runtime.manager.handle_request(scope, receive, send)

    return endpoint


def _sse_stream(runtime: Runtime) -> ASGIApp:
    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        assert runtime.sse is not None
        if scope["method"] != "GET":
            await Response(status_code=405, headers={"allow": "GET"})(scope, receive, send)
            return
        try:
            async with runtime.sse.connect_sse(scope, receive, send) as (read_stream, write_stream):
                lowlevel = runtime.lowlevel
                await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
        except ValueError:  # refused by the transport's own checks; it has answered already
            return

    return endpoint


def _sse_post(runtime: Runtime) -> ASGIApp:
    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        assert runtime.sse is not None
        await runtime.sse.handle_post_message(scope, receive, send)

    return endpoint


async def healthz(request: Request) -> JSONResponse:
    """Liveness and readiness: the database answers and its schema is the one this code expects."""
    app_ctx: AppContext | None = getattr(request.app.state, "agentchat", None)
    if app_ctx is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    head = migrations.head_revision()
    try:
        revision = await migrations.current_revision(app_ctx.store)
    except Exception:
        logger.exception("health check: database unreachable")
        return JSONResponse(
            {"status": "error", "db": "unreachable", "version": __version__, "api_version": API_VERSION},
            status_code=503,
        )
    ok = revision == head
    body = {
        "status": "ok" if ok else "error",
        "db": "ok",
        "schema_revision": revision,
        "schema_head": head,
        "version": __version__,
        "api_version": API_VERSION,
    }
    return JSONResponse(body, status_code=200 if ok else 503)


def provided_routes() -> list[BaseRoute]:
    """Routes from ROUTE_PROVIDERS ("module:function", function() -> routes)."""
    routes: list[BaseRoute] = []
    for spec in ROUTE_PROVIDERS:
        module_name, _, function = spec.partition(":")
        routes += getattr(importlib.import_module(module_name), function)()
    return routes


def build_app(
    settings: Settings,
    options: HttpOptions | None = None,
    *,
    telemetry: Telemetry | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    server_factory: ServerFactory | None = None,
    payments: PaymentProvider | None = None,
) -> Starlette:
    """The hub's Starlette app. Raises UnsafeBinding for a wildcard address without allow-lists.

    `server_factory(app_ctx)` builds the MCP server over the shared services (default: the
    agentchat server; the benchmark serves a bare echo server through the same stack).
    `payments`: a payment provider owned by the caller (tests), instead of the one the settings choose.
    """
    options = options or HttpOptions()
    security = transport_security(options)
    telemetry = telemetry or Telemetry()
    runtime = Runtime(stateless=options.stateless)

    def default_factory(app_ctx: AppContext) -> MCPServer[Any]:
        return build_server(settings, telemetry=telemetry, shared=app_ctx)

    make_server = server_factory or default_factory

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # One AppContext for the process: store, services, and their background tasks (the change
        # feed's poller for other processes' writes, the peek sweeper, subscription renewals).
        async with running_app_context(settings, telemetry, payments) as app_ctx:
            runtime.server = make_server(app_ctx)
            runtime.lowlevel.middleware.insert(0, runtime.count_in_flight)
            runtime.manager = StreamableHTTPSessionManager(
                app=runtime.lowlevel,
                stateless=options.stateless,
                security_settings=security,
                max_request_body_size=options.max_body_bytes,
            )
            runtime.sse = SseServerTransport(
                SSE_MESSAGE_PATH, security_settings=security, max_request_body_size=options.max_body_bytes
            )
            # mcp_sessions_active: the SDK's transports keep the live sessions in their own tables
            telemetry.add_session_probe(
                lambda: (
                    len(getattr(runtime.manager, "_server_instances", ()))
                    + len(getattr(runtime.sse, "_read_stream_writers", ()))
                )
            )
            runtime.verifier = ApiKeyVerifier(app_ctx.identity)
            runtime.app_ctx = app_ctx
            app.state.agentchat = app_ctx
            app.state.settings = settings
            try:
                async with runtime.manager.run(), anyio.create_task_group() as tasks:
                    tasks.start_soon(runtime.forget_ended_sessions)
                    if runtime.drain_streams_on_stop:
                        tasks.start_soon(runtime.close_streams_when_idle)
                    yield
                    tasks.cancel_scope.cancel()
            finally:
                runtime.app_ctx = runtime.verifier = None
                app.state.agentchat = None

    def guarded(kind: str, app: ASGIApp) -> McpGuard:
        return McpGuard(runtime, kind, security, app)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", HostCheck(security, request_response(metrics_endpoint)), methods=["GET"]),
        *dashboard.routes(partial(HostCheck, security), behind_tls=options.behind_tls),  # /dashboard
        *extra_routes,
        *provided_routes(),
        Route(MCP_PATH, guarded("mcp", _mcp_endpoint(runtime))),
        Route(SSE_PATH, guarded("sse", _sse_stream(runtime))),
        Mount(SSE_MESSAGE_PATH, app=guarded("sse-post", _sse_post(runtime))),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(ClientAddress, proxies=settings.trusted_proxies),  # before anything counts addresses
            Middleware(SecurityHeaders, hsts=options.behind_tls),
            Middleware(HttpRateLimit, limiter=RateLimiter.from_settings(settings, telemetry)),  # 429 per IP
            Middleware(BodyLimit, max_body_size=options.max_body_bytes, own_limit=(MCP_PATH,)),
        ],
        lifespan=lifespan,
    )
    app.state.agentchat = None
    app.state.runtime = runtime
    return app


def _busy_response(exc: RateLimited) -> JSONResponse:
    """503 with Retry-After, its body a JSON-RPC error carrying the wait (as the per-IP 429's)."""
    return JSONResponse(
        {
            "jsonrpc": "2.0",
            "id": None,
            "error": {
                "code": RATE_LIMITED,
                "message": str(exc),
                "data": {"error": "busy", "retry_after_seconds": exc.retry_after_seconds},
            },
        },
        status_code=503,
        headers={"retry-after": str(exc.retry_after_seconds)},
    )


def uvicorn_config(app: ASGIApp, *, host: str, port: int, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's Config for the hub app. uvicorn's proxy headers stay off: they would believe
    X-Forwarded-For from 127.0.0.1 (or FORWARDED_ALLOW_IPS) before the app sees the request, which
    lets any local client pick its own rate-limit address. ClientAddress does it for `trusted_proxies`.

    The loop is asyncio's even where uvloop is installed (uvicorn's "auto" would take it): under uvloop a
    saturated hub left some calls waiting 20 s and more while the rest took 0.1 s (bench/load.py peak,
    measured: p99 25 s against 2.8 s on asyncio's loop, 0 errors either way)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="asyncio",
        http="httptools",  # a dependency: C parsing, measured 5-20% less CPU per call than h11
        proxy_headers=False,
        server_header=False,
        **kwargs,
    )


class _HubServer(uvicorn.Server):
    """uvicorn, telling the hub when a shutdown signal arrives, and saying where it listens once it does."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime, announce: Callable[[], None]) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:  # the lifespan ran and the socket accepts: now the URL is true
            self.announce()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.runtime.stopping = True
        super().handle_exit(sig, frame)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one), or one line saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host.strip("[]"), port), family=family, backlog=2048)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)  # its text repeats the address
        raise ConfigurationError(
            f"cannot listen on {_host_header(host)}:{port} ({reason}): stop whatever uses it, or choose another "
            "--port (or --host)"
        ) from None
    # Accepted connections inherit it. asyncio sets TCP_NODELAY only on sockets whose proto is TCP, and
    # create_server leaves it 0: with Nagle on, every response after a connection's first, written in
    # two parts, waited for the client's delayed ACK (measured: /healthz on keep-alive 44 ms -> 0.4 ms).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def serve(settings: Settings, args: argparse.Namespace) -> int:
    """`agentchat-mcp serve --transport http|sse`: run the hub until SIGINT/SIGTERM.

    Everything that can be checked is checked before the socket is bound (configuration, database,
    migrations), each failure one line (cli.main); the URL is printed once the hub accepts on it.
    """
    options = HttpOptions.from_args(args)
    registration = getattr(args, "registration", None)
    if registration:
        settings = settings.model_copy(update={"registration": registration})
    transport_security(options)  # UnsafeBinding before anything is created on disk
    startup.check_configuration(settings, stdio=False)
    app = build_app(settings, options)
    # Migrate before uvicorn starts: a failing migration then ends in one plain line (cli.main),
    # where from the hub's lifespan it would be a traceback in the log.
    anyio.run(partial(startup.check_database, settings, stdio=False))
    sock = listen(options.host, options.port)
    config = uvicorn_config(
        app,
        host=options.host,
        port=options.port,
        log_level="warning",
        log_config=None,  # uvicorn's records go to our JSON-lines handler on stderr (logs.configure)
        access_log=False,  # one line per tool call comes from agentchat_mcp.access instead
        timeout_graceful_shutdown=int(options.shutdown_grace_seconds),  # then open streams are cut
    )
    runtime: Runtime = app.state.runtime
    runtime.drain_streams_on_stop = True
    AppStatus.enable_automatic_graceful_drain = False  # we end the streams once calls in flight are done
    endpoint = SSE_PATH if options.transport == "sse" else MCP_PATH
    port, database = sock.getsockname()[1], settings.postgres or settings.sqlite_path.expanduser().resolve()

    def announce() -> None:
        print(
            f"agentchat hub on http://{_host_header(options.host)}:{port}{endpoint} "
            f"(also {MCP_PATH if endpoint == SSE_PATH else SSE_PATH}, /healthz); database {database}",
            file=sys.stderr,
            flush=True,
        )

    server = _HubServer(config, runtime, announce)
    settle_startup_heap()
    server.run(sockets=[sock])
    return 0 if server.started else 3
