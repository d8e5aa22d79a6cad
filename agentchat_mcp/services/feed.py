"""Change notifications: who should wake up when a message lands, or a peek request waits.

In-process, a send publishes at once. Writes by other processes are found through the store's
change signal, then by reading the new rows (messages, and conversation_changes for news that is
not a message): on SQLite by polling `PRAGMA data_version` (cheap: no query runs unless something
changed), on PostgreSQL by LISTEN/NOTIFY, which wakes this feed on every commit of any replica
(store/postgres.py). Writers are serialized on both stores, so ids come in commit order and a
scan past the last id seen misses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from sqlalchemy import func, select

from agentchat_mcp.store import DbConnection, Store
from agentchat_mcp.store.tables import conversation_changes, messages

logger = logging.getLogger(__name__)
Listener = Callable[[str], Awaitable[None]]


@dataclass
class _Waiter:
    conversations: frozenset[str] | None  # None: any conversation
    event: anyio.Event = field(default_factory=anyio.Event)


# Under a busy hub most new rows are this process's own; when the newest id shows that all are,
# the poll is one indexed lookup instead of a read of every new row.
_NEWEST_MESSAGE = select(func.max(messages.c.id))
_NEWEST_CHANGE = select(func.max(conversation_changes.c.id))
KEEP_CHANGES = 10_000  # conversation_changes rows kept behind the newest: far more than a poll ever finds


class ChangeFeed:
    """Fans 'conversation X has a new message' out to waiters and listeners."""

    def __init__(self, store: Store, poll_seconds: float) -> None:
        self._store = store
        self._poll_seconds = poll_seconds
        self._waiters: list[_Waiter] = []
        self._listeners: list[Listener] = []
        self._last_message_id = 0
        self._local_ids: set[int] = set()
        self._last_change_id = 0
        self._local_change_ids: set[int] = set()

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(conversation_id)` for every new message (resource subscriptions)."""
        self._listeners.append(listener)

    async def published(self, conversation_id: str, message_id: int) -> None:
        """A message this process wrote (after commit)."""
        self._local_ids.add(message_id)
        await self._fan_out(conversation_id)

    async def record(self, conn: DbConnection, conversation_id: str, kind: str, now: str) -> int:
        """Write news that is not a message in the caller's transaction; other processes find it by
        its id. Returns the id, for `touched` once the transaction has committed."""
        ran = await conn.run(
            conversation_changes.insert(), {"conversation_id": conversation_id, "kind": kind, "created_at": now}
        )
        assert ran.inserted_id is not None
        if ran.inserted_id % 1_000 == 0:  # now and then, drop what no poll will look at again
            await conn.execute(
                conversation_changes.delete().where(conversation_changes.c.id <= ran.inserted_id - KEEP_CHANGES)
            )
        return ran.inserted_id

    async def touched(self, conversation_id: str, change_id: int) -> None:
        """News this process recorded (after commit): wake waiters and subscribers here at once."""
        self._local_change_ids.add(change_id)
        await self._fan_out(conversation_id)

    async def wait(self, conversations: frozenset[str] | None, timeout: float) -> bool:
        """Block until one of `conversations` (or any) changes; False on timeout."""
        waiter = _Waiter(conversations)
        self._waiters.append(waiter)
        try:
            with anyio.move_on_after(timeout):
                await waiter.event.wait()
                return True
            return False
        finally:
            self._waiters.remove(waiter)

    async def _fan_out(self, conversation_id: str) -> None:
        for waiter in self._waiters:
            if waiter.conversations is None or conversation_id in waiter.conversations:
                waiter.event.set()
        for listener in self._listeners:
            try:
                await listener(conversation_id)
            except Exception:  # one broken subscriber must not stop the others
                logger.exception("change listener failed")

    async def run(self) -> None:
        """Watch for other processes' writes until cancelled. A failing database (a PostgreSQL restart,
        an exhausted pool) is logged and retried: this loop ending would end the hub's lifespan."""
        while True:
            try:
                async with self._store.read() as conn:
                    self._last_message_id = (await conn.execute(_NEWEST_MESSAGE)).scalar() or 0
                    self._last_change_id = (await conn.execute(_NEWEST_CHANGE)).scalar() or 0
                break
            except Exception:
                logger.warning("the change feed cannot read the database yet; retrying", exc_info=True)
                await anyio.sleep(max(self._poll_seconds, 1.0))
        version = self._store.data_version()
        while True:
            # SQLite: sleeps the poll interval. PostgreSQL: returns on the next commit on any replica.
            await self._store.wait_for_change(self._poll_seconds)
            current = self._store.data_version()
            if current == version:
                continue
            try:
                await self._scan()
            except Exception:  # the version stays unseen: the next pass scans again, from the same ids
                logger.warning("the change feed could not read new changes; retrying", exc_info=True)
                await anyio.sleep(max(self._poll_seconds, 1.0))
                continue
            version = current

    async def _scan(self) -> None:
        await self._scan_messages()
        await self._scan_changes()

    async def _scan_changes(self) -> None:
        newest = await self._store.quick_first(_NEWEST_CHANGE, {})
        top = int(newest[0]) if newest and newest[0] is not None else 0
        if top <= self._last_change_id:
            return
        async with self._store.read() as conn:
            rows = (
                await conn.execute(
                    select(conversation_changes.c.id, conversation_changes.c.conversation_id)
                    .where(conversation_changes.c.id > self._last_change_id)
                    .order_by(conversation_changes.c.id)
                )
            ).all()
        changed: list[str] = []
        for row in rows:
            self._last_change_id = max(self._last_change_id, row.id)
            if row.id in self._local_change_ids:
                self._local_change_ids.discard(row.id)
            elif row.conversation_id not in changed:
                changed.append(row.conversation_id)
        for conversation_id in changed:
            await self._fan_out(conversation_id)

    async def _scan_messages(self) -> None:
        newest = await self._store.quick_first(_NEWEST_MESSAGE, {})
        top = int(newest[0]) if newest and newest[0] is not None else 0
        if top <= self._last_message_id:
            return
        mine = {i for i in self._local_ids if self._last_message_id < i <= top}
        if len(mine) == top - self._last_message_id:  # every new message is one we published already
            self._local_ids -= mine
            self._last_message_id = top
            return
        async with self._store.read() as conn:
            rows = (
                await conn.execute(
                    select(messages.c.id, messages.c.conversation_id)
                    .where(messages.c.id > self._last_message_id)
                    .order_by(messages.c.id)
                )
            ).all()
        changed: list[str] = []
        for row in rows:
            self._last_message_id = max(self._last_message_id, row.id)
            if row.id in self._local_ids:
                self._local_ids.discard(row.id)
            elif row.conversation_id not in changed:
                changed.append(row.conversation_id)
        for conversation_id in changed:
            await self._fan_out(conversation_id)
