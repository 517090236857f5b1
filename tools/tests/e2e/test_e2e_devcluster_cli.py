"""`akv-devcluster up --with-cert-manager` as a user runs it, with kubectl."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from akv_devcluster.binaries import locate
from akv_devcluster.process import ProcessRecord, is_alive

CLI = [sys.executable, "-m", "akv_devcluster.cli"]

MANIFEST = """
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: selfsigned, namespace: demo}
spec: {selfSigned: {}}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: demo, namespace: demo}
spec:
  secretName: demo-tls
  commonName: demo.example.com
  dnsNames: [demo.example.com]
  issuerRef: {name: selfsigned, kind: Issuer}
"""


def test_up_with_cert_manager_runs_it_as_its_service_account(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    kubectl = locate(build=False).kubectl
    assert kubectl is not None, "make binaries builds kubectl"

    def kubectl_run(
        kubeconfig: Path, *args: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(kubectl), "--kubeconfig", str(kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    up = subprocess.run(
        [*CLI, "up", "--dir", str(directory), "--no-build", "--with-cert-manager"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    records = [
        ProcessRecord.from_json(p)
        for p in json.loads((directory / "devcluster.json").read_text())["processes"]
    ]
    try:
        assert {r.name for r in records} == {"etcd", "kube-apiserver", "cert-manager-controller"}
        (manager,) = [r for r in records if r.name == "cert-manager-controller"]
        assert is_alive(manager)

        # Its kubeconfig is a ServiceAccount's, not the admin's.
        (flag,) = [a for a in manager.argv if a.startswith("--kubeconfig=")]
        own = Path(flag.split("=", 1)[1])
        assert own != directory / "kubeconfig"
        whoami = kubectl_run(own, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
        assert whoami.returncode == 0, whoami.stderr
        assert whoami.stdout == "system:serviceaccount:cert-manager:cert-manager"

        # cert-manager on its own (selfSigned issuer): the Certificate gets Ready.
        admin = directory / "kubeconfig"
        applied = kubectl_run(admin, "apply", "-f", "-", stdin=MANIFEST)
        assert applied.returncode == 0, applied.stderr
        waited = kubectl_run(
            admin, "-n", "demo", "wait", "--for=condition=Ready", "certificate/demo",
            "--timeout=90s",
        )  # fmt: skip
        log = Path(manager.log_file).read_text(errors="replace")[-3000:]
        assert waited.returncode == 0, f"{waited.stderr}\n{log}"
        secret_type = kubectl_run(
            admin, "-n", "demo", "get", "secret", "demo-tls", "-o", "jsonpath={.type}"
        )
        assert secret_type.stdout == "kubernetes.io/tls"
        assert "forbidden" not in Path(manager.log_file).read_text(errors="replace")
    finally:
        down = subprocess.run(
            [*CLI, "down", "--dir", str(directory)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert down.returncode == 0, down.stderr
    assert not any(is_alive(r) for r in records)
