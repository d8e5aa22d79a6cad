"""/dashboard on the hub: the analytics charts in a browser, for an agent (its own) or an admin (the platform).

Sign-in: the page posts the API key once, as JSON, to /dashboard/session; the hub checks it and answers
with a random session id in a cookie (HttpOnly, SameSite=Strict, Path=/dashboard, Secure behind TLS or
on https). The key itself is kept nowhere (the session holds the principal id and the key's hash, so a
rotated key ends its sessions), never put in a URL and never logged. Sessions live in this process's
memory for 12 hours: a restart signs everyone out, and replicas do not share them.

CSRF: the cookie is SameSite=Strict (another site's requests carry none); the requests that change
state (sign in and out) must be JSON, which a cross-site form cannot send without a CORS preflight this
hub never grants; and the hub's Host/Origin allow-lists (the ones of /mcp) guard every dashboard route.
CSP: scripts, styles and connections from this hub only, no inline script, no frames.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, request_response
from starlette.types import ASGIApp

from agentchat_mcp.errors import AgentChatError
from agentchat_mcp.store.tables import principals

if TYPE_CHECKING:
    from agentchat_mcp.app import AppContext

COOKIE = "agentchat_dashboard"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000
MAX_SIGN_IN_BYTES = 4096
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# name in the URL -> (file under assets/, content type)
ASSETS = {
    "dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "charts.js": ("charts.js", "text/javascript; charset=utf-8"),
    "charts.css": ("charts.css", "text/css; charset=utf-8"),
    "uPlot.iife.min.js": ("vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "uPlot.min.css": ("vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
}


@dataclass(frozen=True)
class DashboardSession:
    principal_id: str
    role: str
    name: str
    key_hash: str
    expires: float


class Sessions:
    """Signed-in browsers of this process: session id -> who, until when."""

    def __init__(self) -> None:
        self._by_id: dict[str, DashboardSession] = {}

    def create(self, principal_id: str, role: str, name: str, key_hash: str) -> str:
        now = time.monotonic()
        if len(self._by_id) >= MAX_SESSIONS:
            self._by_id = {k: s for k, s in self._by_id.items() if s.expires > now}
            while len(self._by_id) >= MAX_SESSIONS:  # still full: the oldest goes
                self._by_id.pop(next(iter(self._by_id)))
        session_id = secrets.token_urlsafe(32)
        self._by_id[session_id] = DashboardSession(principal_id, role, name, key_hash, now + SESSION_SECONDS)
        return session_id

    def get(self, session_id: str | None) -> DashboardSession | None:
        found = self._by_id.get(session_id or "")
        if found is None or found.expires <= time.monotonic():
            return None
        return found

    def drop(self, session_id: str | None) -> None:
        self._by_id.pop(session_id or "", None)


def _asset_bytes(path: str) -> bytes:
    return resources.files("agentchat_mcp.web").joinpath("assets", *path.split("/")).read_bytes()


def _error(status: int, text: str) -> JSONResponse:
    return JSONResponse({"error": text}, status_code=status)


def _secure(request: Request, behind_tls: bool) -> bool:
    return behind_tls or request.url.scheme == "https"


def _app(request: Request) -> AppContext | None:
    return getattr(request.app.state, "agentchat", None)


def routes(guard: Callable[[ASGIApp], ASGIApp], *, behind_tls: bool = False) -> list[BaseRoute]:
    """The dashboard's routes, each behind `guard` (the hub's Host/Origin checks)."""
    sessions = Sessions()

    async def page(request: Request) -> Response:
        return Response(
            _asset_bytes("dashboard.html"),
            media_type="text/html; charset=utf-8",
            headers={"content-security-policy": CSP},
        )

    async def asset(request: Request) -> Response:
        found = ASSETS.get(request.path_params["name"])
        if found is None:
            return _error(404, "not found")
        return Response(_asset_bytes(found[0]), media_type=found[1], headers={"cache-control": "no-cache"})

    async def session(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error(415, "send JSON")  # a cross-site form cannot; this is the CSRF guard with SameSite
        if request.headers.get("sec-fetch-site") == "cross-site":
            return _error(403, "cross-site request refused")
        if request.method == "DELETE":
            sessions.drop(request.cookies.get(COOKIE))
            response = JSONResponse({"signed_in": False})
            response.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="strict")
            return response
        return await _sign_in(request)

    async def _sign_in(request: Request) -> Response:
        app = _app(request)
        if app is None:
            return _error(503, "the hub is starting or stopping")
        body = await request.body()
        if len(body) > MAX_SIGN_IN_BYTES:
            return _error(413, "too large")
        try:
            payload: Any = json.loads(body)
            api_key = payload["api_key"] if isinstance(payload, dict) else None
        except ValueError:
            api_key = None
        if not isinstance(api_key, str) or not api_key:
            return _error(400, 'send {"api_key": "acp_..."}')
        try:
            caller = await app.identity.authenticate(api_key)
        except AgentChatError:
            return _error(401, "This API key is not valid.")
        if caller.role not in ("agent", "admin"):
            return _error(403, "The dashboard is for agent and admin keys.")
        session_id = sessions.create(caller.id, caller.role, caller.name, caller.key_hash)
        response = JSONResponse({"signed_in": True, "role": caller.role})
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=SESSION_SECONDS,
            path="/dashboard",
            httponly=True,
            samesite="strict",
            secure=_secure(request, behind_tls),
        )
        return response

    async def data(request: Request) -> Response:
        app = _app(request)
        if app is None:
            return _error(503, "the hub is starting or stopping")
        session_id = request.cookies.get(COOKIE)
        who = sessions.get(session_id)
        if who is None or not await _key_current(app, who):
            sessions.drop(session_id)
            return _error(401, "Sign in with an API key.")
        period = request.query_params.get("period", "month")
        granularity = request.query_params.get("granularity", "day")
        try:
            if who.role == "admin":
                found: Any = await app.analytics.platform(period, granularity)  # type: ignore[arg-type]
            else:
                found = await app.analytics.agent(who.principal_id, period, granularity)  # type: ignore[arg-type]
        except AgentChatError as exc:
            return _error(400, str(exc))
        return JSONResponse({"role": who.role, "name": who.name, "data": dataclasses.asdict(found)})

    return [
        Route("/dashboard", guard(request_response(page)), methods=["GET"]),
        Route("/dashboard/assets/{name}", guard(request_response(asset)), methods=["GET"]),
        Route("/dashboard/session", guard(request_response(session)), methods=["POST", "DELETE"]),
        Route("/dashboard/data", guard(request_response(data)), methods=["GET"]),
    ]


async def _key_current(app: AppContext, who: DashboardSession) -> bool:
    """The key that opened the session is still the principal's (a rotation ends its sessions)."""
    async with app.store.read() as conn:
        found = await conn.execute(
            select(principals.c.id).where(
                and_(principals.c.id == who.principal_id, principals.c.api_key_hash == who.key_hash)
            )
        )
        return found.first() is not None
