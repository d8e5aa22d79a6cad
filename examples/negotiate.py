"""Two agents negotiate a price, each in its own process, with the Python SDK.

    python examples/negotiate.py              # on a fresh temp database; --db PATH to choose one

The seller and the buyer are separate processes (this file, started with --role), each with its own
`agentchat-mcp` server process on the same SQLite file: the embedded default, no hub needed. Messages
are plain text: "OFFER 60.00", "COUNTER 90.00", "DEAL 80.00".
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import database, parser

from agentchat_mcp.client import AgentChat

CENT = Decimal("0.01")


def price(text: str | None) -> tuple[str, Decimal]:
    word, amount = (text or "NONE 0").split()[:2]
    return word, Decimal(amount)


def halfway(a: Decimal, b: Decimal) -> Decimal:
    return ((a + b) / 2).quantize(CENT)


async def seller(db: Path, ready: Path) -> None:
    ask, floor = Decimal("120.00"), Decimal("75.00")
    async with AgentChat.local(db) as chat:
        me = await chat.register("Widget seller", peek_price="1.00", tags=["widgets"], description="Sells widgets.")
        ready.write_text(me.id)
        async for message in chat.messages():
            _, offer = price(message.text)
            if offer >= floor and ask - offer <= Decimal("5.00"):
                await chat.send_message(message.conversation_id, f"DEAL {offer}")
                print(f"seller: deal at {offer}", flush=True)
                return
            ask = max(floor, halfway(ask, offer))
            print(f"seller: offered {offer}, counter {ask}", flush=True)
            await chat.send_message(message.conversation_id, f"COUNTER {ask}")


async def buyer(db: Path) -> None:
    bid, ceiling = Decimal("60.00"), Decimal("110.00")
    async with AgentChat.local(db) as chat:
        await chat.register("Widget buyer", peek_price="1.00", description="Buys widgets.")
        (seller_profile,) = (await chat.find_agents(tag="widgets")).agents
        started = await chat.start_conversation([seller_profile.id], "100 widgets", first_message=f"OFFER {bid}")
        print(f"buyer: asked {seller_profile.name} for 100 widgets, offering {bid}", flush=True)
        async for message in chat.messages(started.conversation.id):
            word, amount = price(message.text)
            if word == "DEAL":
                print(f"buyer: bought at {amount}", flush=True)
                return
            bid = min(ceiling, halfway(bid, amount))
            print(f"buyer: counter {amount}, offer {bid}", flush=True)
            await chat.send_message(started.conversation.id, f"OFFER {bid}")


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--role", choices=["seller", "buyer"], help=argparse.SUPPRESS)
    opts = args.parse_args()
    db = database(opts.db)
    ready = db.with_suffix(".seller")
    if opts.role == "seller":
        anyio.run(seller, db, ready)
        return
    if opts.role == "buyer":
        anyio.run(buyer, db)
        return
    me = [sys.executable, __file__, "--db", str(db), "--role"]
    ready.unlink(missing_ok=True)
    with subprocess.Popen([*me, "seller"]) as sell:
        deadline = time.monotonic() + 120
        while not ready.exists():  # the seller is registered and listening
            if sell.poll() is not None or time.monotonic() > deadline:
                sys.exit("the seller did not start")
            time.sleep(0.1)
        buy = subprocess.run([*me, "buyer"], check=False)
        sell.wait(timeout=120)
    sys.exit(buy.returncode or sell.returncode)


if __name__ == "__main__":
    main()
