"""The thin MCP client of bench/load.py: raw JSON-RPC over one keep-alive HTTP/1.1 connection per virtual user.

Why not the mcp `Client` or httpx: thousands of virtual users share one Python process with the hub
on a small machine; their own per-call work must stay far below the hub's, or the load generator is
what gets measured (bench/send_http.py found the same). Every reply is still parsed and checked.

Protocol eras: `modern` (2026-07-28) sends self-contained POSTs (no session; the protocol version,
method and tool name ride in headers and `_meta`); `legacy` (2025-11-25) opens a session with
`initialize` and carries its `mcp-session-id` (when the hub is stateful) on every later request.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.buffered import BufferedByteStream

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "agentchat-load", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
IDS = re.compile(r"\b(pek|cnv|usr|agt|adm)_[a-z0-9]+")  # errors are counted by kind, not by object
NOT_MEASURED = frozenset({"wait_for_messages"})  # long polls: their latency is the partner's think time


class CallFailed(Exception):
    """A call that did not return a result; `kind` is how it is counted (errors by kind)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class Refused(Exception):
    """An isError result the scenario expects (e.g. insufficient funds in the frenzy): counted, not an error."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass
class Stats:
    """Everything the calls of one scenario produced."""

    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)  # scenario facts: peeks captured, replays ...

    def record(self, tool: str, ms: float) -> None:
        self.latencies_ms.setdefault(tool, []).append(ms)

    @property
    def calls(self) -> int:
        return sum(len(v) for v in self.latencies_ms.values()) + sum(self.errors.values())


class Connection:
    """One keep-alive HTTP/1.1 connection: send a request, read the whole response (chunked or not)."""

    def __init__(self, host: str, port: int, api_key: str) -> None:
        self.host, self.port = host, port
        self.fixed = (
            f"Host: {host}:{port}\r\nAuthorization: Bearer {api_key}\r\n"
            "Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
        )
        self.stream: BufferedByteStream | None = None

    async def request(
        self, method: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head = f"{method} /mcp HTTP/1.1\r\n{self.fixed}{extra}Content-Length: {len(body)}\r\n\r\n".encode()
        fresh = self.stream is None
        if self.stream is None:
            try:
                self.stream = BufferedByteStream(await anyio.connect_tcp(self.host, self.port))
            except OSError as exc:
                raise CallFailed("connect", type(exc).__name__) from None
        try:
            await self.stream.send(head + body)
            status_line = await self.stream.receive_until(b"\r\n", 65536)
        except (anyio.BrokenResourceError, anyio.EndOfStream, anyio.IncompleteRead, OSError):
            await self.aclose()
            if fresh:
                raise CallFailed("connection reset") from None
            # the server closed an idle keep-alive connection (uvicorn: after 5 s) before our request
            # reached it: nothing of ours was in flight, so sending again on a new one is safe
            return await self.request(method, headers, body)
        try:
            return await self._response(status_line)
        except (anyio.BrokenResourceError, anyio.EndOfStream, anyio.IncompleteRead, OSError, ValueError):
            await self.aclose()
            raise CallFailed("connection reset", "mid-response") from None

    async def _response(self, status_line: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self.stream is not None
        status = int(status_line.split()[1])
        got: dict[str, str] = {}
        while line := await self.stream.receive_until(b"\r\n", 65536):
            name, _, value = line.decode("latin-1").partition(":")
            got[name.strip().lower()] = value.strip()
        if "content-length" in got:
            data = await self.stream.receive_exactly(int(got["content-length"]))
        elif got.get("transfer-encoding") == "chunked":
            parts = []
            while size := int((await self.stream.receive_until(b"\r\n", 65536)).split(b";")[0], 16):
                parts.append(await self.stream.receive_exactly(size))
                await self.stream.receive_exactly(2)
            await self.stream.receive_exactly(2)
            data = b"".join(parts)
        else:
            data = b""
        if got.get("connection", "").lower() == "close":
            await self.aclose()
        return status, got, data

    async def aclose(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            await stream.aclose()


class McpUser:
    """One principal's MCP client in one protocol era; `call` times every call into `stats`."""

    def __init__(self, host: str, port: int, api_key: str, stats: Stats, *, era: str, timeout: float) -> None:
        self.connection = Connection(host, port, api_key)
        self.stats, self.era, self.timeout = stats, era, timeout
        self.headers: dict[str, str] = {}
        self.next_id = 0
        self.opened = False

    async def open(self) -> None:
        """Legacy era: the initialize handshake (a session id when the hub keeps sessions). Modern: nothing."""
        if self.era == "legacy":
            params = {
                "protocolVersion": LEGACY,
                "capabilities": {},
                "clientInfo": {"name": "agentchat-load", "version": "0"},
            }
            _, headers = await self._post(self._request("initialize", params), {}, "initialize")
            self.headers = {"mcp-protocol-version": LEGACY}
            if "mcp-session-id" in headers:
                self.headers["mcp-session-id"] = headers["mcp-session-id"]
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            status, _, body = await self._send(json.dumps(note).encode(), self.headers, "initialize")
            if status not in (200, 202):
                raise CallFailed(f"http {status}", body[:200].decode(errors="replace"))
        else:
            self.headers = {"mcp-protocol-version": MODERN, "mcp-method": "tools/call"}
        self.opened = True

    async def close(self) -> None:
        try:
            if self.era == "legacy" and "mcp-session-id" in self.headers:
                with anyio.move_on_after(5):
                    await self.connection.request("DELETE", self.headers)
        except (CallFailed, OSError, anyio.BrokenResourceError):
            pass
        await self.connection.aclose()

    def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        return {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}

    async def _send(self, body: bytes, headers: dict[str, str], what: str) -> tuple[int, dict[str, str], bytes]:
        with anyio.move_on_after(self.timeout) as scope:
            return await self.connection.request("POST", headers, body)
        assert scope.cancelled_caught
        await self.connection.aclose()  # the response may still come: this connection is unusable now
        raise CallFailed("timeout", what)

    async def _post(self, message: dict[str, Any], headers: dict[str, str], what: str) -> tuple[Any, dict[str, str]]:
        status, got, raw = await self._send(json.dumps(message).encode(), headers, what)
        text = raw.decode(errors="replace")
        if got.get("content-type", "").startswith("text/event-stream"):
            data = [line for line in text.splitlines() if line.startswith("data: ")]
            text = data[-1][len("data: ") :] if data else ""
        if status != 200:
            raise CallFailed(f"http {status}", text[:200])
        try:
            reply = json.loads(text)
        except ValueError:
            raise CallFailed("bad response", text[:200]) from None
        if "error" in reply:
            raise CallFailed(f"rpc {reply['error'].get('code')}", str(reply["error"].get("message"))[:200])
        return reply["result"], got

    async def call(self, tool: str, args: dict[str, Any], *, refusals: tuple[str, ...] = ()) -> dict[str, Any]:
        """Call a tool; returns its structured content. Raises CallFailed (counted as an error) or
        Refused (an isError whose text contains one of `refusals`: counted as expected)."""
        if not self.opened:
            try:
                await self.open()
            except CallFailed as exc:
                self.stats.errors[f"initialize: {exc.kind}"] += 1
                raise
        params: dict[str, Any] = {"name": tool, "arguments": args}
        headers = self.headers
        if self.era == "modern":
            params["_meta"] = MODERN_META
            headers = {**headers, "mcp-name": tool}
        t0 = time.perf_counter()
        try:
            result, _ = await self._post(self._request("tools/call", params), headers, tool)
        except CallFailed as exc:
            self.stats.errors[f"{tool}: {exc.kind}"] += 1
            raise
        ms = (time.perf_counter() - t0) * 1000
        if result.get("isError"):
            text = " ".join(c.get("text", "") for c in result.get("content", []))
            for expected in refusals:
                if expected in text:
                    self.stats.record(tool, ms)
                    self.stats.refused[f"{tool}: {expected}"] += 1
                    raise Refused(expected)
            text = IDS.sub(r"\1_...", text.removeprefix(f"Error executing tool {tool}: "))
            kind = f"{tool}: tool error: {text[:90]}"
            self.stats.errors[kind] += 1
            raise CallFailed(kind)
        self.stats.record(tool, ms)
        return dict(result.get("structuredContent") or {})
