"""Resources over real HTTP in both eras: who may read, subscribe (2025-11-25) and listen (2026-07-28),
completion of odd values, and what a client sees when a handler fails unexpectedly."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.session import MessageHandlerFnT
from mcp.client.streamable_http import streamable_http_client
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, ResourceTemplateReference, ResourceUpdatedNotification

from tests import support_db
from tests.conftest import Account, Hub, TravelClock, structured
from tests.support_http import bearer, http_client, serving

pytestmark = pytest.mark.anyio

MISSING_CONVERSATION = "cnv_" + "0" * 20
MISSING_AGENT = "agt_" + "0" * 20
AGENT_REF = ResourceTemplateReference(uri="agentchat://agents/{agent_id}")
CONVERSATION_REF = ResourceTemplateReference(uri="agentchat://conversations/{conversation_id}")
Outcome = tuple[int, str] | None  # None: allowed; else the JSON-RPC error (code, message)


@dataclass
class Chat:
    alice: Account
    bob: Account
    eve: Account  # in no conversation
    conversation: str


async def chat(hub: Hub) -> Chat:
    alice, bob, eve = [await hub.register_agent(n) for n in ("alice", "bob", "eve")]
    async with hub.client(alice) as a:
        started = await a.call_tool(
            "start_conversation", {"participants": [bob.id], "topic": "private", "first_message": "hi"}
        )
    return Chat(alice, bob, eve, structured(started)["conversation"]["id"])


async def outcome(attempt: Awaitable[Any]) -> Outcome:
    try:
        await attempt
    except MCPError as exc:
        return exc.error.code, exc.error.message
    return None


@asynccontextmanager
async def subscribed(client: Client, mode: str, uri: str) -> AsyncIterator[None]:
    """Subscribed to `uri` the way the era does: resources/subscribe, or a subscriptions/listen stream."""
    if mode == "legacy":
        await client.subscribe_resource(uri)
        yield
        return
    async with client.listen(resource_subscriptions=[uri]):
        yield


async def subscribe(client: Client, mode: str, uri: str) -> None:
    async with subscribed(client, mode, uri):
        pass


def every_resource(c: Chat) -> list[str]:
    uris = ["agentchat://me", f"agentchat://agents/{c.bob.id}", f"agentchat://agents/{MISSING_AGENT}"]
    for target in (c.conversation, MISSING_CONVERSATION):
        uris += [f"agentchat://conversations/{target}", f"agentchat://conversations/{target}/messages"]
    return uris


# --- subscribing follows the read rule ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_subscribing_to_any_resource_is_refused_exactly_as_reading_it(hub: Hub, mode: str) -> None:
    c = await chat(hub)
    async with serving(hub) as base:
        for who in (None, c.eve, c.bob):
            async with http_client(base, who, mode=mode) as client:
                for uri in every_resource(c):
                    read = await outcome(client.read_resource(uri))
                    subscribed = await outcome(subscribe(client, mode, uri))
                    assert subscribed == read, (who and who.name, uri)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_outsiders_hear_nothing_of_a_conversation_and_cannot_tell_it_from_a_missing_one(
    hub: Hub, mode: str
) -> None:
    c = await chat(hub)
    uri = f"agentchat://conversations/{c.conversation}"
    heard: dict[str, list[str]] = {"member": [], "outsider": []}

    def recorder(who: str) -> MessageHandlerFnT:
        async def record(message: Any) -> None:
            if isinstance(message, ResourceUpdatedNotification):
                heard[who].append(str(message.params.uri))

        return record

    async with serving(hub) as base, http_client(base, c.alice) as alice, AsyncExitStack() as stack:
        for outsider in (None, c.eve):
            o = await stack.enter_async_context(client_hearing(base, outsider, mode, recorder("outsider")))
            refusals = []
            for target in (c.conversation, MISSING_CONVERSATION):
                for suffix in ("", "/messages"):
                    with pytest.raises(MCPError) as refused:
                        await subscribe(o, mode, f"agentchat://conversations/{target}{suffix}")
                    refusals.append((refused.value.error.code, refused.value.error.message.replace(target, "X")))
            assert refusals[:2] == refusals[2:]  # an existing conversation reads as a missing one
            assert refusals[0] == (  # list_conversations only for an agent: the only role that may call it
                INVALID_PARAMS,
                "No conversation X that you can see." + (" list_conversations shows yours." if outsider else ""),
            )
        b = await stack.enter_async_context(client_hearing(base, c.bob, mode, recorder("member")))
        await stack.enter_async_context(subscribed(b, mode, uri))  # the same wiring, for a member
        for n in (1, 2):  # the outsiders' connections stay open while the member hears two messages
            structured(await alice.call_tool("send_message", {"conversation_id": c.conversation, "text": "s"}))
            with anyio.fail_after(5):
                while len(heard["member"]) < n:
                    await anyio.sleep(0.02)
    assert heard == {"member": [uri, uri], "outsider": []}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_member_who_left_and_a_peeker_whose_window_ended_hear_of_no_later_message(
    hub: Hub, mode: str, travel: TravelClock
) -> None:
    """Access is checked for every notification, not only when the subscription starts."""
    alice, bob, carol = [await hub.register_agent(n, can_refuse=False) for n in ("alice", "bob", "carol")]
    uma = await hub.register_user("uma")
    admin = await hub.register_admin("admin")
    async with hub.client(admin) as c:
        structured(await c.call_tool("grant_credits", {"user_id": uma.id, "amount": "10.00"}))
    async with hub.client(alice) as a:
        started = await a.call_tool("start_conversation", {"participants": [bob.id, carol.id], "topic": "t"})
    conversation = structured(started)["conversation"]["id"]
    async with hub.client(uma) as u:
        peek = structured(await u.call_tool("request_peek", {"conversation_id": conversation, "max_price": "3.00"}))
    assert peek["status"] == "active"  # standing consent: the window opens at once
    uri = f"agentchat://conversations/{conversation}"
    heard: dict[str, list[str]] = {"bob": [], "carol": [], "uma": []}

    def recorder(who: str) -> MessageHandlerFnT:
        async def record(message: Any) -> None:
            if isinstance(message, ResourceUpdatedNotification):
                heard[who].append(str(message.params.uri))

        return record

    async def send(text: str, then: dict[str, int]) -> None:
        structured(await sender.call_tool("send_message", {"conversation_id": conversation, "text": text}))
        with anyio.fail_after(5):
            while any(len(heard[who]) < n for who, n in then.items()):
                await anyio.sleep(0.02)

    async with serving(hub) as base, http_client(base, alice) as sender, AsyncExitStack() as stack:
        clients = {}
        for who, account in (("bob", bob), ("carol", carol), ("uma", uma)):
            clients[who] = await stack.enter_async_context(client_hearing(base, account, mode, recorder(who)))
            await stack.enter_async_context(subscribed(clients[who], mode, uri))
        await send("everyone hears this", {"bob": 1, "carol": 1, "uma": 1})

        structured(await clients["bob"].call_tool("leave_conversation", {"conversation_id": conversation}))
        travel.advance(minutes=peek["duration_minutes"], seconds=1)
        await send("only carol hears this", {"carol": 2})
        await anyio.sleep(0.5)  # what bob or uma would hear would have arrived by now
    assert heard == {"bob": [uri], "carol": [uri, uri], "uma": [uri]}


@asynccontextmanager
async def client_hearing(
    base: str, account: Account | None, mode: str, on_message: MessageHandlerFnT
) -> AsyncIterator[Client]:
    """An HTTP client whose server-sent notifications go to `on_message` (handshake-era subscriptions)."""
    async with (
        httpx2.AsyncClient(headers=bearer(account), timeout=httpx2.Timeout(30, read=300)) as http,
        Client(
            streamable_http_client(f"{base}/mcp", http_client=http), mode=mode, message_handler=on_message, cache=None
        ) as client,  # type: ignore[arg-type]
    ):
        yield client


# --- reads ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_anonymous_read_of_a_conversation_is_the_not_found_of_a_missing_one(hub: Hub, mode: str) -> None:
    c = await chat(hub)
    async with serving(hub) as base, http_client(base, mode=mode) as anonymous:
        for suffix in ("", "/messages"):
            answers = []
            for target in (c.conversation, MISSING_CONVERSATION):
                with pytest.raises(MCPError) as refused:
                    await anonymous.read_resource(f"agentchat://conversations/{target}{suffix}")
                answers.append((refused.value.error.code, refused.value.error.message.replace(target, "X")))
            assert (
                answers[0]
                == answers[1]
                == (INVALID_PARAMS, "No conversation X that you can see.")  # no tool an anonymous session lacks
            )


# --- completion -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_completing_odd_values_answers_an_empty_list(hub: Hub, mode: str) -> None:
    c = await chat(hub)
    odd = ["agt_\ue000", "\ue000", "cnv_\ue000", "\U0010ffff", "\x00", "agt_" + "x" * 5000, "\u202e"]
    async with serving(hub) as base, http_client(base, c.alice, mode=mode) as alice:
        for value in odd:
            for ref, name in ((AGENT_REF, "agent_id"), (CONVERSATION_REF, "conversation_id")):
                got = await alice.complete(ref, {"name": name, "value": value})
                assert got.completion.values == [], (name, value)
        # and the ordinary case still completes
        mine = await alice.complete(CONVERSATION_REF, {"name": "conversation_id", "value": "cnv_"})
        assert mine.completion.values == [c.conversation]


# --- an unexpected failure never reaches the client as text -------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_unexpected_failure_in_a_handler_answers_an_opaque_internal_error_and_is_logged(
    hub: Hub, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    c = await chat(hub)
    async with serving(hub) as base, http_client(base, c.alice, mode=mode) as alice:
        # the database breaks under the running hub
        support_db.query(hub.settings.db, "DROP TABLE participants" + (" CASCADE" if support_db.ON_POSTGRES else ""))
        with caplog.at_level(logging.ERROR), pytest.raises(MCPError) as failed:
            await subscribe(alice, mode, f"agentchat://conversations/{c.conversation}")
    assert (failed.value.error.code, failed.value.error.message, failed.value.error.data) == (
        INTERNAL_ERROR,
        "Internal server error",
        None,
    )
    missing = 'relation "participants" does not exist' if support_db.ON_POSTGRES else "no such table: participants"
    assert missing in caplog.text  # the details stay in the server's log
