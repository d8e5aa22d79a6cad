"""The PaymentProvider protocol, the plain values it returns, and the offline `ledger` provider.

Services talk to a provider only through this protocol, so they never see a Stripe object and
tests can run the whole money path offline. Every call that makes something happen at the
provider takes our own idempotency key, built from the business id (`topup:pay_...:authorize`),
so a retry after a crash or a timeout can never charge or pay twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from agentchat_mcp.errors import PaymentUnavailable

OFFLINE = (
    "This server runs the offline ledger provider: it takes no card payments. Credit is granted by the "
    "hub's admins (ask one); you can still pay for packs and subscriptions from your credit with "
    "pay_with='credit'."
)


class RequestRejected(PaymentUnavailable):
    """The provider refused the request itself (unknown account, bad parameters): a retry will not help."""


@dataclass(frozen=True)
class Intent:
    """A PaymentIntent, as much of it as the services need."""

    id: str
    status: str  # requires_capture | succeeded | requires_action | requires_payment_method | canceled | processing
    amount_cents: int
    amount_received_cents: int
    customer: str | None = None
    payment_method: str | None = None
    latest_charge: str | None = None
    amount_refunded_cents: int = 0
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckoutLink:
    """A hosted payment page the buyer opens in a browser."""

    id: str
    url: str


@dataclass(frozen=True)
class RemoteSubscription:
    id: str
    status: str  # incomplete | active | past_due | canceled | ...
    current_period_start: int  # unix seconds
    current_period_end: int
    latest_invoice_paid: bool
    latest_invoice_id: str | None = None
    latest_invoice_intent: str | None = None  # the PaymentIntent that paid it (refunds arrive by it)


@dataclass(frozen=True)
class Transfer:
    id: str
    amount_cents: int


CheckoutMode = Literal["payment", "subscription"]


class PaymentProvider(Protocol):
    """What the services need from a payment provider. Errors are AgentChatErrors, never SDK errors."""

    name: str
    takes_cards: bool  # False: no customers, intents or checkout; payouts are only recorded

    async def create_customer(self, *, principal_id: str, name: str, idempotency_key: str) -> str: ...

    async def save_payment_method(self, *, customer_id: str, payment_method_id: str, idempotency_key: str) -> None:
        """Attach a payment method to the customer and make it the default for invoices."""

    async def authorize(
        self,
        *,
        customer_id: str,
        payment_method_id: str,
        amount_cents: int,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> Intent:
        """Create and confirm a manual-capture PaymentIntent off-session. Declines raise PaymentDeclined."""

    async def capture(self, *, intent_id: str, idempotency_key: str) -> Intent: ...

    async def cancel(self, *, intent_id: str, idempotency_key: str) -> Intent: ...

    async def retrieve_intent(self, intent_id: str) -> Intent:
        """The intent as the provider sees it now (with its latest charge's refunds)."""

    async def refund(self, *, intent_id: str, amount_cents: int, idempotency_key: str) -> str: ...

    async def checkout(
        self,
        *,
        mode: CheckoutMode,
        customer_id: str,
        amount_cents: int,
        product_name: str,
        metadata: dict[str, str],
        success_url: str,
        cancel_url: str,
        idempotency_key: str,
    ) -> CheckoutLink:
        """A hosted Checkout page: a one-off payment, or a monthly subscription at `amount_cents`."""

    async def ensure_plan(self, *, plan_id: str, amount_cents: int, product_name: str, idempotency_key: str) -> str:
        """A monthly plan with this id and price (created once)."""

    async def subscribe(
        self, *, customer_id: str, plan_id: str, metadata: dict[str, str], idempotency_key: str
    ) -> RemoteSubscription: ...

    async def cancel_subscription(self, *, subscription_id: str) -> None: ...

    async def transfer(
        self,
        *,
        amount_cents: int,
        destination: str,
        transfer_group: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> Transfer:
        """Move money to a connected account (a payout)."""

    async def aclose(self) -> None: ...


class LedgerProvider:
    """The embedded default: no external calls. Card operations explain that; payouts are recorded."""

    name = "ledger"
    takes_cards = False

    def _offline(self) -> PaymentUnavailable:
        return PaymentUnavailable(OFFLINE)

    async def create_customer(self, *, principal_id: str, name: str, idempotency_key: str) -> str:
        raise self._offline()

    async def save_payment_method(self, *, customer_id: str, payment_method_id: str, idempotency_key: str) -> None:
        raise self._offline()

    async def authorize(
        self,
        *,
        customer_id: str,
        payment_method_id: str,
        amount_cents: int,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> Intent:
        raise self._offline()

    async def capture(self, *, intent_id: str, idempotency_key: str) -> Intent:
        raise self._offline()

    async def cancel(self, *, intent_id: str, idempotency_key: str) -> Intent:
        raise self._offline()

    async def retrieve_intent(self, intent_id: str) -> Intent:
        raise self._offline()

    async def refund(self, *, intent_id: str, amount_cents: int, idempotency_key: str) -> str:
        raise self._offline()

    async def checkout(
        self,
        *,
        mode: CheckoutMode,
        customer_id: str,
        amount_cents: int,
        product_name: str,
        metadata: dict[str, str],
        success_url: str,
        cancel_url: str,
        idempotency_key: str,
    ) -> CheckoutLink:
        raise self._offline()

    async def ensure_plan(self, *, plan_id: str, amount_cents: int, product_name: str, idempotency_key: str) -> str:
        raise self._offline()

    async def subscribe(
        self, *, customer_id: str, plan_id: str, metadata: dict[str, str], idempotency_key: str
    ) -> RemoteSubscription:
        raise self._offline()

    async def cancel_subscription(self, *, subscription_id: str) -> None:
        raise self._offline()

    async def transfer(
        self,
        *,
        amount_cents: int,
        destination: str,
        transfer_group: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> Transfer:
        # Offline, a payout is a record: the operator pays it by hand and the ledger says so.
        return Transfer(id=f"recorded:{idempotency_key}", amount_cents=amount_cents)

    async def aclose(self) -> None:
        return None
