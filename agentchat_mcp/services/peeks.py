"""Peeks: a user pays to read a conversation for a time window, once every agent in it consents.

Lifecycle (architecture.md section 6), as stored in `peeks.status`:

    request (hold credit) -> awaiting_consent
    awaiting_consent --all agents consent (can_refuse=false is standing consent)--> active (captured)
    awaiting_consent --an agent refuses | consent deadline passes | user cancels--> refused | expired |
        cancelled (hold released)
    active --window ends--> completed (earnings move from pending to available)
    active | completed --refund (admin, dispute)--> refunded (every movement of the peek reversed)

Shown to callers, an `active` peek reads `scheduled` before its window starts and `completed` after it
ends, even before a sweep has written that down. Time-driven transitions happen lazily on access
and in a periodic sweep.

Money: one ledger entry per movement, keyed `peek:{id}:{step}`, in the same transaction as the
status change it pays for.

Keys (architecture.md section 4, property 4): the server cannot unwrap an epoch key without a
participant's private key, so keys are wrapped to the peeker during some participant's own
authenticated request once the peek is captured and its window has begun: in `respond` for the
last agent to consent, else in `release_keys_for` (called on any participant's request). During
the window the peeker counts as a reader of new epochs; after it, the next message starts an
epoch the peeker never gets, and reads are refused at once.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import anyio
from sqlalchemy import and_, bindparam, exists, insert, or_, select, update

from agentchat_mcp import clock
from agentchat_mcp.crypto import new_id
from agentchat_mcp.errors import Conflict, Forbidden, InvalidInput, NotFound
from agentchat_mcp.money import fmt
from agentchat_mcp.services import ratings as performance
from agentchat_mcp.services.conversations import Conversations
from agentchat_mcp.services.feed import ChangeFeed
from agentchat_mcp.services.identity import Caller, require_role
from agentchat_mcp.services.ledger import (
    PLATFORM_CLAWBACK,
    PLATFORM_REVENUE,
    Ledger,
    Line,
    agent_available,
    agent_pending,
    user_credit,
    user_held,
)
from agentchat_mcp.services.pricing import Pricing, Quote
from agentchat_mcp.store import DbConnection, Store
from agentchat_mcp.store.tables import (
    conversations,
    participants,
    peek_consents,
    peeks,
    principals,
)
from agentchat_mcp.telemetry import Telemetry

logger = logging.getLogger(__name__)

CONSENT_TIMEOUT = timedelta(hours=24)
MAX_DURATION_MINUTES = 24 * 60
MAX_SCHEDULE_AHEAD = timedelta(days=30)
START_SKEW = timedelta(minutes=1)  # a start_at this far in the past still means "now"
SWEEP_SECONDS = 30.0
RECHECK_SECONDS = 5.0  # how stale "nothing to release" may be when nothing was written

Decision = Literal["accept", "refuse"]
FINAL = frozenset({"refused", "expired", "cancelled", "completed", "refunded"})


@dataclass(frozen=True)
class Consent:
    agent_id: str
    agent_name: str
    price_cents: int
    fee_cents: int
    paid_by: str
    decision: str  # pending | accepted | standing | refused
    decided_at: str | None
    reason: str | None

    @property
    def earns_cents(self) -> int:
        return self.price_cents - self.fee_cents


@dataclass(frozen=True)
class Peek:
    id: str
    conversation_id: str
    topic: str
    user_id: str
    user_name: str
    status: str  # awaiting_consent | scheduled | active | completed | refused | expired | cancelled | refunded
    price_cents: int
    fee_cents: int
    charged_cents: int
    max_price_cents: int
    duration_minutes: int
    start_at: str | None
    window_start: str | None
    window_end: str | None
    requested_at: str
    expires_at: str
    decided_at: str | None
    keys_released: bool
    reason: str | None
    consents: tuple[Consent, ...]
    replayed: bool = False


@dataclass(frozen=True)
class Refunded:
    """What a refund did: the peek now, whether it had been refunded before, the status it was
    refunded from (awaiting_consent: before capture; active; completed), and the reversal's lines."""

    peek: Peek
    replayed: bool
    was: str
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class PendingPeek:
    """A peek request waiting for this agent's decision (check_inbox)."""

    peek_id: str
    conversation_id: str
    topic: str
    user_id: str
    user_name: str
    price_cents: int
    earns_cents: int
    duration_minutes: int
    start_at: str | None
    requested_at: str
    expires_at: str


@dataclass(frozen=True)
class Peekable:
    """A conversation a user may ask to peek at (metadata only)."""

    conversation_id: str
    topic: str
    participants: tuple[tuple[str, str], ...]  # (agent id, name)
    price_cents: int
    last_message_at: str | None


def _display_status(status: str, window_start: str | None, window_end: str | None, expires_at: str, now: str) -> str:
    if status == "awaiting_consent" and expires_at <= now:
        return "expired"
    if status == "active" and window_start and window_end:
        if now < window_start:
            return "scheduled"
        if window_end <= now:
            return "completed"
    return status


def _request_hash(conversation_id: str, max_price: int, duration: int, start_at: str | None) -> str:
    body = f"{conversation_id}|{max_price}|{duration}|{start_at or ''}"
    return hashlib.sha256(body.encode()).hexdigest()


def _peek_not_found(peek_id: str, role: str | None = None) -> NotFound:
    where = " list_peek_requests shows yours." if role in ("agent", "user") else ""
    return NotFound(f"No peek {peek_id} that you can see.{where}")


def _outside_window(peek_id: str, conversation_id: str, shown: str, row: Any) -> str | None:
    """What a user whose newest peek on a conversation does not let it read now is told (None: nothing)."""
    yours = f"Your peek {peek_id} on {conversation_id}"
    if shown == "awaiting_consent":
        return (
            f"{yours} is waiting for the agents' consent (until {row.expires_at}); reading opens once they all "
            "accept. get_peek shows where it stands."
        )
    if shown == "scheduled":
        return f"{yours} opens at {row.window_start}; read_messages works from then until {row.window_end}."
    if shown == "completed":
        return (
            f"{yours} ended at {row.window_end}; messages after that stay sealed to you. request_peek asks for a "
            "new window."
        )
    if shown in ("refused", "expired", "cancelled", "refunded"):
        return f"{yours} was {shown}, so it lets you read nothing. request_peek asks again."
    return None


@dataclass(frozen=True)
class _ConsentRow:
    """What capture needs of one agent's consent."""

    agent_id: str
    price_cents: int
    fee_cents: int
    cover_ref: str | None
    decision: str


@dataclass
class _Counters:
    """What the last unit of work did, reported to telemetry after it commits."""

    initiated: int = 0
    refused: int = 0
    completed: int = 0
    earned_cents: int = 0
    notify: dict[str, int] = field(default_factory=dict)  # conversation -> its conversation_changes row


# Active paid windows of the caller's conversations whose keys are not released yet.
_KEYS_WAITING = (
    select(peeks.c.id)
    .join(participants, participants.c.conversation_id == peeks.c.conversation_id)
    .where(
        and_(
            peeks.c.status == "active",
            peeks.c.keys_released_at.is_(None),
            peeks.c.window_start <= bindparam("now"),
            peeks.c.window_end > bindparam("now"),
            participants.c.principal_id == bindparam("caller"),
            participants.c.left_at.is_(None),
        )
    )
)


class PeekMoneyHooks(Protocol):
    """What else moves money with a peek (referral commissions and rewards), in the same transaction."""

    async def on_capture(self, conn: DbConnection, peek: Any, consents: Any, now_dt: datetime) -> None: ...

    async def on_complete(self, conn: DbConnection, peek_id: str, user_id: str, now: str) -> None: ...

    async def on_peek_refunded(self, conn: DbConnection, peek_id: str, now: str) -> None: ...


# Statements of the read paths every peek tool takes, built once (a module-level statement keeps
# its cache key and compiled form; built per call, the join below cost ~1 ms of CPU, more than running it).
_PEEK_USER = principals.alias("peek_user")
_PEEK_AGENT = principals.alias("peek_agent")
_VIEW = (
    select(
        peeks,
        conversations.c.topic,
        _PEEK_USER.c.name.label("user_name"),
        peek_consents.c.agent_id,
        _PEEK_AGENT.c.name.label("agent_name"),
        peek_consents.c.price_cents.label("agent_price"),
        peek_consents.c.fee_cents.label("agent_fee"),
        peek_consents.c.paid_by,
        peek_consents.c.decision,
        peek_consents.c.decided_at.label("agent_decided_at"),
        peek_consents.c.reason.label("agent_reason"),
    )
    .join(conversations, conversations.c.id == peeks.c.conversation_id)
    .join(_PEEK_USER, _PEEK_USER.c.id == peeks.c.user_id)
    .join(peek_consents, peek_consents.c.peek_id == peeks.c.id)
    .join(_PEEK_AGENT, _PEEK_AGENT.c.id == peek_consents.c.agent_id)
    .where(peeks.c.id == bindparam("peek_id"))
    .order_by(peek_consents.c.agent_id)
)
_DUE_ALL = (
    select(peeks.c.id, peeks.c.status)
    .where(
        or_(
            and_(peeks.c.status == "awaiting_consent", peeks.c.expires_at <= bindparam("now")),
            and_(peeks.c.status == "active", peeks.c.window_end <= bindparam("now")),
        )
    )
    .limit(500)
)
_AGENT_ASKED = exists().where(
    and_(peek_consents.c.peek_id == peeks.c.id, peek_consents.c.agent_id == bindparam("agent_id"))
)
_DUE_FOR_USER = _DUE_ALL.where(peeks.c.user_id == bindparam("user_id"))
_DUE_FOR_AGENT = _DUE_ALL.where(_AGENT_ASKED)
_DUE_FOR_USER_AND_AGENT = _DUE_FOR_USER.where(_AGENT_ASKED)


class Peeks:
    """The peek service; registers itself with Conversations as an access check and reader source."""

    def __init__(
        self,
        store: Store,
        conversations_service: Conversations,
        ledger: Ledger,
        pricing: Pricing,
        feed: ChangeFeed,
        telemetry: Telemetry,
        *,
        consent_timeout: timedelta = CONSENT_TIMEOUT,
    ) -> None:
        self._store = store
        self._conversations = conversations_service
        self._ledger = ledger
        self._pricing = pricing
        self._feed = feed
        self._telemetry = telemetry
        self.consent_timeout = consent_timeout
        # agent id -> (data_version, time bucket) when it last had no keys to release
        self._checked: dict[str, tuple[int, int]] = {}
        # Referrals (services/referrals.py), called inside the money steps' transactions; None: none.
        self.referrals: PeekMoneyHooks | None = None
        conversations_service.access_checks.append(self._may_read)
        conversations_service.extra_readers.append(self._readers)
        conversations_service.denial_reasons.append(self._why_not_readable)

    # --- quoting and requesting -------------------------------------------------------------

    async def quote(self, caller: Caller, conversation_id: str) -> Quote:
        """The current price of a peek at this conversation for the caller."""
        require_role(caller, "user")
        async with self._store.read() as conn:
            return await self._pricing.quote(conn, caller.id, conversation_id)

    async def request(
        self,
        caller: Caller,
        conversation_id: str,
        *,
        max_price_cents: int,
        duration_minutes: int = 15,
        start_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Peek:
        """Hold the price from the caller's credit and ask the agents; with standing consent, grant now."""
        require_role(caller, "user")
        if not 1 <= duration_minutes <= MAX_DURATION_MINUTES:
            raise InvalidInput(f"duration_minutes must be 1 to {MAX_DURATION_MINUTES}.")
        if max_price_cents < 0:
            raise InvalidInput("max_price must not be negative.")
        now_dt = clock.now()
        start_iso = self._start_iso(start_at, now_dt)
        digest = _request_hash(conversation_id, max_price_cents, duration_minutes, start_iso)
        counters = _Counters()
        async with self._store.write() as conn:
            if idempotency_key:
                first = (
                    await conn.execute(
                        select(peeks.c.id, peeks.c.request_hash).where(
                            and_(peeks.c.user_id == caller.id, peeks.c.idempotency_key == idempotency_key)
                        )
                    )
                ).first()
                if first is not None:
                    if first.request_hash != digest:
                        raise Conflict(
                            "idempotency key reused with other parameters: this key already requested a different "
                            f"peek ({first.id}). Use a new key for a new request."
                        )
                    return replace(await self._view(conn, first.id), replayed=True)
            # Expired holds first, in this same transaction: they must not block or fund the new request.
            await self._settle_and_check_overlap(
                conn, caller.id, conversation_id, clock.iso(now_dt), start_iso, counters
            )
            peek_id = await self._create(
                conn,
                caller,
                conversation_id,
                max_price_cents,
                duration_minutes,
                start_iso,
                now_dt,
                counters,
                idempotency={"idempotency_key": idempotency_key, "request_hash": digest},
            )
            view = await self._view(conn, peek_id)
        await self._report(counters)
        return view

    def _start_iso(self, start_at: datetime | None, now: datetime) -> str | None:
        if start_at is None:
            return None
        if start_at.tzinfo is None:
            raise InvalidInput("start_at needs a timezone, e.g. '2026-01-31T18:00:00Z'.")
        if start_at < now - START_SKEW:
            raise InvalidInput("start_at is in the past; omit it to start as soon as the agents consent.")
        if start_at > now + MAX_SCHEDULE_AHEAD:
            raise InvalidInput("start_at may be at most 30 days ahead.")
        return clock.iso(start_at) if start_at > now else None

    async def _create(
        self,
        conn: DbConnection,
        caller: Caller,
        conversation_id: str,
        max_price: int,
        duration: int,
        start_iso: str | None,
        now_dt: datetime,
        counters: _Counters,
        idempotency: dict[str, str | None],
    ) -> str:
        now = clock.iso(now_dt)
        quote = await self._pricing.quote(conn, caller.id, conversation_id, with_balance=False)
        if quote.charged_cents > max_price:
            raise Conflict(
                f"This peek costs {fmt(quote.charged_cents)}, above your max_price {fmt(max_price)}. "
                "quote_peek shows the current price; ask again with a higher max_price if you accept it."
            )
        peek_id = new_id("pek")
        await conn.execute(
            insert(peeks).values(
                id=peek_id,
                conversation_id=conversation_id,
                user_id=caller.id,
                status="awaiting_consent",
                price_cents=quote.price_cents,
                fee_cents=quote.fee_cents,
                charged_cents=quote.charged_cents,
                max_price_cents=max_price,
                duration_minutes=duration,
                start_at=start_iso,
                requested_at=now,
                expires_at=clock.iso(now_dt + self.consent_timeout),
                updated_at=now,
                **idempotency,
            )
        )
        await conn.execute(
            insert(peek_consents),
            [
                {
                    "peek_id": peek_id,
                    "agent_id": line.agent_id,
                    "price_cents": line.price_cents,
                    "fee_cents": line.fee_cents,
                    "paid_by": line.paid_by,
                    "cover_ref": line.cover.ref if line.cover else None,
                    "decision": "pending" if line.can_refuse else "standing",
                    "decided_at": None if line.can_refuse else now,
                }
                for line in quote.lines
            ],
        )
        # acceptance rate: asked of every agent; accepted by standing consent now, or by answering accept
        await performance.bump_many(conn, [line.agent_id for line in quote.lines], peeks_asked=1)
        await performance.bump_many(
            conn, [line.agent_id for line in quote.lines if not line.can_refuse], peeks_accepted=1
        )
        hold = [Line(user_held(caller.id), quote.charged_cents), Line(user_credit(caller.id), -quote.charged_cents)]
        for line in quote.lines:
            if line.cover is None:
                continue
            await self._pricing.providers[line.cover.source].consume(conn, cover=line.cover, peek_id=peek_id)
            if line.cover.amount_cents:
                hold += [
                    Line(user_held(caller.id), line.cover.amount_cents),
                    Line(line.cover.account, -line.cover.amount_cents),
                ]
        if any(h.amount_cents for h in hold):
            await self._ledger.post(
                conn,
                idempotency_key=f"peek:{peek_id}:hold",
                kind="peek_hold",
                lines=hold,
                memo=f"hold for a peek at {conversation_id}",
                ref=peek_id,
            )
        counters.initiated += 1
        if quote.needs_consent:
            counters.notify[conversation_id] = await self._feed.record(conn, conversation_id, "peek_request", now)
        else:
            await self._capture(conn, peek_id, now_dt, counters)
        return peek_id

    async def _settle_and_check_overlap(
        self,
        conn: DbConnection,
        user_id: str,
        conversation_id: str,
        now: str,
        start_iso: str | None,
        counters: _Counters,
    ) -> None:
        """In one query: settle the user's due peeks (their holds must not block or fund this request),
        and refuse a second pending request, or an overlapping paid window, on the same conversation."""
        start = start_iso or now
        due = or_(
            and_(peeks.c.status == "awaiting_consent", peeks.c.expires_at <= now),
            and_(peeks.c.status == "active", peeks.c.window_end <= now),
        )
        live = and_(
            peeks.c.conversation_id == conversation_id,
            or_(
                and_(peeks.c.status == "awaiting_consent", peeks.c.expires_at > now),
                and_(peeks.c.status == "active", peeks.c.window_end > start, peeks.c.window_end > now),
            ),
        )
        rows = (
            await conn.execute(
                select(peeks.c.id, peeks.c.status, due.label("is_due"))
                .where(and_(peeks.c.user_id == user_id, or_(due, live)))
                .limit(500)
            )
        ).all()
        clash = next((r for r in rows if not r.is_due), None)
        if clash is not None:
            what = "waiting for consent" if clash.status == "awaiting_consent" else "granted for that time"
            raise Conflict(
                f"You already have peek {clash.id} on this conversation, {what}. get_peek shows it; cancel_peek "
                "cancels one still waiting for consent."
            )
        await self._settle_rows(conn, [(r.id, r.status, now) for r in rows], counters)

    # --- deciding -------------------------------------------------------------------------

    async def respond(self, caller: Caller, peek_id: str, decision: Decision, reason: str | None) -> Peek:
        """An agent accepts or refuses; the last acceptance captures the payment and releases the keys."""
        require_role(caller, "agent")
        counters = _Counters()
        now_dt = clock.now()
        now = clock.iso(now_dt)
        async with self._store.write() as conn:
            rows = (
                await conn.execute(
                    select(
                        peeks,
                        peek_consents.c.agent_id.label("c_agent_id"),
                        peek_consents.c.price_cents.label("c_price_cents"),
                        peek_consents.c.fee_cents.label("c_fee_cents"),
                        peek_consents.c.cover_ref.label("c_cover_ref"),
                        peek_consents.c.decision.label("c_decision"),
                    )
                    .join(peek_consents, peek_consents.c.peek_id == peeks.c.id)
                    .where(peeks.c.id == peek_id)
                )
            ).all()
            mine = [r for r in rows if r.c_agent_id == caller.id]
            if not mine:
                raise _peek_not_found(peek_id, caller.role)
            peek = mine[0]
            expired = peek.status == "awaiting_consent" and peek.expires_at <= now
            if expired:  # settle it (committed), then tell the agent
                await self._release(conn, peek_id, "expired", "No decision before the consent deadline.", now, counters)
            else:
                consents = [
                    _ConsentRow(r.c_agent_id, r.c_price_cents, r.c_fee_cents, r.c_cover_ref, r.c_decision) for r in rows
                ]
                view = await self._decide(conn, caller, peek, consents, decision, reason, now_dt, counters)
        await self._report(counters)
        if expired:
            raise Conflict(f"Peek {peek_id} expired before your answer; its hold was released.")
        return view

    async def _decide(
        self,
        conn: DbConnection,
        caller: Caller,
        peek: Any,
        consents: list[_ConsentRow],
        decision: Decision,
        reason: str | None,
        now_dt: datetime,
        counters: _Counters,
    ) -> Peek:
        peek_id = peek.id
        now = clock.iso(now_dt)
        wanted = "accepted" if decision == "accept" else "refused"
        current = next(c.decision for c in consents if c.agent_id == caller.id)
        if current != "pending" or peek.status != "awaiting_consent":
            already = "accepted" if current == "standing" else current
            if already == wanted:
                return await self._view(conn, peek_id)  # a repeated answer changes nothing
            shown = _display_status(peek.status, peek.window_start, peek.window_end, peek.expires_at, now)
            raise Conflict(f"Peek {peek_id} is {shown} and your answer was {already}; it cannot change now.")
        await conn.execute(
            update(peek_consents)
            .where(and_(peek_consents.c.peek_id == peek_id, peek_consents.c.agent_id == caller.id))
            .values(decision=wanted, decided_at=now, reason=reason)
        )
        if decision == "refuse":
            await self._release(conn, peek_id, "refused", reason or "An agent refused.", now, counters)
        else:
            await performance.bump_many(conn, [caller.id], peeks_accepted=1)
            consents = [replace(c, decision=wanted) if c.agent_id == caller.id else c for c in consents]
            if all(c.decision in ("accepted", "standing") for c in consents):
                await self._capture(conn, peek_id, now_dt, counters, peek=peek, consents=consents, releaser=caller)
        return await self._view(conn, peek_id)

    async def cancel(self, caller: Caller, peek_id: str) -> Peek:
        """The user withdraws a request still waiting for consent; the hold is released."""
        require_role(caller, "user")
        now = clock.now_iso()
        counters = _Counters()
        async with self._store.write() as conn:
            peek = (
                await conn.execute(select(peeks).where(and_(peeks.c.id == peek_id, peeks.c.user_id == caller.id)))
            ).first()
            if peek is None:
                raise _peek_not_found(peek_id, caller.role)
            if peek.status == "cancelled":
                return await self._view(conn, peek_id)
            if peek.status == "awaiting_consent" and peek.expires_at <= now:
                await self._release(conn, peek_id, "expired", "No decision before the consent deadline.", now, counters)
            elif peek.status == "awaiting_consent":
                await self._release(conn, peek_id, "cancelled", "Cancelled by the user.", now, counters)
            else:
                shown = _display_status(peek.status, peek.window_start, peek.window_end, peek.expires_at, now)
                raise Conflict(f"Peek {peek_id} is {shown}; only a request still waiting for consent can be cancelled.")
            view = await self._view(conn, peek_id)
        await self._report(counters)
        return view

    async def refund(self, peek_id: str, *, reason: str) -> Refunded:
        """Refund a peek in its own transaction (see `refund_in`)."""
        async with self._store.write() as conn:
            return await self.refund_in(conn, peek_id, reason=reason)

    async def refund_in(self, conn: DbConnection, peek_id: str, *, reason: str) -> Refunded:
        """Reverse every ledger line tied to a peek in one entry (admin, dispute), inside the caller's
        write transaction: the user gets back what was held or charged (credit to credit, prepaid units
        to their pack or subscription), and the agents, the platform and anyone else paid from the peek
        (referral commission) give back what they got. Lines tied to the peek are those of entries whose
        ref is the peek id or whose idempotency key starts with `peek:{id}:`, so commission posted in the
        capture's transaction is reversed too. An agent already paid out goes below zero (owed, taken
        from future earnings; payouts wait until it is settled). A user account gives back only what is
        still there; `platform:clawback` absorbs the rest. Works before capture (the hold comes back),
        after capture and after the window; a refunded peek is a replay. The peeker loses access at once."""
        peek = (await conn.execute(select(peeks).where(peeks.c.id == peek_id))).first()
        if peek is None:
            raise _peek_not_found(peek_id)
        key = f"peek:{peek_id}:refund"
        if peek.status == "refunded":
            first = await self._ledger.entry_lines(conn, key)
            return Refunded(await self._view(conn, peek_id), replayed=True, was="refunded", lines=first)
        if peek.status not in ("awaiting_consent", "active", "completed"):
            raise Conflict(
                f"Peek {peek_id} is {peek.status}: its hold was already given back in full, so there is nothing "
                "to refund. get_peek shows it."
            )
        lines = await self._reverse_all(
            conn, peek_id, kind="peek_refund", step="refund", memo=f"peek refunded: {reason}", user_id=peek.user_id
        )
        await self._restore_covers(conn, peek_id)
        now = clock.now_iso()
        if self.referrals is not None:  # its commissions were reversed above (tied to the peek); a reward it earned too
            await self.referrals.on_peek_refunded(conn, peek_id, now)
        await conn.execute(
            update(peeks)
            .where(peeks.c.id == peek_id)
            .values(status="refunded", reason=reason, decided_at=peek.decided_at or now, updated_at=now)
        )
        return Refunded(await self._view(conn, peek_id), replayed=False, was=peek.status, lines=tuple(lines))

    # --- money steps (inside the caller's transaction) -----------------------------------------

    async def _hold_lines(self, conn: DbConnection, peek_id: str, kind: str) -> list[Line]:
        lines: list[Line] = []
        for _, entry_kind, entry_lines in await self._ledger.entries_with_ref(conn, peek_id):
            if entry_kind == kind:
                lines.extend(entry_lines)
        return lines

    async def _capture(
        self,
        conn: DbConnection,
        peek_id: str,
        now_dt: datetime,
        counters: _Counters,
        *,
        peek: Any = None,
        consents: Any = None,
        releaser: Caller | None = None,
    ) -> None:
        """Held money -> each agent's pending earnings (price less fee) + the platform fee; window opens.

        `releaser`: the participant whose request this is; if the window opens now, it wraps the
        epoch keys to the peeker in this same transaction.
        """
        if peek is None:
            peek = (await conn.execute(select(peeks).where(peeks.c.id == peek_id))).one()
        if consents is None:
            consents = (await conn.execute(select(peek_consents).where(peek_consents.c.peek_id == peek_id))).all()
        held_account = user_held(peek.user_id)
        if any(c.cover_ref for c in consents):  # covers put their own amounts into the hold
            held = sum(
                x.amount_cents for x in await self._hold_lines(conn, peek_id, "peek_hold") if x.account == held_account
            )
        else:
            held = peek.charged_cents
        earnings = [Line(agent_pending(c.agent_id), c.price_cents - c.fee_cents) for c in consents]
        earned = sum(e.amount_cents for e in earnings)
        if earned > held:
            # Never pay a peek out of the platform's revenue (a request made before prepaid units held
            # their value, or a bug): it ends unpaid, and the user can ask again at today's price.
            logger.error("peek %s would pay %s cents of earnings from a %s cent hold; cancelled", peek_id, earned, held)
            reason = "Its price no longer matches what was paid for it; the hold went back and a new request pays the price now."
            await self._release(conn, peek_id, "cancelled", reason, clock.iso(now_dt), counters)
            return
        await self._ledger.post(
            conn,
            idempotency_key=f"peek:{peek_id}:capture",
            kind="peek_capture",
            lines=[Line(held_account, -held), *earnings, Line(PLATFORM_REVENUE, held - earned)],
            memo=f"peek at {peek.conversation_id}",
            ref=peek_id,
        )
        if self.referrals is not None:
            await self.referrals.on_capture(conn, peek, consents, now_dt)
        start = now_dt
        if peek.start_at and clock.parse(peek.start_at) > now_dt:
            start = clock.parse(peek.start_at)
        now = clock.iso(now_dt)
        released = None
        if (
            releaser is not None
            and start <= now_dt
            and await self._conversations.is_member(conn, releaser.id, peek.conversation_id)
        ):
            await self._conversations.grant_epochs(conn, releaser, peek.conversation_id, peek.user_id)
            released = now
        await conn.execute(
            update(peeks)
            .where(and_(peeks.c.id == peek_id, peeks.c.status == "awaiting_consent"))
            .values(
                status="active",
                window_start=clock.iso(start),
                window_end=clock.iso(start + timedelta(minutes=peek.duration_minutes)),
                decided_at=now,
                keys_released_at=released,
                updated_at=now,
            )
        )
        counters.earned_cents += earned

    async def _release(
        self, conn: DbConnection, peek_id: str, status: str, reason: str, now: str, counters: _Counters
    ) -> None:
        """Give the hold back exactly as it was taken, and the covers too; the request ends as `status`."""
        changed = await conn.execute(
            update(peeks)
            .where(and_(peeks.c.id == peek_id, peeks.c.status == "awaiting_consent"))
            .values(status=status, reason=reason, decided_at=now, updated_at=now)
        )
        if changed.rowcount != 1:
            return
        counters.refused += 1  # peek_refused_total counts refused, expired and cancelled requests
        hold = await self._hold_lines(conn, peek_id, "peek_hold")
        if hold:
            await self._ledger.post(
                conn,
                idempotency_key=f"peek:{peek_id}:release",
                kind="peek_release",
                lines=[Line(x.account, -x.amount_cents) for x in hold],
                memo=f"hold released: {status}",
                ref=peek_id,
            )
        await self._restore_covers(conn, peek_id)

    async def _restore_covers(self, conn: DbConnection, peek_id: str) -> None:
        covered = await conn.execute(
            select(peek_consents.c.paid_by, peek_consents.c.cover_ref).where(
                and_(peek_consents.c.peek_id == peek_id, peek_consents.c.cover_ref.is_not(None))
            )
        )
        for paid_by, ref in covered.all():
            provider = self._pricing.providers.get(paid_by)
            if provider is None:
                logger.error("no %s provider to restore cover %s of peek %s", paid_by, ref, peek_id)
                continue
            await provider.restore(conn, ref=ref, peek_id=peek_id)

    async def _reverse_all(
        self, conn: DbConnection, peek_id: str, *, kind: str, step: str, memo: str, user_id: str
    ) -> list[Line]:
        """One entry undoing the net effect of everything posted about this peek; returns its lines."""
        net: dict[str, int] = {}
        for _, _, lines in await self._ledger.entries_with_ref(conn, peek_id, key_prefix=f"peek:{peek_id}:"):
            for x in lines:
                net[x.account] = net.get(x.account, 0) + x.amount_cents
        reversal: list[Line] = []
        absorbed = 0
        for account, amount in net.items():
            back = -amount
            if back < 0 and account.startswith("user:"):
                # A user's money (e.g. a referral reward) already spent is not taken below zero.
                kept = max(0, min(-back, await self._ledger.balance(conn, account)))
                absorbed += -back - kept
                back = -kept
            if back:
                reversal.append(Line(account, back))
        if absorbed:
            reversal.append(Line(PLATFORM_CLAWBACK, -absorbed))
        if reversal:
            await self._ledger.post(
                conn,
                idempotency_key=f"peek:{peek_id}:{step}",
                kind=kind,
                lines=reversal,
                memo=memo,
                ref=peek_id,
                allow_negative=[x.account for x in reversal if x.account.startswith("agent:")],
            )
        return reversal

    async def _complete(self, conn: DbConnection, peek_id: str, now: str, counters: _Counters) -> None:
        """The window is over: the peek is completed and its earnings become available for payout."""
        changed = await conn.execute(
            update(peeks)
            .where(and_(peeks.c.id == peek_id, peeks.c.status == "active", peeks.c.window_end <= now))
            .values(status="completed", updated_at=now)
        )
        if changed.rowcount != 1:
            return
        consents = (await conn.execute(select(peek_consents).where(peek_consents.c.peek_id == peek_id))).all()
        await performance.bump_many(conn, [c.agent_id for c in consents], peeks_completed=1)
        lines: list[Line] = []
        for c in consents:
            earned = c.price_cents - c.fee_cents
            lines += [Line(agent_pending(c.agent_id), -earned), Line(agent_available(c.agent_id), earned)]
        if any(x.amount_cents for x in lines):
            await self._ledger.post(
                conn,
                idempotency_key=f"peek:{peek_id}:earnings",
                kind="earnings_available",
                lines=lines,
                memo="peek window ended",
                ref=peek_id,
            )
        if self.referrals is not None:
            user_id = (await conn.execute(select(peeks.c.user_id).where(peeks.c.id == peek_id))).scalar_one()
            await self.referrals.on_complete(conn, peek_id, user_id, now)
        counters.completed += 1

    # --- time: expiry and completion ------------------------------------------------------------

    async def settle_due(self, *, user_id: str | None = None, agent_id: str | None = None) -> int:
        """Expire requests past their deadline and complete peeks past their window; returns how many."""
        now = clock.now_iso()
        async with self._store.read() as conn:
            due = await self._due(conn, now, user_id=user_id, agent_id=agent_id)
        if not due:
            return 0
        counters = _Counters()
        async with self._store.write() as conn:
            await self._settle_rows(conn, due, counters)
        await self._report(counters)
        return len(due)

    async def _due(
        self, conn: DbConnection, now: str, *, user_id: str | None = None, agent_id: str | None = None
    ) -> list[tuple[str, str, str]]:
        """(id, status, now) of peeks whose time-driven transition is due."""
        stmt = _DUE_ALL
        if user_id is not None:
            stmt = _DUE_FOR_USER_AND_AGENT if agent_id is not None else _DUE_FOR_USER
        elif agent_id is not None:
            stmt = _DUE_FOR_AGENT
        params = {"now": now, "user_id": user_id, "agent_id": agent_id}
        return [(r.id, r.status, now) for r in (await conn.execute(stmt, params)).all()]

    async def _settle_rows(self, conn: DbConnection, due: list[tuple[str, str, str]], counters: _Counters) -> None:
        for peek_id, status, now in due:
            if status == "awaiting_consent":
                await self._release(conn, peek_id, "expired", "No decision before the consent deadline.", now, counters)
            else:
                await self._complete(conn, peek_id, now, counters)

    async def run_sweeper(self, every: float = SWEEP_SECONDS) -> None:
        """Settle due peeks periodically until cancelled (the server lifespan runs this)."""
        while True:
            try:
                await self.settle_due()
            except Exception:  # the sweep must outlive one bad pass; the next pass retries
                logger.exception("peek sweep failed")
            await anyio.sleep(every)

    # --- keys and access --------------------------------------------------------------------

    async def on_request(self, caller: Caller) -> None:
        """Hook run on every authenticated request: release keys when this agent can.

        Cheap when nothing changed: a participant already checked at this database version is
        skipped without a query. A failure here is logged and never fails the caller's own call.
        """
        if caller.role != "agent":
            return
        # Scheduled windows open with no write at all, hence the time bucket beside the version.
        version = (self._store.data_version(), int(time.monotonic() // RECHECK_SECONDS))
        if self._checked.get(caller.id) == version:
            return
        try:
            released = await self.release_keys_for(caller)
        except Exception:
            logger.exception("peek key release failed")
            return
        if not released:
            self._checked[caller.id] = version
            if len(self._checked) > 10_000:
                self._checked.clear()

    async def release_keys_for(self, caller: Caller) -> int:
        """On any participant's request: wrap epoch keys to peekers whose paid window has begun."""
        if caller.role != "agent":
            return 0
        now = clock.now_iso()
        # Runs on every agent request: an inline indexed probe first (microseconds), the read only
        # when some window waits for this agent's keys.
        if await self._store.quick_first(_KEYS_WAITING, {"now": now, "caller": caller.id}) is None:
            return 0
        async with self._store.read() as conn:
            ids = list((await conn.execute(_KEYS_WAITING, {"now": now, "caller": caller.id})).scalars())
        if not ids:
            return 0
        released = 0
        async with self._store.write() as conn:
            for peek_id in ids:
                released += await self._release_keys(conn, caller, peek_id, now)
        return released

    async def _release_keys(self, conn: DbConnection, caller: Caller, peek_id: str, now: str) -> int:
        peek = (await conn.execute(select(peeks).where(peeks.c.id == peek_id))).one()
        if not (
            peek.status == "active"
            and peek.keys_released_at is None
            and peek.window_start <= now < peek.window_end
            and await self._conversations.is_member(conn, caller.id, peek.conversation_id)
        ):
            return 0
        await self._conversations.grant_epochs(conn, caller, peek.conversation_id, peek.user_id)
        await conn.execute(update(peeks).where(peeks.c.id == peek_id).values(keys_released_at=now, updated_at=now))
        return 1

    async def _may_read(self, conn: DbConnection, caller: Caller, conversation_id: str) -> bool:
        """Conversations access check: a user inside a paid window."""
        if caller.role != "user":
            return False
        now = clock.now_iso()
        row = await conn.execute(
            select(peeks.c.id)
            .where(
                and_(
                    peeks.c.conversation_id == conversation_id,
                    peeks.c.user_id == caller.id,
                    peeks.c.status == "active",
                    peeks.c.window_start <= now,
                    peeks.c.window_end > now,
                )
            )
            .limit(1)
        )
        return row.first() is not None

    async def _why_not_readable(self, conn: DbConnection, caller: Caller, conversation_id: str) -> str | None:
        """Conversations denial reason: a user's own peek on it, outside its window (its newest one)."""
        if caller.role != "user":
            return None
        row = (
            await conn.execute(
                select(peeks.c.id, peeks.c.status, peeks.c.window_start, peeks.c.window_end, peeks.c.expires_at)
                .where(and_(peeks.c.conversation_id == conversation_id, peeks.c.user_id == caller.id))
                .order_by(peeks.c.requested_at.desc(), peeks.c.id.desc())
                .limit(1)
            )
        ).first()
        if row is None:
            return None
        shown = _display_status(row.status, row.window_start, row.window_end, row.expires_at, clock.now_iso())
        return _outside_window(row.id, conversation_id, shown, row)

    async def _readers(self, conn: DbConnection, conversation_id: str) -> set[str]:
        """Conversations extra readers: peekers whose window is open now."""
        now = clock.now_iso()
        rows = await conn.execute(
            select(peeks.c.user_id).where(
                and_(
                    peeks.c.conversation_id == conversation_id,
                    peeks.c.status == "active",
                    peeks.c.window_start <= now,
                    peeks.c.window_end > now,
                )
            )
        )
        return set(rows.scalars())

    # --- reading ----------------------------------------------------------------------------

    async def get(self, caller: Caller, peek_id: str) -> Peek:
        """A peek, for its user, its agents, or an admin."""
        await self._settle_for(caller)
        async with self._store.read() as conn:
            if not await self._visible(conn, caller, peek_id):
                raise _peek_not_found(peek_id, caller.role)
            return await self._view(conn, peek_id)

    async def list_for(
        self, caller: Caller, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Peek], str | None]:
        """Outgoing requests for a user, incoming for an agent (newest first)."""
        require_role(caller, "user", "agent")
        await self._settle_for(caller)
        stmt = select(peeks.c.id, peeks.c.requested_at).order_by(peeks.c.requested_at.desc(), peeks.c.id.desc())
        if caller.role == "user":
            stmt = stmt.where(peeks.c.user_id == caller.id)
        else:
            stmt = stmt.where(
                exists().where(and_(peek_consents.c.peek_id == peeks.c.id, peek_consents.c.agent_id == caller.id))
            )
        if status is not None:
            stmt = stmt.where(peeks.c.status == status)
        if cursor:
            at, _, last_id = cursor.partition("|")
            stmt = stmt.where(or_(peeks.c.requested_at < at, and_(peeks.c.requested_at == at, peeks.c.id < last_id)))
        async with self._store.read() as conn:
            rows = (await conn.execute(stmt.limit(limit + 1))).all()
            page = [await self._view(conn, r.id) for r in rows[:limit]]
        next_cursor = f"{rows[limit - 1].requested_at}|{rows[limit - 1].id}" if len(rows) > limit else None
        return page, next_cursor

    async def pending_for(self, caller: Caller) -> list[PendingPeek]:
        """Requests waiting for this agent's decision (shown in check_inbox)."""
        if caller.role != "agent":
            return []
        now = clock.now_iso()
        async with self._store.read() as conn:
            rows = (
                await conn.execute(
                    select(
                        peeks.c.id,
                        peeks.c.conversation_id,
                        conversations.c.topic,
                        peeks.c.user_id,
                        principals.c.name,
                        peek_consents.c.price_cents,
                        peek_consents.c.fee_cents,
                        peeks.c.duration_minutes,
                        peeks.c.start_at,
                        peeks.c.requested_at,
                        peeks.c.expires_at,
                    )
                    .join(peeks, peeks.c.id == peek_consents.c.peek_id)
                    .join(conversations, conversations.c.id == peeks.c.conversation_id)
                    .join(principals, principals.c.id == peeks.c.user_id)
                    .where(
                        and_(
                            peek_consents.c.agent_id == caller.id,
                            peek_consents.c.decision == "pending",
                            peeks.c.status == "awaiting_consent",
                            peeks.c.expires_at > now,
                        )
                    )
                    .order_by(peeks.c.requested_at)
                    .limit(100)
                )
            ).all()
        return [
            PendingPeek(
                peek_id=r.id,
                conversation_id=r.conversation_id,
                topic=r.topic,
                user_id=r.user_id,
                user_name=r.name,
                price_cents=r.price_cents,
                earns_cents=r.price_cents - r.fee_cents,
                duration_minutes=r.duration_minutes,
                start_at=r.start_at,
                requested_at=r.requested_at,
                expires_at=r.expires_at,
            )
            for r in rows
        ]

    async def peekable(self, agent_id: str, limit: int, cursor: str | None) -> tuple[list[Peekable], str | None]:
        """An agent's active conversations, with topic, participants and price only (for users to peek)."""
        stmt = (
            select(conversations.c.id, conversations.c.topic, conversations.c.last_message_at)
            .join(participants, participants.c.conversation_id == conversations.c.id)
            .where(and_(participants.c.principal_id == agent_id, participants.c.left_at.is_(None)))
            .order_by(conversations.c.id)
            .limit(limit + 1)
        )
        if cursor:
            stmt = stmt.where(conversations.c.id > cursor)
        async with self._store.read() as conn:
            role = (await conn.execute(select(principals.c.role).where(principals.c.id == agent_id))).scalar()
            if role != "agent":
                raise NotFound(f"No agent {agent_id}. Use find_agents to look agents up.")
            rows = (await conn.execute(stmt)).all()
            ids = [r.id for r in rows[:limit]]
            members = (
                await conn.execute(
                    select(
                        participants.c.conversation_id,
                        principals.c.id,
                        principals.c.name,
                        principals.c.peek_price_cents,
                    )
                    .join(principals, principals.c.id == participants.c.principal_id)
                    .where(and_(participants.c.conversation_id.in_(ids), participants.c.left_at.is_(None)))
                    .order_by(principals.c.id)
                )
            ).all()
        by_conv: dict[str, list[Any]] = {}
        for m in members:
            by_conv.setdefault(m.conversation_id, []).append(m)
        page = [
            Peekable(
                conversation_id=r.id,
                topic=r.topic,
                participants=tuple((m.id, m.name) for m in by_conv.get(r.id, [])),
                price_cents=sum(int(m.peek_price_cents or 0) for m in by_conv.get(r.id, [])),
                last_message_at=r.last_message_at,
            )
            for r in rows[:limit]
        ]
        return page, (page[-1].conversation_id if len(rows) > limit else None)

    async def _settle_for(self, caller: Caller) -> None:
        if caller.role == "user":
            await self.settle_due(user_id=caller.id)
        elif caller.role == "agent":
            await self.settle_due(agent_id=caller.id)
        else:
            await self.settle_due()

    async def _visible(self, conn: DbConnection, caller: Caller, peek_id: str) -> bool:
        if caller.role == "admin":
            return (await conn.execute(select(peeks.c.id).where(peeks.c.id == peek_id))).first() is not None
        if caller.role == "user":
            stmt = select(peeks.c.id).where(and_(peeks.c.id == peek_id, peeks.c.user_id == caller.id))
        elif caller.role == "agent":
            stmt = select(peek_consents.c.peek_id).where(
                and_(peek_consents.c.peek_id == peek_id, peek_consents.c.agent_id == caller.id)
            )
        else:
            raise Forbidden("Sign in to see peeks.")
        return (await conn.execute(stmt)).first() is not None

    async def _view(self, conn: DbConnection, peek_id: str) -> Peek:
        rows = (await conn.execute(_VIEW, {"peek_id": peek_id})).all()
        row = rows[0]
        consents = [
            Consent(
                agent_id=c.agent_id,
                agent_name=c.agent_name,
                price_cents=c.agent_price,
                fee_cents=c.agent_fee,
                paid_by=c.paid_by,
                decision=c.decision,
                decided_at=c.agent_decided_at,
                reason=c.agent_reason,
            )
            for c in rows
        ]
        now = clock.now_iso()
        return Peek(
            id=row.id,
            conversation_id=row.conversation_id,
            topic=row.topic,
            user_id=row.user_id,
            user_name=row.user_name,
            status=_display_status(row.status, row.window_start, row.window_end, row.expires_at, now),
            price_cents=row.price_cents,
            fee_cents=row.fee_cents,
            charged_cents=row.charged_cents,
            max_price_cents=row.max_price_cents,
            duration_minutes=row.duration_minutes,
            start_at=row.start_at,
            window_start=row.window_start,
            window_end=row.window_end,
            requested_at=row.requested_at,
            expires_at=row.expires_at,
            decided_at=row.decided_at,
            keys_released=row.keys_released_at is not None,
            reason=row.reason,
            consents=tuple(consents),
        )

    async def _report(self, counters: _Counters) -> None:
        """After commit: metrics, and wake the agents who have a new request to decide."""
        if counters.initiated:
            self._telemetry.peek_initiated.add(counters.initiated)
        if counters.refused:
            self._telemetry.peek_refused.add(counters.refused)
        if counters.completed:
            self._telemetry.peek_completed.add(counters.completed)
        if counters.earned_cents:
            self._telemetry.agent_earnings_usd.add(counters.earned_cents / 100)
        for conversation_id, change_id in counters.notify.items():
            await self._feed.touched(conversation_id, change_id)
