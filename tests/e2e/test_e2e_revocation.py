"""Revocation end to end (issue 13): real cert-manager issues, a user with
nothing but ``patch`` on CertificateRequests revokes with the documented
``kubectl annotate``, a relying party fetches the CRL from the URL inside the
certificate and runs ``openssl verify -crl_check``."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

from akv_devcluster import DevCluster
from akv_issuer.controller.revocation.store import ANNOTATION_REVOKE
from support.controller_harness import _service_account_kubeconfig
from support.e2e_harness import E2E


def _crl_url(leaf: x509.Certificate) -> str:
    points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    (url,) = [n.value for p in points for n in (p.full_name or [])]
    return str(url)


def _fetch(url: str) -> x509.CertificateRevocationList | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.headers["Content-Type"] == "application/pkix-crl"
            return x509.load_der_x509_crl(response.read())
    except OSError:
        return None


async def _revoker_kubeconfig(e2e: E2E, devcluster: DevCluster) -> Path:
    """A ServiceAccount that may only get and patch CertificateRequests here."""
    ns = e2e.namespace
    await e2e.kube.create(
        Role(
            metadata=ObjectMeta(name="revoker", namespace=ns),
            rules=[
                PolicyRule(
                    apiGroups=["cert-manager.io"],
                    resources=["certificaterequests"],
                    verbs=["get", "patch"],
                )
            ],
        )
    )
    await e2e.kube.create(
        RoleBinding(
            metadata=ObjectMeta(name="revoker", namespace=ns),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name="revoker"),
            subjects=[Subject(kind="ServiceAccount", name="revoker", namespace=ns)],
        )
    )
    return await _service_account_kubeconfig(e2e.kube, devcluster, ns, "revoker", e2e.tmp)


async def test_revoked_certificate_fails_openssl_crl_check(
    e2e: E2E, devcluster: DevCluster
) -> None:
    kubectl = devcluster.kubectl_path
    assert kubectl is not None, "make binaries builds kubectl"
    controller = e2e.env.controllers[0]
    ca = await e2e.env.make_ca("EC", curve="P-256")
    name = "revocable"
    url = f"http://127.0.0.1:{controller.crl_port}/crl/issuer/{e2e.namespace}/{name}.crl"
    # An Issuer's revocation list lives in its namespace: granted as the Helm
    # value rbac.configMapNamespaces does (docs/install.md, "Permissions").
    await e2e.env.grant_configmaps(e2e.namespace)
    ref = await e2e.issuer(ca, name=name, crl={"enabled": True, "validity": "1h", "url": url})
    for cert in ("leaked", "fine"):
        await e2e.create_certificate(cert, ref, secretName=f"{cert}-tls")
    for cert in ("leaked", "fine"):
        await e2e.wait_ready(cert)
    leaked = await e2e.check_secret("leaked-tls")
    fine = await e2e.check_secret("fine-tls")
    assert _crl_url(leaked.leaf) == url
    (request,) = await e2e.requests_for("leaked")
    request_name = request["metadata"]["name"]

    kubeconfig = await _revoker_kubeconfig(e2e, devcluster)
    signs_before = e2e.env.sign_calls()
    started = time.monotonic()
    annotate = subprocess.run(  # noqa: ASYNC221 - the user's kubectl, as they run it
        [
            str(kubectl),
            "--kubeconfig",
            str(kubeconfig),
            "-n",
            e2e.namespace,
            "annotate",
            "certificaterequest",
            request_name,
            f"{ANNOTATION_REVOKE}=keyCompromise",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert annotate.returncode == 0, annotate.stderr
    found: list[x509.CertificateRevocationList] = []

    async def served() -> bool:
        crl = _fetch(_crl_url(leaked.leaf))
        if (
            crl is None
            or crl.get_revoked_certificate_by_serial_number(leaked.leaf.serial_number) is None
        ):
            return False
        found.append(crl)
        return True

    await e2e.wait(served, "CRL with the revoked serial at the certificate's URL")
    latency = time.monotonic() - started
    signs = e2e.env.sign_calls() - signs_before
    number = found[0].extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    print(
        f"\nrevoke annotation -> CRL served: {latency:.2f}s; Key Vault signs {signs}, CRL {number}"
    )
    assert signs == 1

    folder = e2e.tmp
    (folder / "ca.pem").write_bytes(leaked.ca_pem)
    (folder / "crl.pem").write_bytes(found[0].public_bytes(Encoding.PEM))
    (folder / "leaked.pem").write_bytes(leaked.leaf.public_bytes(Encoding.PEM))
    (folder / "fine.pem").write_bytes(fine.leaf.public_bytes(Encoding.PEM))
    args = ["openssl", "verify", "-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl.pem"]
    revoked = subprocess.run(  # noqa: ASYNC221
        [*args, "leaked.pem"], capture_output=True, text=True, cwd=folder, check=False
    )
    assert revoked.returncode != 0
    assert "certificate revoked" in revoked.stdout + revoked.stderr
    ok = subprocess.run(  # noqa: ASYNC221
        [*args, "fine.pem"], capture_output=True, text=True, cwd=folder, check=False
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
