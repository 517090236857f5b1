"""The resource types the fake API server serves, and how each behaves.

A :class:`ResourceType` says what the real API server's registry says for one
resource: its group/version/plural/kind, whether it is namespaced, which
subresources it has, whether it counts ``metadata.generation``, whether it
is a custom resource (CRDs take no strategic merge patch and need a
resourceVersion on update) and which lists are keyed maps for server-side
apply (``x-kubernetes-list-type: map``).

:data:`BUILTIN` holds every type the controller reads or writes; tests add
others with :meth:`~support.fakekube.FakeKube.register`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lightkube.core import resource as lightkube_resource

# Lists merged by key in server-side apply and strategic merge patch, by
# field path (list items' own paths are not part of the key).
DEFAULT_LIST_MAPS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("status", "conditions"): ("type",),
    ("metadata", "ownerReferences"): ("uid",),
}


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    #: Subresources served: "status" (the status stanza), "approval" (a CSR's
    #: Approved/Denied conditions), "token" (ServiceAccount TokenRequests).
    subresources: frozenset[str] = frozenset()
    custom: bool = False
    generation: bool = False
    list_maps: dict[tuple[str, ...], tuple[str, ...]] = field(
        default_factory=lambda: dict(DEFAULT_LIST_MAPS)
    )

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``plural`` for the core group, ``plural.group`` otherwise (as in error messages)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def describe(self, key: str) -> dict[str, Any]:
        return {"group": self.group, "kind": self.plural, "name": key}


def _core(plural: str, kind: str, namespaced: bool = True, **kw: Any) -> ResourceType:
    return ResourceType("", "v1", plural, kind, namespaced, **kw)


def _crd(group: str, version: str, plural: str, kind: str, namespaced: bool) -> ResourceType:
    return ResourceType(
        group,
        version,
        plural,
        kind,
        namespaced,
        subresources=frozenset({"status"}),
        custom=True,
        generation=True,
    )


AKV_GROUP = "azure-keyvault-issuer.gonicus.de"

BUILTIN: tuple[ResourceType, ...] = (
    _core("namespaces", "Namespace", namespaced=False, subresources=frozenset({"status"})),
    _core("configmaps", "ConfigMap"),
    _core("secrets", "Secret"),
    _core("events", "Event"),
    _core("serviceaccounts", "ServiceAccount", subresources=frozenset({"token"})),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True),
    ResourceType(
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        "CertificateSigningRequest",
        False,
        subresources=frozenset({"status", "approval"}),
    ),
    # Kubernetes 1.37 (certificates.k8s.io/v1); an older API server lacks it
    # (FakeKube.unregister).
    ResourceType(
        "certificates.k8s.io",
        "v1",
        "podcertificaterequests",
        "PodCertificateRequest",
        True,
        subresources=frozenset({"status"}),
    ),
    _crd("cert-manager.io", "v1", "certificaterequests", "CertificateRequest", True),
    _crd("cert-manager.io", "v1", "certificates", "Certificate", True),
    _crd(AKV_GROUP, "v1alpha1", "issuers", "Issuer", True),
    _crd(AKV_GROUP, "v1alpha1", "clusterissuers", "ClusterIssuer", False),
)


def from_lightkube(res: type[Any], **options: Any) -> ResourceType:
    """A :class:`ResourceType` for a lightkube resource class (``options``
    override the defaults: ``subresources``, ``custom``, ``generation``, ...)."""
    info = lightkube_resource.api_info(res)
    base = info.parent or info.resource
    namespaced = issubclass(
        res, (lightkube_resource.NamespacedResource, lightkube_resource.NamespacedSubResource)
    )
    return ResourceType(base.group, base.version, info.plural, base.kind, namespaced, **options)
