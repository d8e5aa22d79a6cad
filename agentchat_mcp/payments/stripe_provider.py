"""The `stripe` provider: async Stripe calls, with Stripe's errors translated where they enter.

Only this module and webhook.py import stripe. Every POST carries our own idempotency key; the
SDK's network retries reuse it, so a retried request is answered, not repeated.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import stripe

from agentchat_mcp.errors import PaymentDeclined, PaymentUnavailable
from agentchat_mcp.payments.provider import (
    CheckoutLink,
    CheckoutMode,
    Intent,
    RemoteSubscription,
    RequestRejected,
    Transfer,
)

logger = logging.getLogger(__name__)
CURRENCY = "usd"
UNAVAILABLE = "The payment provider did not answer; retrying the same call with the same idempotency_key is safe."
MISCONFIGURED = "Payments are misconfigured on this server (Stripe refused its API key); tell the operator."


class AsyncHTTPXClient(stripe.HTTPXClient):
    """stripe's HTTPXClient, sending form bodies as `content=`.

    stripe 16.1 passes the encoded body as `data=<str>`, which httpx 0.28 deprecates with a
    DeprecationWarning on every POST (an error under `-W error`); this one override fixes it.
    """

    def _get_request_args_kwargs(self, method: str, url: str, headers: Mapping[str, str], post_data: Any) -> list[Any]:
        kwargs: dict[str, Any] = {"headers": headers}
        if post_data:
            kwargs["content"] = post_data
        if self._timeout:
            kwargs["timeout"] = self._timeout
        return [(method, url), kwargs]


def _declined(exc: stripe.CardError) -> PaymentDeclined:
    return PaymentDeclined(f"{exc.user_message or 'The card was declined.'} Nothing was charged.")


async def _call(what: str, request: Callable[[], Awaitable[stripe.StripeObject]]) -> dict[str, Any]:
    """Run one Stripe request and return plain data; translate its errors into ours (details stay in our log)."""
    try:
        return (await request()).to_dict()
    except stripe.CardError as exc:
        raise _declined(exc) from exc
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        logger.error("stripe %s: credentials refused: %s", what, type(exc).__name__)
        raise PaymentUnavailable(MISCONFIGURED) from exc
    except stripe.InvalidRequestError as exc:
        logger.warning("stripe %s refused: %s (%s)", what, exc.user_message, exc.code)
        raise RequestRejected(f"The payment provider refused this {what} ({exc.code or 'invalid request'}).") from exc
    except stripe.StripeError as exc:  # connection, rate limit, idempotency, API errors
        logger.warning("stripe %s failed: %s", what, type(exc).__name__)
        raise PaymentUnavailable(UNAVAILABLE) from exc


def _intent(obj: Any) -> Intent:
    charge = obj.get("latest_charge")
    refunded = 0
    charge_id: str | None = None
    if isinstance(charge, str):
        charge_id = charge
    elif charge is not None:
        charge_id = charge.get("id")
        refunded = int(charge.get("amount_refunded") or 0)
    payment_method = obj.get("payment_method")
    return Intent(
        id=obj["id"],
        status=obj["status"],
        amount_cents=int(obj["amount"]),
        amount_received_cents=int(obj.get("amount_received") or (obj["amount"] if obj["status"] == "succeeded" else 0)),
        customer=obj.get("customer") if isinstance(obj.get("customer"), str) else None,
        payment_method=payment_method if isinstance(payment_method, str) else None,
        latest_charge=charge_id,
        amount_refunded_cents=refunded,
        metadata={str(k): str(v) for k, v in (obj.get("metadata") or {}).items()},
    )


def remote_subscription(sub: Any) -> RemoteSubscription:
    """A subscription object (API response or webhook payload) as a plain value."""
    invoice = sub.get("latest_invoice")
    expanded = isinstance(invoice, dict)
    paid = bool(expanded and invoice.get("status") == "paid")
    intent = invoice.get("payment_intent") if expanded else None
    period = {"start": sub.get("current_period_start"), "end": sub.get("current_period_end")}
    if period["start"] is None:  # API versions since 2025-03 keep the period on the items
        items = (sub.get("items") or {}).get("data") or [{}]
        period = {"start": items[0].get("current_period_start"), "end": items[0].get("current_period_end")}
    return RemoteSubscription(
        id=str(sub["id"]),
        status=str(sub["status"]),
        current_period_start=int(period["start"] or 0),
        current_period_end=int(period["end"] or 0),
        latest_invoice_paid=paid,
        latest_invoice_id=str(invoice.get("id")) if expanded else invoice if isinstance(invoice, str) else None,
        latest_invoice_intent=intent if isinstance(intent, str) else None,
    )


class StripeProvider:
    """Stripe through `stripe.StripeClient`, async only."""

    name = "stripe"
    takes_cards = True

    def __init__(self, api_key: str, *, api_base: str | None = None, http_client: stripe.HTTPClient | None = None):
        self._http = http_client or AsyncHTTPXClient(timeout=30)
        self._client = stripe.StripeClient(
            api_key,
            http_client=self._http,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=2,
        )
        self._v1 = self._client.v1

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def create_customer(self, *, principal_id: str, name: str, idempotency_key: str) -> str:
        customer = await _call(
            "customer",
            lambda: self._v1.customers.create_async(
                {"name": name, "metadata": {"agentchat_principal_id": principal_id}},
                {"idempotency_key": idempotency_key},
            ),
        )
        return str(customer["id"])

    async def save_payment_method(self, *, customer_id: str, payment_method_id: str, idempotency_key: str) -> None:
        await _call(
            "payment method",
            lambda: self._v1.payment_methods.attach_async(
                payment_method_id, {"customer": customer_id}, {"idempotency_key": f"{idempotency_key}:attach"}
            ),
        )
        await _call(
            "payment method",
            lambda: self._v1.customers.update_async(
                customer_id,
                {"invoice_settings": {"default_payment_method": payment_method_id}},
                {"idempotency_key": f"{idempotency_key}:default"},
            ),
        )

    async def authorize(
        self,
        *,
        customer_id: str,
        payment_method_id: str,
        amount_cents: int,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> Intent:
        intent = await _call(
            "payment",
            lambda: self._v1.payment_intents.create_async(
                {
                    "amount": amount_cents,
                    "currency": CURRENCY,
                    "customer": customer_id,
                    "payment_method": payment_method_id,
                    "capture_method": "manual",
                    "confirm": True,
                    "off_session": True,
                    "metadata": metadata,
                },
                {"idempotency_key": idempotency_key},
            ),
        )
        return _intent(intent)

    async def capture(self, *, intent_id: str, idempotency_key: str) -> Intent:
        intent = await _call(
            "capture",
            lambda: self._v1.payment_intents.capture_async(intent_id, options={"idempotency_key": idempotency_key}),
        )
        return _intent(intent)

    async def cancel(self, *, intent_id: str, idempotency_key: str) -> Intent:
        intent = await _call(
            "cancellation",
            lambda: self._v1.payment_intents.cancel_async(intent_id, options={"idempotency_key": idempotency_key}),
        )
        return _intent(intent)

    async def retrieve_intent(self, intent_id: str) -> Intent:
        intent = await _call(
            "lookup", lambda: self._v1.payment_intents.retrieve_async(intent_id, {"expand": ["latest_charge"]})
        )
        return _intent(intent)

    async def refund(self, *, intent_id: str, amount_cents: int, idempotency_key: str) -> str:
        refund = await _call(
            "refund",
            lambda: self._v1.refunds.create_async(
                {"payment_intent": intent_id, "amount": amount_cents}, {"idempotency_key": idempotency_key}
            ),
        )
        return str(refund["id"])

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
        price_data: dict[str, Any] = {
            "currency": CURRENCY,
            "unit_amount": amount_cents,
            "product_data": {"name": product_name},
        }
        params: dict[str, Any] = {
            "mode": mode,
            "customer": customer_id,
            "client_reference_id": metadata.get("agentchat_payment_id") or metadata.get("agentchat_subscription_id"),
            "line_items": [{"price_data": price_data, "quantity": 1}],
            "metadata": metadata,
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
        if mode == "subscription":
            price_data["recurring"] = {"interval": "month"}
            params["subscription_data"] = {"metadata": metadata}
        else:
            # Saved for the next purchase, which then needs no browser.
            params["payment_intent_data"] = {"metadata": metadata, "setup_future_usage": "off_session"}
        session = await _call(
            "checkout",
            lambda: self._v1.checkout.sessions.create_async(params, {"idempotency_key": idempotency_key}),  # type: ignore[arg-type]
        )
        return CheckoutLink(id=str(session["id"]), url=str(session["url"]))

    async def ensure_plan(self, *, plan_id: str, amount_cents: int, product_name: str, idempotency_key: str) -> str:
        try:
            plan = await _call("plan", lambda: self._v1.plans.retrieve_async(plan_id))
            return str(plan["id"])
        except RequestRejected:
            pass  # not there yet: create it (the id encodes the price, so an existing one is right)
        plan = await _call(
            "plan",
            lambda: self._v1.plans.create_async(
                {
                    "id": plan_id,
                    "amount": amount_cents,
                    "currency": CURRENCY,
                    "interval": "month",
                    "product": {"name": product_name},
                },
                {"idempotency_key": idempotency_key},
            ),
        )
        return str(plan["id"])

    async def subscribe(
        self, *, customer_id: str, plan_id: str, metadata: dict[str, str], idempotency_key: str
    ) -> RemoteSubscription:
        sub = await _call(
            "subscription",
            lambda: self._v1.subscriptions.create_async(
                # Legacy `items[plan]`: what localstripe implements, and still accepted by Stripe.
                {
                    "customer": customer_id,
                    "items": [{"plan": plan_id}],
                    "metadata": metadata,
                    "expand": ["latest_invoice"],
                },  # type: ignore[list-item]
                {"idempotency_key": idempotency_key},
            ),
        )
        return remote_subscription(sub)

    async def cancel_subscription(self, *, subscription_id: str) -> None:
        await _call("cancellation", lambda: self._v1.subscriptions.cancel_async(subscription_id))

    async def transfer(
        self,
        *,
        amount_cents: int,
        destination: str,
        transfer_group: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> Transfer:
        transfer = await _call(
            "transfer",
            lambda: self._v1.transfers.create_async(
                {
                    "amount": amount_cents,
                    "currency": CURRENCY,
                    "destination": destination,
                    "transfer_group": transfer_group,
                    "metadata": metadata,
                },
                {"idempotency_key": idempotency_key},
            ),
        )
        return Transfer(id=str(transfer["id"]), amount_cents=int(transfer["amount"]))
