"""The production package's dependencies are exactly what it imports.

Every module ``src/akv_issuer`` imports (at any depth, function-level imports
too) that is not the standard library or ``akv_issuer`` itself is traced to
the installed distribution holding it (``importlib.metadata``; for a
namespace shared by several distributions, such as ``azure`` or
``lightkube`` and ``lightkube-models``, by the file the module is loaded
from). That set must equal ``[project].dependencies`` of pyproject.toml:
nothing imported without being declared (it would be missing from the image
as soon as nothing else pulls it in), nothing declared that is not imported.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "akv_issuer"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(root: Path) -> dict[str, set[str]]:
    """Absolute imports outside the standard library and akv_issuer: module -> importing files."""
    found: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from pkg import sub` may name a submodule of another distribution.
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "akv_issuer":
                    continue
                found.setdefault(name, set()).add(str(path.relative_to(root)))
    return found


@cache
def _top_levels() -> dict[str, list[str]]:
    return dict(packages_distributions())


@cache
def _files_of(dist_name: str) -> tuple[Path, frozenset[str]]:
    """A distribution's root folder and its files' paths relative to it."""
    dist = distribution(dist_name)
    return Path(str(dist.locate_file(""))).resolve(), frozenset(str(f) for f in dist.files or ())


def _holds(dist_name: str, path: Path) -> bool:
    root, files = _files_of(dist_name)
    try:
        return str(path.resolve().relative_to(root)) in files
    except ValueError:
        return False


def _locations(module: str) -> list[Path] | None:
    """Where ``module`` is loaded from (a namespace package: its folders' would-be
    ``__init__.py``); None when it is no module."""
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__file__", None):
        return [Path(str(loaded.__file__))]
    try:
        spec = importlib.util.find_spec(module)
    except (ModuleNotFoundError, ValueError):
        spec = None
    if spec is None:
        return None
    if spec.origin not in (None, "namespace"):
        return [Path(str(spec.origin))]
    return [Path(p) / "__init__.py" for p in spec.submodule_search_locations or ()]


def distribution_of(module: str) -> str | None:
    """The distribution holding ``module``; None for a name that is no module
    (``from pkg import name``) or a bare namespace package (its submodules say)."""
    candidates = sorted(set(_top_levels().get(module.split(".")[0], [])))
    locations = _locations(module)
    if locations is None:
        if "." in module:
            return None
        raise AssertionError(f"{module} is imported by src/akv_issuer but not installed")
    if len(candidates) == 1:
        return _normal(candidates[0])
    for name in candidates:
        if any(_holds(name, p) for p in locations):
            return _normal(name)
    if all(p.name == "__init__.py" and not p.exists() for p in locations):
        return None
    raise AssertionError(f"no installed distribution holds {module} ({locations})")


def declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {_normal(Requirement(spec).name) for spec in project["dependencies"]}


def test_the_import_scan_sees_function_level_and_namespace_imports(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "import json\nfrom akv_issuer import pki\n"
        "def f():\n    from azure.core.exceptions import HttpResponseError\n"
        "    import lightkube.models.meta_v1\n"
    )
    found = imported_modules(tmp_path)
    assert set(found) >= {"azure.core.exceptions", "lightkube.models.meta_v1"}
    assert "json" not in found
    assert "akv_issuer" not in found
    assert distribution_of("azure.core.exceptions") == "azure-core"
    assert distribution_of("azure.identity.aio") == "azure-identity"
    assert distribution_of("lightkube.models.meta_v1") == "lightkube-models"
    assert distribution_of("lightkube.config.client_adapter") == "lightkube"
    assert distribution_of("yaml") == "pyyaml"


def test_every_import_is_declared_and_every_dependency_imported() -> None:
    used: dict[str, set[str]] = {}
    for module, files in imported_modules(SRC).items():
        dist = distribution_of(module)
        if dist is not None:
            used.setdefault(dist, set()).update(files)
    undeclared = {d: sorted(files)[:3] for d, files in used.items() if d not in declared()}
    assert undeclared == {}, "imported by src/akv_issuer, missing from [project].dependencies"
    unused = declared() - set(used)
    assert unused == set(), "in [project].dependencies, imported nowhere in src/akv_issuer"
