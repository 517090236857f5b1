"""The layers of docs/architecture.md, checked on the source: each package
imports only the layers below it (a pure function of the files, no server).

Two checks: a plain reading of each module's imports (below), and the
import-linter contracts of pyproject.toml (``lint-imports``: the package
layers, the controller's layers with its features independent of each other,
no import cycle anywhere), run on the tree as it is and on copies with one
forbidden import injected, which must break the contract that forbids it."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "akv_issuer"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# package -> the akv_issuer packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "pki": set(),
    "keyvault": {"pki"},
    "runtime": set(),
    "ca": {"pki", "keyvault"},
    "controller": {"pki", "keyvault", "ca", "runtime"},
    "cli": {"pki", "keyvault", "ca", "runtime", "controller"},
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


def _lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's contracts on the ``akv_issuer`` under ``src``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join((str(src), str(ROOT / "tools" / "src"))),
    }
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_contracts_hold() -> None:
    result = _lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 6 kept, 0 broken." in result.stdout


# (module it goes into, the import, the contract that forbids it)
FORBIDDEN = [
    pytest.param(
        "controller/revocation/store.py",
        "from akv_issuer.controller.requests import signing",
        "controller: app > independent features > core > observability > api",
        id="feature-imports-feature",
    ),
    pytest.param(
        "controller/core/issuer.py",
        "import akv_issuer.controller.issuers",
        "controller: app > independent features > core > observability > api",
        id="core-imports-feature",
    ),
    pytest.param(
        "controller/issuers/status.py",
        "import akv_issuer.controller.issuers.reconciler",
        "no import cycle between the modules of any package",
        id="cycle-in-a-feature",
    ),
    pytest.param(
        "pki/crl.py",
        "import akv_issuer.keyvault",
        "akv_issuer: cli > controller > ca > runtime | keyvault > pki",
        id="pki-imports-keyvault",
    ),
    pytest.param(
        "ca/versions.py",
        "import akv_issuer.controller.core",
        "akv_issuer: cli > controller > ca > runtime | keyvault > pki",
        id="ca-imports-controller",
    ),
    pytest.param(
        "ca/root.py",
        "import akv_issuer.runtime.leader",
        "akv_issuer.ca: the CA rules on pki and keyvault",
        id="ca-imports-runtime",
    ),
    pytest.param(
        "keyvault/errors.py",
        "import akv_issuer.ca",
        "akv_issuer: cli > controller > ca > runtime | keyvault > pki",
        id="keyvault-imports-ca",
    ),
    pytest.param(
        "runtime/queue.py",
        "import akv_issuer.pki",
        "akv_issuer.runtime: generic controller machinery",
        id="runtime-imports-pki",
    ),
    pytest.param(
        "keyvault/cloud.py",
        "import akv_emulator",
        "akv_issuer never imports the test tools",
        id="src-imports-test-tools",
    ),
]


@pytest.mark.parametrize(("module", "statement", "contract"), FORBIDDEN)
def test_import_contracts_break_on_a_forbidden_import(
    tmp_path: Path, module: str, statement: str, contract: str
) -> None:
    copy = tmp_path / "src" / "akv_issuer"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{statement}  # injected by the test\n")
    result = _lint_imports(tmp_path / "src")
    assert result.returncode != 0, result.stdout
    broken = " ".join(result.stdout.split("Broken contracts", 1)[-1].split())
    assert contract in broken, result.stdout
    # An import against the layers also closes a cycle: the acyclic contract may break too.
    assert "0 broken" not in result.stdout


def test_the_layout_table_of_docs_controller_md_names_every_module() -> None:
    """docs/controller.md draws the layout: every module of the runtime and the
    controller appears in its table (``__init__``/``__main__`` and the ``api``
    package, one row, aside)."""
    text = (ROOT / "docs" / "controller.md").read_text()
    table = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    missing = [
        str(path.relative_to(SRC))
        for package in ("runtime", "controller")
        for path in sorted((SRC / package).rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py")
        and path.parent.name != "api"
        and f"`{path.relative_to(SRC)}`" not in table
    ]
    assert missing == []
    assert "`controller/api/`" in table
