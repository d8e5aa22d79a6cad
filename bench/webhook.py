"""Stripe webhook cost: verify + dedupe + fulfil, p50/p95 per event, and a burst of duplicates.

    python bench/webhook.py              # 200 checkout payments fulfilled by their webhook
    python bench/webhook.py --n 500 --burst 100

Through the hub's real HTTP app (httpx over ASGI, no socket): each event is a signed
checkout.session.completed for its own pending purchase (signature check, event-id dedupe, one
ledger entry, the purchase marked fulfilled). Then one event delivered --burst times at once:
every delivery answers 200 and exactly one credits. Checkout sessions come from a canned Stripe
HTTP client (no network).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import stripe
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentchat_mcp.http import HttpOptions, build_app  # noqa: E402
from agentchat_mcp.payments.stripe_provider import StripeProvider  # noqa: E402
from agentchat_mcp.settings import Settings  # noqa: E402
from agentchat_mcp.telemetry import Telemetry  # noqa: E402

SECRET = "whsec_bench"  # noqa: S105 (a throwaway signing secret for this run)


class CannedStripe(stripe.HTTPClient):
    name = "canned"
    calls = 0

    async def request_async(self, method: str, url: str, headers: Any, post_data: Any = None) -> Any:
        CannedStripe.calls += 1
        body = {"id": f"cs_{CannedStripe.calls}", "object": "checkout.session", "url": "https://checkout.example"}
        if "/v1/customers" in url:
            body = {"id": f"cus_{CannedStripe.calls}", "object": "customer"}
        return json.dumps(body).encode(), 200, {}

    async def close_async(self) -> None:
        return None


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def signed(pid: str, event_id: str) -> tuple[bytes, dict[str, str]]:
    session = {
        "id": f"cs_{pid}",
        "object": "checkout.session",
        "mode": "payment",
        "payment_status": "paid",
        "amount_total": 1000,
        "metadata": {"agentchat_payment_id": pid},
    }
    event = {"id": event_id, "object": "event", "type": "checkout.session.completed", "data": {"object": session}}
    payload = json.dumps(event).encode()
    header = stripe.WebhookSignature.generate_signature_header(payload.decode(), SECRET, timestamp=int(time.time()))
    return payload, {"Stripe-Signature": header, "Content-Type": "application/json"}


async def main(n: int, burst: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            db=Path(tmp) / "bench.db",
            payments="stripe",
            stripe_api_key=SecretStr("sk_test_bench"),
            stripe_webhook_secret=SecretStr(SECRET),
            rate_limit_ip="1000000/minute",
            access_log=False,
        )
        provider = StripeProvider("sk_test_bench", http_client=CannedStripe())
        app = build_app(settings, HttpOptions(), telemetry=Telemetry(), payments=provider)
        async with app.router.lifespan_context(app):
            ctx = app.state.agentchat
            principal, api_key = await ctx.identity.register("user", "bench")
            caller = await ctx.identity.authenticate(api_key)
            pids = [(await ctx.payments.buy_credits(caller, 1000, f"k{i}")).id for i in range(n + 1)]
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
                times: list[float] = []
                for i, pid in enumerate(pids[:n]):
                    payload, headers = signed(pid, f"evt_bench_{i}")
                    start = time.perf_counter()
                    reply = await http.post("/webhooks/stripe", content=payload, headers=headers)
                    times.append((time.perf_counter() - start) * 1000)
                    assert reply.json()["outcome"] == "fulfilled", reply.text
                payload, headers = signed(pids[n], "evt_bench_burst")
                statuses: list[int] = []

                async def deliver() -> None:
                    statuses.append((await http.post("/webhooks/stripe", content=payload, headers=headers)).status_code)

                start = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for _ in range(burst):
                        tg.start_soon(deliver)
                burst_ms = (time.perf_counter() - start) * 1000
            balance = await ctx.payments.wallet(principal.id)
        await provider.aclose()
    assert statuses == [200] * burst and balance.credit_cents == (n + 1) * 1000
    print(f"webhook fulfil, {n} events: p50 {pct(times, 50):.1f} ms  p95 {pct(times, 95):.1f} ms")
    print(f"one event x{burst} at once: {burst_ms:.0f} ms, all 200, credited once (balance {balance.credit_cents} c)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--burst", type=int, default=50)
    args = parser.parse_args()
    anyio.run(main, args.n, args.burst)
