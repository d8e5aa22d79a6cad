"""POST /webhooks/stripe: verify the signature over the raw body, then apply the event once.

Replies: 200 applied (or a duplicate), 400 bad signature / stale timestamp / not an event (nothing
written), 404 Stripe is not this server's provider, 503 not configured or not applicable yet
(Stripe delivers again later), 500 an unexpected error (logged; Stripe retries).
Also GET /payments/return: where Checkout sends the buyer's browser. It grants nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from agentchat_mcp.errors import AgentChatError

if TYPE_CHECKING:
    from agentchat_mcp.app import AppContext

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 512 * 1024  # Stripe events are a few KB; refuse anything absurd before hashing it
TOLERANCE_SECONDS = 300


def _reply(status: int, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def verify(payload: bytes, header: str | None, secret: str, tolerance: int = TOLERANCE_SECONDS) -> dict[str, Any]:
    """The event as plain data, if `header` signs exactly these bytes recently; else ValueError."""
    import stripe  # here, not at the top: a hub in ledger mode serves this route without loading stripe

    try:
        event = stripe.Webhook.construct_event(payload, header, secret, tolerance=tolerance)
    except stripe.SignatureVerificationError as exc:
        raise ValueError("invalid or stale signature") from exc
    data = event.to_dict()
    if not isinstance(data, dict) or data.get("object") != "event":
        raise ValueError("not a Stripe event")
    return data


async def stripe_webhook(request: Request) -> Response:
    """Receive one Stripe event."""
    app: AppContext = request.app.state.agentchat
    payments = getattr(app, "payments", None)
    if app.settings.payments != "stripe" or payments is None:
        return _reply(404, error="Stripe payments are not enabled on this server.")
    secret = app.settings.stripe_webhook_secret
    if secret is None:
        logger.error("a Stripe webhook arrived but STRIPE_WEBHOOK_SECRET is not set")
        return _reply(503, error="webhook secret not configured")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return _reply(413, error="payload too large")
    payload = await request.body()  # the raw bytes: re-serialised JSON would not verify
    if len(payload) > MAX_BODY_BYTES:
        return _reply(413, error="payload too large")
    try:
        event = verify(payload, request.headers.get("stripe-signature"), secret.get_secret_value())
    except (ValueError, UnicodeDecodeError):
        logger.warning("refused a webhook with a bad signature or body from %s", request.client)
        return _reply(400, error="invalid signature or payload")
    from agentchat_mcp.services.payments import RetryLater  # services import this package, not the reverse

    try:
        outcome = await payments.handle_event(event)
    except RetryLater as exc:
        logger.info("webhook %s %s deferred: %s", event.get("id"), event.get("type"), exc)
        return _reply(503, error="not applicable yet; deliver again later")
    except AgentChatError as exc:
        logger.warning("webhook %s %s refused: %s", event.get("id"), event.get("type"), exc)
        return _reply(400, error=str(exc))
    except Exception:
        logger.exception("webhook %s %s failed", event.get("id"), event.get("type"))
        return _reply(500, error="internal error")
    logger.info("webhook %s %s: %s", event.get("id"), event.get("type"), outcome)
    return _reply(200, received=True, outcome=outcome)


RETURN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>AgentChat payment</title></head>
<body style="font-family:sans-serif;max-width:32rem;margin:4rem auto">
<h1>{title}</h1><p>{text}</p><p>You can close this tab and go back to your assistant.</p></body></html>"""


async def checkout_return(request: Request) -> Response:
    """Where Stripe Checkout sends the browser. It grants nothing: credit comes from the verified webhook."""
    if request.query_params.get("result") == "success":
        title, text = "Thank you", "Stripe is confirming your payment; your balance updates within a minute."
    else:
        title, text = "Payment cancelled", "Nothing was charged."
    return HTMLResponse(
        RETURN_PAGE.format(title=title, text=text),
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def routes() -> list[Route]:
    """The payment routes for the HTTP app (added before the MCP mount)."""
    return [
        Route("/webhooks/stripe", stripe_webhook, methods=["POST"]),
        Route("/payments/return", checkout_return, methods=["GET"]),
    ]
