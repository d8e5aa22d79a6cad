"""The double-entry ledger: every money movement is one journal entry whose lines sum to zero.

Sign convention: a line's `amount_cents` is what flows INTO its account (negative: out of it), so
an account's balance is the sum of its lines and the sum over all accounts is always 0. Money
from the outside world enters through `external:clearing`, which therefore goes negative by
exactly what the platform owes its users and agents.

Accounts (helpers below build the names):
  user:{id}:credit       spendable peek credit                       never below 0
  user:{id}:held         credit held for pending peeks               never below 0
  user:{id}:packs        value of unused pack peeks (prepaid units)  never below 0
  user:{id}:subscriptions  value of unused subscription peeks        never below 0
  agent:{id}:pending     earnings captured, peek window not over     never below 0 (unless allowed)
  agent:{id}:available   earnings that can be paid out               never below 0 (unless allowed)
  agent:{id}:payouts     paid out (accumulates)
  platform:revenue       platform fees
  platform:referrals     referral rewards paid by the platform
  platform:clawback      refunds the platform absorbed (or value kept beyond them)
  external:clearing      money in/out of the outside world (Stripe, admin grants)

`post` runs inside the caller's write transaction (store.write()), so a movement commits or rolls
back with the state change it pays for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, insert, or_, select

from agentchat_mcp import clock
from agentchat_mcp.errors import Conflict, InsufficientFunds
from agentchat_mcp.money import fmt
from agentchat_mcp.store import DbConnection, Store
from agentchat_mcp.store.tables import MAX_COLUMN_INT, ledger_entries, ledger_lines

PLATFORM_REVENUE = "platform:revenue"
PLATFORM_REFERRALS = "platform:referrals"
PLATFORM_CLAWBACK = "platform:clawback"
EXTERNAL_CLEARING = "external:clearing"
NON_NEGATIVE_PREFIXES = ("user:", "agent:")  # accounts that hold someone's money


def user_credit(user_id: str) -> str:
    return f"user:{user_id}:credit"


def user_held(user_id: str) -> str:
    return f"user:{user_id}:held"


def agent_pending(agent_id: str) -> str:
    return f"agent:{agent_id}:pending"


def agent_available(agent_id: str) -> str:
    return f"agent:{agent_id}:available"


def agent_payouts(agent_id: str) -> str:
    return f"agent:{agent_id}:payouts"


def _may_go_negative(account: str) -> bool:
    # agent:{id}:payouts only ever grows; it is listed here so a reversal may shrink it.
    return not account.startswith(NON_NEGATIVE_PREFIXES) or account.endswith(":payouts")


@dataclass(frozen=True)
class Line:
    """One side of an entry: `amount_cents` flows into `account` (negative: out of it)."""

    account: str
    amount_cents: int


@dataclass(frozen=True)
class PostResult:
    entry_id: int
    created_at: str
    replayed: bool  # True: the idempotency key was seen before; nothing new was written


@dataclass(frozen=True)
class Entry:
    """A journal entry as seen from some accounts: `amount_cents` is their net change."""

    id: int
    kind: str
    memo: str
    ref: str | None
    created_at: str
    amount_cents: int
    lines: tuple[Line, ...]


def _merge(lines: Iterable[Line]) -> list[Line]:
    """Sum lines per account and drop zeros; the canonical form that is hashed and stored."""
    totals: dict[str, int] = {}
    for line in lines:
        if not isinstance(line.amount_cents, int) or isinstance(line.amount_cents, bool):
            raise ValueError("ledger amounts are integer cents")
        totals[line.account] = totals.get(line.account, 0) + line.amount_cents
    return [Line(a, c) for a, c in sorted(totals.items()) if c != 0]


def _request_hash(kind: str, ref: str | None, lines: Sequence[Line]) -> str:
    body = json.dumps([kind, ref, [[line.account, line.amount_cents] for line in lines]], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


class Ledger:
    """Posting and reading journal entries. Holds no state beyond the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def post(
        self,
        conn: DbConnection,
        *,
        idempotency_key: str,
        kind: str,
        lines: Sequence[Line],
        memo: str = "",
        ref: str | None = None,
        allow_negative: Iterable[str] = (),
    ) -> PostResult:
        """Write one balanced entry in the caller's transaction.

        A replay (same key, same kind, ref and lines) returns the first entry; the same key with
        anything else is a Conflict. Taking a user or agent account below zero raises
        InsufficientFunds (agents may be allowed to, for clawbacks, via `allow_negative`).
        """
        merged = _merge(lines)
        if sum(line.amount_cents for line in merged) != 0:
            raise ValueError(f"ledger entry {kind!r} does not balance: {merged}")
        if not merged:
            raise ValueError(f"ledger entry {kind!r} moves nothing")
        if not idempotency_key:
            raise ValueError("an idempotency key is required")
        digest = _request_hash(kind, ref, merged)
        overdraft_ok = set(allow_negative)
        checked = [
            line
            for line in merged
            if line.amount_cents < 0 and not _may_go_negative(line.account) and line.account not in overdraft_ok
        ]
        # One statement: has this key been used, and what do the accounts being drawn on hold?
        by_key = ledger_entries.c.idempotency_key == idempotency_key
        row = (
            await conn.execute(
                select(
                    select(ledger_entries.c.id).where(by_key).scalar_subquery(),
                    select(ledger_entries.c.request_hash).where(by_key).scalar_subquery(),
                    select(ledger_entries.c.created_at).where(by_key).scalar_subquery(),
                    *[
                        select(func.coalesce(func.sum(ledger_lines.c.amount_cents), 0))
                        .where(ledger_lines.c.account == line.account)
                        .scalar_subquery()
                        for line in checked
                    ],
                )
            )
        ).one()
        first_id, first_hash, first_at, *balances = row
        if first_id is not None:
            if first_hash != digest:
                raise Conflict("idempotency key reused with other parameters")
            return PostResult(entry_id=int(first_id), created_at=first_at, replayed=True)
        for line, balance in zip(checked, balances, strict=True):
            if balance + line.amount_cents < 0:
                raise InsufficientFunds(
                    f"Not enough funds: {fmt(balance)} available, {fmt(-line.amount_cents)} needed."
                    + (
                        " Buy or ask for credits first (get_balance shows yours)."
                        if line.account.startswith("user:")
                        else ""
                    )
                )
        now = clock.now_iso()
        result = await conn.execute(
            insert(ledger_entries).values(
                idempotency_key=idempotency_key, request_hash=digest, kind=kind, memo=memo, ref=ref, created_at=now
            )
        )
        assert result.inserted_primary_key is not None
        entry_id = int(result.inserted_primary_key[0])
        await conn.execute(
            insert(ledger_lines),
            [{"entry_id": entry_id, "account": line.account, "amount_cents": line.amount_cents} for line in merged],
        )
        return PostResult(entry_id=entry_id, created_at=now, replayed=False)

    async def balance(self, conn: DbConnection, account: str) -> int:
        """The account's balance: the sum of its lines."""
        total = (
            await conn.execute(
                select(func.coalesce(func.sum(ledger_lines.c.amount_cents), 0)).where(ledger_lines.c.account == account)
            )
        ).scalar_one()
        return int(total)

    async def balances(self, conn: DbConnection, prefix: str) -> dict[str, int]:
        """Balances of every account whose name starts with `prefix` (non-zero history only)."""
        rows = await conn.execute(
            select(ledger_lines.c.account, func.sum(ledger_lines.c.amount_cents))
            .where(ledger_lines.c.account.startswith(prefix, autoescape=True))
            .group_by(ledger_lines.c.account)
        )
        return {account: int(total) for account, total in rows.all()}

    async def total(self, conn: DbConnection) -> int:
        """The sum of every line ever written: 0 in a sound ledger."""
        return int((await conn.execute(select(func.coalesce(func.sum(ledger_lines.c.amount_cents), 0)))).scalar_one())

    async def unbalanced_entries(self, conn: DbConnection) -> list[int]:
        """Ids of entries whose lines do not sum to zero (must always be empty)."""
        rows = await conn.execute(
            select(ledger_lines.c.entry_id)
            .group_by(ledger_lines.c.entry_id)
            .having(func.sum(ledger_lines.c.amount_cents) != 0)
        )
        return [int(r) for r in rows.scalars()]

    async def entries_for(
        self, conn: DbConnection, account_prefix: str, limit: int, cursor: str | None
    ) -> tuple[list[Entry], str | None]:
        """Entries touching accounts under `account_prefix`, newest first; returns (page, next cursor)."""
        touching = (
            select(ledger_lines.c.entry_id)
            .where(ledger_lines.c.account.startswith(account_prefix, autoescape=True))
            .distinct()
        )
        stmt = (
            select(ledger_entries)
            .where(ledger_entries.c.id.in_(touching))
            .order_by(ledger_entries.c.id.desc())
            .limit(limit + 1)
        )
        if cursor:
            try:
                before = int(cursor)
            except ValueError:
                before = 0
            if before <= MAX_COLUMN_INT:  # past every id a column can hold: no bound (PostgreSQL refuses the value)
                stmt = stmt.where(ledger_entries.c.id < before)
        heads = (await conn.execute(stmt)).all()
        page = heads[:limit]
        ids = [h.id for h in page]
        lines: dict[int, list[Line]] = {i: [] for i in ids}
        if ids:
            for row in await conn.execute(
                select(ledger_lines.c.entry_id, ledger_lines.c.account, ledger_lines.c.amount_cents)
                .where(ledger_lines.c.entry_id.in_(ids))
                .order_by(ledger_lines.c.id)
            ):
                lines[row.entry_id].append(Line(row.account, row.amount_cents))
        entries = [
            Entry(
                id=h.id,
                kind=h.kind,
                memo=h.memo,
                ref=h.ref,
                created_at=h.created_at,
                amount_cents=sum(x.amount_cents for x in lines[h.id] if x.account.startswith(account_prefix)),
                lines=tuple(lines[h.id]),
            )
            for h in page
        ]
        return entries, (str(page[-1].id) if len(heads) > limit else None)

    async def entry_by_key(self, conn: DbConnection, idempotency_key: str) -> int | None:
        """The entry id posted under this key, if any."""
        return (
            await conn.execute(select(ledger_entries.c.id).where(ledger_entries.c.idempotency_key == idempotency_key))
        ).scalar()

    async def entry_lines(self, conn: DbConnection, idempotency_key: str) -> tuple[Line, ...]:
        """The lines of the entry posted under this key (empty if none)."""
        rows = await conn.execute(
            select(ledger_lines.c.account, ledger_lines.c.amount_cents)
            .join(ledger_entries, ledger_entries.c.id == ledger_lines.c.entry_id)
            .where(ledger_entries.c.idempotency_key == idempotency_key)
            .order_by(ledger_lines.c.id)
        )
        return tuple(Line(r.account, r.amount_cents) for r in rows.all())

    async def entries_by_key_prefix(self, conn: DbConnection, prefix: str) -> list[tuple[str, tuple[Line, ...]]]:
        """(idempotency key, lines) of the entries whose key starts with `prefix`, oldest first."""
        rows = await conn.execute(
            select(ledger_entries.c.idempotency_key, ledger_lines.c.account, ledger_lines.c.amount_cents)
            .join(ledger_lines, ledger_lines.c.entry_id == ledger_entries.c.id)
            .where(ledger_entries.c.idempotency_key.startswith(prefix, autoescape=True))
            .order_by(ledger_entries.c.id, ledger_lines.c.id)
        )
        grouped: dict[str, list[Line]] = {}
        for r in rows.all():
            grouped.setdefault(r.idempotency_key, []).append(Line(r.account, r.amount_cents))
        return [(key, tuple(lines)) for key, lines in grouped.items()]

    async def entries_with_ref(
        self, conn: DbConnection, ref: str, *, key_prefix: str | None = None
    ) -> list[tuple[int, str, tuple[Line, ...]]]:
        """(id, kind, lines) of the entries about one business object (a peek, a payment): those whose
        ref is `ref`, and with `key_prefix` also those whose idempotency key starts with it."""
        about = ledger_entries.c.ref == ref
        if key_prefix is not None:
            about = or_(about, ledger_entries.c.idempotency_key.startswith(key_prefix, autoescape=True))
        rows = (
            await conn.execute(
                select(ledger_entries.c.id, ledger_entries.c.kind, ledger_lines.c.account, ledger_lines.c.amount_cents)
                .join(ledger_lines, ledger_lines.c.entry_id == ledger_entries.c.id)
                .where(about)
                .order_by(ledger_entries.c.id, ledger_lines.c.id)
            )
        ).all()
        grouped: dict[int, tuple[str, list[Line]]] = {}
        for r in rows:
            grouped.setdefault(r.id, (r.kind, []))[1].append(Line(r.account, r.amount_cents))
        return [(i, kind, tuple(ls)) for i, (kind, ls) in grouped.items()]
