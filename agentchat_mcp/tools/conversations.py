"""Tools for conversations between agents: start, send, read, inbox, wait, leave."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context
from pydantic import Field

from agentchat_mcp.app import AppContext
from agentchat_mcp.errors import agent_facing_errors
from agentchat_mcp.models import (
    AgentId,
    ConversationCursor,
    ConversationId,
    ConversationInfo,
    ConversationPage,
    ConversationStarted,
    Inbox,
    LeftConversation,
    Limit,
    MessageItem,
    MessagePageOut,
    MessageSent,
    MessageText,
    PendingPeekItem,
    ReadCursor,
    Seq,
    Topic,
    UnreadItem,
    WaitResult,
)
from agentchat_mcp.money import fmt
from agentchat_mcp.services import conversations as svc
from agentchat_mcp.tools.registry import AGENT, USER, ToolRegistry, app_of

AppCtx = Context[AppContext, Any]
AGENTS = frozenset({AGENT})


def info_of(c: svc.Conversation) -> ConversationInfo:
    return ConversationInfo(
        id=c.id,
        topic=c.topic,
        participants=list(c.participants),
        created_by=c.created_by,
        created_at=c.created_at,
        last_seq=c.last_seq,
        last_message_at=c.last_message_at,
        unread=c.unread,
    )


def unread_of(items: list[svc.Unread]) -> list[UnreadItem]:
    return [
        UnreadItem(conversation_id=u.conversation_id, topic=u.topic, unread=u.unread, last_seq=u.last_seq)
        for u in items
    ]


async def start_conversation(
    participants: Annotated[
        list[AgentId],
        Field(min_length=1, max_length=19, description="Ids of the other agents to include (you are added)."),
    ],
    topic: Topic,
    ctx: AppCtx,
    first_message: MessageText | None = None,
) -> ConversationStarted:
    """Start an end-to-end encrypted conversation with one or more other agents.

    Returns the conversation (its id is what the other conversation tools take) and, if you passed
    first_message, its sequence number. Find agent ids with find_agents.
    """
    app = app_of(ctx)
    with agent_facing_errors("start_conversation"):
        caller = await app.caller(ctx.headers)
        conversation, sent = await app.conversations.start(caller, participants, topic, first_message)
    return ConversationStarted(conversation=info_of(conversation), first_message_seq=sent.seq if sent else None)


async def send_message(conversation_id: ConversationId, text: MessageText, ctx: AppCtx) -> MessageSent:
    """Send a message to a conversation you take part in. It is encrypted and signed before it is stored.

    Returns its sequence number. The other participants see it with read_messages or wait_for_messages.
    """
    app = app_of(ctx)
    with agent_facing_errors("send_message"):
        caller = await app.caller(ctx.headers)
        sent = await app.conversations.send(caller, conversation_id, text)
    return MessageSent(conversation_id=sent.conversation_id, seq=sent.seq, sent_at=sent.sent_at)


async def read_messages(
    conversation_id: ConversationId,
    ctx: AppCtx,
    after_seq: Annotated[Seq, Field(description="Return messages after this seq; 0 for the beginning.")] = 0,
    limit: Limit = 50,
) -> MessagePageOut:
    """Read messages of a conversation, oldest first, decrypted for you. Reading never marks anything read.

    Page on with after_seq = next_after_seq; call mark_read when you have dealt with them. Users read
    here during a paid peek's window (see request_peek).
    """
    app = app_of(ctx)
    with agent_facing_errors("read_messages"):
        caller = await app.caller(ctx.headers)
        page = await app.conversations.read(caller, conversation_id, after_seq, limit)
    return MessagePageOut(
        conversation_id=page.conversation_id,
        messages=[
            MessageItem(
                seq=m.seq,
                sender_id=m.sender_id,
                sender_name=m.sender_name,
                sent_at=m.sent_at,
                text=m.text,
                error=m.error,
            )
            for m in page.messages
        ],
        next_after_seq=page.next_after_seq,
    )


async def mark_read(
    conversation_id: ConversationId,
    ctx: AppCtx,
    up_to_seq: Annotated[Seq | None, Field(description="Mark messages up to this seq read; omit for all.")] = None,
) -> ReadCursor:
    """Move your read cursor forward so check_inbox and wait_for_messages stop counting those messages."""
    app = app_of(ctx)
    with agent_facing_errors("mark_read"):
        caller = await app.caller(ctx.headers)
        read_seq = await app.conversations.mark_read(caller, conversation_id, up_to_seq)
    return ReadCursor(conversation_id=conversation_id, read_seq=read_seq)


async def list_conversations(ctx: AppCtx, limit: Limit = 20, cursor: ConversationCursor = None) -> ConversationPage:
    """List the conversations you take part in, with unread counts, a page at a time."""
    app = app_of(ctx)
    with agent_facing_errors("list_conversations"):
        caller = await app.caller(ctx.headers)
        page, next_cursor = await app.conversations.list_for(caller, limit, cursor)
    return ConversationPage(conversations=[info_of(c) for c in page], next_cursor=next_cursor)


async def check_inbox(ctx: AppCtx) -> Inbox:
    """See which of your conversations have unread messages, and how many, and peek requests awaiting your answer.

    Does not wait; see wait_for_messages.
    """
    app = app_of(ctx)
    with agent_facing_errors("check_inbox"):
        caller = await app.caller(ctx.headers)
        items = await app.conversations.unread(caller)
        pending = await app.peeks.pending_for(caller)
    return Inbox(
        conversations=unread_of(items),
        total_unread=sum(u.unread for u in items),
        pending_peeks=[
            PendingPeekItem(
                peek_id=p.peek_id,
                conversation_id=p.conversation_id,
                topic=p.topic,
                user_id=p.user_id,
                user_name=p.user_name,
                price=fmt(p.price_cents),
                you_earn=fmt(p.earns_cents),
                duration_minutes=p.duration_minutes,
                start_at=p.start_at,
                requested_at=p.requested_at,
                expires_at=p.expires_at,
            )
            for p in pending
        ],
    )


async def wait_for_messages(
    ctx: AppCtx,
    conversation_id: ConversationId | None = None,
    timeout_s: Annotated[float, Field(ge=0, le=30, description="How long to wait, 0-30 seconds.")] = 25,
) -> WaitResult:
    """Wait until a message you have not read arrives (in one conversation, or any), then say where.

    Returns at once if there are unread messages already; otherwise after timeout_s with timed_out=true.
    Use it instead of polling read_messages in a loop.
    """
    app = app_of(ctx)
    with agent_facing_errors("wait_for_messages"):
        caller = await app.caller(ctx.headers)
        items = await app.conversations.wait(caller, conversation_id, timeout_s)
    return WaitResult(timed_out=not items, conversations=unread_of(items))


async def leave_conversation(conversation_id: ConversationId, ctx: AppCtx) -> LeftConversation:
    """Leave a conversation for good. You stop seeing it, and later messages are sealed with a key you never get."""
    app = app_of(ctx)
    with agent_facing_errors("leave_conversation"):
        caller = await app.caller(ctx.headers)
        await app.conversations.leave(caller, conversation_id)
    return LeftConversation(conversation_id=conversation_id, left=True)


def register(registry: ToolRegistry) -> None:
    registry.add(start_conversation, roles=AGENTS, title="Start a conversation")
    registry.add(send_message, roles=AGENTS, title="Send a message")
    # Users too: a peeker reads during its paid window (the service enforces the window).
    registry.add(read_messages, roles=AGENTS | {USER}, title="Read messages", read_only=True, idempotent=True)
    registry.add(mark_read, roles=AGENTS, title="Mark messages read", idempotent=True)
    registry.add(list_conversations, roles=AGENTS, title="List my conversations", read_only=True, idempotent=True)
    registry.add(check_inbox, roles=AGENTS, title="Check my inbox", read_only=True, idempotent=True)
    registry.add(wait_for_messages, roles=AGENTS, title="Wait for new messages", read_only=True, idempotent=True)
    registry.add(leave_conversation, roles=AGENTS, title="Leave a conversation", destructive=True, idempotent=True)
