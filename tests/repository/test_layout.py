"""The package layout stays acyclic: no module imports, at import time, a
module that imports it back. Lazy imports inside functions and TYPE_CHECKING blocks are the
deliberate ways around a cycle and are not counted."""

from __future__ import annotations

import ast
from pathlib import Path

from harness.workers import REPO_ROOT

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


#: The lesson workload; the adapter is everything else of the two packages but the top-level
#: ``vividly_tasks/__init__.py``, where ``celery -A vividly_tasks`` finds the lesson app lazily.
WORKLOAD = "vividly_tasks.lessons"
PACKAGE_FRONT = "vividly_tasks"


def every_import(path: Path) -> set[str]:
    """Every module a file imports, at import time or inside a function (a lazy import is
    still a dependency): absolute names, ``from X import Y`` read as both X and X.Y."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def adapter_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
            name = name.removesuffix(".__init__")
            if name != PACKAGE_FRONT and not is_workload(name):
                modules[name] = path
    return modules


def is_workload(name: str) -> bool:
    return name == WORKLOAD or name.startswith(f"{WORKLOAD}.")


def workload_imports(modules: dict[str, Path]) -> dict[str, list[str]]:
    found = {}
    for name, path in sorted(modules.items()):
        imported = sorted(n for n in every_import(path) if is_workload(n))
        if imported:
            found[name] = imported
    return found


def test_nothing_of_the_adapter_imports_the_workload() -> None:
    modules = adapter_modules()
    assert {"vividly_tasks.transport.channel", "worker_entry.launcher", "vividly_tasks.cli",
            "vividly_tasks.dispatch.record", "vividly_tasks.testing.pytest_plugin"} <= set(modules)
    assert workload_imports(modules) == {}


def test_the_boundary_check_finds_a_workload_import(tmp_path: Path) -> None:
    module = tmp_path / "adapter_module.py"
    module.write_text("def later():\n    from vividly_tasks.lessons.product import create_app\n")
    assert workload_imports({"vividly_tasks.worker.x": module}) == {
        "vividly_tasks.worker.x": ["vividly_tasks.lessons.product",
                                   "vividly_tasks.lessons.product.create_app"],
    }


def test_the_transport_knows_nothing_of_celery_nor_of_the_rest() -> None:
    """Like Kombu under Celery: the transport imports neither Celery nor the worker pieces,
    entrypoint, dispatcher or commands built on it."""
    transport = {name: path for name, path in adapter_modules().items()
                 if name.startswith("vividly_tasks.transport")}
    assert len(transport) > 20
    above = {name: sorted(n for n in every_import(path)
                          if n.split(".")[0] in ("celery", "worker_entry")
                          or (n.startswith("vividly_tasks.")
                              and not n.startswith("vividly_tasks.transport")))
             for name, path in transport.items()}
    assert {name: found for name, found in above.items() if found} == {}
