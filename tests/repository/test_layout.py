"""The repository's layout stays acyclic and layered.

No module imports, at import time, a module that imports it back: the product's packages,
the tests, the harness they share with the benchmarks, and the benchmarks. Lazy imports inside
functions and TYPE_CHECKING blocks are the deliberate ways around a cycle and are not counted
there. Between those trees, every import counts, lazy or not: the harness imports neither the
tests nor the benchmarks, the benchmarks import nothing of the tests, no test module imports
another (shared code lives in harness/, fixtures come from conftest.py through pytest), and
nothing of bench/ or harness/ edits ``sys.path`` (the benchmarks run as ``python -m bench.NAME``
from the repository root)."""

from __future__ import annotations

import ast
from pathlib import Path

from harness.workers import REPO_ROOT

PACKAGES = ("vividly_tasks", "worker_entry")
#: Everything importable in the repository: the product, and what is not shipped.
EVERY_PACKAGE = (*PACKAGES, "harness", "tests", "bench")


def module_files(packages: tuple[str, ...] = PACKAGES, root: Path = REPO_ROOT) -> dict[str, Path]:
    files = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            if "node_modules" in path.parts:
                continue
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            files[name.removesuffix(".__init__")] = path
    return files


def absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute name ``from ... import`` in ``module`` (at ``path``) names."""
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return ".".join(part for part in (package, node.module) if part)


def module_imports(files: dict[str, Path] | None = None) -> dict[str, set[str]]:
    files = module_files() if files is None else files
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        imported: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
                continue
            for statement in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
                if isinstance(statement, ast.ImportFrom):
                    module = absolute(name, path, statement)
                    if module not in files:
                        continue
                    for alias in statement.names:
                        full = f"{module}.{alias.name}"
                        imported.add(full if full in files else module)
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
    graph = module_imports(module_files(EVERY_PACKAGE))
    assert len(graph) > 150 and {"vividly_tasks.transport.channel", "harness.workers",
                                 "bench.transport", "tests.conftest"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_a_cycle_through_relative_imports_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from .a import A\n")
    (package / "a.py").write_text("from . import b\nA = 1\n")
    (package / "b.py").write_text("from pkg.a import A\n")
    graph = module_imports(module_files(("pkg",), root=tmp_path))
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


#: The lesson workload; the adapter is everything else of the two packages but the top-level
#: ``vividly_tasks/__init__.py``, where ``celery -A vividly_tasks`` finds the lesson app lazily.
WORKLOAD = "vividly_tasks.lessons"
PACKAGE_FRONT = "vividly_tasks"


def every_import(path: Path, module: str = "") -> set[str]:
    """Every module a file imports, at import time or inside a function (a lazy import is
    still a dependency): absolute names, ``from X import Y`` read as both X and X.Y; relative
    imports resolved when the file's ``module`` name is given."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or node.level):
            if node.level and not module:
                continue
            base = absolute(module, path, node)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def adapter_modules() -> dict[str, Path]:
    return {name: path for name, path in module_files().items()
            if name != PACKAGE_FRONT and not is_workload(name)}


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


# --- the trees outside the product ---------------------------------------------------------------
#: What each tree may not import. The product knows nothing of what is not shipped; the harness
#: serves the tests and the benchmarks and imports neither; the benchmarks import the harness,
#: never the tests; a test module imports no other module of tests/ (not even a conftest.py:
#: pytest hands out fixtures) and no benchmark: what tests share lives in harness/. The one
#: exception: tests of the benchmarks' own code (tests/unit/bench/) import what they test.
FORBIDDEN = {
    "vividly_tasks": ("harness", "tests", "bench"),
    "worker_entry": ("harness", "tests", "bench"),
    "harness": ("tests", "bench"),
    "bench": ("tests",),
    "tests": ("tests", "bench"),
    "tests.unit.bench": ("tests",),
}


def banned_for(module: str) -> tuple[str, ...]:
    """The most specific rule of FORBIDDEN that covers ``module``."""
    parts = module.split(".")
    for depth in range(len(parts), 0, -1):
        if ".".join(parts[:depth]) in FORBIDDEN:
            return FORBIDDEN[".".join(parts[:depth])]
    return ()


def forbidden_imports(modules: dict[str, Path]) -> dict[str, list[str]]:
    found = {}
    for name, path in sorted(modules.items()):
        banned = banned_for(name)
        imported = sorted(n for n in every_import(path, name)
                          if n.split(".")[0] in banned and n != name.split(".")[0])
        if imported:
            found[name] = imported
    return found


def test_each_tree_imports_only_what_it_may() -> None:
    modules = module_files(EVERY_PACKAGE)
    assert {"harness.services", "harness.apps.worker_tasks", "bench.soak",
            "tests.integration.soak.test_soak", "tests.unit.transport.test_routing"} <= set(modules)
    assert forbidden_imports(modules) == {}


def test_the_import_rules_find_what_crosses_them(tmp_path: Path) -> None:
    tests = tmp_path / "tests" / "unit"
    tests.mkdir(parents=True)
    for package in (tmp_path / "tests", tests):
        (package / "__init__.py").write_text("")
    (tests / "test_one.py").write_text("from tests.unit.test_two import helper\n")
    (tests / "test_two.py").write_text("from .test_one import x\nfrom tests.conftest import y\n")
    (tests / "test_three.py").write_text("def later():\n    import bench.soak\n")
    (tests / "bench").mkdir()
    (tests / "bench" / "__init__.py").write_text("")
    (tests / "bench" / "test_four.py").write_text("import bench.soak\nimport tests.unit.test_two\n")
    (tmp_path / "harness").mkdir()
    (tmp_path / "harness" / "shared.py").write_text("def later():\n    from bench import all\n")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "run.py").write_text("from tests.unit import test_one\n")
    found = forbidden_imports(module_files(("tests", "harness", "bench"), root=tmp_path))
    assert found == {
        "tests.unit.test_one": ["tests.unit.test_two", "tests.unit.test_two.helper"],
        "tests.unit.test_two": ["tests.conftest", "tests.conftest.y", "tests.unit.test_one",
                                "tests.unit.test_one.x"],
        "tests.unit.test_three": ["bench.soak"],
        "tests.unit.bench.test_four": ["tests.unit.test_two"],
        "harness.shared": ["bench", "bench.all"],
        "bench.run": ["tests.unit", "tests.unit.test_one"],
    }


def path_edits(modules: dict[str, Path]) -> list[str]:
    """Where a module touches ``sys.path`` (``sys.path...`` or ``from sys import path``)."""
    found = []
    for name, path in sorted(modules.items()):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr == "path"
                    and isinstance(node.value, ast.Name) and node.value.id == "sys") or (
                    isinstance(node, ast.ImportFrom) and node.module == "sys"
                    and any(alias.name == "path" for alias in node.names)):
                found.append(f"{name}:{node.lineno}")
    return found


def test_nothing_of_bench_or_harness_edits_the_import_path() -> None:
    modules = module_files(("bench", "harness"))
    assert {"bench.all", "bench.transport", "harness.workers"} <= set(modules)
    assert path_edits(modules) == []


def test_the_path_check_finds_an_edit(tmp_path: Path) -> None:
    (tmp_path / "one.py").write_text("import sys\n\nsys.path.insert(0, '..')\n")
    (tmp_path / "two.py").write_text(
        "def later():\n    from sys import path\n    path.append('x')\n")
    (tmp_path / "three.py").write_text("import sys\n\nprint(sys.argv)\n")
    assert path_edits({"one": tmp_path / "one.py", "two": tmp_path / "two.py",
                       "three": tmp_path / "three.py"}) == ["one:3", "two:2"]
