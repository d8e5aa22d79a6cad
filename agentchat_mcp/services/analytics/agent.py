"""An agent's figures that are read from base tables (indexed, bounded by the period): peeks, conversations,
top peekers."""

from __future__ import annotations

from sqlalchemy import and_, func, select

from agentchat_mcp.services.analytics.common import median_of, seconds_between
from agentchat_mcp.services.analytics.figures import ConversationStats, PeekStats, Span, TopPeeker
from agentchat_mcp.store import DbConnection
from agentchat_mcp.store.tables import (
    ledger_entries,
    ledger_lines,
    messages,
    participants,
    peek_consents,
    peeks,
    principals,
)

CAPTURED = ("active", "completed", "refunded")  # peeks whose payment was captured


async def peek_figures(conn: DbConnection, agent_id: str, span: Span) -> tuple[PeekStats, dict[str, int]]:
    """Peeks of the agent's conversations requested in the span, from the agent's side (its consent)."""
    rows = (
        await conn.execute(
            select(
                peeks.c.status,
                peeks.c.requested_at,
                peeks.c.keys_released_at,
                peek_consents.c.decision,
                peek_consents.c.decided_at,
            )
            .join(peek_consents, peek_consents.c.peek_id == peeks.c.id)
            .where(
                and_(
                    peek_consents.c.agent_id == agent_id,
                    peeks.c.requested_at >= span.since,
                    peeks.c.requested_at < span.until,
                )
            )
        )
    ).all()
    accepted = sum(r.decision in ("accepted", "standing") for r in rows)
    refused = sum(r.decision == "refused" for r in rows)
    waits = [seconds_between(r.decided_at, r.requested_at) for r in rows if r.decision == "accepted" and r.decided_at]
    stats = PeekStats(
        requested=len(rows),
        accepted=accepted,
        refused=refused,
        expired=sum(r.status == "expired" for r in rows),
        cancelled=sum(r.status == "cancelled" for r in rows),
        completed=sum(r.status == "completed" for r in rows),
        acceptance_rate=round(accepted / (accepted + refused), 4) if accepted + refused else None,
        median_consent_seconds=median_of(waits),
    )
    funnel = {
        "requested": len(rows),
        "consented": accepted,
        "captured": sum(r.status in CAPTURED for r in rows),
        "read": sum(r.keys_released_at is not None for r in rows),
    }
    return stats, funnel


async def conversation_figures(
    conn: DbConnection, agent_id: str, span: Span, counts: list[tuple[str, str, str, int]]
) -> ConversationStats:
    member = and_(participants.c.principal_id == agent_id, participants.c.joined_at < span.until)
    conversations = (await conn.execute(select(func.count()).select_from(participants).where(member))).scalar_one()
    recent = (
        select(messages.c.id)
        .where(
            and_(
                messages.c.conversation_id == participants.c.conversation_id,
                messages.c.created_at >= span.since,
                messages.c.created_at < span.until,
            )
        )
        .exists()
    )
    active = (
        await conn.execute(select(func.count()).select_from(participants).where(and_(member, recent)))
    ).scalar_one()
    prev = messages.alias("prev")
    replies = (
        await conn.execute(
            select(messages.c.created_at, prev.c.created_at.label("asked_at"))
            .join(prev, and_(prev.c.conversation_id == messages.c.conversation_id, prev.c.seq == messages.c.seq - 1))
            .where(
                and_(
                    messages.c.sender_id == agent_id,
                    messages.c.created_at >= span.since,
                    messages.c.created_at < span.until,
                    prev.c.sender_id != agent_id,
                )
            )
        )
    ).all()
    return ConversationStats(
        conversations=int(conversations),
        active_conversations=int(active),
        messages_sent=sum(r[3] for r in counts if r[0] == "sent"),
        messages_received=sum(r[3] for r in counts if r[0] == "received"),
        median_reply_seconds=median_of([seconds_between(r.created_at, r.asked_at) for r in replies]),
    )


async def top_peekers_of(conn: DbConnection, agent_id: str, span: Span, top: int) -> tuple[TopPeeker, ...]:
    """Users by what their peeks earned the agent in the span (net of refunds); public names only."""
    accounts = [f"agent:{agent_id}:pending", f"agent:{agent_id}:available"]
    rows = (
        await conn.execute(
            select(
                peeks.c.user_id,
                principals.c.name,
                func.count(func.distinct(peeks.c.id)).label("n"),
                func.sum(ledger_lines.c.amount_cents).label("cents"),
            )
            .select_from(ledger_lines)
            .join(ledger_entries, ledger_entries.c.id == ledger_lines.c.entry_id)
            .join(peeks, peeks.c.id == ledger_entries.c.ref)
            .join(principals, principals.c.id == peeks.c.user_id)
            .where(
                and_(
                    ledger_lines.c.account.in_(accounts),
                    ledger_entries.c.kind.in_(("peek_capture", "peek_refund")),
                    ledger_entries.c.created_at >= span.since,
                    ledger_entries.c.created_at < span.until,
                )
            )
            .group_by(peeks.c.user_id, principals.c.name)
        )
    ).all()
    ranked = sorted((r for r in rows if r.cents > 0), key=lambda r: (-r.cents, r.user_id))[:top]
    return tuple(TopPeeker(user_id=r.user_id, name=r.name, peeks=int(r.n), cents=int(r.cents)) for r in ranked)
