"""The image `make image` builds from the project's Dockerfile, read from its archive.

What a user pulling it would check: it runs as a numeric non-root user, its
entrypoint is the controller, and its virtual environment holds the
controller's locked dependencies and nothing of the test tools (emulator,
dev cluster, dev TLS, pytest). Versions are compared with uv.lock.
"""

from __future__ import annotations

import json
import re
import tarfile
import tomllib
from pathlib import Path

import pytest

from support.node_install import REPO

# The first test to ask for the image may build it (minutes when cold).
pytestmark = pytest.mark.timeout(900)

TEST_TOOLS = ("akv_emulator", "akv_devcluster", "akv_devtls", "pytest", "_pytest", "hypothesis")


@pytest.fixture(scope="module")
def image_archive(controller_image_archive: Path) -> Path:
    return controller_image_archive


def _config_and_files(archive: Path) -> tuple[dict[str, object], set[str]]:
    files: set[str] = set()
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(outer.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                files.update(inner.getnames())
    return config, files


def test_image_is_non_root_and_runs_the_controller(image_archive: Path) -> None:
    config, _ = _config_and_files(image_archive)
    runtime = config["config"]
    assert isinstance(runtime, dict)
    assert runtime["User"] == "65532:65532"
    assert runtime["Entrypoint"] == ["/opt/venv/bin/akv-issuer", "controller"]


def test_image_site_packages_hold_no_test_tools(image_archive: Path) -> None:
    _, files = _config_and_files(image_archive)
    site = {
        match.group(1)
        for name in files
        if (match := re.match(r"opt/venv/lib/python3\.\d+/site-packages/([^/]+)", name))
    }
    assert "akv_issuer" in site
    assert not [tool for tool in TEST_TOOLS if tool in site], sorted(site)
    assert not [name for name in files if "akv_emulator" in name or "akv_devcluster" in name]
    # Every installed distribution is the version uv.lock pins.
    locked = {
        package["name"].replace("-", "_").lower(): package["version"]
        for package in tomllib.loads((REPO / "uv.lock").read_text())["package"]
    }
    for entry in site:
        if entry.endswith(".dist-info") and not entry.startswith("azure_keyvault_issuer-"):
            name, version = entry.removesuffix(".dist-info").rsplit("-", 1)
            assert locked.get(name.lower()) == version, entry
