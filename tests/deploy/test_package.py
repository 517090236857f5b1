"""The package the container image would contain is complete, and holds nothing else.

No Docker engine runs here, so this repeats the Dockerfile's build stage on the
host, in a copy of what that stage sees (the files its COPY lines take): export
the locked runtime dependencies, install them hash-checked into a fresh virtual
environment, build the wheel, install it, and start the controller's entry
point from there. The wheel's file list must be the production package only:
none of the test tools of the workspace member tools/ (Key Vault emulator with
its token-minting admin API, local control plane, their throwaway CAs).
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from akv_devcluster.binaries import cache_root
from support.deploy import REPO, VERSION, run

UV_VERSION = "0.13.9"  # as in the Makefile and the Dockerfile
DOCKERFILE = REPO / "Dockerfile"
DIST_INFO = f"azure_keyvault_issuer-{VERSION}.dist-info"
# The production package: akv_issuer with exactly these subpackages and top-level files.
SUBPACKAGES = {"pki", "keyvault", "ca", "runtime", "controller", "cli"}
TOP_LEVEL_FILES = {"__init__.py", "py.typed"}
# Any path component naming a test tool, old or new location.
TOOL_NAMES = re.compile(r"emulator|devcluster|devtls|devtools", re.IGNORECASE)


def _uv() -> str:
    uv = cache_root() / f"uv-{UV_VERSION}" / "bin" / "uv"
    assert uv.is_file(), f"{uv} missing; `make venv` installs it"
    return str(uv)


def _build_stage_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY of the Dockerfile's build stage."""
    stage = DOCKERFILE.read_text().split(" AS build\n", 1)[1].split("\nFROM ", 1)[0]
    copies = []
    for line in re.findall(r"^COPY (.+)$", stage, re.MULTILINE):
        *sources, dest = line.split()
        assert not any(s.startswith("--") for s in sources), line
        copies.append((sources, dest))
    return copies


def _build_context(root: Path) -> Path:
    """A folder with what the build stage's WORKDIR holds: its COPY sources, nothing else."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for sources, dest in _build_stage_copies():
        for source in sources:
            src = REPO / source
            target = root / dest / src.name if dest.endswith("/") else root / dest
            if src.is_dir():
                shutil.copytree(src, target, ignore=ignore)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
    return root


@pytest.fixture(scope="module")
def build_stage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The build stage's result: (its virtual environment, the wheel it installed)."""
    work = tmp_path_factory.mktemp("image")
    context = _build_context(work / "src")
    requirements, venv, dist = work / "requirements.txt", work / "venv", work / "dist"
    python = venv / "bin" / "python"
    steps = [
        [_uv(), "export", "--frozen", "--no-dev", "--no-emit-project",
         "--format", "requirements-txt", "-o", str(requirements)],
        [_uv(), "venv", "--python", sys.executable, str(venv)],
        # --compile-bytecode: the Dockerfile's UV_COMPILE_BYTECODE=1.
        [_uv(), "pip", "install", "--python", str(python), "--require-hashes", "--no-deps",
         "--compile-bytecode", "-r", str(requirements)],
        [_uv(), "build", "--wheel", "--out-dir", str(dist)],
    ]  # fmt: skip
    for step in steps:
        result = run(step, timeout=600, cwd=context)
        assert result.returncode == 0, f"{step[1:3]}: {result.stderr}"
    (wheel,) = dist.glob("*.whl")
    result = run(
        [
            _uv(),
            "pip",
            "install",
            "--python",
            str(python),
            "--no-deps",
            "--compile-bytecode",
            str(wheel),
        ],
        timeout=300,
        cwd=context,
    )
    assert result.returncode == 0, result.stderr
    return venv, wheel


@pytest.fixture(scope="module")
def image_venv(build_stage: tuple[Path, Path]) -> Path:
    return build_stage[0]


@pytest.fixture(scope="module")
def wheel_files(build_stage: tuple[Path, Path]) -> list[PurePosixPath]:
    with zipfile.ZipFile(build_stage[1]) as wheel:
        return [PurePosixPath(name) for name in wheel.namelist()]


def _dist_info(build_stage: tuple[Path, Path], name: str) -> str:
    with zipfile.ZipFile(build_stage[1]) as wheel:
        return wheel.read(f"{DIST_INFO}/{name}").decode()


def test_dockerfile_runs_these_steps_and_the_controller() -> None:
    text = DOCKERFILE.read_text()
    for step in (
        "uv export --frozen --no-dev --no-emit-project --format requirements-txt",
        "--require-hashes --no-deps -r /tmp/requirements.txt",
        "uv build --wheel",
        f"UV_VERSION={UV_VERSION}",
        "UV_COMPILE_BYTECODE=1",
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


def python_in(venv: Path, code: str) -> str:
    """The output of ``code`` run by the environment's interpreter."""
    result = run([str(venv / "bin" / "python"), "-c", code], cwd=venv)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_module_is_compiled_to_bytecode_in_the_image(image_venv: Path) -> None:
    """The controller starts from bytecode, never compiling its modules (0.4 s of
    CPU and ~4 MiB of resident memory at each start otherwise; make bench
    measures it that way too, bench.env.ensure_bytecode)."""
    code = (
        "import importlib.util, pathlib, akv_issuer, sys; "
        "root = pathlib.Path(akv_issuer.__file__).parent; "
        "missing = [str(p) for p in root.rglob('*.py') "
        "if not pathlib.Path(importlib.util.cache_from_source(str(p))).is_file()]; "
        "print(len(list(root.rglob('*.py'))), missing)"
    )
    count, missing = python_in(image_venv, code).split(" ", 1)
    assert int(count) > 50
    assert missing.strip() == "[]"


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
    location, count = python_in(image_venv, script).split()
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


def test_the_build_stage_copies_only_the_production_sources() -> None:
    sources = {source for sources, _ in _build_stage_copies() for source in sources}
    # LICENSE and NOTICE: pyproject's license-files, in the wheel and the image.
    assert sources == {"pyproject.toml", "uv.lock", "README.md", "LICENSE", "NOTICE", "src"}
    # .dockerignore is an allow-list: the build context holds nothing of tools/ either.
    allowed = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert allowed == {"!pyproject.toml", "!uv.lock", "!README.md", "!LICENSE", "!NOTICE", "!src/"}


def test_the_wheel_holds_the_controller_and_no_test_tools(
    wheel_files: list[PurePosixPath],
) -> None:
    tools = sorted(str(path) for path in wheel_files if TOOL_NAMES.search(str(path)))
    assert tools == []
    assert {path.parts[0] for path in wheel_files} == {"akv_issuer", DIST_INFO}
    package = [
        path.relative_to("akv_issuer") for path in wheel_files if path.parts[0] == "akv_issuer"
    ]
    assert {path.parts[0] for path in package if len(path.parts) > 1} == SUBPACKAGES
    assert {str(path) for path in package if len(path.parts) == 1} == TOP_LEVEL_FILES
    # The controller, its CLI and the layers below are all there (so this can fail both ways).
    names = {str(path) for path in package}
    for module in (
        "controller/app/manager.py",
        "controller/requests/flow.py",
        "cli/main.py",
        "cli/controller.py",
        "keyvault/access.py",
        "ca/versions.py",
        "pki/signing.py",
        "runtime/informer.py",
    ):
        assert module in names, module
    assert len(package) >= 35


def test_the_wheel_declares_only_the_akv_issuer_script(build_stage: tuple[Path, Path]) -> None:
    entry_points = configparser.ConfigParser()
    entry_points.read_string(_dist_info(build_stage, "entry_points.txt"))
    assert entry_points.sections() == ["console_scripts"]
    assert dict(entry_points["console_scripts"]) == {"akv-issuer": "akv_issuer.cli.main:main"}
    metadata = _dist_info(build_stage, "METADATA")
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, re.MULTILINE)
    assert requires
    assert not [r for r in requires if TOOL_NAMES.search(r)]


def test_no_test_tool_is_importable_or_on_path_in_the_image(image_venv: Path) -> None:
    script = (
        "import importlib.util\n"
        "for name in ('akv_emulator', 'akv_devcluster', 'akv_devtls', "
        "'akv_issuer.devcluster', 'akv_issuer.devtls'):\n"
        "    print(name, importlib.util.find_spec(name) is not None)\n"
    )
    found = python_in(image_venv, script)
    assert " True" not in found, found
    scripts = {p.name for p in (image_venv / "bin").iterdir() if p.name.startswith("akv")}
    assert scripts == {"akv-issuer"}


def test_the_source_distribution_holds_the_same_package_only(tmp_path: Path) -> None:
    result = run([_uv(), "build", "--sdist", "--out-dir", str(tmp_path)], timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    (sdist,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        # Each member is under the azure_keyvault_issuer-<version>/ folder.
        files = [PurePosixPath(*PurePosixPath(m.name).parts[1:]) for m in archive.getmembers()]
    assert not [str(path) for path in files if TOOL_NAMES.search(str(path))]
    # Build metadata around the package (hatchling also adds .gitignore) and the
    # license files, nothing else.
    top = {path.parts[0] for path in files if path.parts}
    assert {"src", "pyproject.toml", "PKG-INFO", "LICENSE", "NOTICE"} <= top
    assert top <= {
        "src",
        "pyproject.toml",
        "README.md",
        "PKG-INFO",
        ".gitignore",
        "LICENSE",
        "NOTICE",
    }
    packages = {path.parts[2] for path in files if len(path.parts) > 3 and path.parts[0] == "src"}
    assert packages == SUBPACKAGES
