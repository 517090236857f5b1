"""The node's kubelet (1.37) asks for Pod certificates as a node.

A Pod with a `podCertificate` projected volume makes the kubelet create a
PodCertificateRequest naming the Pod, its node and ServiceAccount; the kubelet
authenticates as `system:node:<name>`, so NodeRestriction checks what it
writes: a request for a signer the Pod does not mount is refused. Nothing signs
here (no signer runs), so the Pod waits for its certificate.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
from lightkube import Client
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import (
    Container,
    PodCertificateProjection,
    PodSpec,
    ProjectedVolumeSource,
    Volume,
    VolumeMount,
    VolumeProjection,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.authentication_v1 import SelfSubjectReview
from lightkube.resources.certificates_v1 import PodCertificateRequest
from lightkube.resources.core_v1 import Namespace, Pod

from akv_devcluster import DevCluster
from akv_devcluster.images import PAUSE_IMAGE
from akv_devcluster.node import NODE_NAME, NODE_USER

pytestmark = pytest.mark.timeout(300)

SIGNER = "devcluster.azure-keyvault-issuer.gonicus.de/pods"


@pytest.fixture
def pod_namespace(node_kube: Client) -> Iterator[str]:
    name = f"podcert-{secrets.token_hex(3)}"
    node_kube.create(Namespace(metadata=ObjectMeta(name=name)))
    try:
        yield name
    finally:
        node_kube.delete(Namespace, name)


def _pod_with_certificate_volume(namespace: str) -> Pod:
    return Pod(
        metadata=ObjectMeta(name="wants-a-cert", namespace=namespace),
        spec=PodSpec(
            automountServiceAccountToken=False,
            containers=[
                Container(
                    name="main",
                    image=PAUSE_IMAGE,
                    imagePullPolicy="Never",
                    volumeMounts=[VolumeMount(name="cert", mountPath="/var/run/cert")],
                )
            ],
            volumes=[
                Volume(
                    name="cert",
                    projected=ProjectedVolumeSource(
                        sources=[
                            VolumeProjection(
                                podCertificate=PodCertificateProjection(
                                    signerName=SIGNER,
                                    keyType="ECDSAP256",
                                    credentialBundlePath="credentials.pem",
                                )
                            )
                        ]
                    ),
                )
            ],
        ),
    )


def _kubelet_request(node_kube: Client, namespace: str, timeout: float) -> PodCertificateRequest:
    deadline = time.monotonic() + timeout
    while True:
        found = list(node_kube.list(PodCertificateRequest, namespace=namespace))
        if found:
            return found[0]
        if time.monotonic() > deadline:
            pytest.fail(f"the kubelet made no PodCertificateRequest in {namespace}")
        time.sleep(0.5)


def test_the_kubelet_requests_a_pod_certificate_as_its_node(
    node_cluster: DevCluster, node_kube: Client, pod_namespace: str
) -> None:
    pod = node_kube.create(_pod_with_certificate_volume(pod_namespace))
    assert pod.metadata is not None

    request = _kubelet_request(node_kube, pod_namespace, timeout=120)

    assert request.spec.signerName == SIGNER
    assert request.spec.podName == "wants-a-cert"
    assert request.spec.podUID == pod.metadata.uid
    assert request.spec.nodeName == NODE_NAME
    assert request.spec.serviceAccountName == "default"
    assert request.spec.stubPKCS10Request
    assert request.status is None or not request.status.conditions
    # Unsigned, the volume cannot be set up: the container never starts.
    current = node_kube.get(Pod, "wants-a-cert", namespace=pod_namespace)
    assert current.status is not None
    assert current.status.phase == "Pending"

    # The kubelet's own identity, as NodeRestriction sees it: the same request
    # for a signer the Pod does not mount is refused.
    as_node = Client(
        config=KubeConfig.from_file(node_cluster.directory / "node" / "kubelet" / "kubeconfig")
    )
    try:
        review = as_node.create(SelfSubjectReview())
        assert review.status is not None
        assert review.status.userInfo is not None
        assert review.status.userInfo.username == NODE_USER
        assert "system:nodes" in (review.status.userInfo.groups or [])
        other = PodCertificateRequest(
            metadata=ObjectMeta(generateName="not-mounted-", namespace=pod_namespace),
            spec=request.spec,
        )
        other.spec.signerName = "devcluster.azure-keyvault-issuer.gonicus.de/other"
        with pytest.raises(ApiError) as refused:
            as_node.create(other)
    finally:
        as_node.close()
    assert refused.value.status.code == 403
    message = refused.value.status.message or ""
    assert "does not mount a podCertificate projected volume" in message, message
