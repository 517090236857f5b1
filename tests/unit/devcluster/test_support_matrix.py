"""The support matrix: AKV_MATRIX selects the binaries, the oldest point's
wrappers are committed, and the docs claim exactly the versions the tests run."""

from __future__ import annotations

import re

import pytest

from akv_devcluster import binaries

REPO = binaries.HACK_DIR.parent


def _minor(version: str) -> str:
    return ".".join(version.lstrip("v").split(".")[:2])


def test_default_point_is_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(binaries.MATRIX_ENV, raising=False)
    point = binaries.matrix_point()
    assert point == binaries.NEWEST
    assert point.kube_apiserver == binaries.KUBE_APISERVER
    assert point.kubectl == binaries.KUBECTL
    assert point.cert_manager_controller == binaries.CERT_MANAGER_CONTROLLER


def test_oldest_point_builds_from_the_same_wrappers_with_its_own_go_mod(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(binaries.MATRIX_ENV, "oldest")
    point = binaries.matrix_point()
    assert point == binaries.OLDEST
    for binary, module in (
        (point.kube_apiserver, binaries.KUBERNETES_MODULE),
        (point.kubectl, binaries.KUBERNETES_MODULE),
        (point.cert_manager_controller, binaries.CERT_MANAGER_MODULE),
    ):
        assert binary.modfile == f"go.{binary.version}.mod"
        modfile = binary.source_dir / binary.modfile
        assert binaries._required_version(modfile, module) == binary.version
        assert (binary.source_dir / f"go.{binary.version}.sum").is_file()
        # cached beside the newest, never in place of it
        assert binaries.binary_path(binary) != binaries.binary_path(binaries.NEWEST.kube_apiserver)
    assert point.cert_manager_controller.tags == ("certmanager_v1_19",)
    assert binaries.NEWEST.cert_manager_controller.tags == ()


def test_the_previous_minor_stays_buildable_but_is_not_tested(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(binaries.MATRIX_ENV, "previous")
    point = binaries.matrix_point()
    assert point == binaries.PREVIOUS
    assert _minor(point.kubernetes) == "1.36"
    assert _minor(binaries.NEWEST.kubernetes) == "1.37"
    for binary in (point.kube_apiserver, point.kubectl):
        assert binary.modfile == f"go.{binary.version}.mod"
        modfile = binary.source_dir / binary.modfile
        assert binaries._required_version(modfile, binaries.KUBERNETES_MODULE) == binary.version
        assert (binary.source_dir / f"go.{binary.version}.sum").is_file()
    # cert-manager v1.21.1 (built on k8s.io 0.36) pairs with it as with the newest.
    assert point.cert_manager_controller == binaries.CERT_MANAGER_CONTROLLER
    # `make test` and a bare `ensure` cover the newest and the oldest only.
    assert binaries.TESTED == (binaries.NEWEST, binaries.OLDEST)


def test_the_oldest_go_mod_is_part_of_the_build_inputs() -> None:
    oldest = binaries.OLDEST.cert_manager_controller
    newest = binaries.NEWEST.cert_manager_controller
    assert binaries._inputs_digest(oldest) != binaries._inputs_digest(newest)


def test_an_unknown_point_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(binaries.MATRIX_ENV, "1.27")
    with pytest.raises(
        binaries.BinariesError, match=r"AKV_MATRIX='1.27' is not one of newest, previous, oldest"
    ):
        binaries.matrix_point()


@pytest.mark.parametrize(
    "doc", ["README.md", "docs/install.md", "docs/aks-quickstart.md", "docs/e2e.md"]
)
def test_docs_claim_exactly_the_versions_the_tests_run(doc: str) -> None:
    text = (REPO / doc).read_text()
    for point in binaries.TESTED:
        assert point.kubernetes in text, (doc, point)
        assert point.cert_manager in text, (doc, point)
    oldest, newest = binaries.OLDEST, binaries.NEWEST
    assert f"{_minor(oldest.kubernetes)} to {_minor(newest.kubernetes)}" in text or (
        f"| Kubernetes | {_minor(oldest.kubernetes)} ({oldest.kubernetes})" in text
    )
    # No open-ended or older claim left over ("Kubernetes >= 1.27", "cert-manager >= 1.12").
    assert not re.search(r"(Kubernetes|cert-manager)\s*>=\s*1\.\d+", text), doc


def test_chart_requires_the_kubernetes_range_the_tests_run() -> None:
    chart = (REPO / "deploy" / "charts" / "azure-keyvault-issuer" / "Chart.yaml").read_text()
    major, minor = _minor(binaries.NEWEST.kubernetes).split(".")
    assert (
        f'kubeVersion: ">={_minor(binaries.OLDEST.kubernetes)}.0-0 <{major}.{int(minor) + 1}.0-0"'
        in chart
    )
