"""`akv-devcluster up/down` as a user runs it, in its own folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from akv_devcluster import DevCluster
from akv_devcluster.binaries import locate
from akv_devcluster.process import ProcessRecord, is_alive

CLI = [sys.executable, "-m", "akv_devcluster.cli"]


def _run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_up_kubectl_down(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    kubectl = locate(build=False).kubectl
    assert kubectl is not None, "make binaries builds kubectl"

    up = _run("up", "--dir", str(directory))
    assert up.returncode == 0, up.stderr
    records = [
        ProcessRecord.from_json(p)
        for p in json.loads((directory / "devcluster.json").read_text())["processes"]
    ]
    try:
        # `up` has returned; the control plane keeps running without it.
        assert {r.name for r in records} == {"etcd", "kube-apiserver"}
        assert all(is_alive(r) for r in records)
        assert oct((directory / "kubeconfig").stat().st_mode & 0o777) == "0o600"

        got = subprocess.run(
            [
                str(kubectl),
                "--kubeconfig",
                str(directory / "kubeconfig"),
                "get",
                "crd",
                "certificaterequests.cert-manager.io",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Established')].status}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert got.returncode == 0, got.stderr
        assert got.stdout == "True"

        version = subprocess.run(
            [str(kubectl), "--kubeconfig", str(directory / "kubeconfig"), "version", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert json.loads(version.stdout)["serverVersion"]["gitVersion"] == "v1.37.2"

        again = _run("up", "--dir", str(directory))
        assert again.returncode == 1
        assert "already running" in again.stderr
        assert "Traceback" not in again.stderr
    finally:
        down = _run("down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert not any(is_alive(r) for r in records)
    assert not directory.exists()


def test_status_of_a_folder_without_cluster_is_a_clear_error(tmp_path: Path) -> None:
    status = _run("status", "--dir", str(tmp_path / "nothing"))
    assert status.returncode == 1
    assert status.stderr.startswith("akv-devcluster: error: no dev cluster state in")
    assert len(status.stderr.strip().splitlines()) == 1


def test_down_without_cluster_is_harmless(tmp_path: Path) -> None:
    down = _run("down", "--dir", str(tmp_path / "nothing"))
    assert down.returncode == 0
    assert "nothing to stop" in down.stdout


def test_identity_kubeconfig_authenticates_as_the_service_account(
    devcluster: DevCluster, namespace: str
) -> None:
    minted = _run(
        "identity",
        "--dir",
        str(devcluster.directory),
        "--namespace",
        namespace,
        "--name",
        "demo-controller",
    )
    assert minted.returncode == 0, minted.stderr
    kubeconfig = Path(minted.stdout.strip())
    assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
    kubectl = devcluster.kubectl_path
    assert kubectl is not None

    def kubectl_as_identity(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(kubectl), "--kubeconfig", str(kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    whoami = kubectl_as_identity("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert whoami.stdout == f"system:serviceaccount:{namespace}:demo-controller", whoami.stderr
    can_i = kubectl_as_identity("auth", "can-i", "list", "certificaterequests.cert-manager.io")
    assert can_i.stdout.strip() == "no"
    assert can_i.returncode == 1
