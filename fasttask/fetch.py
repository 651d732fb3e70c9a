"""Downloading file parameters given as URLs, without letting a client reach what it should not.

Only http(s). Every hop (redirects included) is resolved here, every address it resolves to is
checked, and the connection goes to the checked address (the host name still travels in `Host` and
TLS SNI), so a DNS answer that changes between check and connect cannot slip past. Every address that
is not global is refused (loopback, private, link-local, site-local, multicast, reserved, shared and cloud
metadata addresses), also when an IPv6 address carries it (IPv4-mapped, 6to4, NAT64, Teredo), unless
FTAPI_ALLOW_PRIVATE_URLS=1. The FTAPI_MAX_FILE_MB cap applies while the body streams in.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import PurePosixPath
from urllib.parse import unquote

import httpx

from .errors import InvalidInput, PayloadTooLarge, size_text
from .files import MediaFile

MAX_REDIRECTS = 5
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
"""Cloud metadata services (AWS, ECS, Alibaba, AWS over IPv6); the first also counts as link-local."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlRefused(InvalidInput):
    """Raised when a URL parameter points somewhere fasttask will not download from."""


NON_GLOBAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "192.0.0.0/24",  # IETF protocol assignments
        "192.88.99.0/24",  # the former 6to4 relay anycast
        "198.18.0.0/15",  # benchmarking
        "fec0::/10",  # site-local (deprecated, still routed inside some networks)
        "64:ff9b:1::/48",  # local-use NAT64
        "::/96",  # IPv4-compatible (deprecated)
        "5f00::/16",  # SRv6 segment identifiers
        "3fff::/20",  # documentation
    )
)
"""Blocks that are not global whatever Python's `is_global` says in the running version."""
SHARED = ipaddress.ip_network("100.64.0.0/10")
"""Shared address space (carrier-grade NAT)."""
NAT64 = ipaddress.ip_network("64:ff9b::/96")
"""The well-known NAT64 prefix: its last 32 bits are the IPv4 address a NAT64 gateway connects to."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to: IPv4-mapped, 6to4, NAT64 and Teredo (its client) carry one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.teredo is not None:
        return address.teredo[1]
    return None


def refusal(address: IPAddress) -> str | None:
    """Why downloading from `address` is refused, or None when it is a global (public) address. An IPv6
    address that carries an IPv4 address is judged by both (NAT64 by the IPv4 address alone)."""
    if isinstance(address, ipaddress.IPv6Address) and (inner := embedded_ipv4(address)) is not None:
        reason = refusal(inner)
        if reason is not None:
            return f"{reason} inside an IPv6 address"
        if address in NAT64:  # global by IANA's registry, though inside ::/8: it is where the IPv4 address is
            return None
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_unspecified", "an unspecified address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
    )
    for attribute, reason in checks:
        if getattr(address, attribute):
            return reason
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if address in SHARED:
        return "a shared (carrier-grade NAT) address"
    if not address.is_global or any(address in network for network in NON_GLOBAL_NETWORKS):
        return "a non-global address"
    return None


async def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (tests replace this to stand in for DNS)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def checked_address(url: httpx.URL, allow_private: bool) -> str:
    """The address to connect to for `url`, after checking the scheme and every address it resolves to."""
    if url.scheme not in ("http", "https"):
        raise UrlRefused(f"only http and https URLs are downloaded, not {url.scheme!r}")
    host = url.host
    if not host:
        raise UrlRefused(f"the URL {url} has no host")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = [host] if _is_ip(host) else await resolve(host, port)
    except OSError as exc:
        raise UrlRefused(f"the host {host!r} does not resolve: {exc}") from None
    if not addresses:
        raise UrlRefused(f"the host {host!r} does not resolve")
    if not allow_private:
        for text in addresses:
            reason = refusal(ipaddress.ip_address(text))
            if reason is not None:
                raise UrlRefused(
                    f"the URL's host {host!r} is {reason} ({text}); set FTAPI_ALLOW_PRIVATE_URLS=1 to allow it"
                )
    return addresses[0]


async def download(
    url: str, max_bytes: int, allow_private: bool, transport: httpx.AsyncBaseTransport | None = None
) -> MediaFile:
    """Download `url` into a MediaFile, following up to MAX_REDIRECTS redirects, each one checked."""
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    async with httpx.AsyncClient(
        transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
    ) as client:
        target = _parse(url)
        for _ in range(MAX_REDIRECTS + 1):
            address = await checked_address(target, allow_private)
            request = pinned_request(client, "GET", target, address)
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise InvalidInput(f"could not download {target}: {exc}") from None
            try:
                if response.is_redirect and "location" in response.headers:
                    target = target.join(response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise InvalidInput(f"downloading {target} answered HTTP {response.status_code}")
                return await _receive(response, target, max_bytes)
            finally:
                await response.aclose()
    raise InvalidInput(f"downloading {url} took more than {MAX_REDIRECTS} redirects")


def pinned_request(
    client: httpx.AsyncClient,
    method: str,
    target: httpx.URL,
    address: str,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> httpx.Request:
    """A request to `target` that connects to `address` (checked by `checked_address`), the host name still
    in `Host` and TLS SNI."""
    return client.build_request(
        method,
        target.copy_with(host=address),
        headers={**(headers or {}), "Host": target.netloc.decode("ascii")},
        content=content,
        extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
    )


async def _receive(response: httpx.Response, url: httpx.URL, max_bytes: int) -> MediaFile:
    too_large = PayloadTooLarge(f"the file at {url} is larger than {size_text(max_bytes)}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    name = unquote(PurePosixPath(url.path).name) or "download"
    content_type = response.headers.get("content-type", "").split(";")[0].strip() or None
    media = MediaFile(name, content_type)
    try:
        async for chunk in response.aiter_bytes():
            if media.size + len(chunk) > max_bytes:
                raise too_large
            media.write(chunk)
    except httpx.HTTPError as exc:
        media.close()
        raise InvalidInput(f"could not download {url}: {exc}") from None
    except BaseException:
        media.close()
        raise
    return media


def _parse(url: str) -> httpx.URL:
    try:
        return httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UrlRefused(f"not a valid URL: {exc}") from None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
