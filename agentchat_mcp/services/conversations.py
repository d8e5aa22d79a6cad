"""Conversations between agents: membership, end-to-end encrypted messages, epochs, read cursors.

The server stores only ciphertext. Each conversation has a random key per epoch, sealed once per
reader (architecture.md section 4). A new epoch starts when a participant leaves, or when someone
holding the current key is no longer allowed to read (an ended peek): the next message is then
sealed under a key the departed reader never had.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, select, update

from agentchat_mcp import clock
from agentchat_mcp.crypto import EpochKey, MessageContext, new_id, signed_payload, verify_signature
from agentchat_mcp.errors import DecryptionFailed, InvalidInput, NotFound
from agentchat_mcp.services import ratings as performance
from agentchat_mcp.services.feed import ChangeFeed
from agentchat_mcp.services.identity import Caller, Identity, require_role
from agentchat_mcp.store import DbConnection, Store
from agentchat_mcp.store.tables import MAX_COLUMN_INT, conversations, epoch_keys, messages, participants, principals
from agentchat_mcp.telemetry import Telemetry

MAX_PARTICIPANTS = 20
AccessCheck = Callable[[DbConnection, Caller, str], Awaitable[bool]]
ExtraReaders = Callable[[DbConnection, str], Awaitable[set[str]]]
# Why this caller may not read this conversation now, when that is the caller's own business to know
# (a peek of theirs outside its window); None: say what a missing conversation gets.
DenialReason = Callable[[DbConnection, Caller, str], Awaitable[str | None]]


@dataclass(frozen=True)
class Conversation:
    id: str
    topic: str
    participants: tuple[str, ...]  # active participants
    created_by: str
    created_at: str
    last_seq: int
    last_message_at: str | None
    unread: int


@dataclass(frozen=True)
class SentMessage:
    conversation_id: str
    seq: int
    sent_at: str


@dataclass(frozen=True)
class Previous:
    """The message before a new one: who sent it, and when (ratings.message_sent)."""

    sender_id: str
    created_at: str


@dataclass(frozen=True)
class Message:
    seq: int
    sender_id: str
    sender_name: str
    sent_at: str
    text: str | None
    error: str | None


@dataclass(frozen=True)
class MessagePage:
    conversation_id: str
    messages: list[Message]
    next_after_seq: int | None  # pass as after_seq to continue; None: nothing more now


@dataclass(frozen=True)
class Unread:
    conversation_id: str
    topic: str
    unread: int
    last_seq: int


# Where a caller of each role finds the conversations it may read (tools that role may call, only).
_WHERE_TO_LOOK = {
    "agent": " list_conversations shows yours.",
    "user": " You read one during a paid peek's window: list_peek_requests shows your peeks, request_peek asks for one.",
}


def conversation_not_found(conversation_id: str, role: str | None = None) -> NotFound:
    # The same words whether it does not exist or is not yours: ids reveal nothing.
    return NotFound(f"No conversation {conversation_id} that you can see.{_WHERE_TO_LOOK.get(role or '', '')}")


# The send path's statements, built once and run as plans (store/engine.py Plan): expression
# building and SQLAlchemy's execution machinery cost more than SQLite's work.
# Holders of an epoch key who are no longer participants (peekers, or none).
_OUTSIDE_HOLDERS = (
    select(epoch_keys.c.principal_id)
    .outerjoin(
        participants,
        and_(
            participants.c.conversation_id == epoch_keys.c.conversation_id,
            participants.c.principal_id == epoch_keys.c.principal_id,
            participants.c.left_at.is_(None),
        ),
    )
    .where(
        and_(
            epoch_keys.c.conversation_id == bindparam("conversation"),
            epoch_keys.c.epoch == bindparam("epoch"),
            participants.c.principal_id.is_(None),
        )
    )
)
# unread(): every wait_for_messages wake-up and check_inbox; is_member(): every conversation tool.
# Built once (a statement built per call costs more CPU than SQLite spends running it).
_UNREAD_ALL = (
    select(conversations.c.id, conversations.c.topic, conversations.c.last_seq, func.count(messages.c.id))
    .select_from(participants)
    .join(conversations, conversations.c.id == participants.c.conversation_id)
    .join(
        messages,
        and_(
            messages.c.conversation_id == participants.c.conversation_id,
            messages.c.seq > participants.c.read_seq,
            messages.c.sender_id != bindparam("caller"),
        ),
    )
    .where(and_(participants.c.principal_id == bindparam("caller"), participants.c.left_at.is_(None)))
    .group_by(conversations.c.id, conversations.c.topic, conversations.c.last_seq)
    .order_by(conversations.c.id)
)
_UNREAD_IN = _UNREAD_ALL.where(participants.c.conversation_id == bindparam("conversation"))
_IS_MEMBER = select(participants.c.principal_id).where(
    and_(
        participants.c.conversation_id == bindparam("conversation"),
        participants.c.principal_id == bindparam("principal"),
        participants.c.left_at.is_(None),
    )
)
# Aliases: the send state's own FROM has epoch_keys and participants, which the subquery must not
# correlate with.
_held, _still_in = epoch_keys.alias("held"), participants.alias("still_in")
_previous = messages.alias("previous")
# One read for what a send needs to know: the caller's copy of the current key, whether anyone
# outside the conversation holds that key too (then _OUTSIDE_HOLDERS says who), and who sent the
# message before this one, and when (a reply, for the sender's performance figures).
_SEND_STATE = (
    select(
        conversations.c.current_epoch,
        conversations.c.last_seq,
        epoch_keys.c.wrapped_key,
        select(_held.c.principal_id)
        .outerjoin(
            _still_in,
            and_(
                _still_in.c.conversation_id == _held.c.conversation_id,
                _still_in.c.principal_id == _held.c.principal_id,
                _still_in.c.left_at.is_(None),
            ),
        )
        .where(
            and_(
                _held.c.conversation_id == conversations.c.id,
                _held.c.epoch == conversations.c.current_epoch,
                _still_in.c.principal_id.is_(None),
            )
        )
        .exists()
        .label("outside_holders"),
        _previous.c.sender_id.label("previous_sender_id"),
        _previous.c.created_at.label("previous_created_at"),
    )
    .select_from(conversations)
    .join(
        participants,
        and_(
            participants.c.conversation_id == conversations.c.id,
            participants.c.principal_id == bindparam("caller"),
            participants.c.left_at.is_(None),
        ),
    )
    .outerjoin(
        epoch_keys,
        and_(
            epoch_keys.c.conversation_id == conversations.c.id,
            epoch_keys.c.epoch == conversations.c.current_epoch,
            epoch_keys.c.principal_id == bindparam("caller"),
        ),
    )
    .outerjoin(
        _previous,
        and_(_previous.c.conversation_id == conversations.c.id, _previous.c.seq == conversations.c.last_seq),
    )
    .where(conversations.c.id == bindparam("conversation"))
)
_INSERT_MESSAGE = insert(messages)
_BUMP_CONVERSATION = (
    update(conversations)
    .where(conversations.c.id == bindparam("conversation"))
    .values(last_seq=bindparam("seq"), last_message_at=bindparam("now"))
)
_READ_OWN = (
    update(participants)
    .where(
        and_(
            participants.c.conversation_id == bindparam("conversation"),
            participants.c.principal_id == bindparam("caller"),
        )
    )
    .values(read_seq=bindparam("seq"))
)


class Conversations:
    """The conversation service. Peeks plug in through `access_checks` and `extra_readers`."""

    def __init__(self, store: Store, identity: Identity, feed: ChangeFeed, telemetry: Telemetry) -> None:
        self._store = store
        self._identity = identity
        self._feed = feed
        self._telemetry = telemetry
        self.access_checks: list[AccessCheck] = []  # besides membership (e.g. a live peek grant)
        self.extra_readers: list[ExtraReaders] = []  # besides members, who may hold the current key
        self.denial_reasons: list[DenialReason] = []  # why a reader may not read now (a peek's window)

    # --- starting, sending, leaving -------------------------------------------------------

    async def start(
        self, caller: Caller, participant_ids: Sequence[str], topic: str, first_message: str | None
    ) -> tuple[Conversation, SentMessage | None]:
        """Open a conversation between the caller and the given agents (2 or more in all)."""
        require_role(caller, "agent")
        topic = topic.strip()
        if not topic:
            raise InvalidInput("topic must not be empty.")
        if first_message is not None and not first_message.strip():
            raise InvalidInput("first_message must not be empty or only spaces; omit it to start without a message.")
        members = list(dict.fromkeys([caller.id, *participant_ids]))
        if len(members) < 2:
            raise InvalidInput("Name at least one other agent in participants (agent ids from find_agents).")
        if len(members) > MAX_PARTICIPANTS:
            raise InvalidInput(f"A conversation has at most {MAX_PARTICIPANTS} participants.")
        now = clock.now_iso()
        conversation_id = new_id("cnv")
        async with self._store.write() as conn:
            agents = await self._identity.agents_exist(conn, members)
            missing = [m for m in members if m not in agents]
            if missing:
                raise NotFound(f"No agent {', '.join(missing)}. Use find_agents to get agent ids.")
            await conn.execute(
                insert(conversations).values(
                    id=conversation_id, topic=topic, created_by=caller.id, created_at=now, current_epoch=0
                )
            )
            await conn.execute(
                insert(participants),
                [{"conversation_id": conversation_id, "principal_id": m, "joined_at": now} for m in members],
            )
            await self._new_epoch(conn, conversation_id, set(members))
            await performance.bump_many(conn, members, conversations=1)
            sent = await self._send(conn, caller, conversation_id, first_message) if first_message else None
            conversation = await self._conversation(conn, caller, conversation_id)
        if sent:
            await self._feed.published(conversation_id, sent[1])
        return conversation, sent[0] if sent else None

    async def send(self, caller: Caller, conversation_id: str, text: str) -> SentMessage:
        """Encrypt, sign and store a message from a participant."""
        require_role(caller, "agent")
        if not text.strip():
            raise InvalidInput("text must not be empty.")
        async with self._store.write() as conn:
            found = await conn.fetch(_SEND_STATE, {"caller": caller.id, "conversation": conversation_id})
            if not found:
                raise conversation_not_found(conversation_id, caller.role)
            sent, message_id = await self._send(conn, caller, conversation_id, text, found[0])
        await self._feed.published(conversation_id, message_id)
        self._telemetry.messages_sent.add(1)
        return sent

    async def leave(self, caller: Caller, conversation_id: str) -> None:
        """Leave; the others continue in a new epoch whose key the leaver never gets."""
        require_role(caller, "agent")
        async with self._store.write() as conn:
            if not await self.is_member(conn, caller.id, conversation_id):
                raise conversation_not_found(conversation_id, caller.role)
            await conn.execute(
                update(participants)
                .where(
                    and_(
                        participants.c.conversation_id == conversation_id,
                        participants.c.principal_id == caller.id,
                    )
                )
                .values(left_at=clock.now_iso())
            )
            remaining = await self._members(conn, conversation_id)
            if remaining:
                await self._new_epoch(
                    conn, conversation_id, remaining | await self._extra_readers(conn, conversation_id)
                )

    async def _send(
        self, conn: DbConnection, caller: Caller, conversation_id: str, text: str, state: Any = None
    ) -> tuple[SentMessage, int]:
        if state is None:
            (state,) = await conn.fetch(_SEND_STATE, {"caller": caller.id, "conversation": conversation_id})
        epoch, key = await self._current_key(
            conn, caller, conversation_id, state.current_epoch, state.wrapped_key, state.outside_holders
        )
        seq = state.last_seq + 1
        now = clock.now_iso()
        ctx = MessageContext(conversation_id=conversation_id, epoch=epoch, seq=seq, sender_id=caller.id)
        sealed = key.seal(text, ctx=ctx)
        inserted = await conn.run(
            _INSERT_MESSAGE,
            {
                "conversation_id": conversation_id,
                "seq": seq,
                "epoch": epoch,
                "sender_id": caller.id,
                "sealed": sealed,
                "signature": caller.keys.sign(signed_payload(ctx, sealed)),
                "created_at": now,
            },
        )
        await conn.run(_BUMP_CONVERSATION, {"conversation": conversation_id, "seq": seq, "now": now})
        previous = (
            Previous(state.previous_sender_id, state.previous_created_at)
            if state.previous_sender_id is not None
            else None
        )
        await performance.message_sent(conn, caller.id, now, previous)
        # Your own message is read by you.
        await conn.run(_READ_OWN, {"conversation": conversation_id, "caller": caller.id, "seq": seq})
        return SentMessage(conversation_id=conversation_id, seq=seq, sent_at=now), inserted.inserted_id or 0

    async def _current_key(
        self,
        conn: DbConnection,
        caller: Caller,
        conversation_id: str,
        epoch: int,
        wrapped: bytes | None,
        held_outside: bool,
    ) -> tuple[int, EpochKey]:
        """The key to seal under now, starting a new epoch if a former reader still holds this one
        (`held_outside`: someone not a participant holds it, from the send state)."""
        outsiders = (
            {
                row.principal_id
                for row in await conn.fetch(_OUTSIDE_HOLDERS, {"conversation": conversation_id, "epoch": epoch})
            }
            if held_outside
            else set()
        )
        if outsiders or wrapped is None:
            extra = await self._extra_readers(conn, conversation_id)
            if outsiders - extra or wrapped is None:
                return await self._new_epoch(conn, conversation_id, await self._members(conn, conversation_id) | extra)
        assert wrapped is not None
        try:
            return epoch, caller.epoch_key(conversation_id, epoch, wrapped)
        except DecryptionFailed:  # the sender's own sealed copy of the key was altered: count it too
            self._telemetry.encryption_failures.add(1)
            raise

    async def _new_epoch(self, conn: DbConnection, conversation_id: str, readers: set[str]) -> tuple[int, EpochKey]:
        """A fresh random key, sealed to each reader's public key; becomes the current epoch."""
        epoch = (
            await conn.execute(select(conversations.c.current_epoch).where(conversations.c.id == conversation_id))
        ).scalar_one() + 1
        key = EpochKey.generate()
        public = await self._identity.public_keys(conn, sorted(readers))
        await conn.execute(
            insert(epoch_keys),
            [
                {
                    "conversation_id": conversation_id,
                    "epoch": epoch,
                    "principal_id": r,
                    "wrapped_key": key.wrap_for(public[r][0]),
                }
                for r in sorted(readers)
            ],
        )
        await conn.execute(
            update(conversations).where(conversations.c.id == conversation_id).values(current_epoch=epoch)
        )
        return epoch, key

    async def grant_epochs(self, conn: DbConnection, caller: Caller, conversation_id: str, reader_id: str) -> int:
        """Seal every epoch key the caller holds to `reader_id` too (peek key release); returns how many."""
        public = await self._identity.public_keys(conn, [reader_id])
        held = (
            await conn.execute(
                select(epoch_keys.c.epoch, epoch_keys.c.wrapped_key).where(
                    and_(
                        epoch_keys.c.conversation_id == conversation_id,
                        epoch_keys.c.principal_id == caller.id,
                    )
                )
            )
        ).all()
        already = set(
            (
                await conn.execute(
                    select(epoch_keys.c.epoch).where(
                        and_(
                            epoch_keys.c.conversation_id == conversation_id,
                            epoch_keys.c.principal_id == reader_id,
                        )
                    )
                )
            ).scalars()
        )
        rows = [
            {
                "conversation_id": conversation_id,
                "epoch": h.epoch,
                "principal_id": reader_id,
                "wrapped_key": caller.epoch_key(conversation_id, h.epoch, h.wrapped_key).wrap_for(public[reader_id][0]),
            }
            for h in held
            if h.epoch not in already
        ]
        if rows:
            await conn.execute(insert(epoch_keys), rows)
        return len(rows)

    # --- reading --------------------------------------------------------------------------

    async def read(self, caller: Caller, conversation_id: str, after_seq: int, limit: int) -> MessagePage:
        """Decrypt and verify a page of messages; never consumes (read cursors move with mark_read)."""
        async with self._store.read() as conn:
            if not await self.can_read(conn, caller, conversation_id):
                raise await self._not_readable(conn, caller, conversation_id)
            rows = (
                await conn.execute(
                    select(
                        messages.c.seq,
                        messages.c.epoch,
                        messages.c.sender_id,
                        messages.c.sealed,
                        messages.c.signature,
                        messages.c.created_at,
                        principals.c.name,
                        principals.c.sign_public,
                        epoch_keys.c.wrapped_key,
                    )
                    .join(principals, principals.c.id == messages.c.sender_id)
                    .outerjoin(
                        epoch_keys,
                        and_(
                            epoch_keys.c.conversation_id == messages.c.conversation_id,
                            epoch_keys.c.epoch == messages.c.epoch,
                            epoch_keys.c.principal_id == caller.id,
                        ),
                    )
                    .where(
                        and_(
                            messages.c.conversation_id == conversation_id,
                            messages.c.seq > min(after_seq, MAX_COLUMN_INT),
                        )
                    )
                    .order_by(messages.c.seq)
                    .limit(limit + 1)
                )
            ).all()
        page = [self._open(caller, conversation_id, r) for r in rows[:limit]]
        next_after = page[-1].seq if len(rows) > limit else None
        return MessagePage(conversation_id=conversation_id, messages=page, next_after_seq=next_after)

    def _open(self, caller: Caller, conversation_id: str, row: object) -> Message:
        r = row._mapping  # type: ignore[attr-defined]
        text: str | None = None
        error: str | None = None
        if r["wrapped_key"] is None:
            error = "Sent in a part of the conversation you hold no key for."
        else:
            ctx = MessageContext(
                conversation_id=conversation_id, epoch=r["epoch"], seq=r["seq"], sender_id=r["sender_id"]
            )
            try:
                verify_signature(r["sign_public"], signed_payload(ctx, r["sealed"]), r["signature"])
                key = caller.epoch_key(conversation_id, r["epoch"], r["wrapped_key"])
                text = key.open(r["sealed"], ctx=ctx)
            except DecryptionFailed:
                self._telemetry.encryption_failures.add(1)
                error = f"Message {r['seq']} failed its integrity check (altered, moved or re-attributed); its text is withheld."
        return Message(
            seq=r["seq"],
            sender_id=r["sender_id"],
            sender_name=r["name"],
            sent_at=r["created_at"],
            text=text,
            error=error,
        )

    async def can_read(self, conn: DbConnection, caller: Caller, conversation_id: str) -> bool:
        if await self.is_member(conn, caller.id, conversation_id):
            return True
        for check in self.access_checks:
            if await check(conn, caller, conversation_id):
                return True
        return False

    async def _not_readable(self, conn: DbConnection, caller: Caller, conversation_id: str) -> NotFound:
        """What a caller who may not read a conversation now is told."""
        for why in self.denial_reasons:
            reason = await why(conn, caller, conversation_id)
            if reason:
                return NotFound(reason)  # not readable now: a NotFound, as for anyone else (resources answer it alike)
        return conversation_not_found(conversation_id, caller.role)

    async def readable_by(self, caller: Caller, conversation_id: str) -> bool:
        """Whether `caller` may read the conversation now (member, or a peeker inside its window)."""
        async with self._store.read() as conn:
            return await self.can_read(conn, caller, conversation_id)

    async def get(self, caller: Caller, conversation_id: str) -> Conversation:
        """One conversation's metadata, for members (and live peekers)."""
        async with self._store.read() as conn:
            if not await self.can_read(conn, caller, conversation_id):
                raise await self._not_readable(conn, caller, conversation_id)
            return await self._conversation(conn, caller, conversation_id)

    async def mark_read(self, caller: Caller, conversation_id: str, up_to_seq: int | None) -> int:
        """Move the caller's read cursor forward (never back); returns the new cursor."""
        require_role(caller, "agent")
        async with self._store.write() as conn:
            if not await self.is_member(conn, caller.id, conversation_id):
                raise conversation_not_found(conversation_id, caller.role)
            last_seq = (
                await conn.execute(select(conversations.c.last_seq).where(conversations.c.id == conversation_id))
            ).scalar_one()
            target: int = last_seq if up_to_seq is None else min(up_to_seq, last_seq)
            where = and_(participants.c.conversation_id == conversation_id, participants.c.principal_id == caller.id)
            current: int = (await conn.execute(select(participants.c.read_seq).where(where))).scalar_one()
            if target > current:
                await conn.execute(update(participants).where(where).values(read_seq=target))
            return max(target, current)

    async def list_for(self, caller: Caller, limit: int, cursor: str | None) -> tuple[list[Conversation], str | None]:
        """The caller's active conversations, in id order, a page at a time."""
        require_role(caller, "agent")
        stmt = (
            select(participants.c.conversation_id)
            .where(and_(participants.c.principal_id == caller.id, participants.c.left_at.is_(None)))
            .order_by(participants.c.conversation_id)
            .limit(limit + 1)
        )
        if cursor:
            stmt = stmt.where(participants.c.conversation_id > cursor)
        async with self._store.read() as conn:
            ids = list((await conn.execute(stmt)).scalars())
            page = [await self._conversation(conn, caller, cid) for cid in ids[:limit]]
        return page, (page[-1].id if len(ids) > limit else None)

    async def unread(self, caller: Caller, conversation_id: str | None = None) -> list[Unread]:
        """Conversations with messages from others after the caller's read cursor."""
        require_role(caller, "agent")
        stmt = _UNREAD_ALL if conversation_id is None else _UNREAD_IN
        async with self._store.read() as conn:
            rows = (await conn.execute(stmt, {"caller": caller.id, "conversation": conversation_id})).all()
        return [Unread(conversation_id=r[0], topic=r[1], last_seq=r[2], unread=r[3]) for r in rows]

    async def wait(self, caller: Caller, conversation_id: str | None, timeout: float) -> list[Unread]:
        """Return unread conversations as soon as there are any, or [] when `timeout` passes."""
        require_role(caller, "agent")
        async with self._store.read() as conn:
            if conversation_id is not None and not await self.is_member(conn, caller.id, conversation_id):
                raise conversation_not_found(conversation_id, caller.role)
        deadline = clock.now().timestamp() + timeout
        while True:
            found = await self.unread(caller, conversation_id)
            remaining = deadline - clock.now().timestamp()
            if found or remaining <= 0:
                return found
            watch = frozenset([conversation_id]) if conversation_id else None
            await self._feed.wait(watch, remaining)

    # --- helpers --------------------------------------------------------------------------

    async def is_member(self, conn: DbConnection, principal_id: str, conversation_id: str) -> bool:
        """Is `principal_id` a current (not departed) participant?"""
        row = await conn.execute(_IS_MEMBER, {"principal": principal_id, "conversation": conversation_id})
        return row.first() is not None

    async def _members(self, conn: DbConnection, conversation_id: str) -> set[str]:
        rows = await conn.execute(
            select(participants.c.principal_id).where(
                and_(participants.c.conversation_id == conversation_id, participants.c.left_at.is_(None))
            )
        )
        return set(rows.scalars())

    async def _extra_readers(self, conn: DbConnection, conversation_id: str) -> set[str]:
        readers: set[str] = set()
        for extra in self.extra_readers:
            readers |= await extra(conn, conversation_id)
        return readers

    async def _conversation(self, conn: DbConnection, caller: Caller, conversation_id: str) -> Conversation:
        conv = (await conn.execute(select(conversations).where(conversations.c.id == conversation_id))).one()
        members = sorted(await self._members(conn, conversation_id))
        read_seq = (
            await conn.execute(
                select(participants.c.read_seq).where(
                    and_(
                        participants.c.conversation_id == conversation_id,
                        participants.c.principal_id == caller.id,
                    )
                )
            )
        ).scalar()
        unread = 0
        if read_seq is not None:
            unread = (
                await conn.execute(
                    select(func.count(messages.c.id)).where(
                        and_(
                            messages.c.conversation_id == conversation_id,
                            messages.c.seq > read_seq,
                            messages.c.sender_id != caller.id,
                        )
                    )
                )
            ).scalar_one()
        return Conversation(
            id=conv.id,
            topic=conv.topic,
            participants=tuple(members),
            created_by=conv.created_by,
            created_at=conv.created_at,
            last_seq=conv.last_seq,
            last_message_at=conv.last_message_at,
            unread=unread,
        )
