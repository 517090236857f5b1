"""The project's own facts, each read from its one source in the checkout.

The version is pyproject.toml's ``version`` (docs/versioning.md), the project
URL its ``[project.urls] Source``, the commit the checkout's ``HEAD`` (with
``-dirty`` when tracked files differ from it). The image build
(akv_devcluster.dockerfile) and ``make release`` (akv_devcluster.release) pass
them on; nothing else repeats them except the files tests/deploy/test_release.py
compares with them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

from akv_devcluster.binaries import HACK_DIR

REPO_ROOT = HACK_DIR.parent
PYPROJECT = REPO_ROOT / "pyproject.toml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
CHART_DIR = REPO_ROOT / "deploy" / "charts" / "azure-keyvault-issuer"
NAME = "azure-keyvault-issuer"


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads(PYPROJECT.read_text())["project"]
    return project


def version() -> str:
    """pyproject.toml's version: the wheel's, the chart's, the image's."""
    return str(_project()["version"])


def source_url() -> str:
    return str(_project()["urls"]["Source"])


def license_expression() -> str:
    return str(_project()["license"])


def revision(root: Path = REPO_ROOT) -> str:
    """The checkout's commit, ``<sha>-dirty`` with uncommitted tracked changes, "" without git."""
    git = shutil.which("git")
    if git is None:
        return ""
    head = subprocess.run(
        [git, "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    if head.returncode != 0:
        return ""
    changed = subprocess.run(
        [git, "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = "-dirty" if changed.returncode != 0 or changed.stdout.strip() else ""
    return head.stdout.strip() + dirty


_BASE_ARG = re.compile(r"^ARG PYTHON_IMAGE=(\S+)\s*$", re.MULTILINE)


def dockerfile_base() -> str:
    """The Dockerfile's default base (``ARG PYTHON_IMAGE=...``), as written there."""
    match = _BASE_ARG.search(DOCKERFILE.read_text())
    if match is None:
        raise ValueError(f"{DOCKERFILE} has no `ARG PYTHON_IMAGE=<image>` line")
    return match.group(1)


def qualified(reference: str) -> str:
    """A Docker Hub short name made explicit, a tag dropped when a digest pins the image.

    ``python:3.12-slim-bookworm@sha256:...`` -> ``docker.io/library/python@sha256:...``:
    buildah (containers/image) refuses a reference with both a tag and a
    digest, and the digest alone decides which image it is.
    """
    name, at, digest = reference.partition("@")
    if at:
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    return f"{name}{at}{digest}"
