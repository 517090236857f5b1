"""The layers of docs/architecture.md, checked on the source: each package
imports only the layers below it (a pure function of the files, no server)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "akv_issuer"

# package -> the akv_issuer packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "pki": set(),
    "keyvault": {"pki"},
    "runtime": set(),
    "controller": {"pki", "keyvault", "runtime"},
    "cli": {"pki", "keyvault", "runtime", "controller"},
}


def _imports(path: Path) -> set[str]:
    """The akv_issuer subpackages a module imports (at any depth of the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from akv_issuer import pki`` imports the subpackage pki
            names = (
                [f"akv_issuer.{alias.name}" for alias in node.names]
                if node.module == "akv_issuer"
                else [node.module]
            )
        for name in names:
            parts = name.split(".")
            if parts[0] == "akv_issuer" and len(parts) > 1:
                found.add(parts[1])
            elif parts[0].startswith("akv_"):
                found.add(parts[0])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_lower_layers(package: str) -> None:
    # ``__main__`` modules are entry points (``python -m``), shells like the CLI.
    modules = sorted(p for p in (SRC / package).rglob("*.py") if p.name != "__main__.py")
    assert modules, f"no modules under {package}"
    offending = {
        str(path.relative_to(SRC)): sorted(_imports(path) - ALLOWED[package] - {package})
        for path in modules
    }
    assert {k: v for k, v in offending.items() if v} == {}
