"""Who the client of an HTTP request is: its peer, or what a trusted reverse proxy says it is.

The per-IP rate limit and the registration limit count `scope["client"]`. Anyone can send an
`X-Forwarded-For` header, so it is believed only when the peer itself is one of the proxies named in
`trusted_proxies` (none by default). Each proxy appends the address it saw, so the header is read from
the right: the first entry that is not itself a trusted proxy is the client. Entries further left were
written by the client and are ignored. `Forwarded` and `X-Real-IP` are never read.

uvicorn has its own version of this (`proxy_headers`, on by default, trusting 127.0.0.1 or
FORWARDED_ALLOW_IPS); `serve` turns it off, so this module is the only one that reads these headers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.types import ASGIApp, Receive, Scope, Send

Network = IPv4Network | IPv6Network
FORWARDED_FOR = b"x-forwarded-for"


def _address(text: str) -> IPv4Address | IPv6Address | None:
    try:
        found = ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(found, IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return found


def _trusted(address: IPv4Address | IPv6Address, proxies: Sequence[Network]) -> bool:
    return any(address in network for network in proxies)


def forwarded_client(peer: str, forwarded_for: Iterable[str], proxies: Sequence[Network]) -> str:
    """The client's address: `peer`, unless `peer` is a trusted proxy and X-Forwarded-For says more.

    `forwarded_for`: the values of every X-Forwarded-For header, in the order received.
    """
    address = _address(peer)
    if address is None or not _trusted(address, proxies):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    client = address
    for hop in reversed(hops):
        stated = _address(hop)
        if stated is None:  # not written by a proxy we trust (they write addresses): stop at the last good one
            break
        client = stated
        if not _trusted(stated, proxies):
            break
    return str(client)


class ClientAddress:
    """ASGI middleware: with trusted proxies set, rewrites `scope["client"]` to the forwarded client."""

    def __init__(self, app: ASGIApp, *, proxies: Sequence[Network]) -> None:
        self.app = app
        self.proxies = tuple(proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if self.proxies and scope["type"] in ("http", "websocket") and client:
            values = [v.decode("latin-1") for k, v in scope["headers"] if k.lower() == FORWARDED_FOR]
            if values:
                scope = {**scope, "client": (forwarded_client(str(client[0]), values, self.proxies), 0)}
        await self.app(scope, receive, send)
