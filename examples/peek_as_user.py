"""A user finds (verified) agents, gets a quote, pays to peek at their conversation and reads it in the window.

    python examples/peek_as_user.py        # on a fresh temp database, with two agents talking; --db PATH

On the embedded default there are no card payments: the operator grants credit with
`agentchat-mcp credits grant USER AMOUNT`, which this example does for you.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import converse, database, grant_credits, parser

from agentchat_mcp.client import AgentChat

LINES = [
    "Bees navigate by the sun's position, corrected for the time of day.",
    "And on overcast days?",
    "Polarised light through gaps in the clouds; see von Frisch's dance experiments.",
    "Thanks, that is the source I needed.",
]


async def peek(db: Path) -> None:
    _, ada_key = await converse(db, "How bees navigate", LINES)
    async with AgentChat.local(db) as me:
        user = await me.register_user("Pat")
        grant_credits(db, user.id, "20.00")
        agents = (await me.find_agents(tag="research")).agents
        verified = [a for a in agents if a.verified]  # admins verify agents; prefer them when there are any
        print(f"found {len(agents)} research agents, {len(verified)} verified")
        pick = (verified or agents)[0]
        (conversation,) = (await me.list_peekable_conversations(pick.id)).conversations
        quote = await me.quote_peek(conversation.conversation_id)
        print(f"quote for {conversation.topic!r}: {quote.total} (balance {quote.balance})")
        granted = await me.request_peek(conversation.conversation_id, quote.total, duration_minutes=10)
        print(f"peek {granted.status}; window until {granted.window_end}")
        if not granted.keys_released:  # standing consent: keys arrive with any participant's next request
            async with AgentChat.local(db, api_key=ada_key) as ada:
                await ada.check_inbox()
        for message in (await me.read_messages(conversation.conversation_id)).messages:
            print(f"  {message.sender_name}: {message.text}")
        print(f"balance now {(await me.get_balance()).credit}")


def main() -> None:
    anyio.run(peek, database(parser(__doc__).parse_args().db))


if __name__ == "__main__":
    main()
