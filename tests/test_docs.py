"""The documents stand on their own: they cite nothing outside the repository, and the README's code uses only
what the examples serve."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fasttask import FastTaskAPI
from tests.support import ROOT

README = ROOT / "README.md"
DOCUMENTS = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = [
    path
    for folder in ("fasttask", "examples", "scripts")
    for path in sorted((ROOT / folder).rglob("*"))
    if path.is_file() and path.suffix in ("", ".py", ".js", ".html", ".css", ".sh")
]
BUILT_IN_ROUTES = ("/jobs", "/status", "/queues", "/metrics", "/health", "/ready", "/docs", "/dashboard")
BUILT_IN_ROUTES += ("/cancel", "/stream")  # APIPod's job routes
BUILT_IN_ROUTES += ("/openapi.json", "/run", "/runsync")  # the last two: runpod's local test API
QUOTED_PATH = re.compile(r"""["'](/[\w./{}-]*)["']""")
URL_PATH = re.compile(r"(?<!redis://)(?:localhost|127\.0\.0\.1):\d+(/[\w./-]*)")  # HTTP, not Redis URLs
CALL_PATH = re.compile(r"fasttask call \S+ (/\S+)")
APP_REF = re.compile(r"([A-Za-z_][\w.]*):app\b")
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.fixture(scope="module")
def examples() -> Iterator[dict[str, FastTaskAPI]]:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        yield {path.stem: importlib.import_module(path.stem).app for path in (ROOT / "examples").glob("*.py")}
    finally:
        sys.path.remove(str(ROOT / "examples"))


def code_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```[\w-]*\n(.*?)^```", markdown, flags=re.M | re.S)


def test_no_document_or_source_cites_a_spec_outside_the_repository() -> None:
    outside = "CONTRACT" + ".md"  # spelled in two parts so this file does not cite it either
    citing = [
        str(path.relative_to(ROOT))
        for path in [*DOCUMENTS, *SOURCES]
        if outside.lower() in path.read_text(errors="replace").lower()
    ]
    assert citing == []
    assert (ROOT / "docs" / "http-api.md").is_file()
    assert "docs/http-api.md" in README.read_text()


def test_links_between_documents_point_at_files_that_exist() -> None:
    for document in DOCUMENTS:
        for target in LINK.findall(document.read_text()):
            if target.startswith(("http://", "https://", "#")):
                continue
            assert (document.parent / target.split("#", 1)[0]).exists(), (document.name, target)


def test_readme_code_uses_only_endpoints_and_apps_the_examples_have(examples: dict[str, FastTaskAPI]) -> None:
    served = {path for app in examples.values() for path in app.tasks}
    served |= {path for app in examples.values() for path, _, _ in app.plain_endpoints}
    blocks = code_blocks(README.read_text())
    assert len(blocks) >= 5
    named: set[str] = set()
    for block in blocks:
        for pattern in (QUOTED_PATH, URL_PATH, CALL_PATH):
            named.update(pattern.findall(block))
        for module in APP_REF.findall(block):
            assert module.removeprefix("examples.") in examples, f"{module}:app is not in examples/"
    assert {"/make_fries", "/shout"} <= named  # the extraction finds the README's calls
    unknown = sorted(
        path
        for path in named
        if path not in served
        and not any(path == route or path.startswith((route + "/", route + "?")) for route in BUILT_IN_ROUTES)
    )
    assert unknown == []


def test_the_readme_distributed_section_says_to_install_the_redis_extra() -> None:
    text = README.read_text()
    section = text[text.index("## Distributed mode") : text.index("## Runpod")]
    assert "[redis]" in section


def test_the_files_example_takes_an_upload_and_returns_a_file(examples: dict[str, FastTaskAPI]) -> None:
    with TestClient(examples["files"]) as client:
        accepted = client.post("/shout", files={"file": ("notes.txt", b"hello\nworld\n", "text/plain")})
        assert accepted.status_code == 202, accepted.text
        job = client.get(accepted.headers["location"], params={"wait": 10}).json()
        assert job["status"] == "finished", job
        assert job["result"]["file_name"] == "loud-notes.txt"
        assert client.get(job["result"]["url"]).content == b"HELLO!\nWORLD!"
