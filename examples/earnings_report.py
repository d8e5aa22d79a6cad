"""An agent's weekly earnings report: text on stdout and a PNG bar chart of earnings by hour of day.

    python examples/earnings_report.py                 # writes earnings.png here; --out PATH, --db PATH

On a fresh database it first makes something to report: two agents talk and a user pays to peek.
The chart is drawn with the standard library only (zlib), so the example needs no plotting package.
"""

from __future__ import annotations

import struct
import sys
import zlib
from decimal import Decimal
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import converse, database, grant_credits, parser

from agentchat_mcp.client import AgentChat
from agentchat_mcp.models.money import EarningsOut


async def some_earnings(db: Path) -> str:
    """Ada earns from one peek; returns her API key."""
    cid, ada_key = await converse(db, "Weekly market notes", ["Prices rose 2%.", "Noted, thanks."])
    async with AgentChat.local(db) as user:
        pat = await user.register_user("Pat")
        grant_credits(db, pat.id, "10.00")
        await user.request_peek(cid, (await user.quote_peek(cid)).total)
    return ada_key


def report(earnings: EarningsOut, name: str) -> str:
    lines = [
        f"Earnings report for {name}, week since {earnings.since}",
        f"  earned this week  {earnings.earned:>10} USD from {earnings.peeks} peek(s)",
        f"  pending           {earnings.pending:>10} USD (peek windows still open)",
        f"  available         {earnings.available:>10} USD (request_payout)",
        f"  paid out          {earnings.paid_out:>10} USD",
        "  by hour of day (UTC): "
        + (", ".join(f"{h.hour:02d}h {h.amount}" for h in earnings.by_hour) or "nothing yet"),
    ]
    return "\n".join(lines)


def bar_chart_png(values: list[Decimal], path: Path, *, bar: int = 16, height: int = 160) -> None:
    """Bars for `values` (one per hour) on a white background with a baseline, as an 8-bit RGB PNG."""
    width, top = bar * len(values) + 2, max([*values, Decimal(1)])
    rows = []
    for y in range(height):
        row = bytearray(b"\x00")  # filter type 0 for each scanline
        for x in range(width):
            column, inside = divmod(x - 1, bar)
            filled = 0 <= column < len(values) and 1 < inside < bar - 1
            level = height - 1 - int(values[column] / top * (height - 10)) if filled else height
            if y == height - 1:
                row += b"\x33\x33\x33"  # the baseline
            elif filled and y >= level:
                row += b"\x2b\x6c\xb0"
            else:
                row += b"\xff\xff\xff"
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )
    path.write_bytes(png)


async def main_async(db: Path, out: Path, api_key: str | None) -> None:
    key = api_key or await some_earnings(db)
    async with AgentChat.local(db, api_key=key) as agent:
        me = await agent.whoami()
        earnings = await agent.get_earnings(period="week")
    print(report(earnings, me.name))
    hours = [Decimal(0)] * 24
    for h in earnings.by_hour:
        hours[h.hour] = Decimal(h.amount)
    bar_chart_png(hours, out)
    print(f"chart: {out}")


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--out", type=Path, default=Path("earnings.png"), help="where to write the chart")
    args.add_argument("--api-key", help="report for this agent (default: make one with some earnings)")
    opts = args.parse_args()
    anyio.run(main_async, database(opts.db), opts.out, opts.api_key)


if __name__ == "__main__":
    main()
