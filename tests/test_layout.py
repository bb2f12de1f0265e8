"""The package's rooms stay apart: no import cycles, build tooling and lesson out of the runtime."""

from __future__ import annotations

import ast
from pathlib import Path

import tomllib

from autograder import REPO_ROOT

PACKAGE = REPO_ROOT / "autograder"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(at_import_time: bool = False) -> dict[str, set[str]]:
    """Every autograder module and those it imports (lazily too, unless `at_import_time`)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        tree = ast.parse(path.read_text())
        for node in tree.body if at_import_time else ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.update(
                    f"{node.module}.{alias.name}"
                    if f"{node.module}.{alias.name}" in modules
                    else node.module
                    for alias in node.names
                )
        graph[name] = {target for target in found if target in modules and target != name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for target in graph[stack.pop()] - seen:
            seen.add(target)
            stack.append(target)
    return seen


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = imports()
    assert [name for name in graph if name in reachable(graph, name)] == []


def test_grading_never_imports_the_lesson_and_the_runtime_never_the_build_tooling_at_import() -> (
    None
):
    graph = imports()
    assert not [
        m
        for m in graph
        if m.startswith("autograder.grading")
        and any(t.startswith("autograder.lesson") for t in graph[m])
    ]
    # A notebook imports the build tooling only when something must really
    # be built, inside that call.
    runtime = reachable(imports(at_import_time=True), "autograder.lab")
    assert not [m for m in runtime if m.startswith("autograder.build")]


def test_every_subpackage_is_installed() -> None:
    listed = set(
        tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    manifests = REPO_ROOT / "manifests"
    data = {
        ".".join(("autograder.manifests", *folder.relative_to(manifests).parts))
        for folder in [manifests, *manifests.rglob("*")]
        if folder.is_dir() and folder.name != "__pycache__"
    }
    found = {module_name(init) for init in PACKAGE.rglob("__init__.py")} | data
    assert listed == found


def test_at_most_three_sleeps_each_saying_why() -> None:
    sleeps = [
        (path, number)
        for path in PACKAGE.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "time.sleep(" in line
    ]
    assert len(sleeps) <= 3, sleeps
    for path, number in sleeps:
        before = path.read_text().splitlines()[max(0, number - 4) : number - 1]
        assert any(line.strip().startswith("#") for line in before), (
            f"{path}:{number} says not why it sleeps"
        )


def room(module: str) -> str:
    """A module's room: its sub-package (grading's by process), or the module itself at the top."""
    parts = module.split(".")
    depth = 3 if parts[1:2] == ["grading"] and len(parts) > 3 else 2
    return ".".join(parts[:depth])


def room_imports() -> dict[str, set[str]]:
    """Which rooms each room imports, at import time or inside a function."""
    graph: dict[str, set[str]] = {}
    for module, targets in imports().items():
        graph.setdefault(room(module), set()).update(room(target) for target in targets)
    return {name: targets - {name} for name, targets in graph.items()}


def test_no_room_imports_one_that_imports_it_back() -> None:
    graph = room_imports()
    assert [name for name in graph if name in reachable(graph, name)] == []


def test_the_shared_room_stands_on_nothing_and_the_cluster_rooms_never_reach_up() -> None:
    graph = room_imports()
    assert graph["autograder.shared"] <= {"autograder"}
    upper = {"autograder.lab", "autograder.lesson", "autograder.grading", "autograder.build"}
    for lower in ("autograder.practice", "autograder.providers"):
        assert not reachable(graph, lower) & upper, lower
    assert not {
        name for name in reachable(graph, "autograder.lab") if name.startswith("autograder.grading")
    }


def test_nothing_a_notebook_imports_reaches_the_course_room() -> None:
    graph = imports()
    notebook_side = {
        "autograder.lab",
        *(m for m in graph if m.startswith(("autograder.lesson", "autograder.lab"))),
    }
    reached = set().union(*(reachable(graph, m) | {m} for m in notebook_side))
    assert not [
        m
        for m in reached
        if m.startswith(("autograder.course", "autograder.bench")) or m == "autograder.demo"
    ]
