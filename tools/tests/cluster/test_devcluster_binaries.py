"""How the control-plane binaries are found, and that hack/ go.mod is reproducible."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from akv_devcluster import binaries


@pytest.mark.parametrize(
    ("point", "staging_api"),
    [(binaries.NEWEST, "v0.37.2"), (binaries.PREVIOUS, "v0.36.3"), (binaries.OLDEST, "v0.34.4")],
    ids=lambda v: getattr(v, "name", v),
)
def test_committed_gomod_replaces_every_staging_module_with_the_published_version(
    point: binaries.MatrixPoint, staging_api: str
) -> None:
    upstream = Path(
        binaries.download_module(binaries.KUBERNETES_MODULE, point.kubernetes)["GoMod"]
    ).read_text()
    expected = binaries.staging_replacements(upstream, point.kubernetes)
    gomod = point.kube_apiserver.modfile or "go.mod"
    committed = (binaries.HACK_DIR / "kube-apiserver" / gomod).read_text()
    found = sorted(re.findall(r"^\s*(k8s\.io/\S+) => \1 (v\S+)$", committed, re.MULTILINE))
    assert found == expected
    assert ("k8s.io/api", staging_api) in found
    assert len(found) >= 30


def test_kubebuilder_assets_are_used_instead_of_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = binaries.locate(build=False)
    assets = tmp_path / "assets"
    assets.mkdir()
    for name, source in (
        ("etcd", built.etcd),
        ("kube-apiserver", built.kube_apiserver),
        ("kubectl", built.kubectl),
    ):
        assert source is not None
        (assets / name).symlink_to(source)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))

    found = binaries.locate(build=True)

    assert found.etcd == assets / "etcd"
    assert found.kube_apiserver == assets / "kube-apiserver"
    assert found.kubectl == assets / "kubectl"
    assert found.crd_dir is not None
    assert (found.crd_dir / "cert-manager.io_certificaterequests.yaml").is_file()


def test_kubebuilder_assets_without_apiserver_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "akv_devcluster.binaries", "ensure"],
        env={"KUBEBUILDER_ASSETS": str(tmp_path), "PATH": "/usr/bin:/bin:/usr/local/go/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"error: KUBEBUILDER_ASSETS={tmp_path} does not hold both etcd and kube-apiserver"
    )
