"""spec.podCertificates.namespaceSelector as the real API server validates it with our
CRDs: a LabelSelector's matchExpressions as in the sample are accepted, a requirement
that breaks Kubernetes' rules (In/NotIn without values, Exists/DoesNotExist with
values, an unknown operator) is refused with the field named (422), before the
controller ever sees it."""

from __future__ import annotations

from typing import Any

import pytest
from lightkube import ApiError, AsyncClient

from support.crd_samples import ClusterIssuer, create_cluster_issuer, fresh_sample

SELECTOR = "spec.podCertificates.namespaceSelector.matchExpressions[0]"


def _sample() -> dict[str, Any]:
    return fresh_sample("clusterissuer-pod-certificates.yaml", "pods")


async def test_the_sample_selector_with_match_expressions_is_accepted(
    kube_client: AsyncClient, issuer_crds: list[str]
) -> None:
    manifest = _sample()
    expressions = manifest["spec"]["podCertificates"]["namespaceSelector"]["matchExpressions"]
    expressions += [
        {"key": "example.com/blocked", "operator": "DoesNotExist"},
        {"key": "tier", "operator": "In", "values": ["prod", "staging"]},
    ]
    created = await create_cluster_issuer(kube_client, manifest)
    assert created["spec"]["podCertificates"]["namespaceSelector"]["matchExpressions"] == (
        expressions
    )
    await kube_client.delete(ClusterIssuer, manifest["metadata"]["name"])


@pytest.mark.parametrize(
    ("requirement", "words"),
    [
        ({"key": "tier", "operator": "In"}, "operators In and NotIn need values"),
        ({"key": "tier", "operator": "NotIn", "values": []}, "operators In and NotIn need values"),
        (
            {"key": "tier", "operator": "Exists", "values": ["x"]},
            "Exists and DoesNotExist take none",
        ),
        ({"key": "tier", "operator": "Equals", "values": ["x"]}, "operator: Unsupported value"),
        ({"operator": "Exists"}, "key: Required value"),
    ],
)
async def test_a_wrong_requirement_is_refused_by_the_api_server(
    kube_client: AsyncClient, issuer_crds: list[str], requirement: dict[str, Any], words: str
) -> None:
    manifest = _sample()
    manifest["spec"]["podCertificates"]["namespaceSelector"]["matchExpressions"] = [requirement]
    with pytest.raises(ApiError) as caught:
        await create_cluster_issuer(kube_client, manifest)
    assert caught.value.status.code == 422
    message = str(caught.value.status.message)
    assert SELECTOR in message
    assert words in message
