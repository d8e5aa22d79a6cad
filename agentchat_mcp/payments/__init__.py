"""Payment providers: the embedded `ledger` provider (offline) and `stripe`; the only importer of stripe.

Importing this package does not import stripe (slow to import, and unused offline):
`build_provider` loads the Stripe module only when the settings ask for it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agentchat_mcp.payments.provider import LedgerProvider, PaymentProvider

if TYPE_CHECKING:
    from agentchat_mcp.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["LedgerProvider", "PaymentProvider", "build_provider", "check_settings"]


STRIPE_KEY_MISSING = (
    "AGENTCHAT_PAYMENTS=stripe needs STRIPE_API_KEY (a Stripe secret key, sk_...): set it, or unset "
    "AGENTCHAT_PAYMENTS to use the embedded ledger"
)


def check_settings(settings: Settings) -> None:
    """Refuse payment settings that cannot work (ConfigurationError), before anything starts."""
    from agentchat_mcp.settings import ConfigurationError

    if settings.payments == "stripe" and settings.stripe_api_key is None:
        raise ConfigurationError(STRIPE_KEY_MISSING)


def build_provider(settings: Settings) -> PaymentProvider:
    """The provider the settings choose; Stripe needs STRIPE_API_KEY (and STRIPE_WEBHOOK_SECRET for credit)."""
    check_settings(settings)
    if settings.payments != "stripe":
        return LedgerProvider()
    assert settings.stripe_api_key is not None
    if settings.stripe_webhook_secret is None:
        logger.warning("STRIPE_WEBHOOK_SECRET is not set: checkout payments will never be credited")
    from agentchat_mcp.payments.stripe_provider import StripeProvider

    return StripeProvider(settings.stripe_api_key.get_secret_value(), api_base=settings.stripe_api_base)
