"""File parameters given as URLs: the address guard, redirects, limits. Nothing here sends a packet
beyond loopback: non-loopback names resolve through a stubbed resolver, and where such a name would be
fetched the HTTP layer is a mock transport."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fasttask import FastTaskAPI, PayloadTooLarge, fetch
from fasttask.fetch import UrlRefused, checked_address, download, refusal
from tests.support.apps import make_app
from tests.support.servers import FILE_CONTENT as CONTENT
from tests.support.servers import FileServer


@pytest.fixture
def stub_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names the stubbed resolver knows; any other name fails to resolve (no real DNS lookups)."""
    table: dict[str, list[str]] = {}

    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"{host} is not in the test's DNS table")
        return table[host]

    monkeypatch.setattr(fetch, "resolve", resolve)
    return table


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.1.2.3", "private"),
        ("172.16.0.9", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.10.10", "link-local"),
        ("fd00::1", "private"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "metadata"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.1.1", "shared"),
        ("2002:7f00:1::", "loopback address inside an IPv6"),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::", "metadata address inside an IPv6"),  # 6to4 of 169.254.169.254
        ("2002:a00:1::1", "private address inside an IPv6"),  # 6to4 of 10.0.0.1
        ("64:ff9b::7f00:1", "loopback address inside an IPv6"),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "metadata address inside an IPv6"),
        ("64:ff9b:1::a00:1", "reserved"),  # local-use NAT64
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "inside an IPv6"),  # Teredo; its client is documentation
        ("2001::1", "private"),  # Teredo
        ("fec0::1", "site-local"),
        ("::7f00:1", "reserved"),  # IPv4-compatible
        ("192.0.0.8", "non-global"),
        ("198.18.0.1", "private"),
        ("192.0.2.1", "private"),
        ("2001:db8::1", "private"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "private"),
    ],
)
def test_private_and_special_addresses_are_refused(address: str, reason: str) -> None:
    verdict = refusal(ipaddress.ip_address(address))
    assert verdict is not None and reason in verdict


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "2002:808:808::1", "64:ff9b::808:808"]
)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_names_are_checked_by_every_address_they_resolve_to(stub_dns: dict[str, list[str]]) -> None:
    stub_dns.update(
        {
            "internal.test": ["10.0.0.5"],
            "mixed.test": ["93.184.216.34", "192.168.1.1"],
            "metadata.test": ["169.254.169.254"],
            "public.test": ["93.184.216.34"],
        }
    )

    def check(url: str, allow_private: bool = False) -> str:
        return asyncio.run(checked_address(httpx.URL(url), allow_private))

    for url in ("http://internal.test/a", "https://mixed.test/a", "http://metadata.test/latest/meta-data"):
        with pytest.raises(UrlRefused, match="FTAPI_ALLOW_PRIVATE_URLS"):
            check(url)
    assert check("http://public.test/x") == "93.184.216.34"
    assert check("http://internal.test/a", allow_private=True) == "10.0.0.5"
    with pytest.raises(UrlRefused, match="only http and https"):
        check("ftp://public.test/x")
    with pytest.raises(UrlRefused, match="does not resolve"):
        check("http://unknown.test/x")


def test_every_redirect_hop_is_checked(stub_dns: dict[str, list[str]]) -> None:
    stub_dns.update({"public.test": ["93.184.216.34"], "metadata.test": ["169.254.169.254"]})
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"Location": "http://metadata.test/latest/meta-data"})

    with pytest.raises(UrlRefused, match="metadata"):
        asyncio.run(download("http://public.test/start", 1 << 20, False, httpx.MockTransport(answer)))
    assert len(seen) == 1, "the refused hop must not be requested"
    # the request went to the checked address, with the name in Host
    assert seen[0].url.host == "93.184.216.34"
    assert seen[0].headers["host"] == "public.test"


def test_a_redirect_chain_longer_than_the_limit_is_refused(stub_dns: dict[str, list[str]]) -> None:
    stub_dns["public.test"] = ["93.184.216.34"]
    loop = httpx.MockTransport(lambda request: httpx.Response(302, headers={"Location": "/again"}))
    with pytest.raises(Exception, match="redirects"):
        asyncio.run(download("http://public.test/start", 1 << 20, False, loop))


def test_the_size_cap_applies_while_streaming(stub_dns: dict[str, list[str]]) -> None:
    stub_dns["public.test"] = ["93.184.216.34"]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 1000

    streamed = httpx.MockTransport(lambda request: httpx.Response(200, content=chunks()))
    with pytest.raises(PayloadTooLarge):
        asyncio.run(download("http://public.test/big", 50_000, False, streamed))


ClientFor = Callable[[FastTaskAPI], TestClient]


@pytest.fixture
def serve(
    client_for: ClientFor, queue_settings: dict[str, Any], with_workers: Callable[[FastTaskAPI], FastTaskAPI]
) -> Callable[..., TestClient]:
    def make(**settings: Any) -> TestClient:
        app = make_app(**{**queue_settings, **settings})
        client = client_for(app)
        with_workers(app)
        return client

    return make


def test_loopback_urls_are_refused_end_to_end(serve: Callable[..., TestClient], file_server: FileServer) -> None:
    client = serve()
    for host in ("127.0.0.1", "localhost", "[::1]"):
        response = client.post("/echo_file", json={"file": f"http://{host}:{file_server.port}/file.bin"})
        assert response.status_code == 422, response.text
        error = response.json()["detail"][0]
        assert error["loc"] == ["body", "file"]
        assert "loopback" in error["msg"]
    assert file_server.requests == [], "a refused URL was fetched"


def test_urls_download_when_private_addresses_are_allowed(
    serve: Callable[..., TestClient], file_server: FileServer
) -> None:
    client = serve(allow_private_urls=True, max_file_mb=0.05)  # 52,428 bytes
    base = f"http://127.0.0.1:{file_server.port}"
    for path in ("/file.bin", "/moved"):
        response = client.post("/echo_file", json={"file": base + path})
        assert response.status_code == 202, response.text
        result = client.get(f"/jobs/{response.json()['id']}", params={"wait": 20}).json()["result"]
        assert result["file_name"] == "file.bin"
        assert result["content_type"] == "application/x-test"
        assert client.get(result["url"]).content == CONTENT
    too_big = client.post("/echo_file", json={"file": base + "/big.bin"})
    assert too_big.status_code == 413
    missing = client.post("/echo_file", data={"file": base + "/nothing"})
    assert missing.status_code == 422
    assert "404" in missing.json()["detail"][0]["msg"]
