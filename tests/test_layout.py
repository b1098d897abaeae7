"""The shape of the code: commands at the root, the library in flowercam/, imports one way.

import-linter (pyproject.toml, run by .ci/run) checks the layers inside flowercam; these tests
check what it cannot see: the root scripts, imports inside functions, every module in a layer and
no re-exports. File and function sizes are a guideline, not a test (docs/contributing.md).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in REPO.glob("*.py"))
LIBRARY = sorted((REPO / "flowercam").rglob("*.py"))
BENCHMARKS = sorted(p for p in (REPO / "benchmarks").glob("*.py") if p.name != "__init__.py")
# benchmarks/ modules that are no command: what the commands import (tables: results.py's tables)
HELPERS = {"tables"}
COMMANDS = SCRIPTS
# imports allowed inside a function: slow, optional, needed by one rare path
LAZY = {"scipy"}  # datasplits.mat, only when the official split file is present


def imported_modules(path, inside_functions=False):
    """Top-level names imported by a file (or only those imported inside functions)."""
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree)
    if inside_functions:
        functions = [n for n in ast.walk(tree)
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        nodes = [n for f in functions for n in ast.walk(f)]
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_root_holds_the_design_cards_commands():
    expected = {"augment", "dataloader", "models", "main", "evaluate", "inference", "grid",
                "cache", "segment"}
    assert set(SCRIPTS) == expected
    assert (REPO / "inference_commands.bat").is_file()
    assert (REPO / "inference_commands.sh").is_file()


@pytest.mark.parametrize("path", [REPO / f"{s}.py" for s in SCRIPTS] + BENCHMARKS,
                         ids=lambda p: p.name)
def test_no_script_imports_a_script(path):
    assert not imported_modules(path) & set(SCRIPTS) - {path.stem}
    assert "benchmarks" not in imported_modules(path) or path.parent.name == "benchmarks"


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(REPO)))
def test_the_library_imports_no_script_and_nothing_inside_functions(path):
    assert not imported_modules(path) & (set(SCRIPTS) | {"benchmarks", "tests"})
    assert not imported_modules(path, inside_functions=True) - LAZY


@pytest.mark.parametrize("path", [REPO / f"{s}.py" for s in COMMANDS]
                         + [p for p in BENCHMARKS if p.stem not in HELPERS], ids=lambda p: p.name)
def test_commands_have_the_house_shape(path):
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree)
    assert doc and doc.count("python") >= 2, "a docstring with commands to paste"
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {"get_args_parser", "main"} <= functions
    assert 'if __name__ == "__main__":' in path.read_text()


def test_importing_the_library_imports_no_script():
    modules = [".".join(p.relative_to(REPO).with_suffix("").parts) for p in LIBRARY]
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            f"print(sorted(set(sys.modules) & {set(SCRIPTS)!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_every_library_module_has_a_layer():
    """import-linter only checks the modules its contracts name: name them all, each sub-package's
    modules in its own contract."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]

    def named(contract):
        return {m.strip() for layer in contract["layers"] for m in layer.split("|")}

    top = next(c for c in config["contracts"] if not c.get("containers"))
    root = REPO / "flowercam"
    assert named(top) == {f"flowercam.{p.stem}" for p in root.iterdir()
                          if p.suffix == ".py" and p.stem != "__init__" or p.is_dir()
                          and (p / "__init__.py").is_file()}
    inner = {c["containers"][0]: named(c) for c in config["contracts"] if c.get("containers")}
    for package in (p for p in root.iterdir() if (p / "__init__.py").is_file()):
        modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
        assert inner[f"flowercam.{package.name}"] == modules, package.name


def test_the_package_has_no_reexports():
    """Each name has one home: a library module never lists __all__ or re-exports with noqa."""
    for path in LIBRARY:
        text = path.read_text()
        assert "__all__" not in text and "re-export" not in text, path
