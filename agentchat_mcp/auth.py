"""Bearer API keys on HTTP: verify a key, and decide what a request without one may do.

The SDK's RequireAuthMiddleware answers 401 to a request without a token, but a hub must let an
anonymous client register and read the public directory. So the HTTP layer (http.py) runs
`authenticate_request` itself: no token gives an anonymous request, a bad or rotated one a 401.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

from agentchat_mcp.errors import NotAuthenticated
from agentchat_mcp.services.identity import Caller, Identity

SCOPE = "agentchat"
ISSUER = "agentchat"
# Query parameters that look like credentials: a URL ends up in proxy and access logs.
TOKEN_QUERY_NAMES = frozenset({"access_token", "token", "api_key", "apikey", "key", "auth", "authorization", "bearer"})


class CallerUser(AuthenticatedUser):
    """Starlette's `scope["user"]` for a verified key, carrying the principal it resolved to (so the
    MCP layers below need not resolve it again: app.remember_caller)."""

    def __init__(self, access: AccessToken, caller: Caller) -> None:
        super().__init__(access)
        self.caller = caller


class ApiKeyVerifier:
    """A `mcp.server.auth.provider.TokenVerifier`: an agentchat API key -> its principal.

    Identity.authenticate does the constant-time keyed-hash lookup and caches the result briefly;
    a rotated key is dropped from that cache at once in this process.
    """

    def __init__(self, identity: Identity) -> None:
        self._identity = identity

    async def verify_token(self, token: str) -> AccessToken | None:
        user = await self.verify(token)
        return None if user is None else user.access_token

    async def verify(self, token: str) -> CallerUser | None:
        try:
            caller = await self._identity.authenticate(token)
        except NotAuthenticated:
            return None
        # client_id and subject name the principal, not the key: a session survives a key rotation
        # (the new key still owns it) while another principal's key cannot use it.
        access = AccessToken(
            token=token,
            client_id=caller.id,
            subject=caller.id,
            scopes=[SCOPE],
            claims={"iss": ISSUER, "role": caller.role},
        )
        return CallerUser(access, caller)


@dataclass(frozen=True)
class AuthRefusal:
    """Why a request is refused before any MCP handling: the HTTP status and an RFC 6750 error."""

    status: int
    error: str
    description: str

    def www_authenticate(self) -> str:
        return f'Bearer realm="{ISSUER}", error="{self.error}", error_description="{self.description}"'


MISSING_SCHEME = AuthRefusal(
    401, "invalid_request", "Send the API key as 'Authorization: Bearer <api key>', or no Authorization header."
)
INVALID_KEY = AuthRefusal(
    401,
    "invalid_token",
    "This API key is not valid (unknown, or rotated). Use your current key, or connect without one to register.",
)
TOKEN_IN_URL = AuthRefusal(
    400,
    "invalid_request",
    "Never put an API key in the URL (URLs end up in logs); send it as 'Authorization: Bearer <api key>'.",
)
TWO_KEYS = AuthRefusal(400, "invalid_request", "Send exactly one Authorization header.")


def token_in_query(query: Mapping[str, str] | list[tuple[str, str]]) -> bool:
    """True if the query string seems to carry a credential (a known name, or an acp_ key anywhere)."""
    items = query.items() if isinstance(query, Mapping) else query
    return any(name.lower() in TOKEN_QUERY_NAMES or "acp_" in value for name, value in items)


async def authenticate_request(
    authorization: list[str], query: list[tuple[str, str]], verifier: ApiKeyVerifier
) -> CallerUser | AuthRefusal | None:
    """The request's principal, None for an anonymous request, or why it is refused."""
    if token_in_query(query):
        return TOKEN_IN_URL
    if not authorization:
        return None
    if len(authorization) > 1:
        return TWO_KEYS
    scheme, _, token = authorization[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return MISSING_SCHEME
    user = await verifier.verify(token)
    return INVALID_KEY if user is None else user
