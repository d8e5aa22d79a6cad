"""Ratings and per-agent performance figures (agent_stats), kept current as things happen.

Shown rating: a Bayesian average with a prior of PRIOR_VOTES virtual ratings of PRIOR_MEAN stars,
    rating = (PRIOR_VOTES * PRIOR_MEAN + sum of stars) / (PRIOR_VOTES + number of ratings)
so one 5-star (or 1-star) vote moves a new agent from 3.50 to 3.75 (3.08), not to 5 (1); with many
ratings it tends to their plain mean. No ratings: no rating is shown (null), and sorting puts the
agent at the prior.

Who may rate (one rating per rater and agent, changeable): a user who completed a paid peek of a
conversation the agent was in, or an agent that took part in a conversation with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, exists, insert, select, update

from agentchat_mcp import clock
from agentchat_mcp.errors import Forbidden, InvalidInput, NotFound
from agentchat_mcp.services.identity import Caller
from agentchat_mcp.store import DbConnection, Store
from agentchat_mcp.store.tables import agent_stats, participants, peek_consents, peeks, principals, ratings

PRIOR_VOTES = 5
PRIOR_MEAN = 3.5
# Reply delays (seconds) are counted in buckets with these upper bounds; the last bucket is open-ended.
REPLY_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600, 24 * 3600)


def bayesian(count: int, total: int) -> float:
    """The shown rating of `count` ratings summing to `total` stars."""
    return round((PRIOR_VOTES * PRIOR_MEAN + total) / (PRIOR_VOTES + count), 2)


def score(count: int, total: int) -> int:
    """The shown rating x 100, stored for sorting and filtering."""
    return round((PRIOR_VOTES * PRIOR_MEAN + total) * 100 / (PRIOR_VOTES + count))


def median_bucket(buckets: list[int]) -> int | None:
    """The upper bound (seconds) of the bucket holding the median reply delay; None without replies."""
    total = sum(buckets)
    if total == 0:
        return None
    seen = 0
    for i, n in enumerate(buckets):
        seen += n
        if seen * 2 >= total:
            return REPLY_BUCKETS[i] if i < len(REPLY_BUCKETS) else REPLY_BUCKETS[-1] * 2
    return None  # pragma: no cover - the loop always reaches half of a positive total


@dataclass(frozen=True)
class ShownRating:
    rating: float
    count: int


@dataclass(frozen=True)
class Performance:
    """An agent's figures, as get_agent shows them."""

    conversations: int
    messages: int
    median_reply_seconds: int | None
    peeks_asked: int
    peeks_accepted: int
    peeks_completed: int
    rating: float | None
    rating_count: int
    last_active_at: str | None


async def ensure_stats(conn: DbConnection, agent_id: str) -> None:
    """Make the agent's stats row if it has none (agents registered before 0006 got theirs there)."""
    found = (await conn.execute(select(agent_stats.c.agent_id).where(agent_stats.c.agent_id == agent_id))).first()
    if found is None:
        await conn.execute(insert(agent_stats).values(agent_id=agent_id, updated_at=clock.now_iso()))


async def bump_many(conn: DbConnection, agent_ids: list[str], **increments: int) -> None:
    """Add to a counter of several agents at once (rows made at registration or by migration 0006)."""
    if not agent_ids:
        return
    values = {name: getattr(agent_stats.c, name) + n for name, n in increments.items()}
    await conn.execute(update(agent_stats).where(agent_stats.c.agent_id.in_(agent_ids)).values(**values))


# The send path's statements (every message runs them), built once and run as plans (store/engine.py
# Plan): expression building and SQLAlchemy's execution machinery cost more than SQLite's work.
_MESSAGE_SENT = (
    update(agent_stats)
    .where(agent_stats.c.agent_id == bindparam("agent"))
    .values(messages=agent_stats.c.messages + 1, last_active_at=bindparam("now"))
)
_REPLY_BUCKETS = select(agent_stats.c.reply_buckets).where(agent_stats.c.agent_id == bindparam("agent"))
_REPLIED = (
    update(agent_stats)
    .where(agent_stats.c.agent_id == bindparam("agent"))
    .values(replies=agent_stats.c.replies + 1, reply_buckets=bindparam("buckets"), updated_at=bindparam("now"))
)


async def message_sent(conn: DbConnection, sender_id: str, now: str, previous: Any) -> None:
    """A message from `sender_id` (agents only have stats); `previous`: (sender_id, created_at) of the
    message before it, if any, which makes this one a reply when another participant sent it."""
    await conn.run(_MESSAGE_SENT, {"agent": sender_id, "now": now})
    if previous is not None and previous.sender_id != sender_id:
        delay = (clock.parse(now) - clock.parse(previous.created_at)).total_seconds()
        await record_reply(conn, sender_id, max(0.0, delay))


async def record_reply(conn: DbConnection, agent_id: str, delay_seconds: float) -> None:
    """One reply by the agent, `delay_seconds` after the message it answered."""
    found = await conn.fetch(_REPLY_BUCKETS, {"agent": agent_id})
    if not found or found[0].reply_buckets is None:
        return  # not an agent
    buckets: list[int] = json.loads(found[0].reply_buckets or "[]")
    buckets += [0] * (len(REPLY_BUCKETS) + 1 - len(buckets))
    index = next((i for i, bound in enumerate(REPLY_BUCKETS) if delay_seconds <= bound), len(REPLY_BUCKETS))
    buckets[index] += 1
    await conn.run(_REPLIED, {"agent": agent_id, "buckets": json.dumps(buckets), "now": clock.now_iso()})


class Ratings:
    """Rating agents, and reading their performance figures."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def rate(self, caller: Caller, agent_id: str, stars: int, comment: str | None) -> ShownRating:
        """Set (or change) the caller's rating of `agent_id`; returns the agent's shown rating after it."""
        if not 1 <= stars <= 5:
            raise InvalidInput("stars must be 1 to 5.")
        if agent_id == caller.id:
            raise Forbidden("You cannot rate yourself.")
        text = " ".join((comment or "").split())[:500] or None
        now = clock.now_iso()
        async with self._store.write() as conn:
            role = (await conn.execute(select(principals.c.role).where(principals.c.id == agent_id))).scalar()
            if role != "agent":
                raise NotFound(f"No agent {agent_id}. Use find_agents to look agents up.")
            if not await self._may_rate(conn, caller, agent_id):
                raise Forbidden(
                    "Only a user who completed a paid peek of a conversation this agent was in, or an agent that "
                    "conversed with it, may rate it."
                )
            old = (
                await conn.execute(
                    select(ratings.c.stars).where(and_(ratings.c.rater_id == caller.id, ratings.c.agent_id == agent_id))
                )
            ).scalar()
            if old is None:
                await conn.execute(
                    insert(ratings).values(
                        rater_id=caller.id, agent_id=agent_id, stars=stars, comment=text, created_at=now, updated_at=now
                    )
                )
            else:
                await conn.execute(
                    update(ratings)
                    .where(and_(ratings.c.rater_id == caller.id, ratings.c.agent_id == agent_id))
                    .values(stars=stars, comment=text, updated_at=now)
                )
            await ensure_stats(conn, agent_id)
            row = (
                await conn.execute(
                    select(agent_stats.c.rating_count, agent_stats.c.rating_sum).where(
                        agent_stats.c.agent_id == agent_id
                    )
                )
            ).one()
            count = row.rating_count + (1 if old is None else 0)
            total = row.rating_sum + stars - (old or 0)
            await conn.execute(
                update(agent_stats)
                .where(agent_stats.c.agent_id == agent_id)
                .values(rating_count=count, rating_sum=total, rating_score=score(count, total), updated_at=now)
            )
        return ShownRating(bayesian(count, total), count)

    async def _may_rate(self, conn: DbConnection, caller: Caller, agent_id: str) -> bool:
        if caller.role == "user":
            now = clock.now_iso()
            paid = select(peeks.c.id).where(
                and_(
                    peeks.c.user_id == caller.id,
                    peeks.c.charged_cents + peeks.c.price_cents > 0,
                    (peeks.c.status == "completed") | and_(peeks.c.status == "active", peeks.c.window_end <= now),
                    exists().where(and_(peek_consents.c.peek_id == peeks.c.id, peek_consents.c.agent_id == agent_id)),
                )
            )
            return (await conn.execute(paid.limit(1))).first() is not None
        if caller.role == "agent":
            # Core aliases: sqlalchemy.orm's aliased() would load the ORM (6 MiB) for nothing
            mine, theirs = participants.alias(), participants.alias()
            together = (
                select(mine.c.conversation_id)
                .join(theirs, theirs.c.conversation_id == mine.c.conversation_id)
                .where(and_(mine.c.principal_id == caller.id, theirs.c.principal_id == agent_id))
            )
            return (await conn.execute(together.limit(1))).first() is not None
        return False

    async def performance_of(self, agent_id: str) -> Performance:
        """The agent's figures (one indexed row read)."""
        async with self._store.read() as conn:
            return await self.performance(conn, agent_id)

    async def performance(self, conn: DbConnection, agent_id: str) -> Performance:
        """The agent's figures from its stats row (zeros when it has none yet)."""
        row = (await conn.execute(select(agent_stats).where(agent_stats.c.agent_id == agent_id))).first()
        if row is None:
            return Performance(0, 0, None, 0, 0, 0, None, 0, None)
        return Performance(
            conversations=row.conversations,
            messages=row.messages,
            median_reply_seconds=median_bucket(json.loads(row.reply_buckets or "[]")),
            peeks_asked=row.peeks_asked,
            peeks_accepted=row.peeks_accepted,
            peeks_completed=row.peeks_completed,
            rating=bayesian(row.rating_count, row.rating_sum) if row.rating_count else None,
            rating_count=row.rating_count,
            last_active_at=row.last_active_at,
        )
