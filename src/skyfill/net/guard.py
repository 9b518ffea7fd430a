"""Refuses connections to loopback, private and link-local addresses unless allowed.

DID documents are untrusted input: a PDS endpoint could point at a service inside the
user's network. The check runs where each HTTP client resolves names (the aiohttp
session's resolver in `net/http.py`, `net/lean_transport.py`'s own), so it also covers
redirects and hosts that resolve to a private address only later.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TypeVar

from skyfill.net.exceptions import PrivateNetworkRefused

T = TypeVar("T")


def is_private_address(address: str) -> bool:
    """True for loopback, private, link-local, reserved, unspecified and multicast IPs."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_unspecified
        or ip.is_multicast
    )


def check_host(host: str, allow_private: bool) -> None:
    """Refuse a literal private IP host (names are checked when resolved)."""
    if allow_private:
        return
    try:
        private = is_private_address(host.strip("[]"))
    except ValueError:
        private = host.lower() == "localhost" or host.lower().endswith(".localhost")
    if private:
        raise PrivateNetworkRefused(refusal(host))


def public_only(host: str, answers: list[T], address: Callable[[T], str]) -> list[T]:
    """A name's resolved `answers` without the private ones (`address` gives each one's
    IP); PrivateNetworkRefused when none is left."""
    public = [answer for answer in answers if not is_private_address(address(answer))]
    if not public:
        raise PrivateNetworkRefused(refusal(host))
    return public


def refusal(host: str) -> str:
    return f"refused {host}: it is a private/loopback address (use --allow-private-network)"
