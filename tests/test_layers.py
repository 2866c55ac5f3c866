"""The architecture, checked: the engine's layers and the app's way in (import-linter contracts in
.importlinter), no import hidden inside a function to dodge a cycle, short functions, thin handlers."""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

ENGINE = REPO / "distill_core"
MAX_FUNCTION_LINES = 80
MAX_HANDLER_PARAMETERS = 8


def python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((REPO / folder).glob("*.py"))]


def functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout and "BROKEN" not in result.stdout


def test_the_layers_name_every_engine_module():
    """`exhaustive = true` makes lint-imports fail on a module outside the layers; the forbidden list of the
    app's contract must name every engine module but the API, or a new module would slip past it."""
    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter")
    modules = {p.stem for p in ENGINE.glob("*.py")} - {"__init__"}
    forbidden = {m.strip().removeprefix("distill_core.") for m in
                 config["importlinter:contract:app-uses-api"]["forbidden_modules"].split() if m.strip()}
    assert forbidden == modules - {"api"}
    assert config["importlinter:contract:engine-layers"]["exhaustive"] == "true"


def test_no_project_import_inside_a_function():
    """Imports of the project's own modules sit at the top of each module (only heavy or optional
    third-party libraries are imported where they are first needed)."""
    project = ("distill_core", "ui", "visuals", "app")
    hidden = []
    for path in python_files("distill_core", "ui", "visuals") + [REPO / "app.py"]:
        for function in functions(path):
            for node in ast.walk(function):
                names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                         else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                if any(name.split(".")[0] in project or (isinstance(node, ast.ImportFrom) and node.level)
                       for name in names):
                    hidden.append(f"{path.name}:{function.name}")
    assert hidden == []


def test_app_py_reaches_the_engine_through_its_api():
    """app.py is no package, so import-linter does not see it: its engine imports are checked here."""
    tree = ast.parse((REPO / "app.py").read_text(encoding="utf-8"))
    engine_imports = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("distill_core"):
            engine_imports |= {node.module} if node.module != "distill_core" else {
                f"distill_core.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            engine_imports |= {a.name for a in node.names if a.name.startswith("distill_core")}
    assert engine_imports == {"distill_core.api"}


def test_engine_functions_fit_a_screen():
    long = [f"{path.stem}.{f.name}: {f.end_lineno - f.lineno + 1} lines" for path in python_files("distill_core")
            for f in functions(path) if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_ui_functions_take_a_handful_of_parameters():
    wide = [f"{path.name}:{f.name}" for path in python_files("ui") + [REPO / "app.py"] for f in functions(path)
            if len(f.args.posonlyargs) + len(f.args.args) + len(f.args.kwonlyargs) > MAX_HANDLER_PARAMETERS
            or f.args.vararg is not None]
    assert wide == []


def test_nothing_gathers_arguments_with_locals():
    users = [path.name for path in python_files("distill_core", "ui", "visuals") + [REPO / "app.py"]
             if "locals()" in path.read_text(encoding="utf-8")]
    assert users == []


def test_every_engine_module_has_its_test_file():
    """Tests mirror the modules (the CLI, distill_core/__main__.py, is tested in test_cli.py)."""
    tested = {p.stem.removeprefix("test_") for p in (REPO / "tests").glob("test_*.py")} | {"__main__"}
    untested = sorted({p.stem for p in ENGINE.glob("*.py")} - {"__init__"} - tested)
    assert untested == []
