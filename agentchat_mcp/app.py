"""AppContext: what every tool reaches through `ctx`, and who the caller is."""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token

from agentchat_mcp.errors import NotAuthenticated
from agentchat_mcp.services.analytics import Analytics
from agentchat_mcp.services.conversations import Conversations
from agentchat_mcp.services.earnings import EarningsService
from agentchat_mcp.services.feed import ChangeFeed
from agentchat_mcp.services.flags import FeatureFlags
from agentchat_mcp.services.identity import Caller, Identity
from agentchat_mcp.services.ledger import Ledger
from agentchat_mcp.services.payments import Payments
from agentchat_mcp.services.peeks import Peeks
from agentchat_mcp.services.pricing import Pricing
from agentchat_mcp.services.ratings import Ratings
from agentchat_mcp.services.referrals import Referrals
from agentchat_mcp.services.refunds import Refunds
from agentchat_mcp.settings import Settings
from agentchat_mcp.store import Store
from agentchat_mcp.telemetry import Telemetry

PROCESS_SESSION = "process"  # stdio and in-memory clients: one connection per lifespan


# Callers already authenticated in the request being served. The rate-limit and role checks, the
# telemetry and the tool itself all ask who is calling; each fresh answer costs a keyed hash and a
# database probe, so the first answer serves the rest of that request (and no other). Over HTTP the
# first answer is the bearer check in front of /mcp (http.py), which seeds the memo.
_request_callers: ContextVar[dict[str, Caller] | None] = ContextVar("request_callers", default=None)


def remember_caller(api_key: str, caller: Caller) -> Token[dict[str, Caller] | None]:
    """For the HTTP request being served: `caller` is who `api_key` is (just verified)."""
    return _request_callers.set({api_key: caller})


def open_caller_memo() -> Token[dict[str, Caller] | None] | None:
    """For one inbound MCP message: a fresh memo, unless the HTTP request carrying it opened one."""
    if _request_callers.get() is not None:
        return None
    return _request_callers.set({})


def close_caller_memo(token: Token[dict[str, Caller] | None] | None) -> None:
    if token is not None:
        _request_callers.reset(token)


@dataclass
class AppContext:
    """The services of one running server, shared by every request."""

    settings: Settings
    store: Store
    identity: Identity
    conversations: Conversations
    feed: ChangeFeed
    telemetry: Telemetry
    ledger: Ledger
    pricing: Pricing
    peeks: Peeks
    earnings: EarningsService
    analytics: Analytics
    flags: FeatureFlags
    # API keys of identities chosen inside a session (stdio env, or registered in-session), by slot.
    session_keys: dict[str, str] = field(default_factory=dict)
    # A registration changes the session's tools/list. A client that registers before it ever listed tools
    # lists them right after, to check the registration's result against the tool's entry, and must find
    # the tool it called: that one listing still shows it (relisted). By slot, like session_keys.
    listed_anonymously: set[str] = field(default_factory=set)  # served a tools/list before any identity
    relist_once: dict[str, str] = field(default_factory=dict)  # the registration tool its next listing shows
    # Purchases, subscriptions, Stripe webhooks and payouts (services/payments.py); set by build_app_context.
    payments: Payments | None = None
    # Admin refunds of peeks (services/refunds.py); set by build_app_context.
    refunds: Refunds | None = None
    # Referral codes, attribution and rewards (services/referrals.py); set by build_app_context.
    referrals: Referrals | None = None
    ratings: Ratings = field(init=False)

    def __post_init__(self) -> None:
        self.ratings = Ratings(self.store)

    def session_slot(self, headers: Any) -> str | None:
        """Where a session-bound identity lives: the HTTP session id, or the process on stdio."""
        if headers is None:
            return PROCESS_SESSION
        session_id = headers.get("mcp-session-id")
        return f"http:{session_id}" if session_id else None

    def api_key_for(self, headers: Any) -> str | None:
        """The bearer token verified by the HTTP layer, else the session's own identity."""
        token = get_access_token()
        if token is not None:
            return token.token
        slot = self.session_slot(headers)
        return self.session_keys.get(slot) if slot else None

    def bind_session(self, headers: Any, api_key: str, registered_with: str) -> bool:
        """After registration (by tool `registered_with`): act as the new principal for the rest of this
        session, if it has one; True if the session's identity (and so its tools/list) changed."""
        slot = self.session_slot(headers)
        if slot is None or get_access_token() is not None:
            return False
        self.session_keys[slot] = api_key
        if slot not in self.listed_anonymously:
            self.relist_once[slot] = registered_with
        self.listed_anonymously.discard(slot)
        return True

    def listing(self, headers: Any, *, anonymous: bool) -> str | None:
        """A tools/list is being served to this session: the tool it must show once more (see relist_once)."""
        slot = self.session_slot(headers)
        if slot is None:
            return None
        if anonymous:
            self.listed_anonymously.add(slot)
            return None
        return self.relist_once.pop(slot, None)

    def session_slots(self) -> set[str]:
        """Every slot something is kept for."""
        return set(self.session_keys) | self.listed_anonymously | set(self.relist_once)

    def forget_session(self, slot: str) -> None:
        """The session ended: drop what was kept for it."""
        self.session_keys.pop(slot, None)
        self.listed_anonymously.discard(slot)
        self.relist_once.pop(slot, None)

    async def maybe_caller(self, headers: Any) -> Caller | None:
        """The authenticated caller, or None for an anonymous session (once per request, see above)."""
        api_key = self.api_key_for(headers)
        if api_key is None:
            return None
        known = _request_callers.get()
        if known is not None and api_key in known:
            return known[api_key]
        found = await self.identity.authenticate(api_key)
        if known is not None:
            known[api_key] = found
        return found

    async def caller(self, headers: Any) -> Caller:
        """The authenticated caller; anonymous sessions are told how to get an identity."""
        found = await self.maybe_caller(headers)
        if found is None:
            raise NotAuthenticated(
                "No identity in this session. Call register_agent or register_user first, or start the server "
                "with AGENTCHAT_API_KEY (stdio) / send 'Authorization: Bearer <api key>' (HTTP)."
            )
        # A participant's request is when peek keys can be released (only it can unwrap them).
        await self.peeks.on_request(found)
        return found
