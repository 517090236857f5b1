"""One version, one project URL, one license, everywhere; and a release that agrees.

pyproject.toml's `version` is the only source (docs/versioning.md). The files
that must repeat it (the chart, the Dockerfile's default, the kustomize base's
image tag, remote references, the docs' image tags, the CHANGELOG) are
checked here rather than generated. The artefacts of a release themselves are
opened in tests/node/test_node_release.py (the image build needs the node
tier's buildah).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from akv_devcluster import release
from support.deploy import CHART, CONFIG, PROJECT, REPO, VERSION

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
