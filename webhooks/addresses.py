"""Where a callback URL may point: checked when it is registered and again before every delivery.

The host is resolved here and the delivery connects to the address checked,
not to a name resolved again later (which a DNS answer could change between).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import SplitResult, urlsplit

MAX_URL_LENGTH = 2048
# Cloud metadata services: refused even where private addresses are allowed.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
     ipaddress.ip_address("100.100.100.200")}
)

Resolver = Callable[[str, int], list[str]]


class UrlRefused(ValueError):
    """The URL may not receive webhooks; the message says why."""


@dataclasses.dataclass(frozen=True)
class Target:
    """A checked URL: connect to `address`, say `host` (Host header, TLS name)."""

    scheme: str
    host: str
    port: int
    address: str
    path: str  # path and query, as sent in the request line


def resolve(host: str, port: int) -> list[str]:
    """Every address the host has (A and AAAA)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise UrlRefused(f"the host {host!r} does not resolve") from error
    return sorted({info[4][0] for info in infos})


def parse(url: object, *, require_https: bool) -> SplitResult:
    """The URL's parts, or UrlRefused: only absolute http(s) URLs without credentials or fragment."""
    if not isinstance(url, str) or not url:
        raise UrlRefused("url must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"url must be at most {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise UrlRefused("url must be ASCII without spaces or control characters (encode the host as IDNA)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UrlRefused(f"url is not a valid URL: {error}") from error
    allowed = ("https",) if require_https else ("http", "https")
    if parts.scheme not in allowed:
        raise UrlRefused(f"url must start with {' or '.join(s + '://' for s in allowed)}")
    if not parts.hostname:
        raise UrlRefused("url must name a host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("url must not carry credentials")
    if parts.fragment:
        raise UrlRefused("url must not have a fragment")
    if port == 0:
        raise UrlRefused("url must not use port 0")
    return parts


def check(url: object, *, require_https: bool, allow_private: bool, resolver: Resolver = resolve) -> Target:
    """The URL as a delivery would reach it, or UrlRefused if it may not receive webhooks.

    Every address the host resolves to must be public (globally routable),
    unless allow_private (development and tests); a metadata address never.
    """
    parts = parse(url, require_https=require_https)
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolver(host, port)
    if not addresses:
        raise UrlRefused(f"the host {host!r} does not resolve")
    for address in addresses:
        refusal = address_refusal(address, allow_private=allow_private)
        if refusal:
            raise UrlRefused(f"the host {host!r} resolves to {address}, {refusal}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme=parts.scheme, host=host, port=port, address=addresses[0], path=path)


def address_refusal(address: str, *, allow_private: bool) -> str | None:
    """Why deliveries may not go to this address, or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified or ip.is_multicast:
        return "not a host address"
    if ip.is_global:
        return None
    if allow_private:
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    return "a private or reserved address"
