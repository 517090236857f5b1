"""The package the container image would contain is complete.

No Docker engine runs here, so this repeats the Dockerfile's build stage on the
host: export the locked runtime dependencies, install them hash-checked into a
fresh virtual environment, build the wheel, install it, and start the
controller's entry point from there.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from deploy_helpers import REPO, run

from akv_devcluster.binaries import cache_root

UV_VERSION = "0.13.9"  # as in the Makefile and the Dockerfile
DOCKERFILE = REPO / "Dockerfile"


def _uv() -> str:
    uv = cache_root() / f"uv-{UV_VERSION}" / "bin" / "uv"
    assert uv.is_file(), f"{uv} missing; `make venv` installs it"
    return str(uv)


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("image")
    requirements, venv, dist = work / "requirements.txt", work / "venv", work / "dist"
    python = venv / "bin" / "python"
    steps = [
        [_uv(), "export", "--frozen", "--no-dev", "--no-emit-project",
         "--format", "requirements-txt", "-o", str(requirements)],
        [_uv(), "venv", "--python", sys.executable, str(venv)],
        [_uv(), "pip", "install", "--python", str(python), "--require-hashes", "--no-deps",
         "-r", str(requirements)],
        [_uv(), "build", "--wheel", "--out-dir", str(dist)],
    ]  # fmt: skip
    for step in steps:
        result = run(step, timeout=600, cwd=REPO)
        assert result.returncode == 0, f"{step[1:3]}: {result.stderr}"
    (wheel,) = dist.glob("*.whl")
    result = run(
        [_uv(), "pip", "install", "--python", str(python), "--no-deps", str(wheel)],
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    return venv


def test_dockerfile_runs_these_steps_and_the_controller() -> None:
    text = DOCKERFILE.read_text()
    for step in (
        "uv export --frozen --no-dev --no-emit-project --format requirements-txt",
        "--require-hashes --no-deps -r /tmp/requirements.txt",
        "uv build --wheel",
        f"UV_VERSION={UV_VERSION}",
    ):
        assert step in text, step
    (entrypoint,) = re.findall(r"^ENTRYPOINT (.+)$", text, re.MULTILINE)
    assert json.loads(entrypoint) == ["/opt/venv/bin/akv-issuer", "controller"]
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    # The last USER is the runtime user: numeric and not root.
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    assert "org.opencontainers.image.version" in text


def test_controller_starts_from_the_installed_package(image_venv: Path) -> None:
    result = run([str(image_venv / "bin" / "akv-issuer"), "controller", "--help"], cwd=image_venv)
    assert result.returncode == 0, result.stderr
    assert "--leader-elect" in result.stdout
    assert "--health-probe-bind-address" in result.stdout


def test_every_module_imports_from_the_installed_package(image_venv: Path) -> None:
    # `controller --help` does not load the controller itself; importing every
    # module proves the locked runtime dependencies are complete.
    script = (
        "import importlib, pkgutil, akv_issuer\n"
        "names = []\n"
        "for info in pkgutil.walk_packages(akv_issuer.__path__, 'akv_issuer.'):\n"
        "    importlib.import_module(info.name); names.append(info.name)\n"
        "print(akv_issuer.__file__); print(len(names))\n"
    )
    result = run([str(image_venv / "bin" / "python"), "-c", script], cwd=image_venv)
    assert result.returncode == 0, result.stderr
    location, count = result.stdout.split()
    # Imported from the fresh environment, not from the source tree.
    assert location.startswith(str(image_venv)), location
    assert int(count) >= 30


def test_no_development_tools_in_the_runtime_environment(image_venv: Path) -> None:
    result = run([_uv(), "pip", "list", "--python", str(image_venv / "bin" / "python"),
                  "--format", "json"], cwd=REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr
    installed = {p["name"].lower() for p in json.loads(result.stdout)}
    assert {"azure-keyvault-issuer", "cryptography", "lightkube", "aiohttp"} <= installed
    assert not installed & {"pytest", "mypy", "ruff", "hypothesis"}
    check = run([_uv(), "pip", "check", "--python", str(image_venv / "bin" / "python")], cwd=REPO)
    assert check.returncode == 0, check.stdout + check.stderr
