"""What the controller says when the API server refuses it something (HTTP 403).

The shipped RBAC grants a feature's writes only where and when that feature
is switched on (docs/install.md, "Permissions"). A feature used without its
permission must say so plainly: the reason ``Forbidden`` (in the feature's
condition, or as a Warning event) and a message naming the permission that
is missing and the chart value (and the kustomize role or component) that
grants it. Every such message is built here, so they read alike and name
the same values as the docs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from lightkube import ApiError

# The condition or event reason of a feature whose Kubernetes permission is missing.
REASON_FORBIDDEN: Final = "Forbidden"


def is_forbidden(err: BaseException) -> bool:
    """An API server answer of 403: the controller's RBAC does not allow the call."""
    return isinstance(err, ApiError) and err.status.code == 403


@dataclass(frozen=True, slots=True)
class Permission:
    """One grant the controller may lack, and how an administrator gives it."""

    verbs: tuple[str, ...]
    resource: str  # plural, with the subresource: "certificates/status"
    group: str  # "" for the core group
    scope: str  # "in namespace team-a", "cluster-wide"
    grant: str  # the chart value (and the kustomize way) that grants it

    def describe(self) -> str:
        group = f" ({self.group})" if self.group else ""
        return f"{'/'.join(self.verbs)} {self.resource}{group} {self.scope}"

    def missing(self) -> str:
        """The sentence for a condition or event message."""
        return f"the controller may not {self.describe()} (forbidden); grant it with {self.grant}"


def configmaps(namespace: str, cluster_resource_namespace: str) -> Permission:
    """Trust bundles, revocation lists and CRLs: ConfigMaps of an issuer's namespace."""
    if namespace == cluster_resource_namespace:
        grant = (
            "a RoleBinding of configmap-writer-role in the cluster resource namespace, which "
            "the Helm chart and config/rbac always create (restore it)"
        )
    else:
        grant = (
            f"the Helm value rbac.configMapNamespaces (add {namespace}) or "
            "rbac.clusterWideConfigMaps=true (kustomize: a RoleBinding of configmap-writer-role "
            f"in {namespace}, or the component cluster-wide-configmaps)"
        )
    return Permission(
        ("get", "create", "patch"), "configmaps", "", f"in namespace {namespace}", grant
    )


def secrets_read(namespace: str, cluster_resource_namespace: str) -> Permission:
    """auth.clientSecret and caSource.secret: a Secret of the issuer's namespace.

    The chart grants none cluster-wide by default (rbac.clusterWideSecrets is
    off): the narrow grant comes first in the message."""
    if namespace == cluster_resource_namespace:
        grant = (
            "the Helm value rbac.clusterResourceNamespaceSecrets=true (kustomize: the "
            "secret-reader RoleBinding of config/rbac, which the component "
            "no-cluster-resource-namespace-secrets removes)"
        )
    else:
        grant = (
            f"the Helm value rbac.secretNamespaces (add {namespace}) or "
            f"rbac.clusterWideSecrets=true (kustomize: a RoleBinding of secret-reader-role "
            f"in {namespace}, or the component cluster-wide-secrets)"
        )
    return Permission(("get",), "secrets", "", f"in namespace {namespace}", grant)


def trust_bundle_secrets(namespace: str) -> Permission:
    """trustBundle.secretName: the Secret copy of a trust bundle."""
    return Permission(
        ("create", "patch"),
        "secrets",
        "",
        f"in namespace {namespace}",
        f"the Helm value rbac.trustBundleSecretNamespaces (add {namespace}) (kustomize: a "
        f"RoleBinding of trust-bundle-secret-writer-role in {namespace})",
    )


REISSUE: Final = Permission(
    ("get", "list", "patch"),
    "certificates and certificates/status",
    "cert-manager.io",
    "cluster-wide",
    "the Helm value rbac.reissue=true (kustomize: the component reissue)",
)

REVOCATION: Final = Permission(
    ("patch",),
    "certificaterequests",
    "cert-manager.io",
    "cluster-wide",
    "the Helm value rbac.revocation=true (kustomize: the component revocation)",
)

SUBJECT_ACCESS_REVIEWS: Final = Permission(
    ("create",),
    "subjectaccessreviews",
    "authorization.k8s.io",
    "cluster-wide",
    "the Helm value controller.kubernetesCSRs=true, which renders it with the CSR rules "
    "(kustomize: config/rbac/role.yaml)",
)


# --- issue 25 point 3 (signer-linked ClusterTrustBundles) ---


def cluster_trust_bundles(signer_name: str) -> Permission:
    """spec.clusterTrustBundles: the bundle, and ``attest`` on the issuer's signer
    name, which the API server's ClusterTrustBundleAttest admission checks."""
    return Permission(
        ("get", "list", "create", "patch", "delete"),
        f"clustertrustbundles and attest on signers/{signer_name}",
        "certificates.k8s.io",
        "cluster-wide",
        "the Helm value controller.clusterTrustBundles=true (kustomize: the component "
        "cluster-trust-bundles)",
    )
