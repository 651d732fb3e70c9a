"""Downloading file parameters given as URLs, without letting a client reach what it should not.

Only http(s). Every hop (redirects included) is resolved here, every address it resolves to is
checked, and the connection goes to the checked address (the host name still travels in `Host` and
TLS SNI), so a DNS answer that changes between check and connect cannot slip past. Loopback, private,
link-local, multicast, reserved and cloud metadata addresses are refused unless
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


def refusal(address: IPAddress) -> str | None:
    """Why downloading from `address` is refused, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refusal(address.ipv4_mapped)
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
    if isinstance(address, ipaddress.IPv4Address) and address in ipaddress.ip_network("100.64.0.0/10"):
        return "a shared (carrier-grade NAT) address"
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
            request = client.build_request(
                "GET",
                target.copy_with(host=address),
                headers={"Host": target.netloc.decode("ascii")},
                extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
            )
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
