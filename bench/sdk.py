"""send_message through the SDK (AgentChat) against raw mcp `Client.call_tool`, same server, same run.

    python bench/sdk.py                        # 5 rounds of 200 calls each way, in-process server
    python bench/sdk.py --http                 # the same over Streamable HTTP (a hub in this process)
    python bench/sdk.py --calls 20 --rounds 1  # a smoke run (tests/test_bench_sdk.py)

`--calls` x `--rounds` pairs of send_message calls on one connection: one raw `call_tool`, one through
the SDK (which also builds the arguments, checks for errors and validates the result into
MessageSent), interleaved and each side first half the time, so drift in the machine's load hits
both alike. The row is each side's median latency per call; target: the SDK adds at most 10%
(ratio <= 1.10).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from mcp import Client
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentchat_mcp.client import AgentChat  # noqa: E402
from agentchat_mcp.server import build_server  # noqa: E402
from agentchat_mcp.settings import Settings  # noqa: E402

TARGET = 1.10
TEXT = "Benchmark message: the quick brown fox jumps over the lazy dog."


async def run(calls: int, rounds: int, http: bool) -> float:
    folder = Path(tempfile.mkdtemp(prefix="bench-sdk-"))
    settings = Settings(
        db=folder / "bench.db", rate_limit_principal="100000000/minute", rate_limit_ip="100000000/minute"
    )

    def connector(key: str | None) -> Client:
        secret = SecretStr(key) if key else None
        return Client(build_server(settings.model_copy(update={"api_key": secret})), cache=None)  # type: ignore[arg-type]

    @asynccontextmanager
    async def open_sdk(key: str | None) -> AsyncIterator[AgentChat]:
        if http:
            async with serving_url(settings) as url, AgentChat.connect(url, api_key=key) as chat:
                yield chat
        else:
            async with AgentChat(lambda k: connector(k), api_key=key) as chat:
                yield chat

    async with open_sdk(None) as bob_chat:
        bob = await bob_chat.register("bob", peek_price="1.00")
    async with open_sdk(None) as chat:
        await chat.register("alice", peek_price="1.00")
        cid = (await chat.start_conversation([bob.id], "bench")).conversation.id
        raw_client = chat._client  # the very connection the SDK uses: only the SDK's own work differs
        assert raw_client is not None
        args = {"conversation_id": cid, "text": TEXT}

        async def raw() -> None:
            result = await raw_client.call_tool("send_message", args)
            assert not result.is_error

        async def sdk() -> None:
            await chat.send_message(cid, TEXT)

        await raw()
        await sdk()
        raw_times: list[float] = []
        sdk_times: list[float] = []
        for n in range(calls * rounds):  # interleaved, each side first half the time: drift hits both alike
            pair = ((raw, raw_times), (sdk, sdk_times))
            for send, times in pair if n % 2 else reversed(pair):
                start = time.perf_counter()
                await send()
                times.append(time.perf_counter() - start)
    raw_ms, sdk_ms = statistics.median(raw_times) * 1000, statistics.median(sdk_times) * 1000
    ratio = sdk_ms / raw_ms
    where = "http" if http else "in-process"
    print(f"send_message {where}: raw Client {raw_ms:.3f} ms/call, SDK {sdk_ms:.3f} ms/call")
    print(f"ratio SDK/raw {ratio:.3f} (target <= {TARGET:.2f}): {'ok' if ratio <= TARGET else 'OVER'}")
    return ratio


@asynccontextmanager
async def serving_url(settings: Settings) -> AsyncIterator[str]:
    """The hub app under uvicorn in this event loop (as tests/support_http.serving_app)."""
    import socket

    import uvicorn

    from agentchat_mcp.http import HttpOptions, build_app, uvicorn_config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    app = build_app(settings, HttpOptions(port=port))
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=port, log_level="warning"))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve)
        while not server.started:
            await anyio.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            server.should_exit = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--http", action="store_true")
    args = parser.parse_args()
    anyio.run(run, args.calls, args.rounds, args.http)


if __name__ == "__main__":
    main()
