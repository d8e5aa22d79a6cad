"""Money is integer cents inside; decimal strings ("5.00") at the edges. No floats anywhere."""

from __future__ import annotations

from decimal import Decimal

from agentchat_mcp.errors import InvalidInput


def to_cents(amount: Decimal | str) -> int:
    """'2.50' -> 250; refuses fractions of a cent, NaN and infinity."""
    value = Decimal(amount) if isinstance(amount, str) else amount
    if not value.is_finite():
        raise InvalidInput("Amounts must be finite numbers like '2.50'.")
    cents = value * 100
    if cents != cents.to_integral_value():
        raise InvalidInput(f"{amount} has fractions of a cent; use at most two decimals.")
    return int(cents)


def fmt(cents: int) -> str:
    """250 -> '2.50', -5 -> '-0.05'."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole}.{part:02d}"
