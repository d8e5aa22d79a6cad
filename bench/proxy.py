"""A small HTTP/1.1 reverse proxy and load balancer for the load bench's hub replicas (asyncio, stdlib only).

    python bench/proxy.py --listen 127.0.0.1:8000 --backend 127.0.0.1:8001 --backend 127.0.0.1:8002

Round-robin per request (or, with --balance key, by the Authorization header); sticky on `Mcp-Session-Id` when a request carries one (a handshake-era session
lives in the replica that created it: the proxy learns the id from that replica's response); responses
stream through as they come (chunked bodies chunk by chunk: SSE streams, long polls), so a stream that
never ends is fine. Adds X-Forwarded-For (the hubs trust it from 127.0.0.1: AGENTCHAT_TRUSTED_PROXIES).
Keeps a pool of idle keep-alive connections per backend (none idle for 4 s or more: uvicorn closes
them at 5). A request (its body is buffered, up to the hubs' own limit) goes to the next backend in line
when one refuses the connection, unless its session ties it there, and is sent again on a new
connection when a pooled one turns out closed before any byte of response (normally the hub closing
it idle, so it never read the request; nginx retries a cached upstream connection the same way);
nothing else is retried, since a request may have reached a hub. `/healthz` on the proxy answers 200 once every backend does.

Not for production: nginx or Caddy in front of real replicas (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sys
import time
import zlib

MAX_HEAD = 65536
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}
SESSION = "mcp-session-id"
IDLE_SECONDS = 4.0


class BadRequest(Exception):
    pass


class Backend:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def connection(self, *, fresh: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """(reader, writer, reused): an idle pooled connection, else (or if `fresh`) a new one."""
        now = time.monotonic()
        while self.idle and not fresh:
            reader, writer, since = self.idle.pop()
            # uvicorn closes a connection idle for 5 s: one idle for 4 s may be closing as we write
            if now - since < IDLE_SECONDS and not writer.is_closing() and not reader.at_eof():
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)
        return reader, writer, False

    def give_back(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.idle) < 512 and not writer.is_closing():
            self.idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()


async def read_head(reader: asyncio.StreamReader) -> tuple[str, list[tuple[str, str]]] | None:
    """The start line and headers of a message, or None at a clean end of the stream."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest("truncated head") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest("head too large") from None
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return lines[0], headers


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


async def read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
    """A request body, whole (Content-Length or chunked, re-framed as it came)."""
    length = header(headers, "content-length")
    if length is not None:
        return await reader.readexactly(int(length))
    if (header(headers, "transfer-encoding") or "").lower() != "chunked":
        return b""
    parts = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        parts.append(size_line + (await reader.readexactly(size + 2) if size else await reader.readuntil(b"\r\n")))
        if size == 0:
            return b"".join(parts)


async def relay_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: list[tuple[str, str]]
) -> bool:
    """Copy one message body as it arrives; False if it ran to the end of the stream (no framing)."""
    length = header(headers, "content-length")
    if length is not None:
        left = int(length)
        while left:
            chunk = await reader.read(min(left, 65536))
            if not chunk:
                raise ConnectionError("body cut short")
            writer.write(chunk)
            left -= len(chunk)
        await writer.drain()
        return True
    if (header(headers, "transfer-encoding") or "").lower() == "chunked":
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            data = await reader.readexactly(size + 2) if size else await reader.readuntil(b"\r\n")
            writer.write(size_line + data)
            await writer.drain()  # a chunk at a time: server-sent events reach the client at once
            if size == 0:
                return True
    return False


class Proxy:
    def __init__(self, backends: list[Backend], balance: str = "round-robin") -> None:
        self.backends = backends
        self.balance = balance
        self.turn = itertools.cycle(range(len(backends)))
        self.sticky: dict[str, int] = {}

    def choose(self, headers: list[tuple[str, str]]) -> tuple[list[int], str | None]:
        session = header(headers, SESSION)
        if session is not None and session in self.sticky:
            return [self.sticky[session]], session
        credential = header(headers, "authorization") if self.balance == "key" else None
        # by key: one principal's calls land on one replica, whose caches (its authenticated caller,
        # its conversation keys) then stay warm; round-robin makes every replica learn every caller
        first = zlib.crc32(credential.encode()) % len(self.backends) if credential else next(self.turn)
        return [(first + i) % len(self.backends) for i in range(len(self.backends))], session

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        peer = client_w.get_extra_info("peername")
        address = peer[0] if peer else "127.0.0.1"
        try:
            while True:
                head = await read_head(client_r)
                if head is None:
                    return
                start, headers = head
                if start.startswith("GET /healthz ") and await self.healthy():
                    client_w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok")
                    await client_w.drain()
                    continue
                if not await self.forward(start, headers, address, client_r, client_w):
                    return
        except (BadRequest, ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            client_w.close()

    async def forward(
        self,
        start: str,
        headers: list[tuple[str, str]],
        address: str,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
    ) -> bool:
        """Pass one request and its response; False when the client connection must end."""
        order, session = self.choose(headers)
        forwarded = header(headers, "x-forwarded-for")
        out = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP and k.lower() != "x-forwarded-for"]
        out.append(("X-Forwarded-For", f"{forwarded}, {address}" if forwarded else address))
        wire = (start + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in out) + "\r\n").encode("latin-1")
        body = await read_body(client_r, headers)  # buffered: a request may have to be sent twice
        got = None
        for index in order:
            backend = self.backends[index]
            try:
                reader, writer, reused = await backend.connection()
            except OSError:
                continue
            got = await self.exchange(reader, writer, wire + body)
            if got is None and reused:
                # a pooled connection the hub had closed: it never read the request, so a new
                # connection may carry it (what any keep-alive client does)
                try:
                    reader, writer, _ = await backend.connection(fresh=True)
                except OSError:
                    continue
                got = await self.exchange(reader, writer, wire + body)
            break
        if got is None:
            client_w.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            await client_w.drain()
            return False
        status, reply = got
        new_session = header(reply, SESSION)
        if new_session is not None:
            self.sticky[new_session] = index
        if start.startswith("DELETE ") and session is not None:
            self.sticky.pop(session, None)
        keep = (header(reply, "connection") or "").lower() != "close"
        client_w.write((status + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in reply) + "\r\n").encode("latin-1"))
        try:
            framed = (
                start.startswith("HEAD ")
                or status.split()[1] in ("204", "304")
                or await relay_body(reader, client_w, reply)
            )
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()
            return False
        await client_w.drain()
        if framed and keep:
            backend.give_back(reader, writer)
            return True
        writer.close()
        return False  # the body ran to the end of the stream: so must the client's connection

    async def exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[str, list[tuple[str, str]]] | None:
        """Send a whole request, read the response head; None if the connection failed before it."""
        try:
            writer.write(request)
            await writer.drain()
            got = await read_head(reader)
        except (ConnectionError, asyncio.IncompleteReadError, BadRequest):
            got = None
        if got is None:
            writer.close()
        return got

    async def healthy(self) -> bool:
        for backend in self.backends:
            try:
                reader, writer = await asyncio.open_connection(backend.host, backend.port)
            except OSError:
                return False
            writer.write(
                f"GET /healthz HTTP/1.1\r\nHost: {backend.host}:{backend.port}\r\nConnection: close\r\n\r\n".encode()
            )
            line = await reader.readline()
            writer.close()
            if b" 200 " not in line:
                return False
        return True


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve(listen: tuple[str, int], backends: list[tuple[str, int]], balance: str) -> None:
    proxy = Proxy([Backend(h, p) for h, p in backends], balance)
    server = await asyncio.start_server(proxy.handle, listen[0], listen[1], limit=MAX_HEAD, backlog=4096)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--listen", required=True, help="host:port to accept on")
    parser.add_argument("--backend", action="append", required=True, help="host:port of a hub (repeat)")
    parser.add_argument(
        "--balance",
        choices=["round-robin", "key"],
        default="round-robin",
        help="round-robin per request, or key: by the Authorization header (one caller, one replica)",
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(address(args.listen), [address(b) for b in args.backend], args.balance))
    return 0


if __name__ == "__main__":
    sys.exit(main())
