"""Shared by the payment tests: localstripe per session, a recording Stripe HTTP client, signed events,
and a payments hub (real SQLite, real MCP clients, a chosen payment provider)."""

from __future__ import annotations

import importlib.util
import json
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlencode, urlparse

import httpx2
import pytest
import stripe
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr

from agentchat_mcp.app import AppContext
from agentchat_mcp.payments.provider import PaymentProvider
from agentchat_mcp.payments.stripe_provider import StripeProvider
from agentchat_mcp.server import build_server
from tests.conftest import Account, Hub, structured
from tests.support_http import serving_app

WEBHOOK_SECRET = "whsec_test_agentchat"
LAUNCHER = Path(__file__).with_name("localstripe_server.py")


@pytest.fixture(scope="session", name="localstripe")
def localstripe_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """localstripe (tests/localstripe_server.py) on a loopback port for the whole session; killed at the end."""
    if importlib.util.find_spec("localstripe") is None:
        pytest.skip("localstripe is not installed: it is a dev dependency (pip install -e '.[dev]')")
    errors = (tmp_path_factory.mktemp("localstripe") / "stderr.log").open("w+b")
    proc = subprocess.Popen([sys.executable, str(LAUNCHER)], stdout=subprocess.PIPE, stderr=errors)
    try:
        base = f"http://127.0.0.1:{_port_printed_by(proc, errors)}"
        deadline = time.monotonic() + 20
        while True:  # the port is bound before the app listens on it
            try:
                httpx2.get(base + "/v1/customers", headers={"Authorization": "Bearer sk_test_x"}, timeout=1)
                break
            except httpx2.TransportError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"localstripe did not start: {_said(errors)}") from exc
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        errors.close()


def _port_printed_by(proc: subprocess.Popen[bytes], errors: BinaryIO) -> int:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline() if ready else b""
    if not line.strip().isdigit():
        raise RuntimeError(f"localstripe did not say its port ({line!r}): {_said(errors)}")
    return int(line)


def _said(errors: BinaryIO) -> str:
    errors.seek(0)
    return errors.read().decode(errors="replace")[-2000:]


async def localstripe_post(base: str, path: str, data: list[tuple[str, str]]) -> None:
    """Configure localstripe (e.g. register a webhook target)."""
    async with httpx2.AsyncClient(timeout=5) as http:
        reply = await http.post(
            base + path, content=urlencode(data), headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
    reply.raise_for_status()


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    idempotency_key: str | None


Responder = Callable[[Recorded], tuple[int, dict[str, Any]]]


class RecordingHTTPClient(stripe.HTTPClient):
    """A stripe HTTP client that records every request and answers with canned JSON (no network)."""

    name = "recording"

    def __init__(self, responders: Mapping[tuple[str, str], Responder] | None = None) -> None:
        super().__init__()
        self.responders: dict[tuple[str, str], Responder] = dict(responders or {})
        self.requests: list[Recorded] = []

    def on(self, method: str, path_prefix: str, responder: Responder) -> None:
        self.responders[(method.lower(), path_prefix)] = responder

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        parsed = urlparse(url)
        body = post_data.decode() if isinstance(post_data, bytes) else (post_data or parsed.query or "")
        record = Recorded(
            method=method.lower(),
            path=parsed.path,
            params=dict(parse_qsl(body, keep_blank_values=True)),
            idempotency_key=headers.get("Idempotency-Key"),
        )
        self.requests.append(record)
        for (m, prefix), responder in sorted(self.responders.items(), key=lambda kv: -len(kv[0][1])):
            if m == record.method and record.path.startswith(prefix):
                status, payload = responder(record)
                return json.dumps(payload).encode(), status, self._headers(status)
        error = {"error": {"type": "invalid_request_error", "message": "Unrecognized request URL", "code": None}}
        return json.dumps(error).encode(), 404, self._headers(404)

    @staticmethod
    def _headers(status: int) -> dict[str, str]:
        # Errors say "do not retry" (as Stripe does for most), so a canned failure is seen once.
        return {"request-id": "req_test", **({"stripe-should-retry": "false"} if status >= 400 else {})}

    async def close_async(self) -> None:
        return None

    def to(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path)]


def recording_provider(client: RecordingHTTPClient) -> StripeProvider:
    return StripeProvider("sk_test_recording", http_client=client)


def signed(event: dict[str, Any], *, secret: str = WEBHOOK_SECRET, at: int | None = None) -> tuple[bytes, str]:
    """A webhook body and its Stripe-Signature header, as Stripe would send them."""
    payload = json.dumps(event).encode()
    header = stripe.WebhookSignature.generate_signature_header(
        payload.decode(), secret, timestamp=int(time.time()) if at is None else at
    )
    return payload, header


_event_counter = [0]


def event(kind: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    _event_counter[0] += 1
    return {
        "id": event_id or f"evt_test_{time.time_ns()}_{_event_counter[0]}",
        "object": "event",
        "type": kind,
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }


@dataclass
class PayHub:
    """A hub whose servers use one payment provider; the real HTTP app (uvicorn, loopback) over the
    same database serves /webhooks/stripe and /mcp."""

    hub: Hub
    provider: PaymentProvider | None
    base: str
    context: AppContext
    http: httpx2.AsyncClient

    @property
    def settings(self) -> Any:
        return self.hub.settings

    def client(self, account: Account | None = None, **kwargs: Any) -> Client:
        """An in-memory MCP client with its own server lifespan (like another process on the database)."""
        server = build_server(
            self.hub.settings_for(account.api_key if account else None),
            telemetry=self.hub.telemetry,
            payments=self.provider,
        )
        return Client(server, **kwargs)  # type: ignore[arg-type]

    @asynccontextmanager
    async def http_client(self, account: Account, **kwargs: Any) -> AsyncIterator[Client]:
        """An MCP client over the hub's Streamable HTTP endpoint, with the account's bearer key."""
        headers = {"Authorization": f"Bearer {account.api_key}"}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http:
            transport = streamable_http_client(f"{self.base}/mcp", http_client=http)
            async with Client(transport, **kwargs) as client:  # type: ignore[arg-type]
                yield client

    async def post_event(self, evt: dict[str, Any], *, at: int | None = None, secret: str = WEBHOOK_SECRET) -> Any:
        payload, header = signed(evt, at=at, secret=secret)
        return await self.http.post(
            "/webhooks/stripe",
            content=payload,
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )

    async def call(self, account: Account, tool: str, **args: Any) -> dict[str, Any]:
        async with self.client(account) as c:
            return structured(await c.call_tool(tool, args))


@asynccontextmanager
async def pay_hub(
    hub: Hub, provider: PaymentProvider | None, *, mode: str = "stripe", **settings: Any
) -> AsyncIterator[PayHub]:
    """Switch `hub` to `mode` payments with `provider` and serve the hub's HTTP app on a free port."""
    hub.settings = hub.settings.model_copy(
        update={
            "payments": mode,
            "stripe_api_key": SecretStr("sk_test_x") if mode == "stripe" else None,
            "stripe_webhook_secret": SecretStr(WEBHOOK_SECRET) if mode == "stripe" else None,
            **settings,
        }
    )
    async with (
        serving_app(hub, payments=provider) as (base, app),
        httpx2.AsyncClient(base_url=base, timeout=30) as http,
    ):
        yield PayHub(hub=hub, provider=provider, base=base, context=app.state.agentchat, http=http)
