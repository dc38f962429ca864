"""The shape of the code: layers that import one way (import-linter), small modules and functions.

The layer contract lives in pyproject.toml; `lint-imports` checks it here and in `.ci/run`.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_PRODUCTION = {"tests", "bench", "migrations", "docs", "deploy", "strava_sim", "demo"}
MAX_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_ROOT_MODULES = 10
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def production_files() -> list[Path]:
    """Every production source file (development tools, tests and migrations left out)."""
    return [
        path
        for path in ROOT.rglob("*.py")
        if (parts := path.relative_to(ROOT).parts)[0] not in NOT_PRODUCTION
        and not any(p.startswith(".") or p == "migrations" for p in parts)
    ]


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    """Run import-linter on the tree at `cwd` (its pyproject.toml holds the contracts)."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


needs_linter = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter not installed")


@needs_linter
def test_layer_contract_holds():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@needs_linter
def test_a_planted_wrong_way_import_breaks_the_layer_contract(tmp_path):
    """The store importing the web side is the kind of mistake the contract exists to stop."""
    for name in ("pyproject.toml", *(p.name for p in ROOT.iterdir() if p.suffix == ".py")):
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in ROOT.iterdir():
        if (folder / "__init__.py").exists():
            shutil.copytree(folder, tmp_path / folder.name)
    schema = tmp_path / "models" / "schema.py"
    schema.write_text(schema.read_text() + "\nimport web.pages  # planted\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1
    assert "models is not allowed to import web" in done.stdout


@needs_linter
def test_development_tools_are_forbidden_to_production(tmp_path):
    for name in ("pyproject.toml", *(p.name for p in ROOT.iterdir() if p.suffix == ".py")):
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in ROOT.iterdir():
        if (folder / "__init__.py").exists():
            shutil.copytree(folder, tmp_path / folder.name)
    pages = tmp_path / "web" / "pages.py"
    pages.write_text(pages.read_text() + "\nimport strava_sim  # planted\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1
    assert "web.pages -> strava_sim" in done.stdout


def test_the_root_holds_only_entry_points_and_packages():
    modules = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(modules) <= MAX_ROOT_MODULES, modules
    for name in ("webhook", "reconcile", "strava_client", "models"):  # the design card's four
        assert (ROOT / name / "__init__.py").exists() or (ROOT / f"{name}.py").exists()


def test_no_production_module_is_oversized():
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
        for p in production_files()
    }
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def long_functions(path: Path) -> dict[str, int]:
    """Functions in a file longer than MAX_FUNCTION_LINES, with their lengths."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        f"{path.relative_to(ROOT)}:{node.name}": node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    }


def test_no_function_is_oversized():
    found = {}
    for path in [*production_files(), *(ROOT / "strava_sim").rglob("*.py")]:
        found.update(long_functions(path))
    assert found == {}


def test_the_readme_module_map_names_every_module():
    """Every production module and development tool appears, backquoted, in the README's map."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Module map", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([\w/.]+)`", section))
    missing = []
    for path in [
        *production_files(),
        *(ROOT / "strava_sim").glob("*.py"),
        *(ROOT / "demo").glob("*.py"),
    ]:
        relative = path.relative_to(ROOT).as_posix()
        if path.name != "__init__.py" and relative not in named:
            missing.append(relative)
        elif path.name == "__init__.py" and f"{path.parent.name}/" not in named:
            missing.append(f"{path.parent.name}/")
    assert missing == []
