"""A release made as `make release` makes it, opened as a user would.

`akv_devcluster.release` writes every artefact into a temporary folder; then:
their names, the wheel's and sdist's metadata, the chart inside the package,
the image archive's tag, labels and AKV_ISSUER_COMMIT, the SBOM's components
against what uv.lock pins for the production package (and no dev tool, and the
Debian packages), and SHA256SUMS. In the node tier: the image is built with
buildah (root, Debian's apt), as for the other node tests. The files that
repeat the version are checked in tests/deploy/test_release.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from akv_devcluster import release
from akv_devcluster.binaries import BinariesError
from support.deploy import REPO, VERSION

URL = "https://github.com/azure-keyvault-issuer/azure-keyvault-issuer"


# The image build (warm after `make image`, which `make node` runs first: its
# layers are reused, the archive is written again) dominates; syft's scan takes
# seconds. A cold machine builds syft once (`make binaries`, ~4 min on 2 cores).
release_built = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> release.Release:
    out = tmp_path_factory.mktemp("release")
    try:
        return release.make_release(out)
    except (release.ReleaseError, BinariesError) as exc:
        pytest.fail(f"the release could not be made: {exc}", pytrace=False)


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@release_built
def test_every_artefact_is_named_with_the_version(made: release.Release) -> None:
    assert sorted(p.name for p in made.folder.iterdir()) == sorted(
        [
            f"azure_keyvault_issuer-{VERSION}-py3-none-any.whl",
            f"azure_keyvault_issuer-{VERSION}.tar.gz",
            f"azure-keyvault-issuer-{VERSION}.tgz",
            f"azure-keyvault-issuer-{VERSION}-image.tar",
            f"azure-keyvault-issuer-{VERSION}-image.cdx.json",
            "SHA256SUMS",
        ]
    )


@release_built
def test_wheel_and_sdist_carry_version_url_and_license(made: release.Release) -> None:
    dist_info = f"azure_keyvault_issuer-{VERSION}.dist-info"
    with zipfile.ZipFile(made.wheel) as wheel:
        metadata = wheel.read(f"{dist_info}/METADATA").decode()
        license_text = wheel.read(f"{dist_info}/licenses/LICENSE").decode()
    with tarfile.open(made.sdist) as sdist:
        root = f"azure_keyvault_issuer-{VERSION}"
        pkg_info = sdist.extractfile(f"{root}/PKG-INFO").read().decode()  # type: ignore[union-attr]
        assert f"{root}/LICENSE" in sdist.getnames()
    for text in (metadata, pkg_info):
        assert f"\nVersion: {VERSION}\n" in text
        assert "\nLicense-Expression: Apache-2.0\n" in text
        assert f"\nProject-URL: Source, {URL}\n" in text
    assert license_text == (REPO / "LICENSE").read_text()


@release_built
def test_the_packaged_chart_is_at_the_version(made: release.Release) -> None:
    with tarfile.open(made.chart) as chart:
        packaged = yaml.safe_load(chart.extractfile("azure-keyvault-issuer/Chart.yaml"))  # type: ignore[arg-type]
    assert (packaged["version"], packaged["appVersion"]) == (VERSION, VERSION)
    assert packaged["home"] == URL


def _image_config(archive: Path) -> tuple[list[str], dict[str, Any]]:
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
    return manifest[0]["RepoTags"], config["config"]


@release_built
def test_the_image_is_tagged_and_labelled_with_the_version(made: release.Release) -> None:
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    tags, config = _image_config(made.image)
    # The chart's default image reference (repository azure-keyvault-issuer, tag
    # appVersion), as `docker load` names it; buildah adds its localhost/ name.
    assert f"docker.io/library/azure-keyvault-issuer:{VERSION}" in tags
    assert all(tag.endswith(f"/azure-keyvault-issuer:{VERSION}") for tag in tags), tags
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.revision"] == made.revision
    assert made.revision.removesuffix("-dirty") == head
    assert labels["org.opencontainers.image.source"] == URL
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.base.name"]  # the base actually used
    # What `akv-issuer --version` and akv_issuer_build_info report inside it.
    assert f"AKV_ISSUER_COMMIT={made.revision}" in config["Env"]


def _production_pins() -> dict[str, str]:
    """name -> version of what uv.lock pins for the production package (no dev
    group) and installs on Linux/CPython: the image's platform."""
    exported = subprocess.run(
        [release._uv(), "export", "--frozen", "--no-dev", "--no-emit-project",
         "--no-hashes", "--format", "requirements-txt"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    linux = {
        "sys_platform": "linux",
        "platform_system": "Linux",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    pins: dict[str, str] = {}
    for line in exported.splitlines():
        if not line or line[0] in "# ":
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(linux):
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            pins[_normalized(requirement.name)] = spec.version
    return pins


def _sbom_components(sbom: dict[str, Any], kind: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for component in sbom.get("components", []):
        match = re.match(rf"pkg:{kind}/(?:[^/@]+/)?([^@]+)@([^?#]+)", component.get("purl", ""))
        if match:
            found.setdefault(_normalized(match.group(1)), set()).add(match.group(2))
    return found


@release_built
def test_the_sbom_lists_what_uv_lock_pins_and_the_debian_packages(made: release.Release) -> None:
    sbom = json.loads(made.sbom.read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["metadata"]["component"]["name"] == "azure-keyvault-issuer"
    assert sbom["metadata"]["component"]["version"] == VERSION
    python = _sbom_components(sbom, "pypi")
    pins = _production_pins()
    assert len(pins) > 20  # the export worked
    missing = {name: v for name, v in pins.items() if v not in python.get(name, set())}
    assert missing == {}
    assert VERSION in python["azure-keyvault-issuer"]
    # The dev group (test tools, linters) is not in the image.
    dev = {"pytest", "mypy", "ruff", "hypothesis", "azure-keyvault-issuer-devtools"}
    assert dev & python.keys() == set()
    # The Debian userland: the interpreter's packages and the C library.
    debian = _sbom_components(sbom, "deb")
    assert {"libc6", "ca-certificates"} <= debian.keys(), sorted(debian)
    assert len(debian) > 20


@release_built
def test_sha256sums_cover_every_artefact_and_match(made: release.Release) -> None:
    lines = made.checksums.read_text().splitlines()
    listed = dict(reversed(line.split("  ", 1)) for line in lines)
    assert set(listed) == {p.name for p in made.artefacts()}
    for path in made.artefacts():
        assert listed[path.name] == hashlib.sha256(path.read_bytes()).hexdigest(), path.name
    # The file is what `sha256sum -c` reads.
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=made.folder, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
