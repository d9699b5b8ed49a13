"""The client's address: the peer's, or, when the peer is a trusted proxy (TRUSTED_PROXIES), the
address that proxy saw, read from X-Forwarded-For right to left past every trusted hop.

A client cannot choose its address by sending X-Forwarded-For itself: the header is read only from
a trusted peer, and only the entries that trusted proxies appended are believed.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from starlette.requests import HTTPConnection

from models.settings import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=16)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _ip(text: str):
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip


def _trusted(ip, networks: tuple[Network, ...]) -> bool:
    return any(ip.version == n.version and ip in n for n in networks)


def client_address(conn: HTTPConnection, settings: Settings) -> str:
    peer = conn.client.host if conn.client else "unknown"
    networks = _networks(tuple(settings.trusted_proxies))
    peer_ip = _ip(peer)
    if not networks or peer_ip is None or not _trusted(peer_ip, networks):
        return str(peer_ip) if peer_ip is not None else peer
    hops = [h for value in conn.headers.getlist("x-forwarded-for") for h in value.split(",") if h.strip()]
    client = peer_ip
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:  # garbage a client wrote: what the last trusted hop saw is the answer
            break
        client = ip
        if not _trusted(ip, networks):
            break
    return str(client)
