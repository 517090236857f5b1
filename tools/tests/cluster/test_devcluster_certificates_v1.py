"""The dev API server (Kubernetes 1.37) serves the certificates.k8s.io/v1 APIs
the Pod-certificate signer builds on: ClusterTrustBundles and
PodCertificateRequests (both GA in 1.37, on by default: no feature gate and
no --runtime-config)."""

from __future__ import annotations

import datetime
import json
import secrets
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.certificates_v1 import ClusterTrustBundleSpec, PodCertificateRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.certificates_v1 import ClusterTrustBundle, PodCertificateRequest

from akv_devcluster.binaries import locate
from akv_devcluster.cluster import DevCluster

# A signer name of our own: writing a bundle linked to it needs `attest` on it
# (the admin of the dev cluster is in system:masters and has it).
SIGNER = "devcluster.azure-keyvault-issuer.gonicus.de/smoke"


def _ca_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devcluster smoke CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_certificates_v1_discovery_lists_both_resources(devcluster: DevCluster) -> None:
    kubectl = locate(build=False).kubectl
    assert kubectl is not None, "make binaries builds kubectl"
    got = subprocess.run(
        [
            str(kubectl),
            "--kubeconfig",
            str(devcluster.kubeconfig_path),
            "get",
            "--raw",
            "/apis/certificates.k8s.io/v1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert got.returncode == 0, got.stderr
    served = {r["name"]: r for r in json.loads(got.stdout)["resources"]}
    assert served["clustertrustbundles"]["namespaced"] is False
    assert served["clustertrustbundles"]["kind"] == "ClusterTrustBundle"
    assert served["podcertificaterequests"]["namespaced"] is True
    assert served["podcertificaterequests"]["kind"] == "PodCertificateRequest"
    # The signer writes its answer through the status subresource.
    assert "update" in served["podcertificaterequests/status"]["verbs"]


async def test_a_signer_linked_cluster_trust_bundle_round_trips(kube_client: AsyncClient) -> None:
    pem = _ca_pem()
    suffix = secrets.token_hex(4)
    name = f"{SIGNER.replace('/', ':')}:{suffix}"
    bundle = ClusterTrustBundle(
        metadata=ObjectMeta(name=name, labels={"akv-devcluster/smoke": suffix}),
        spec=ClusterTrustBundleSpec(signerName=SIGNER, trustBundle=pem),
    )
    await kube_client.create(bundle)
    try:
        fetched = await kube_client.get(ClusterTrustBundle, name)
        assert fetched.apiVersion == "certificates.k8s.io/v1"
        assert fetched.spec.signerName == SIGNER
        assert fetched.spec.trustBundle.strip() == pem.strip()
        listed = [
            b.metadata.name
            async for b in kube_client.list(
                ClusterTrustBundle, labels={"akv-devcluster/smoke": suffix}
            )
            if b.metadata is not None
        ]
        assert listed == [name]
    finally:
        await kube_client.delete(ClusterTrustBundle, name)


async def test_the_api_server_validates_cluster_trust_bundles(kube_client: AsyncClient) -> None:
    # A name in the signer-linked form without the signer it names is refused
    # by the real validation, as it would be on any 1.37 cluster.
    bundle = ClusterTrustBundle(
        metadata=ObjectMeta(name=f"{SIGNER.replace('/', ':')}:{secrets.token_hex(4)}"),
        spec=ClusterTrustBundleSpec(trustBundle=_ca_pem()),
    )
    with pytest.raises(ApiError) as refused:
        await kube_client.create(bundle)
    assert refused.value.status.code == 422


async def test_pod_certificate_requests_are_served(
    kube_client: AsyncClient, namespace: str
) -> None:
    found = [r async for r in kube_client.list(PodCertificateRequest, namespace=namespace)]
    assert found == []
    # A request naming no Pod, node or key is refused by the API's own
    # validation (the kubelet fills those in).
    empty = PodCertificateRequest(
        metadata=ObjectMeta(name="no-pod", namespace=namespace),
        spec=PodCertificateRequestSpec(
            signerName=SIGNER,
            nodeName="",
            nodeUID="",
            podName="",
            podUID="",
            serviceAccountName="",
            serviceAccountUID="",
            stubPKCS10Request="",
        ),
    )
    with pytest.raises(ApiError) as refused:
        await kube_client.create(empty)
    assert refused.value.status.code == 422
    assert "spec.podName" in (refused.value.status.message or "")
