"""The shape of the codebase: no import cycles among production modules, no oversized module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_PRODUCTION = {"tests", "bench", "migrations", "docs", "deploy"}
MAX_LINES = 400


def production_files() -> dict[str, list[Path]]:
    """Top-level module or package name -> its source files."""
    found: dict[str, list[Path]] = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        if parts[0] in NOT_PRODUCTION or any(p.startswith(".") for p in parts):
            continue
        found.setdefault(parts[0].removesuffix(".py"), []).append(path)
    return found


def imported_names(path: Path) -> set[str]:
    """Top-level names of every absolute import in a file, late ones inside functions too."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def import_graph() -> dict[str, set[str]]:
    """Which of our top-level modules each one imports."""
    files = production_files()
    return {
        name: {n for p in paths for n in imported_names(p) if n in files and n != name}
        for name, paths in files.items()
    }


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from `start` back to itself, or None."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_cycle_through_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycle_through(graph, "a") == ["a", "b", "c", "a"]
    assert cycle_through(graph, "d") is None


def test_production_modules_import_no_cycle():
    graph = import_graph()
    assert {"app", "jobs", "services", "models"} <= graph.keys()
    cycles = [c for name in sorted(graph) if (c := cycle_through(graph, name))]
    assert cycles == []


def test_no_production_module_is_oversized():
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
        for paths in production_files().values()
        for p in paths
    }
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
