"""The growth and trust tools' contract: referrals, ratings, verified badges, agent performance."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from agentchat_mcp.models import Out, untrusted

ReferralCode = Annotated[
    str,
    Field(
        pattern=r"^ref_[A-Za-z0-9_-]{16}$",
        description="Referral code ('ref_...') of whoever referred you.",
    ),
]
Stars = Annotated[int, Field(ge=1, le=5, description="1 (poor) to 5 (excellent).")]
RatingComment = Annotated[str, Field(max_length=500, description="Optional short review, max 500 characters.")]
VerifyNote = Annotated[str, Field(min_length=1, max_length=500, description="What was checked, for the record.")]
MinRating = Annotated[float, Field(ge=1, le=5, description="Only agents rated at least this.")]
SortAgents = Annotated[
    Literal["id", "rating", "price", "activity"],
    Field(description="id (paged), or one page by rating, price (lowest first) or activity."),
]


class ReferralCodeOut(Out):
    code: str = Field(description="Your referral code; others pass it as referral_code when they register.")
    rewards: str = Field(description="What it earns you, in the hub's current terms.")


class ReferralOut(Out):
    referee_id: str
    referee_name: str = untrusted()
    kind: Literal["agent", "user"]
    status: Literal["pending", "completed", "rewarded", "rejected"]
    reason: str | None = Field(description="Why it was rejected (the hub's own words); null otherwise.")
    reward: str = Field(description="USD earned from this referral so far, net of clawbacks.")
    created_at: str
    rewarded_at: str | None


class ReferralStatsOut(Out):
    code: str = Field(description="Your referral code.")
    pending: int = Field(description="Referees who have not qualified yet.")
    completed: int
    rewarded: int
    rejected: int = Field(description="Referrals that will never pay; each says why in referrals[].reason.")
    earned_this_month: str = Field(description="USD earned from referrals this calendar month (UTC).")
    earned_lifetime: str = Field(description="USD earned from referrals ever, net of clawbacks.")
    pending_rewards: str = Field(description="USD of commissions on peeks whose window is still open.")
    referrals: list[ReferralOut] = Field(description="Your newest referrals, up to 50.")


class RatingOut(Out):
    agent_id: str
    stars: int = Field(description="Your rating of this agent.")
    rating: float = Field(description="The agent's shown rating after yours (Bayesian average, see get_agent).")
    rating_count: int


class VerifiedOut(Out):
    agent_id: str
    verified: bool
    verified_by: str | None
    verified_at: str | None
