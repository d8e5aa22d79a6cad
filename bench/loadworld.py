"""The population bench/load.py runs (seeded straight through the domain services, in one process)
and the exactly-once money check it runs on the store afterwards."""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, select

from agentchat_mcp.server import build_app_context
from agentchat_mcp.services.ledger import user_credit, user_held
from agentchat_mcp.settings import Settings
from agentchat_mcp.store import open_settings_store
from agentchat_mcp.store.tables import ledger_entries, ledger_lines, peeks, principals
from agentchat_mcp.telemetry import Telemetry

TAGS = ["coding", "research", "writing", "support", "legal", "finance", "health", "games"]
USER_CREDIT_CENTS = 100_000  # $1,000: the mixed scenarios' users never run out
FRENZY_AFFORDS = 3  # frenzy users get credit for exactly this many peeks at the hot conversations
CAPTURED = ("scheduled", "active", "completed", "refunded")  # statuses whose peek was paid


@dataclass
class Agent:
    id: str
    key: str
    conversation_id: str
    initiator: bool  # sends the pair's next message first
    can_refuse: bool
    last_seq: int = 0


@dataclass
class User:
    id: str
    key: str
    peeked: set[str] = field(default_factory=set)  # conversations this user has asked to peek at


@dataclass
class World:
    agents: list[Agent]  # pairs: 2i and 2i+1 share a conversation; the first 2*hot are the frenzy's
    users: list[User]
    frenzy_users: list[User]
    hot_conversations: list[str]
    hot_price_cents: int
    seconds: float
    answered: set[str] = field(default_factory=set)  # frenzy users whose every request got an answer


async def seed(settings: Settings, *, agents: int, users: int, frenzy_users: int, hot: int, seed_: int = 1) -> World:
    """Register the principals, start one conversation per agent pair (3 messages each), grant credit."""
    rng = random.Random(seed_)
    started = time.perf_counter()
    agents += agents % 2
    agents = max(agents, 2 * hot)
    async with open_settings_store(settings) as store:
        app = build_app_context(settings, store, Telemetry())
        made: list[Agent] = []
        for i in range(0, agents, 2):
            pair = []
            for j in (i, i + 1):
                refuse = j >= 2 * hot and rng.random() < 0.3  # the hot pairs consent to every peek
                principal, key = await app.identity.register(
                    "agent",
                    f"agent-{j:05d}",
                    description=f"bench agent {j}, a {rng.choice(TAGS)} specialist",
                    peek_price_cents=100 if j < 2 * hot else rng.randrange(50, 300),
                    can_refuse=refuse,
                    tags=rng.sample(TAGS, 2),
                )
                pair.append((principal.id, key, refuse))
            (a_id, a_key, a_refuse), (b_id, b_key, b_refuse) = pair
            caller = await app.identity.authenticate(a_key)
            other = await app.identity.authenticate(b_key)
            conversation, _ = await app.conversations.start(caller, [b_id], f"topic {i // 2}", "hello, shall we start?")
            await app.conversations.send(other, conversation.id, "yes, what is the question?")
            await app.conversations.send(caller, conversation.id, "let us review this design together.")
            made += [
                Agent(a_id, a_key, conversation.id, True, a_refuse),
                Agent(b_id, b_key, conversation.id, False, b_refuse),
            ]
        hot_ids = [made[2 * k].conversation_id for k in range(hot)]
        hot_price = 0
        plain: list[User] = []
        crowd: list[User] = []
        for n, into in ((users, plain), (frenzy_users, crowd)):
            for _ in range(n):
                principal, key = await app.identity.register("user", f"user-{len(plain) + len(crowd):05d}")
                into.append(User(principal.id, key))
        if crowd and hot_ids:
            quote = await app.peeks.quote(await app.identity.authenticate(crowd[0].key), hot_ids[0])
            hot_price = quote.charged_cents
        for user in plain:
            await app.earnings.grant(user.id, USER_CREDIT_CENTS, idempotency_key=f"bench-{user.id}")
        for user in crowd:
            await app.earnings.grant(user.id, FRENZY_AFFORDS * hot_price, idempotency_key=f"bench-{user.id}")
    return World(made, plain, crowd, hot_ids, hot_price, time.perf_counter() - started)


@dataclass(frozen=True)
class MoneyCheck:
    lines: list[str]
    failures: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures


async def check_money(settings: Settings, world: World) -> MoneyCheck:
    """Exactly-once money, from the store: the ledger balances, every paid peek is captured exactly
    once and nothing else is, each user's money adds up, and each frenzy user paid for exactly the
    peeks their credit covered (at most one per conversation)."""
    failures: list[str] = []
    async with open_settings_store(settings, upgrade=False) as store, store.read() as conn:
        app = build_app_context(settings, store, Telemetry())
        total = await app.ledger.total(conn)
        unbalanced = await app.ledger.unbalanced_entries(conn)
        if total != 0 or unbalanced:
            failures.append(f"ledger: sum {total} (want 0), unbalanced entries {unbalanced[:5]}")
        captures = Counter(
            dict(
                (
                    await conn.execute(
                        select(ledger_entries.c.ref, func.count())
                        .where(ledger_entries.c.kind == "peek_capture")
                        .group_by(ledger_entries.c.ref)
                    )
                ).all()
            )
        )
        rows = (
            await conn.execute(
                select(peeks.c.id, peeks.c.user_id, peeks.c.conversation_id, peeks.c.status, peeks.c.charged_cents)
            )
        ).all()
        twice = [ref for ref, n in captures.items() if n > 1]
        paid = {r.id for r in rows if r.status in CAPTURED}
        unpaid = [r.id for r in rows if r.status in CAPTURED and captures[r.id] == 0 and r.charged_cents > 0]
        stray = [r.id for r in rows if r.status not in CAPTURED and r.status != "refunded" and captures[r.id] > 0]
        if twice or unpaid or stray:
            failures.append(
                f"captures: twice {twice[:5]}, paid without capture {unpaid[:5]}, captured but not paid {stray[:5]}"
            )
        # per user: credit + held + what captures took = what was granted (no one charged twice or for nothing)
        lines = (
            await conn.execute(
                select(ledger_lines.c.account, ledger_entries.c.kind, func.sum(ledger_lines.c.amount_cents))
                .join(ledger_entries, ledger_entries.c.id == ledger_lines.c.entry_id)
                .where(ledger_lines.c.account.like("user:%"))
                .group_by(ledger_lines.c.account, ledger_entries.c.kind)
            )
        ).all()
        by_account: dict[str, Counter[str]] = defaultdict(Counter)
        for account, kind, amount in lines:
            by_account[account][kind] += int(amount)
        charged: Counter[str] = Counter()
        for r in rows:
            if r.status in CAPTURED:
                charged[r.user_id] += r.charged_cents
        user_ids = (await conn.execute(select(principals.c.id).where(principals.c.role == "user"))).scalars().all()
        wrong = []
        for uid in user_ids:
            credit, held = by_account[user_credit(uid)], by_account[user_held(uid)]
            granted = credit["credit_grant"]
            captured = -held["peek_capture"]
            balance = sum(credit.values()) + sum(held.values())
            if balance + captured != granted or captured != charged[uid] or sum(credit.values()) < 0:
                wrong.append(
                    f"{uid}: granted {granted}, captured {captured}, peeks charged {charged[uid]}, left {balance}"
                )
        if wrong:
            failures.append(f"users whose money does not add up: {len(wrong)}, e.g. {wrong[:3]}")
        crowd = {u.id for u in world.frenzy_users}
        hot = set(world.hot_conversations)
        per_user: Counter[str] = Counter()
        per_user_conv: Counter[tuple[str, str]] = Counter()
        for r in rows:
            if r.user_id in crowd and r.conversation_id in hot and r.status in CAPTURED:
                per_user[r.user_id] += 1
                per_user_conv[r.user_id, r.conversation_id] += 1
        want = min(FRENZY_AFFORDS, len(hot))
        # a request the client gave up on (timeout) may or may not have been served: such a user paid
        # for at most `want`; one whose every request was answered, for exactly `want`
        off = [(u, per_user[u]) for u in crowd if per_user[u] > want or (u in world.answered and per_user[u] != want)]
        doubled = [k for k, n in per_user_conv.items() if n > 1]
        if crowd and (off or doubled):
            failures.append(
                f"frenzy: users not charged exactly {want} peeks: {len(off)} (e.g. {off[:3]}); twice on one conversation: {doubled[:3]}"
            )
    out = [
        f"  ledger: {len(rows)} peeks, {sum(captures.values())} captures; sum of all lines {total} (one currency: USD), "
        f"unbalanced entries {len(unbalanced)}",
        f"  paid peeks {len(paid)}, each captured exactly once: {'yes' if not (twice or unpaid or stray) else 'NO'}; "
        f"users checked {len(user_ids)}: credit + held + captured = granted for every one: {'yes' if not wrong else 'NO'}",
    ]
    if crowd:
        out.append(
            f"  frenzy: {len(crowd)} users each afforded {FRENZY_AFFORDS} of {len(hot)} hot conversations: "
            f"{sum(per_user.values())} peeks paid; exactly {want} for each of the {len(world.answered & crowd)} users whose every "
            f"request was answered, at most {want} for the others: {'yes' if not off else 'NO'}; none twice on one "
            f"conversation: {'yes' if not doubled else 'NO'}"
        )
    return MoneyCheck(out, failures)
