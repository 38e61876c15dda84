"""The project's layout: no import cycle among its modules, dependencies one way, and each package's
``__init__`` offering an ``__all__`` of names it really has."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tracing", "workflows", "workers")


def _modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, ...]]:
    """What ``tree`` imports, wherever it does (in a function too): per imported name, the dotted names it
    may be, the likeliest first (``from pkg import name``: the submodule ``pkg.name``, else ``pkg``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name,) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield from ((f"{base}.{alias.name}", base) for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """Module → the project's modules it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for candidates in _imported(ast.parse(path.read_text()), name, path.name == "__init__.py"):
            target = next((candidate for candidate in candidates if candidate in modules), None)
            if target is not None and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


class TestImportCycles:
    """No module of tracing/, workflows/ or workers/ reaches itself through its imports, lazy ones included."""

    def test_none(self) -> None:
        """The project's import graph has no cycle."""
        assert [] == cycles(import_graph())

    def test_finds_a_cycle(self) -> None:
        """The check sees a cycle through a lazy import (as the command line and the demo once had)."""
        graph = {"a.cli": {"a.demo"}, "a.demo": {"a.cli", "a.view"}, "a.view": set()}
        assert [["a.cli", "a.demo"]] == cycles(graph)

    def test_reads_lazy_and_relative_imports(self) -> None:
        """Imports inside functions, and relative ones, are edges of the graph."""
        tree = ast.parse("def f():\n    from .b import c\n    import tracing.spans\n")
        names = set(_imported(tree, "workflows.cli._main", is_package=False))
        assert {("workflows.cli.b.c", "workflows.cli.b"), ("tracing.spans",)} == names

    def test_dependencies_flow_one_way(self) -> None:
        """workers → workflows → tracing: tracing imports neither of the others, workflows not workers."""
        graph = import_graph()
        upward = sorted(
            (source, target)
            for source, targets in graph.items()
            for target in targets
            if (source.startswith("tracing") and not target.startswith("tracing"))
            or (source.startswith("workflows") and target.startswith("workers"))
        )
        assert [] == upward


def _packages() -> list[str]:
    return sorted(name for name, path in _modules().items() if path.name == "__init__.py")


class TestPublicApi:
    """Each package's ``__init__`` names its public API in ``__all__`` (ruff's RUF022 keeps it sorted)."""

    @pytest.mark.parametrize("package", _packages())
    def test_all_names_are_real(self, package: str) -> None:
        """``__all__`` is there, and each of its names resolves."""
        module = importlib.import_module(package)
        assert [] == [name for name in module.__all__ if not hasattr(module, name)]

    def test_workflows_package_loads_nothing(self) -> None:
        """``import workflows`` loads no dependency (the compose entrypoint imports it before it execs the
        service); its names come on first use."""
        probe = (
            "import sys, workflows; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tracing', 'opentelemetry', 'pydantic', "
            "'fastapi', 'celery', 'redis', 'httpx'}))"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT, timeout=60
        )
        assert "[]" == done.stdout.strip()
