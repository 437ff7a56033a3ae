"""The simulation is domain code: stdlib and numpy only, no I/O, no clock."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import orbita.simulation

ALLOWED = {"numpy", "orbita"}
ALLOWED_ORBITA = ("orbita.core", "orbita.model", "orbita.simulation")
# Stdlib modules that do I/O or read the clock have no place here.
FORBIDDEN_STDLIB = {"os", "io", "pathlib", "socket", "subprocess", "time", "tempfile", "shutil"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def test_simulation_imports_only_the_stdlib_numpy_core_and_model() -> None:
    package = Path(orbita.simulation.__file__).parent
    for path in sorted(package.glob("*.py")):
        for module in _imports(path):
            top = module.split(".")[0]
            if top == "orbita":
                assert module.startswith(ALLOWED_ORBITA), f"{path.name} imports {module}"
            elif top not in sys.stdlib_module_names:
                assert top in ALLOWED, f"{path.name} imports {module}"
            else:
                assert top not in FORBIDDEN_STDLIB, f"{path.name} imports {module}"


def test_simulation_never_reads_the_clock() -> None:
    package = Path(orbita.simulation.__file__).parent
    for path in sorted(package.glob("*.py")):
        source = path.read_text()
        for call in ("datetime.now(", ".today(", "time.time("):
            assert call not in source, f"{path.name} calls {call}"
