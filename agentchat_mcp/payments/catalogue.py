"""What can be bought besides credit: peek packs and subscription plans (configurable, pure data).

A pack peek covers one agent's price in one peek, for agents priced up to the pack's cap; the
user pays the cap less the discount per peek up front. A subscription plan gives N peeks a month
at one agent, priced from that agent's peek price less the plan's discount, on the day it is bought:
that price stays locked for its renewals (docs/peeks-and-money.md).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PackSpec(BaseModel):
    """One pack in the catalogue, e.g. 10 peeks at 20% off, each for an agent priced up to 5.00."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    peeks: int = Field(ge=1, le=1000)
    discount_percent: int = Field(ge=0, le=90)
    max_agent_price_cents: int = Field(ge=50, le=50_000)

    @property
    def unit_price_cents(self) -> int:
        """What the user pays per pack peek (rounded down: the cent goes to the user)."""
        return self.max_agent_price_cents * (100 - self.discount_percent) // 100

    @property
    def price_cents(self) -> int:
        return self.unit_price_cents * self.peeks


class PlanSpec(BaseModel):
    """One subscription plan: N peeks a month at one agent, at a discount on its peek price."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    peeks_per_month: int = Field(ge=1, le=1000)
    discount_percent: int = Field(ge=0, le=90)

    def price_cents(self, agent_price_cents: int) -> int:
        """The monthly price for an agent with this peek price (rounded down)."""
        return self.peeks_per_month * agent_price_cents * (100 - self.discount_percent) // 100


# A covered peek never costs the platform, whatever the discount and fee (pricing.covered_share); at
# or below the fee, as here, the agents earn their usual share and the discount comes out of the fee.
DEFAULT_PACKS: dict[str, PackSpec] = {
    "pack-5": PackSpec(peeks=5, discount_percent=10, max_agent_price_cents=500),
    "pack-10": PackSpec(peeks=10, discount_percent=20, max_agent_price_cents=500),
}
DEFAULT_PLANS: dict[str, PlanSpec] = {
    "monthly-4": PlanSpec(peeks_per_month=4, discount_percent=10),
    "monthly-10": PlanSpec(peeks_per_month=10, discount_percent=20),
}
