"""AgentChat: the connection (one mcp `Client` at a time, re-opened when it fails), retries, and the message stream."""

from __future__ import annotations

import enum
import logging
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

import anyio
import httpx2
from anyio.abc import TaskGroup, TaskStatus
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CONNECTION_CLOSED, INTERNAL_ERROR, CallToolResult
from pydantic import BaseModel, Field, ValidationError

from agentchat_mcp.client._tools import ToolMethods
from agentchat_mcp.client.errors import (
    AgentChatClientError,
    ClientClosed,
    ConnectionLost,
    ContractError,
    ProtocolError,
    RateLimited,
    ToolFailed,
)
from agentchat_mcp.models import MessageItem, Registered

__all__ = ["AgentChat", "ConnectionState", "Connector", "IncomingMessage", "RetryPolicy"]

logger = logging.getLogger("agentchat_mcp.client")
_M = TypeVar("_M", bound=BaseModel)
RATE_LIMITED_CODE = -32010  # agentchat_mcp.ratelimit.RATE_LIMITED, not imported: the client needs no server code
_KEY_CHANGING = frozenset({"register_agent", "register_user", "rotate_api_key"})


class Connector(Protocol):
    """Opens one mcp `Client` acting with the given API key (None: anonymous); AgentChat re-opens it to reconnect."""

    def __call__(self, api_key: str | None, /) -> AbstractAsyncContextManager[Client]:
        """An async context manager yielding a connected mcp Client."""
        ...


class ConnectionState(enum.Enum):
    """Where the connection is; `on_state_change` is told of every change."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True)
class RetryPolicy:
    """How calls are retried: `attempts` tries in all; between them an exponential backoff with jitter.

    Rate-limited calls are retried for every tool (the server refused them before doing anything), after
    the server's retry_after, unless it is longer than `max_rate_limit_wait`. Transport failures are
    retried only for calls safe to repeat (read-only, idempotent, or carrying an idempotency key).
    """

    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0
    max_rate_limit_wait: float = 30.0
    connect_attempts: int = 3

    def delay(self, failures: int) -> float:
        """The pause after `failures` consecutive failures: half fixed, half random (no thundering herd)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0**failures)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class IncomingMessage(MessageItem):
    """A message from another participant, as `AgentChat.messages()` yields it."""

    conversation_id: str = Field(description="The conversation it was sent to.")


def _wire(value: Any) -> Any:
    """An argument as JSON: money as a decimal string, times as ISO 8601."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def is_transport_error(exc: BaseException) -> bool:
    """Did the connection fail (rather than the server answer)? Then a reconnect may help."""
    for leaf in _leaves(exc):
        if isinstance(leaf, MCPError):
            if leaf.code == CONNECTION_CLOSED:
                return True
        elif isinstance(
            leaf,
            httpx2.TransportError | OSError | anyio.ClosedResourceError | anyio.BrokenResourceError | anyio.EndOfStream,
        ):
            return True
    return False


def _tool_error(name: str, result: CallToolResult) -> ToolFailed:
    text = " ".join(getattr(c, "text", "") for c in result.content).strip()
    data = result.structured_content or {}
    if data.get("error") == "rate_limited":
        return RateLimited(name, text, float(data.get("retry_after_seconds", 1)))
    return ToolFailed(name, text)


class _Throttle:
    """The hub's last HTTP 429 (its per-IP limit), which mcp's client reports only as a -32603 error."""

    def __init__(self) -> None:
        self.retry_after = 0.0
        self.at = -1e9

    async def on_response(self, response: httpx2.Response) -> None:
        if response.status_code == 429:
            try:
                self.retry_after = float(response.headers.get("retry-after", "1"))
            except ValueError:
                self.retry_after = 1.0
            self.at = time.monotonic()

    def explains(self, exc: MCPError) -> bool:
        """Was this error the 429 just seen? (-32603 'Server returned an error response' within a second of it)"""
        return exc.code == INTERNAL_ERROR and time.monotonic() - self.at < 1.0


def _http_connector(url: str, timeout: float, throttle: _Throttle) -> Connector:
    @asynccontextmanager
    async def connect(api_key: str | None) -> AsyncIterator[Client]:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        hooks = {"response": [throttle.on_response]}
        http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(timeout, read=300), event_hooks=hooks)
        async with http, Client(streamable_http_client(url, http_client=http), cache=None) as client:
            yield client

    return connect


def _stdio_connector(db: Path | None, command: list[str], env: Mapping[str, str]) -> Connector:
    @asynccontextmanager
    async def connect(api_key: str | None) -> AsyncIterator[Client]:
        child_env = {**os.environ, **env}
        child_env.pop("AGENTCHAT_API_KEY", None)
        if api_key:
            child_env["AGENTCHAT_API_KEY"] = api_key
        if db is not None:
            child_env["AGENTCHAT_DB"] = str(Path(db).resolve())
        params = StdioServerParameters(command=command[0], args=command[1:], env=child_env)
        async with Client(params, cache=None) as client:
            yield client

    return connect


class AgentChat(ToolMethods):
    """An agentchat connection: one typed async method per tool, retries, reconnects and a message stream.

    Use it as an async context manager::

        async with AgentChat.connect("https://hub.example.com/mcp", api_key="acp_...") as chat:
            conv = await chat.start_conversation(["agt_..."], "Pricing", first_message="Hello")
            async for message in chat.messages():
                print(message.sender_name, message.text)

    Each tool method returns the tool's pydantic result model and raises `ToolFailed` (or `RateLimited`)
    with the server's message when the tool fails; see agentchat_mcp.client.errors.
    """

    def __init__(
        self,
        connector: Connector,
        *,
        api_key: str | None = None,
        retry: RetryPolicy | None = None,
        heartbeat_interval: float = 15.0,
        heartbeat_timeout: float = 10.0,
        connect_timeout: float = 30.0,
        on_state_change: Callable[[ConnectionState], None] | None = None,
        reconnect_after_register: bool = True,
    ) -> None:
        """Prefer `AgentChat.connect(url)` or `AgentChat.local(db)`; `connector` opens one mcp Client per connection."""
        self._connector = connector
        self._api_key = api_key
        self.retry = retry or RetryPolicy()
        """The retry policy of every call."""
        self.heartbeat_interval = heartbeat_interval
        """Seconds between heartbeats (a tools/list, which no rate limit counts) while connected."""
        self.heartbeat_timeout = heartbeat_timeout
        """A heartbeat slower than this counts as a lost connection."""
        self.connect_timeout = connect_timeout
        """How long a call waits for a connection before it raises ConnectionLost."""
        self.on_state_change = on_state_change
        """Called with each new ConnectionState (from the task that changed it; keep it quick)."""
        self._state = ConnectionState.CLOSED
        self._client: Client | None = None
        self._ready = anyio.Event()
        self._broken = anyio.Event()
        self._closing = False
        self._switching = False
        # HTTP authenticates each request by its bearer key: after register it must reconnect with the new one.
        self._reconnect_after_register = reconnect_after_register
        self._tasks: TaskGroup | None = None
        self._me_id: str | None = None
        self._throttle: _Throttle | None = None  # HTTP only
        self.reconnects = 0
        """How many times the connection was re-opened after a failure."""

    # --- constructors -------------------------------------------------------------------------------

    @classmethod
    def connect(cls, url: str, *, api_key: str | None = None, timeout: float = 30.0, **options: Any) -> AgentChat:
        """A hub over Streamable HTTP (`url` ends in /mcp), as the agent whose API key is given (None: anonymous).

        `options` are AgentChat's keyword arguments (retry, heartbeat_interval, on_state_change, ...).
        """
        throttle = _Throttle()
        chat = cls(_http_connector(url, timeout, throttle), api_key=api_key, **options)
        chat._throttle = throttle
        return chat

    @classmethod
    def local(
        cls,
        db: str | Path | None = None,
        *,
        api_key: str | None = None,
        command: list[str] | None = None,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> AgentChat:
        """The embedded server over stdio: spawns `agentchat-mcp` (this Python's) on the SQLite file `db`.

        `db` None: AGENTCHAT_DB, else the default per-user database. Several processes may share one file.
        """
        argv = command or [sys.executable, "-m", "agentchat_mcp"]
        options.setdefault("reconnect_after_register", False)
        return cls(_stdio_connector(Path(db) if db else None, argv, env or {}), api_key=api_key, **options)

    # --- the connection -----------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The connection's current state."""
        return self._state

    @property
    def api_key(self) -> str | None:
        """The API key the connection acts with; set by register() and rotate_api_key() too."""
        return self._api_key

    async def __aenter__(self) -> AgentChat:
        """Open the connection (raising ConnectionLost if it cannot be opened) and start its heartbeat."""
        self._closing = False
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        try:
            await self._tasks.start(self._supervise)
        except BaseException:
            self._closing = True
            await self._tasks.__aexit__(None, None, None)
            self._tasks = None
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the connection."""
        self._closing = True
        self._broken.set()
        self._ready.set()  # wake calls waiting for a connection: they raise ClientClosed
        if self._tasks is not None:
            tasks, self._tasks = self._tasks, None
            await tasks.__aexit__(None, None, None)  # the caller's own exception goes on unwrapped
        self._set_state(ConnectionState.CLOSED)

    def _set_state(self, state: ConnectionState) -> None:
        if state is self._state:
            return
        self._state = state
        if self.on_state_change is not None:
            try:
                self.on_state_change(state)
            except Exception:
                logger.exception("on_state_change failed")

    async def _supervise(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the mcp Client: open it, watch it, and open a new one (with backoff) whenever it fails."""
        failures, started = 0, False
        self._set_state(ConnectionState.CONNECTING)
        while not self._closing:
            try:
                async with self._connector(self._api_key) as client:
                    failures = 0
                    self._broken = anyio.Event()
                    self._client = client
                    self._ready.set()
                    self._set_state(ConnectionState.CONNECTED)
                    if not started:
                        started = True
                        task_status.started()
                    async with anyio.create_task_group() as watch:
                        watch.start_soon(self._heartbeat, client)
                        await self._broken.wait()
                        watch.cancel_scope.cancel()
            except Exception as exc:
                if not started and failures + 1 >= self.retry.connect_attempts:
                    raise ConnectionLost(f"could not connect: {_describe(exc)}") from exc
                logger.info("agentchat connection failed: %s", _describe(exc))
            finally:
                self._client = None
                self._unready()
            if self._closing:
                break
            if self._switching:  # a new identity, not a failure: reconnect at once
                self._switching = False
                continue
            self._set_state(ConnectionState.RECONNECTING if started else ConnectionState.CONNECTING)
            await anyio.sleep(self.retry.delay(failures))
            failures += 1
            self.reconnects += started

    async def _heartbeat(self, client: Client) -> None:
        while True:
            await anyio.sleep(self.heartbeat_interval)
            try:
                with anyio.fail_after(self.heartbeat_timeout):
                    await client.list_tools()
            except Exception as exc:
                logger.info("agentchat heartbeat failed: %s", _describe(exc))
                self._drop(client)
                return

    def _drop(self, client: Client) -> None:
        """The connection `client` failed: have the supervisor open a new one (once, however many noticed)."""
        if self._client is client:
            self._client = None
            self._unready()
            self._broken.set()

    def _unready(self) -> None:
        # Calls wait on the current event; a new one only once it was set, so no waiter is left behind.
        if self._ready.is_set():
            self._ready = anyio.Event()

    async def reconnect(self) -> None:
        """Drop the current connection and wait for a new one (as a failure would)."""
        if self._client is not None:
            self._drop(self._client)
        await self._connected()

    async def _connected(self) -> Client:
        if self._client is not None:  # the common case, without the cost of a cancel scope
            return self._client
        if self._tasks is None:
            raise ClientClosed("the AgentChat is not open: use `async with AgentChat...(...) as chat:`")
        with anyio.move_on_after(self.connect_timeout):
            while self._client is None:
                if self._closing:
                    raise ClientClosed("the AgentChat was closed")
                await self._ready.wait()
            return self._client
        raise ConnectionLost(f"no connection within {self.connect_timeout:g} s")

    # --- calls --------------------------------------------------------------------------------------

    async def call(self, name: str, arguments: dict[str, Any] | None = None, *, safe: bool = False) -> dict[str, Any]:
        """Call a tool by name (one the SDK has no method for yet) and return its structured result as a dict."""
        return (await self._call_tool(name, arguments or {}, _AnyResult, safe=safe)).model_dump()

    async def _call_tool(self, name: str, arguments: dict[str, Any], result: type[_M], *, safe: bool) -> _M:
        args = {k: _wire(v) for k, v in arguments.items() if v is not None}
        if "idempotency_key" in arguments and "idempotency_key" not in args:
            args["idempotency_key"] = f"sdk-{uuid.uuid4().hex}"  # the same key for every retry of this call
        failures = 0
        while True:
            client = await self._connected()
            error: Exception
            retryable = True
            try:
                raw = await client.call_tool(name, args)
            except MCPError as exc:
                if exc.code == RATE_LIMITED_CODE:
                    data = exc.data if isinstance(exc.data, dict) else {}
                    error = RateLimited(name, exc.message, float(data.get("retry_after_seconds", 1)))
                elif self._throttle is not None and self._throttle.explains(exc):
                    after = self._throttle.retry_after
                    error = RateLimited(
                        name, f"Too many requests from your address (HTTP 429); retry after {after:g} s.", after
                    )
                elif is_transport_error(exc):
                    self._drop(client)
                    error, retryable = ConnectionLost(f"{name}: {_describe(exc)}"), safe
                else:
                    raise ProtocolError(exc.code, exc.message) from exc
            except Exception as exc:
                if not is_transport_error(exc):
                    raise
                self._drop(client)
                error, retryable = ConnectionLost(f"{name}: {_describe(exc)}"), safe
            else:
                if not raw.is_error:
                    return self._parsed(name, raw, result)
                error = _tool_error(name, raw)
                if not isinstance(error, RateLimited):
                    raise error
            failures += 1
            pause = self.retry.delay(failures - 1)
            if isinstance(error, RateLimited):
                retryable = error.retry_after <= self.retry.max_rate_limit_wait
                pause = error.retry_after + pause
            if not retryable or failures >= self.retry.attempts:
                raise error
            logger.info("retrying %s in %.2f s: %s", name, pause, error)
            await anyio.sleep(pause)

    def _parsed(self, name: str, raw: CallToolResult, result: type[_M]) -> _M:
        try:
            parsed = result.model_validate(raw.structured_content or {})
        except ValidationError as exc:
            raise ContractError(f"{name} returned a result this SDK does not know: {exc}") from exc
        if name in _KEY_CHANGING:
            key = getattr(parsed, "api_key", None)
            if isinstance(key, str) and key != self._api_key:
                # Later connections (a reconnect, a stdio restart, HTTP) must act as the new identity.
                self._api_key, self._me_id = key, getattr(parsed, "id", None)
                if name != "rotate_api_key" and not self._reconnect_after_register:
                    return parsed  # stdio: the session acts as whoever it registered; restarts use the key
                if self._client is not None:
                    self._switching = True
                    self._drop(self._client)
        return parsed

    async def register(
        self,
        name: str,
        *,
        peek_price: Decimal | str | float = "5.00",
        can_refuse: bool = True,
        description: str | None = None,
        tags: list[str] | None = None,
        invite_code: str | None = None,
    ) -> Registered:
        """Register a new agent and act as it from now on (the key is in the result and in `api_key`)."""
        return await self.register_agent(
            name,
            peek_price=peek_price,
            can_refuse=can_refuse,
            description=description,
            tags=tags,
            invite_code=invite_code,
        )

    async def prompt(self, template: str, *, name: str | None = None, focus: str | None = None) -> str:
        """The text of an agent template (prompt), e.g. 'customer-service-agent', for `name` and `focus`."""
        arguments = {k: v for k, v in (("name", name), ("focus", focus)) if v is not None}
        client = await self._connected()
        try:
            got = await client.get_prompt(template, arguments)
        except MCPError as exc:
            raise ProtocolError(exc.code, exc.message) from exc
        return "\n\n".join(getattr(m.content, "text", "") for m in got.messages)

    # --- the message stream -------------------------------------------------------------------------

    async def messages(
        self, conversation_id: str | None = None, *, wait_s: float = 25.0, page_size: int = 50
    ) -> AsyncGenerator[IncomingMessage, None]:
        """New messages from others, in one conversation or all of yours, as they arrive; never ends by itself.

        Each message is yielded once, in seq order per conversation, and marked read once the loop
        body that got it has run (a page at a time). It waits with `wait_for_messages`, which the server
        wakes as soon as a message lands, and keeps a cursor per conversation, so a dropped connection or
        a restarted hub loses nothing and repeats nothing: the stream waits for the reconnect.
        """
        me = await self._my_id()
        cursors: dict[str, int] = {}
        while True:
            try:
                waited = await self.wait_for_messages(conversation_id=conversation_id, timeout_s=wait_s)
                for unread in waited.conversations:
                    cid = unread.conversation_id
                    if cid not in cursors:  # mark_read up to 0 moves nothing and says where the cursor is
                        cursors[cid] = (await self.mark_read(cid, up_to_seq=0)).read_seq
                    while True:
                        page = await self.read_messages(cid, after_seq=cursors[cid], limit=page_size)
                        try:
                            for item in page.messages:
                                if item.sender_id != me:
                                    yield IncomingMessage(conversation_id=cid, **item.model_dump())
                                cursors[cid] = item.seq  # only once the loop body is done with it
                        finally:
                            if page.messages:
                                with anyio.CancelScope(shield=True), suppress(AgentChatClientError):
                                    await self.mark_read(cid, up_to_seq=cursors[cid])
                        if page.next_after_seq is None or not page.messages:
                            break
            except ConnectionLost:
                continue  # the supervisor reconnects; the cursors say where to go on

    async def _my_id(self) -> str:
        if self._me_id is None:
            self._me_id = (await self.whoami()).id
        return self._me_id


class _AnyResult(BaseModel):
    """Any structured result, for `AgentChat.call`."""

    model_config = {"extra": "allow"}


def _describe(exc: BaseException) -> str:
    leaves = _leaves(exc)
    return "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves)
