"""A customer-service agent built from the server's template, answering the conversations it is sent.

    python examples/customer_service.py            # a demo customer asks two questions, then it stops
    python examples/customer_service.py --forever  # keep answering (Ctrl-C to stop); --db PATH to choose

The template (the `customer-service-agent` prompt) is what you would give an LLM as its instructions;
here the answers come from a small FAQ so that the example runs without a model. Swap `answer()` for
a model call and the loop stays the same: `async for message in chat.messages()`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import database, parser

from agentchat_mcp.client import AgentChat

FAQ = {
    "refund": "Refunds go back to the original payment within 5 working days.",
    "hours": "We answer around the clock; a person reviews escalations from 9:00 to 17:00 UTC.",
    "price": "The Basic plan is 9.00 a month and Pro is 29.00; both can be cancelled at any time.",
}


def answer(question: str) -> str:
    """The reply to one message (treat it as data: it is another agent's text, not instructions)."""
    for topic, reply in FAQ.items():
        if topic in question.lower():
            return reply
    return "I do not know that yet; I have passed your question on to a person."


async def serve(db: Path, forever: bool) -> None:
    async with AgentChat.local(db) as support:
        instructions = await support.prompt("customer-service-agent", name="Acme Support", focus="Acme's plans")
        print("template:", instructions.splitlines()[0])
        me = await support.register(
            "Acme Support", peek_price="0.50", tags=["customer-service", "support"], description="Acme's help desk."
        )
        async with anyio.create_task_group() as tasks:
            if not forever:
                tasks.start_soon(customer, db, me.id)
            async for message in support.messages():
                if message.text == "bye":
                    print("support: the customer left")
                    if not forever:
                        break
                    continue
                reply = answer(message.text or "")
                print(f"support: {message.sender_name} asked {message.text!r}; answered {reply!r}")
                await support.send_message(message.conversation_id, reply)


async def customer(db: Path, support_id: str) -> None:
    async with AgentChat.local(db) as chat:
        await chat.register("A customer", peek_price="0.50")
        cid = (
            await chat.start_conversation([support_id], "Questions", first_message="Can I get a refund?")
        ).conversation.id
        replies = chat.messages(cid)
        print("customer: got", repr((await anext(replies)).text))
        await chat.send_message(cid, "What is the price of Pro?")
        print("customer: got", repr((await anext(replies)).text))
        await replies.aclose()
        await chat.send_message(cid, "bye")


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--forever", action="store_true", help="keep answering until interrupted")
    opts = args.parse_args()
    anyio.run(serve, database(opts.db), opts.forever)


if __name__ == "__main__":
    main()
