"""Who imports what: each optional dependency has one home in the package, and nothing else imports it.

The walk parses every module of `fasttask` with `ast` and counts every import wherever it is written: at the
top, inside functions, and `importlib.import_module("name")` with a literal name (how the extras are loaded
lazily). Type-only imports (under `if TYPE_CHECKING:`) are left out: they never run.

A new rule is one more row in RULES. The same walk finds import circles: the Redis queue's modules have none.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import fasttask

PACKAGE_DIR = Path(fasttask.__file__).resolve().parent
PACKAGE = "fasttask"


@dataclass(frozen=True)
class Rule:
    """Only the modules under `home` (a module, or a package and everything in it) import `dependency`."""

    home: str
    dependency: str


RULES = (
    Rule("fasttask.runpod", "runpod"),
    Rule("fasttask.storage", "boto3"),
    Rule("fasttask.storage", "botocore"),
    Rule("fasttask.media", "media_toolkit"),
    Rule("fasttask.http", "fastapi"),
    Rule("fasttask.http", "starlette"),
    Rule("fasttask.redis", "redis"),
    Rule("fasttask.redis", "rq"),
)

CIRCLE_FREE = ("fasttask.redis", "fasttask.worker")
"""Packages none of whose modules is part of an import circle (imports in functions count, type-only ones not)."""


@dataclass(frozen=True)
class Import:
    target: str
    """The absolute name imported: `runpod.serverless`, or `fasttask.storage` for `from ..storage import X`."""
    line: int


def module_files() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name, for its `__init__.py`)."""
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.found: list[Import] = []

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):  # type-only: never imported at run time
            for statement in node.orelse:
                self.visit(statement)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [Import(alias.name, node.lineno) for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base_parts = self.package.split(".")
            base = ".".join(base_parts[: len(base_parts) - node.level + 1])
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        modules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in self.known]
        if len(modules) < len(node.names):  # names from `base` itself, not only modules of the package
            self.found.append(Import(base, node.lineno))
        self.found += [Import(module, node.lineno) for module in modules]  # `from . import files`

    def visit_Call(self, node: ast.Call) -> None:
        function = node.func
        name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
        if name in ("import_module", "__import__") and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and not first.value.startswith("."):
                self.found.append(Import(first.value, node.lineno))
        self.generic_visit(node)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_in(source: str, module: str, is_package: bool = False, known: set[str] | None = None) -> list[Import]:
    """What the module's source imports at run time, as absolute names."""
    collector = _ImportCollector(module, is_package, known or set())
    collector.visit(ast.parse(source))
    return collector.found


def import_graph() -> dict[str, list[Import]]:
    """Every module of the package and what it imports."""
    files = module_files()
    known = set(files)
    return {
        module: imports_in(path.read_text(encoding="utf-8"), module, path.name == "__init__.py", known)
        for module, path in files.items()
    }


def is_within(module: str, home: str) -> bool:
    return module == home or module.startswith(home + ".")


def import_circles(graph: dict[str, list[Import]]) -> list[set[str]]:
    """Each group of modules of the graph that import one another, directly or through other modules."""
    edges = {module: {found.target for found in imports if found.target in graph} for module, imports in graph.items()}
    reach: dict[str, set[str]] = {}
    for start in edges:
        seen: set[str] = set()
        todo = list(edges[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo += edges[module]
        reach[start] = seen
    circles: list[set[str]] = []
    for module, reached in reach.items():
        group = {other for other in reached if module in reach[other]}
        if group and group not in circles:
            circles.append(group)
    return circles


def test_the_redis_queue_has_no_import_circles() -> None:
    circles = [
        sorted(group)
        for group in import_circles(import_graph())
        if any(is_within(module, home) for module in group for home in CIRCLE_FREE)
    ]
    assert circles == []


def test_import_circles_count_imports_in_functions_but_not_type_only_ones() -> None:
    sources = {
        "fasttask.redis.worker": "from .presence import Presence\nfrom .keys import x\n",
        "fasttask.redis.presence": "from . import keys\ndef lease():\n    from .worker import LEASE_S\n",
        "fasttask.redis.keys": "",
        "fasttask.redis.views": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .broker import B\n",
        "fasttask.redis.broker": "from .views import RedisViews\n",
    }
    known = set(sources)
    graph = {module: imports_in(source, module, known=known) for module, source in sources.items()}
    assert import_circles(graph) == [{"fasttask.redis.worker", "fasttask.redis.presence"}]


def test_each_dependency_is_imported_by_its_home_only() -> None:
    files = module_files()
    wrong = [
        f"{files[module].relative_to(PACKAGE_DIR.parent)}:{found.line} imports {found.target} (only {rule.home} may)"
        for module, imports in import_graph().items()
        for found in imports
        for rule in RULES
        if is_within(found.target, rule.dependency) and not is_within(module, rule.home)
    ]
    assert wrong == []


def test_each_home_is_seen_importing_its_dependency() -> None:
    """The walk sees the lazy imports the homes make (so the test above cannot pass by seeing nothing)."""
    graph = import_graph()
    for rule in RULES:
        importers = {
            module for module, imports in graph.items() for found in imports if is_within(found.target, rule.dependency)
        }
        assert importers, f"no module imports {rule.dependency}: drop its rule or fix the walk"
        assert all(is_within(module, rule.home) for module in importers)


def circles(graph: dict[str, list[Import]], modules: set[str]) -> list[list[str]]:
    """The import circles among `modules`: each strongly connected group of two or more, or a module that
    imports itself (Tarjan's algorithm)."""
    edges = {module: sorted({found.target for found in graph[module] if found.target in modules}) for module in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in edges[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1 or module in edges[module]:
                found.append(sorted(group))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def test_the_http_layer_and_the_app_import_no_circle() -> None:
    graph = import_graph()
    modules = {module for module in graph if is_within(module, "fasttask.http") or module == "fasttask.app"}
    assert "fasttask.http.api" in modules and "fasttask.http.routes" in modules
    assert circles(graph, modules) == []


def test_files_and_media_import_no_circle() -> None:
    assert circles(import_graph(), {"fasttask.files", "fasttask.media", "fasttask.results"}) == []


def test_the_circle_finder_finds_circles_through_imports_in_functions() -> None:
    graph = {
        "fasttask.a": imports_in("def later():\n    from . import b", "fasttask.a", known={"fasttask.b"}),
        "fasttask.b": imports_in("from .c import x", "fasttask.b"),
        "fasttask.c": imports_in("from typing import TYPE_CHECKING\nfrom .a import y", "fasttask.c"),
        "fasttask.d": imports_in("if TYPE_CHECKING:\n    from .a import z", "fasttask.d"),
    }
    assert circles(graph, set(graph)) == [["fasttask.a", "fasttask.b", "fasttask.c"]]
    graph["fasttask.c"] = imports_in("if TYPE_CHECKING:\n    from .a import y", "fasttask.c")
    assert circles(graph, set(graph)) == []


def test_the_walk_counts_imports_in_functions_and_leaves_out_type_only_ones() -> None:
    source = """
from __future__ import annotations
import importlib
import typing
from typing import TYPE_CHECKING
from . import sibling, helper
from ..storage import ObjectStore

if TYPE_CHECKING:
    import runpod
else:
    import boto3

if typing.TYPE_CHECKING:
    from botocore import config

def later():
    import media_toolkit.video
    return importlib.import_module("rq.job"), importlib.import_module(".relative", "fasttask")
"""
    known = {"fasttask.runpod.sibling"}
    found = {(item.target, item.line) for item in imports_in(source, "fasttask.runpod.handler", known=known)}
    assert found == {
        ("__future__", 2),
        ("importlib", 3),
        ("typing", 4),
        ("typing", 5),
        ("fasttask.runpod", 6),
        ("fasttask.runpod.sibling", 6),
        ("fasttask.storage", 7),
        ("boto3", 12),
        ("media_toolkit.video", 18),
        ("rq.job", 19),
    }
    in_package = imports_in(
        "from .sdk import x\nfrom .. import y, storage", "fasttask.runpod", True, {"fasttask.storage"}
    )
    assert {item.target for item in in_package} == {"fasttask.runpod.sdk", "fasttask", "fasttask.storage"}
    only_modules = imports_in("from . import sibling", "fasttask.runpod.handler", known=known)
    assert [item.target for item in only_modules] == ["fasttask.runpod.sibling"], "not the package itself"


def test_the_whole_package_has_no_import_circle() -> None:
    """Every module of fasttask, not only the Redis queue and the HTTP layer (the finder itself is tested above
    on a graph with a circle through an import in a function)."""
    assert [sorted(group) for group in import_circles(import_graph())] == []
