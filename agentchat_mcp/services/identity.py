"""Principals (agents, users, admins): registration, API keys, profiles, the public directory."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import and_, bindparam, case, func, insert, or_, select, update

from agentchat_mcp import clock
from agentchat_mcp.crypto import EpochKey, KeyBundle, new_api_key, new_id
from agentchat_mcp.errors import DecryptionFailed, Forbidden, InvalidInput, NotAuthenticated, NotFound
from agentchat_mcp.server_secret import Keyring, version_of
from agentchat_mcp.store import DbConnection, Store
from agentchat_mcp.store.tables import agent_stats, agent_tags, invites, principals

Role = Literal["agent", "user", "admin"]
ID_PREFIX: dict[str, str] = {"agent": "agt", "user": "usr", "admin": "adm"}
AUTH_CACHE_SECONDS = 10.0  # bounds how long a cached name or role may lag a change made elsewhere
# Callers kept: more than the principals active within AUTH_CACHE_SECONDS, or the LRU thrashes (5,000
# users taking turns miss every time: bench/load.py spike). A miss costs ~0.9 ms of CPU (a hit ~20 us);
# an entry ~1.6 KB, so 8,192 of them stay under 13 MB.
AUTH_CACHE_SIZE = 8192
INVITE_CODE_PREFIX = "aci_"
MAX_INVITE_USES = 10_000
MAX_INVITE_LIFETIME = timedelta(days=365)
# One message for every refused code: which case it was (unknown, expired, used up, other role)
# would help someone guessing codes, and the model's next step is the same in each.
INVITE_REFUSED = (
    "This invitation code is not valid on this hub (it may be mistyped, expired, used up, or meant for "
    "another kind of account). Ask the hub's operator for a fresh invitation code."
)
# Checked on every cached authentication (inline, microseconds): the key is still the principal's.
_KEY_IS_CURRENT = select(principals.c.id).where(
    and_(principals.c.id == bindparam("id"), principals.c.api_key_hash == bindparam("hash"))
)


def _contains(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its own % and _ taken literally (escape '\\').

    Used with ilike, which folds case the same way on both sides (SQLite's lower() folds ASCII only,
    so a query lowercased in Python never matched a stored 'Ω'); PostgreSQL folds all of Unicode.
    """
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@dataclass(frozen=True)
class Principal:
    """A principal's public profile (what the directory shows)."""

    id: str
    role: Role
    name: str
    description: str
    peek_price_cents: int | None
    can_refuse: bool | None
    verified: bool
    tags: tuple[str, ...]
    created_at: str
    rating_count: int = 0  # filled where the directory reads agent_stats (find_agents)
    rating_sum: int = 0
    referral_code: str | None = None  # public: shown to its owner (get_referral_code, `agent create`)


@dataclass
class Caller:
    """An authenticated principal with its private keys unwrapped, for this process only."""

    id: str
    role: Role
    name: str
    keys: KeyBundle
    key_hash: str
    _epoch_keys: dict[tuple[str, int], EpochKey] = field(default_factory=dict, repr=False)

    def epoch_key(self, conversation_id: str, epoch: int, wrapped: bytes) -> EpochKey:
        """Unseal (once) this caller's copy of an epoch key."""
        cached = self._epoch_keys.get((conversation_id, epoch))
        if cached is None:
            cached = EpochKey.unwrap(wrapped, self.keys)
            if len(self._epoch_keys) > 1024:
                self._epoch_keys.clear()
            self._epoch_keys[(conversation_id, epoch)] = cached
        return cached


@dataclass(frozen=True)
class Verification:
    """An agent's badge as an admin last set it."""

    verified: bool
    by: str | None
    at: str | None


@dataclass(frozen=True)
class RegistrationFacts:
    """What a registration hook (referrals) learns, inside the registration's transaction."""

    principal_id: str
    role: Role
    created_at: str
    referral_code: str | None
    registered_from: str | None  # keyed hash of the client's IP address; None when not known (stdio)


RegistrationHook = Callable[[DbConnection, RegistrationFacts], Awaitable[None]]


@dataclass(frozen=True)
class NewInvite:
    """A just-created invitation; `code` exists only here (the database keeps its keyed hash)."""

    id: str
    code: str
    role: Role
    uses: int
    expires_at: str


def new_invite_code() -> str:
    """A fresh invitation code: 192 random bits, so codes cannot be guessed."""
    return INVITE_CODE_PREFIX + secrets.token_urlsafe(24)


def require_role(caller: Caller, *roles: Role) -> None:
    """Refuse a caller whose role is not one of `roles`, naming what would work."""
    if caller.role not in roles:
        raise Forbidden(f"This is for {' or '.join(roles)} accounts; you are signed in as {caller.role} {caller.id}.")


def _normalize_tags(tags: list[str] | None) -> tuple[str, ...]:
    return tuple(sorted({t.strip().lower() for t in tags or [] if t.strip()}))


def _principal(row: object, tags: tuple[str, ...]) -> Principal:
    r = row._mapping  # type: ignore[attr-defined]
    return Principal(
        id=r["id"],
        role=r["role"],
        name=r["name"],
        description=r["description"],
        peek_price_cents=r["peek_price_cents"],
        can_refuse=None if r["can_refuse"] is None else bool(r["can_refuse"]),
        verified=bool(r["verified"]),
        tags=tags,
        created_at=r["created_at"],
        rating_count=r.get("rating_count") or 0,
        rating_sum=r.get("rating_sum") or 0,
        referral_code=r.get("referral_code"),
    )


class Identity:
    """Registration and authentication; the only place that handles API keys."""

    def __init__(self, store: Store, secret: bytes | Keyring) -> None:
        self._store = store
        # A Keyring holds every version of the server secret (see server_secret: rotation);
        # plain bytes is a one-version keyring.
        self._keyring = secret if isinstance(secret, Keyring) else Keyring.single(secret)
        self._cache: OrderedDict[str, tuple[float, Caller]] = OrderedDict()
        # Run in each registration's transaction (referral attribution); raising one registers nobody.
        self.registration_hooks: list[RegistrationHook] = []

    def key_hash(self, api_key: str) -> str:
        """The stored form of an API key under the newest server secret."""
        return self._keyring.hash(api_key)

    def _reload_keyring(self) -> bool:
        """Pick up a rotated secret file (one stat when unchanged); True if it changed."""
        fresh = self._keyring.reloaded()
        changed = fresh is not self._keyring
        self._keyring = fresh
        return changed

    async def _find_by_key(self, api_key: str) -> object | None:
        """The principal row whose stored hash matches the key under any secret version."""
        async with self._store.read() as conn:
            return (
                await conn.execute(
                    select(
                        principals.c.id,
                        principals.c.role,
                        principals.c.name,
                        principals.c.wrapped_private,
                        principals.c.api_key_hash,
                    ).where(principals.c.api_key_hash.in_(self._keyring.candidates(api_key)))
                )
            ).first()

    async def _rehash(self, principal_id: str, old_hash: str, new_hash: str) -> None:
        """Move a principal's stored hash to the newest secret version (after a secret rotation)."""
        async with self._store.write() as conn:
            await conn.execute(
                update(principals)
                .where(principals.c.id == principal_id, principals.c.api_key_hash == old_hash)
                .values(api_key_hash=new_hash)
            )

    async def register(
        self,
        role: Role,
        name: str,
        *,
        description: str = "",
        peek_price_cents: int | None = None,
        can_refuse: bool | None = None,
        tags: list[str] | None = None,
        invite_code: str | None = None,
        referral_code: str | None = None,
        client_address: str | None = None,
    ) -> tuple[Principal, str]:
        """Create a principal; returns it and its API key (shown once, never stored).

        With `invite_code`, the registration takes one use of that invitation in the same
        transaction: a refused code leaves nothing behind, and the last use admits one registration.
        `referral_code` is checked by the registration hooks in that transaction too; `client_address`
        (HTTP) is kept only as a keyed hash, to spot self-referrals.
        """
        name = name.strip()
        if not name:
            raise InvalidInput("name must not be empty or only spaces.")
        self._reload_keyring()  # new keys are hashed under the newest secret
        if role == "agent" and peek_price_cents is None:
            raise InvalidInput("An agent needs a peek_price (e.g. '2.50').")
        api_key = new_api_key()
        keys = KeyBundle.generate()
        now = clock.now_iso()
        principal_id = new_id(ID_PREFIX[role])
        clean_tags = _normalize_tags(tags)
        registered_from = self.key_hash(f"ip:{client_address}") if client_address else None
        async with self._store.write() as conn:
            if invite_code is not None:
                await self._redeem_invite(conn, invite_code, role, now)
            await conn.execute(
                insert(principals).values(
                    id=principal_id,
                    role=role,
                    name=name,
                    description=description.strip(),
                    peek_price_cents=peek_price_cents if role == "agent" else None,
                    can_refuse=(True if can_refuse is None else can_refuse) if role == "agent" else None,
                    api_key_hash=self.key_hash(api_key),
                    box_public=keys.public.box,
                    sign_public=keys.public.sign,
                    wrapped_private=keys.wrap(api_key),
                    created_at=now,
                    updated_at=now,
                    referral_code="ref_" + secrets.token_urlsafe(12),
                    registered_from=registered_from,
                )
            )
            if role == "agent":  # its performance figures, kept current from now on (services/ratings.py)
                await conn.execute(insert(agent_stats).values(agent_id=principal_id, updated_at=now))
            facts = RegistrationFacts(principal_id, role, now, referral_code, registered_from)
            for hook in self.registration_hooks:
                await hook(conn, facts)
            if clean_tags:
                await conn.execute(insert(agent_tags), [{"principal_id": principal_id, "tag": t} for t in clean_tags])
            principal = await self._get(conn, principal_id)
        return principal, api_key

    async def create_invite(
        self, role: Role, uses: int, expires_in: timedelta, *, created_by: str | None = "cli"
    ) -> NewInvite:
        """An invitation for `uses` registrations as `role`, valid for `expires_in`; the code is shown once."""
        if role not in ("agent", "user"):
            raise InvalidInput("An invitation is for 'agent' or 'user' accounts; admins are made by the operator.")
        if not 1 <= uses <= MAX_INVITE_USES:
            raise InvalidInput(f"uses must be between 1 and {MAX_INVITE_USES}.")
        if not timedelta(0) < expires_in <= MAX_INVITE_LIFETIME:
            raise InvalidInput(f"An invitation must expire within 1 to {MAX_INVITE_LIFETIME.days} days.")
        self._reload_keyring()  # hashed under the newest secret, like new API keys
        code = new_invite_code()
        now = clock.now()
        invite = NewInvite(new_id("inv"), code, role, uses, clock.iso(now + expires_in))
        async with self._store.write() as conn:
            await conn.execute(
                insert(invites).values(
                    id=invite.id,
                    code_hash=self.key_hash(code),
                    role=role,
                    uses_left=uses,
                    expires_at=invite.expires_at,
                    created_by=created_by,
                    created_at=clock.iso(now),
                )
            )
        return invite

    async def _redeem_invite(self, conn: DbConnection, code: str, role: Role, now: str) -> None:
        """Take one use of a live invitation for `role`, or refuse; the caller's transaction holds it.

        One conditional UPDATE: two registrations racing for the last use cannot both match it.
        """
        if not code.startswith(INVITE_CODE_PREFIX):
            raise Forbidden(INVITE_REFUSED)
        took = await conn.execute(
            update(invites)
            .where(
                invites.c.code_hash.in_(self._keyring.candidates(code)),
                invites.c.role == role,
                invites.c.uses_left > 0,
                invites.c.expires_at > now,
            )
            .values(uses_left=invites.c.uses_left - 1, last_used_at=now)
        )
        if took.rowcount != 1:
            raise Forbidden(INVITE_REFUSED)

    async def authenticate(self, api_key: str) -> Caller:
        """The caller behind an API key, private keys unwrapped; NotAuthenticated if unknown."""
        key_hash = self.key_hash(api_key)
        hit = self._cache.get(key_hash)
        if hit is not None and hit[0] > time.monotonic():
            # Still this principal's key? Another process may have rotated it a moment ago, and a
            # rotated key must stop working at once, not when this cache entry expires.
            if await self._store.quick_first(_KEY_IS_CURRENT, {"id": hit[1].id, "hash": key_hash}) is not None:
                self._cache.move_to_end(key_hash)
                return hit[1]
            del self._cache[key_hash]
        row: Any = await self._find_by_key(api_key)
        if row is None and self._reload_keyring():  # the secret file was rotated by another process
            key_hash = self.key_hash(api_key)
            row = await self._find_by_key(api_key)
        if row is None:
            raise NotAuthenticated("This API key is not valid (unknown, or rotated). Use your current key.")
        try:
            keys = KeyBundle.unwrap(row.wrapped_private, api_key)
        except DecryptionFailed as exc:
            raise NotAuthenticated("This API key is not valid for its account.") from exc
        if row.api_key_hash != key_hash:  # hashed under an older secret version: move it forward
            await self._rehash(row.id, row.api_key_hash, key_hash)
        caller = Caller(id=row.id, role=row.role, name=row.name, keys=keys, key_hash=key_hash)
        self._cache[key_hash] = (time.monotonic() + AUTH_CACHE_SECONDS, caller)
        while len(self._cache) > AUTH_CACHE_SIZE:
            self._cache.popitem(last=False)
        return caller

    async def hash_versions(self) -> dict[int, int]:
        """How many principals' API-key hashes use each server-secret version (for `secrets status`)."""
        counts: dict[int, int] = {}
        async with self._store.read() as conn:
            for stored in (await conn.execute(select(principals.c.api_key_hash))).scalars():
                counts[version_of(stored)] = counts.get(version_of(stored), 0) + 1
        return counts

    async def invite_hash_versions(self) -> dict[int, int]:
        """How many live invitations (uses left, not expired) are hashed under each secret version:
        pruning a version still in use here would silently void those codes."""
        counts: dict[int, int] = {}
        async with self._store.read() as conn:
            live = select(invites.c.code_hash).where(invites.c.uses_left > 0, invites.c.expires_at > clock.now_iso())
            for stored in (await conn.execute(live)).scalars():
                counts[version_of(stored)] = counts.get(version_of(stored), 0) + 1
        return counts

    def forget(self, principal_id: str) -> None:
        """Drop cached callers of a principal (after rotation or a profile change)."""
        for key_hash in [h for h, (_, c) in self._cache.items() if c.id == principal_id]:
            del self._cache[key_hash]

    async def rotate_api_key(self, caller: Caller) -> str:
        """Issue a new API key, re-wrap the private keys under it; the old key stops working now."""
        api_key = new_api_key()
        self._reload_keyring()
        async with self._store.write() as conn:
            await conn.execute(
                update(principals)
                .where(principals.c.id == caller.id)
                .values(
                    api_key_hash=self.key_hash(api_key),
                    wrapped_private=caller.keys.wrap(api_key),
                    updated_at=clock.now_iso(),
                )
            )
        self.forget(caller.id)
        return api_key

    async def update_profile(
        self,
        caller: Caller,
        *,
        name: str | None = None,
        description: str | None = None,
        peek_price_cents: int | None = None,
        can_refuse: bool | None = None,
        tags: list[str] | None = None,
    ) -> Principal:
        """Change the given fields only; agent-only fields are refused for other roles."""
        values: dict[str, object] = {}
        if name is not None:
            if not name.strip():
                raise InvalidInput("name must not be empty or only spaces.")
            values["name"] = name.strip()
        if description is not None:
            values["description"] = description.strip()
        if caller.role != "agent" and (peek_price_cents is not None or can_refuse is not None or tags is not None):
            raise InvalidInput("peek_price, can_refuse and tags apply to agents only.")
        if peek_price_cents is not None:
            values["peek_price_cents"] = peek_price_cents
        if can_refuse is not None:
            values["can_refuse"] = can_refuse
        async with self._store.write() as conn:
            if values:
                values["updated_at"] = clock.now_iso()
                await conn.execute(update(principals).where(principals.c.id == caller.id).values(**values))
            if tags is not None:
                await conn.execute(agent_tags.delete().where(agent_tags.c.principal_id == caller.id))
                clean = _normalize_tags(tags)
                if clean:
                    await conn.execute(insert(agent_tags), [{"principal_id": caller.id, "tag": t} for t in clean])
            principal = await self._get(conn, caller.id)
        self.forget(caller.id)
        return principal

    async def set_verified(self, agent_id: str, verified: bool, *, by: str, note: str) -> Verification:
        """Give (or take away) an agent's verified badge, recording which admin did it, when and why."""
        if not note.strip():
            raise InvalidInput("note must say what was checked; it must not be empty or only spaces.")
        now = clock.now_iso()
        async with self._store.write() as conn:
            done = await conn.execute(
                update(principals)
                .where(and_(principals.c.id == agent_id, principals.c.role == "agent"))
                .values(verified=verified, verified_by=by, verified_at=now, verified_note=note.strip(), updated_at=now)
            )
            if done.rowcount != 1:
                raise NotFound(f"No agent {agent_id}. Use find_agents to look agents up.")
        return Verification(verified, by, now)

    async def get(self, principal_id: str) -> Principal:
        """Any principal by id (NotFound if absent)."""
        async with self._store.read() as conn:
            return await self._get(conn, principal_id)

    async def get_agent(self, agent_id: str) -> Principal:
        """A public directory entry; users and admins are not listed, so they read as not found."""
        principal = await self.get(agent_id)
        if principal.role != "agent":
            raise NotFound(f"No agent {agent_id}. Use find_agents to look agents up.")
        return principal

    async def _get(self, conn: DbConnection, principal_id: str) -> Principal:
        row = (await conn.execute(select(principals).where(principals.c.id == principal_id))).first()
        if row is None:
            raise NotFound(f"No agent {principal_id}. Use find_agents to look agents up.")
        tags = (await conn.execute(select(agent_tags.c.tag).where(agent_tags.c.principal_id == principal_id))).scalars()
        return _principal(row, tuple(sorted(tags)))

    async def find_agents(
        self,
        *,
        query: str | None,
        tag: str | None,
        limit: int,
        cursor: str | None,
        verified_only: bool = False,
        min_rating_x100: int | None = None,
        sort: Literal["id", "rating", "price", "activity"] = "id",
    ) -> tuple[list[Principal], str | None]:
        """Agents whose name or description contains `query` and that carry `tag`, by id (pages follow
        `cursor`), or the first `limit` by rating, price or recent activity (one page: no cursor)."""
        stmt = (
            select(principals, agent_stats.c.rating_count, agent_stats.c.rating_sum)
            .select_from(principals)
            .outerjoin(agent_stats, agent_stats.c.agent_id == principals.c.id)
            .where(principals.c.role == "agent")
        )
        if verified_only:
            stmt = stmt.where(principals.c.verified.is_(True))
        if min_rating_x100 is not None:
            stmt = stmt.where(agent_stats.c.rating_count > 0, agent_stats.c.rating_score >= min_rating_x100)
        if query:
            pattern = _contains(query)
            stmt = stmt.where(
                or_(
                    principals.c.name.ilike(pattern, escape="\\"),
                    principals.c.description.ilike(pattern, escape="\\"),
                )
            )
        if tag:
            stmt = stmt.where(
                principals.c.id.in_(select(agent_tags.c.principal_id).where(agent_tags.c.tag == tag.strip().lower()))
            )
        if sort != "id":
            order = {
                # unrated agents sort as the prior (services/ratings.py): 3.50
                "rating": [case((agent_stats.c.rating_count > 0, agent_stats.c.rating_score), else_=350).desc()],
                "price": [principals.c.peek_price_cents.asc()],
                "activity": [func.coalesce(agent_stats.c.last_active_at, "").desc()],
            }[sort]
            stmt = stmt.order_by(*order, principals.c.id).limit(limit)
        else:
            if cursor:
                stmt = stmt.where(principals.c.id > cursor)
            stmt = stmt.order_by(principals.c.id).limit(limit + 1)
        async with self._store.read() as conn:
            rows = (await conn.execute(stmt)).all()
            ids = [r.id for r in rows[:limit]]
            tag_rows = (
                (await conn.execute(select(agent_tags).where(agent_tags.c.principal_id.in_(ids)))).all() if ids else []
            )
        tags: dict[str, list[str]] = {}
        for t in tag_rows:
            tags.setdefault(t.principal_id, []).append(t.tag)
        found = [_principal(r, tuple(sorted(tags.get(r.id, [])))) for r in rows[:limit]]
        next_cursor = found[-1].id if len(rows) > limit else None
        return found, next_cursor

    async def list_principals(self, role: Role, *, name: str | None, limit: int) -> tuple[list[Principal], int]:
        """For the operator (`agentchat-mcp agents list`): the newest `limit` principals of `role`
        whose name contains `name` (any case), and how many match in all. Tags are not loaded."""
        where = [principals.c.role == role]
        if name:
            where.append(principals.c.name.ilike(_contains(name), escape="\\"))
        newest = select(principals).where(*where).order_by(principals.c.created_at.desc(), principals.c.id.desc())
        async with self._store.read() as conn:
            rows = (await conn.execute(newest.limit(limit))).all()
            total = (await conn.execute(select(func.count()).select_from(principals).where(*where))).scalar_one()
        return [_principal(r, ()) for r in rows], int(total)

    async def public_keys(self, conn: DbConnection, ids: list[str]) -> dict[str, tuple[bytes, bytes]]:
        """id -> (box public, sign public) for the given principals."""
        rows = await conn.execute(
            select(principals.c.id, principals.c.box_public, principals.c.sign_public).where(principals.c.id.in_(ids))
        )
        return {r.id: (r.box_public, r.sign_public) for r in rows}

    async def agents_exist(self, conn: DbConnection, ids: list[str]) -> set[str]:
        """Which of `ids` are agents."""
        rows = await conn.execute(
            select(principals.c.id).where(and_(principals.c.id.in_(ids), principals.c.role == "agent"))
        )
        return set(rows.scalars())
