"""One version, one project URL, one license, everywhere; and a release that agrees.

pyproject.toml's `version` is the only source (docs/versioning.md). The files
that must repeat it (the chart, the Dockerfile's default, the kustomize base's
image tag, remote references, the docs' image tags, the CHANGELOG) are
checked here rather than generated. Then `make release`'s code makes a release
into a temporary folder, and its artefacts are opened as a user would: the
wheel's and sdist's metadata, the chart inside the package, the image
archive's tag and labels, the SBOM's components against what uv.lock pins for
the production package, and SHA256SUMS.
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
from deploy_helpers import CHART, CONFIG, PROJECT, REPO, VERSION
from packaging.requirements import Requirement

from akv_devcluster import release
from akv_devcluster.binaries import BinariesError

URL = "https://github.com/azure-keyvault-issuer/azure-keyvault-issuer"
DOCKERFILE = (REPO / "Dockerfile").read_text()
CHART_YAML: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
SEMVER = r"\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?"


def _dockerfile_arg(name: str) -> str:
    (value,) = re.findall(rf"^ARG {name}=(\S*)\s*$", DOCKERFILE, re.MULTILINE)
    return value


def _label(name: str) -> str:
    (value,) = re.findall(rf'org\.opencontainers\.image\.{name}="([^"]*)"', DOCKERFILE)
    return value


# --- the files that repeat the version, the URL and the license ---------------


def test_the_version_is_semver() -> None:
    assert re.fullmatch(SEMVER, VERSION), VERSION


def test_chart_version_and_app_version_agree_with_pyproject() -> None:
    assert (str(CHART_YAML["version"]), str(CHART_YAML["appVersion"])) == (VERSION, VERSION)


def test_dockerfile_default_version_agrees_with_pyproject() -> None:
    # `docker build .` without build arguments still labels the right version.
    assert _dockerfile_arg("VERSION") == VERSION
    assert _label("version") == "${VERSION}"
    assert _label("revision") == "${REVISION}"


def test_kustomize_base_image_tag_agrees_with_pyproject() -> None:
    manager = yaml.safe_load((CONFIG / "manager" / "kustomization.yaml").read_text())
    tags = {str(image.get("newTag")) for image in manager["images"]}
    assert tags == {VERSION}


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "config", "deploy", "docs", "README.md"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [REPO / name for name in listed if name.endswith((".md", ".yaml", ".txt", ".tpl"))]


# How a version is named in docs and manifests: an image tag, a newTag, a git ref.
_NUMBER = r"\d+\.\d+\.\d+"
_VERSION_MENTIONS = re.compile(
    rf"azure-keyvault-issuer(?:-|:)({_NUMBER})\b|newTag:\s*\"?({_NUMBER})\"?|\?ref=v({_NUMBER})"
)


def test_docs_and_manifests_name_the_current_version() -> None:
    found: dict[str, set[str]] = {}
    for path in _tracked_text_files():
        for match in _VERSION_MENTIONS.finditer(path.read_text()):
            mentioned = next(group for group in match.groups() if group)
            found.setdefault(mentioned, set()).add(str(path.relative_to(REPO)))
    assert VERSION in found  # the check can see mentions at all
    assert {v: files for v, files in found.items() if v != VERSION} == {}


def test_changelog_has_the_current_version_and_an_unreleased_section() -> None:
    text = (REPO / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.MULTILINE)
    assert headings[0] == "Unreleased"
    assert VERSION in headings
    # Each heading has its link at the bottom (Keep a Changelog).
    for heading in headings:
        assert re.search(rf"^\[{re.escape(heading)}\]: {re.escape(URL)}/", text, re.MULTILINE)


def test_one_project_url_everywhere() -> None:
    urls = PROJECT["urls"]
    assert urls["Source"] == urls["Homepage"] == URL
    assert all(value.startswith(URL) for value in urls.values()), urls
    assert CHART_YAML["home"] == URL
    assert CHART_YAML["sources"] == [URL]
    assert [m.get("url") for m in CHART_YAML["maintainers"]] == [URL]
    assert _label("source") == URL
    component = CONFIG / "components" / "no-issuer-ambient-credentials" / "kustomization.yaml"
    refs = re.findall(r"https://\S+", component.read_text())
    assert refs
    assert all(ref.startswith(f"{URL}//config/") for ref in refs), refs
    assert f"{URL}/security/advisories/new" in (REPO / "SECURITY.md").read_text()
    assert URL in (REPO / "CONTRIBUTING.md").read_text()


def test_no_manifest_points_at_the_old_go_repository() -> None:
    # The API group azure-keyvault-issuer.gonicus.de stays; the repository does not.
    old = re.compile(r"github\.com/gonicus/", re.IGNORECASE)
    hits = [
        str(path.relative_to(REPO))
        for path in [*CONFIG.rglob("*.yaml"), *CHART.rglob("*")]
        if path.is_file() and old.search(path.read_text())
    ]
    assert hits == []


def test_license_is_the_apache_2_0_text_the_metadata_declares() -> None:
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert len(text.splitlines()) > 150  # the full text, not a pointer to it
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE", "NOTICE"]
    assert _label("licenses") == "Apache-2.0"
    assert CHART_YAML["annotations"]["artifacthub.io/license"] == "Apache-2.0"
    assert (REPO / "NOTICE").read_text().startswith("azure-keyvault-issuer\nCopyright ")


def test_dockerfile_pins_every_base_by_digest() -> None:
    bases = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    assert bases
    assert set(bases) == {"${PYTHON_IMAGE}"}, bases
    assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", _dockerfile_arg("PYTHON_IMAGE"))


def test_contributing_names_only_make_targets_that_exist() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.MULTILINE))
    named = set(re.findall(r"`make ([a-z][\w-]*)", (REPO / "CONTRIBUTING.md").read_text()))
    assert {"test", "lint", "typecheck", "demo", "bench", "chaos", "release"} <= named
    assert named - targets == set()


def test_a_chart_at_another_version_stops_the_release() -> None:
    with pytest.raises(release.ReleaseError, match=r"says 9\.9\.9: set both"):
        release.check_chart("9.9.9")


def test_the_release_never_empties_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(release.ReleaseError, match="not empty"):
        release.make_release(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


# --- a release, made as `make release` makes it --------------------------------


# The image build (warm after `make image`: its layers are reused, the archive
# is written again) dominates; syft's scan takes seconds. A cold machine builds
# syft once (`make binaries`, ~4 min on 2 cores) and the image (`make image`).
# buildah needs root and `make node-deps`, as for tests/node.
def release_built(test: Any) -> Any:
    return pytest.mark.integration(pytest.mark.timeout(2400)(test))


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
