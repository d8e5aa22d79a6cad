"""Payment providers: the embedded `ledger` provider (offline) and `stripe`; the only importer of stripe.

Importing this package does not import stripe (slow to import, and unused offline):
`build_provider` loads the Stripe module only when the settings ask for it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agentchat_mcp.errors import PaymentUnavailable
from agentchat_mcp.payments.provider import LedgerProvider, PaymentProvider

if TYPE_CHECKING:
    from agentchat_mcp.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["LedgerProvider", "PaymentProvider", "build_provider"]


class _Unconfigured(LedgerProvider):
    """payments=stripe without STRIPE_API_KEY: every card operation says what the operator must fix."""

    name = "stripe"

    def _offline(self) -> PaymentUnavailable:
        return PaymentUnavailable("Card payments are not configured on this server (STRIPE_API_KEY is unset).")


def build_provider(settings: Settings) -> PaymentProvider:
    """The provider the settings choose; Stripe needs STRIPE_API_KEY (and STRIPE_WEBHOOK_SECRET for credit)."""
    if settings.payments != "stripe":
        return LedgerProvider()
    if settings.stripe_api_key is None:
        logger.error("AGENTCHAT_PAYMENTS=stripe but STRIPE_API_KEY is not set: card payments are disabled")
        return _Unconfigured()
    if settings.stripe_webhook_secret is None:
        logger.warning("STRIPE_WEBHOOK_SECRET is not set: checkout payments will never be credited")
    from agentchat_mcp.payments.stripe_provider import StripeProvider

    return StripeProvider(settings.stripe_api_key.get_secret_value(), api_base=settings.stripe_api_base)
