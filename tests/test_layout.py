"""The package layout stays acyclic: no module imports, at import time, a
module that imports it back. Lazy imports inside functions and TYPE_CHECKING blocks are the
deliberate ways around a cycle and are not counted."""

from __future__ import annotations

import ast

from tests.workers import REPO_ROOT

PACKAGES = ("vividly_tasks", "worker_entry")


def module_imports() -> dict[str, set[str]]:
    files = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
            files[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        imported: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
                continue
            for statement in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
                if isinstance(statement, ast.ImportFrom) and statement.module in files:
                    for alias in statement.names:
                        full = f"{statement.module}.{alias.name}"
                        imported.add(full if full in files else statement.module)
                elif isinstance(statement, ast.Import):
                    imported.update(a.name for a in statement.names if a.name in files)
        graph[name] = imported - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name):], name]
        if name in done:
            return None
        for imported in sorted(graph[name]):
            cycle = visit(imported, [*path, name])
            if cycle:
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name, [])
        if cycle:
            return cycle
    return None


def test_no_module_imports_itself_back() -> None:
    graph = module_imports()
    assert len(graph) > 50 and "vividly_tasks.transport.channel" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
