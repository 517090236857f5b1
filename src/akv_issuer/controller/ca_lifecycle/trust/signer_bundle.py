"""What a signer-linked ClusterTrustBundle of ours is, as data: its name, its
labels, the applied configuration for a plan, and which issuer it belongs to.

Pure functions of an issuer key, its ``spec.clusterTrustBundles`` and a
:class:`~.plan.BundlePlan`; nothing here talks to the API server. They are
apart from the publisher (:mod:`.cluster_trust_bundle`), which decides *when*
to write or delete, because they are the contract with relying parties (Pods
select the bundle by signer name and these labels) and with the sweep (which
finds our bundles by these labels and their owner by the annotation): both
sides must agree on them, and they are tested without a server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from akv_issuer.controller.api import (
    API_VERSION,
    CLUSTER_ISSUER_KIND,
    GROUP,
    ISSUER_KIND,
    ClusterTrustBundlesSpec,
    cluster_trust_bundle_name,
    signer_resource_name,
)
from akv_issuer.controller.ca_lifecycle.trust.plan import (
    ANNOTATION_STATE,
    LABEL_ISSUER_KIND,
    LABEL_ISSUER_NAME,
    BundlePlan,
    metadata_in_sync,
)
from akv_issuer.controller.core import (
    ANNOTATION_ISSUER,
    COMPONENT,
    LABEL_MANAGED_BY,
    IssuerKey,
    issuer_identity,
)

LABEL_CLUSTER_TRUST_BUNDLE: Final = f"{GROUP}/cluster-trust-bundle"
LABEL_ISSUER_NAMESPACE: Final = f"{GROUP}/issuer-namespace"

# certificates.MaxTrustBundleSize in Kubernetes: the API server refuses more.
MAX_TRUST_BUNDLE_SIZE: Final = 1024 * 1024


def bundle_name(key: IssuerKey) -> str:
    """The name of ``key``'s signer-linked ClusterTrustBundle."""
    return cluster_trust_bundle_name(signer_name(key))


def signer_name(key: IssuerKey) -> str:
    """``key``'s signer name (that of its Kubernetes CSRs and PodCertificateRequests)."""
    return signer_resource_name(key.kind, key.name, key.namespace or None)


def bundle_labels(key: IssuerKey, spec: ClusterTrustBundlesSpec) -> dict[str, str]:
    """The spec's labels, then the controller's own (which the spec may not set).
    Name and namespace are labels only when they fit a label value."""
    labels = dict(spec.labels)
    labels.update(
        {
            LABEL_MANAGED_BY: COMPONENT,
            LABEL_CLUSTER_TRUST_BUNDLE: "true",
            LABEL_ISSUER_KIND: key.kind,
        }
    )
    if len(key.name) <= 63:
        labels[LABEL_ISSUER_NAME] = key.name
    if key.namespace:
        labels[LABEL_ISSUER_NAMESPACE] = key.namespace
    return labels


def bundle_body(
    key: IssuerKey, uid: str, spec: ClusterTrustBundlesSpec, plan: BundlePlan
) -> dict[str, Any]:
    """The applied configuration of ``key``'s bundle for ``plan``."""
    metadata: dict[str, Any] = {
        "name": bundle_name(key),
        "labels": bundle_labels(key, spec),
        "annotations": {
            ANNOTATION_ISSUER: issuer_identity(key),
            ANNOTATION_STATE: plan.state.encode(),
        },
    }
    if key.kind == CLUSTER_ISSUER_KIND and uid:
        # Cluster-scoped owner, cluster-scoped dependent: the garbage collector
        # deletes the bundle with its ClusterIssuer. (A namespaced Issuer cannot
        # own a cluster-scoped object; its bundle is deleted by the controller.)
        metadata["ownerReferences"] = [
            {"apiVersion": API_VERSION, "kind": CLUSTER_ISSUER_KIND, "name": key.name, "uid": uid}
        ]
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "ClusterTrustBundle",
        "metadata": metadata,
        "spec": {"signerName": signer_name(key), "trustBundle": plan.pem()},
    }


def issuer_of(bundle: Mapping[str, Any]) -> IssuerKey | None:
    """The issuer a bundle's ``ANNOTATION_ISSUER`` names (None: none of ours)."""
    meta = bundle.get("metadata") or {}
    identity = str((meta.get("annotations") or {}).get(ANNOTATION_ISSUER) or "")
    parts = identity.split("/")
    if len(parts) == 2 and parts[0] == CLUSTER_ISSUER_KIND and parts[1]:
        return IssuerKey(CLUSTER_ISSUER_KIND, "", parts[1])
    if len(parts) == 3 and parts[0] == ISSUER_KIND and parts[1] and parts[2]:
        return IssuerKey(ISSUER_KIND, parts[1], parts[2])
    return None


def in_sync(existing: Mapping[str, Any] | None, body: Mapping[str, Any]) -> bool:
    """Whether the existing bundle already has everything ``body`` sets."""
    if existing is None:
        return False
    return (
        metadata_in_sync(existing, body)
        and (existing.get("spec") or {}).get("trustBundle") == body["spec"]["trustBundle"]
    )
