"""Who an issuer is, and where its objects live: the rules every feature shares.

- :class:`IssuerKey`: an Issuer or ClusterIssuer by kind, namespace and name;
- :func:`owner_namespace`: the one rule for the namespace that holds an
  issuer's objects (its CA or auth Secret, its ServiceAccount, its trust bundle,
  its revocation list): the Issuer's own namespace, or for a ClusterIssuer the
  cluster resource namespace. Never a namespace written in a spec, so no tenant
  can point an issuer at another namespace's objects;
- :func:`issuer_identity`, :data:`ANNOTATION_ISSUER`, :data:`LABEL_MANAGED_BY`,
  :func:`ownership_conflict`: how an object the controller writes for an issuer
  says whose it is, and the check before overwriting one;
- :func:`addressed_issuer`: which of our issuers a CertificateRequest names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from akv_issuer.controller.api import CLUSTER_ISSUER_KIND, GROUP, ISSUER_KIND, ISSUER_KINDS
from akv_issuer.controller.core.config import COMPONENT

LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
ANNOTATION_ISSUER: Final = f"{GROUP}/issuer"


@dataclass(frozen=True, slots=True, order=True)
class IssuerKey:
    kind: str
    namespace: str  # "" for a ClusterIssuer
    name: str

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind} {self.namespace}/{self.name}"
        return f"{self.kind} {self.name}"

    @property
    def labels(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)


def owner_namespace(key: IssuerKey, cluster_resource_namespace: str) -> str:
    """The namespace holding the issuer's objects: an Issuer's own namespace, a
    ClusterIssuer's the cluster resource namespace; never one written in a spec."""
    return cluster_resource_namespace if key.kind == CLUSTER_ISSUER_KIND else key.namespace


def issuer_identity(key: IssuerKey) -> str:
    """The issuer as the :data:`ANNOTATION_ISSUER` annotation of its objects names it."""
    return f"{key.kind}/{key.namespace}/{key.name}" if key.namespace else f"{key.kind}/{key.name}"


def ownership_conflict(key: IssuerKey, obj: Mapping[str, Any] | None, held: str) -> str | None:
    """Why an existing object must not be overwritten for ``key`` (None: it is
    ours, or absent). ``held`` says what the object is for another issuer, with
    ``{owner}`` for that issuer (``"is the trust bundle of {owner}"``)."""
    if obj is None:
        return None
    meta = obj.get("metadata") or {}
    owner = (meta.get("annotations") or {}).get(ANNOTATION_ISSUER)
    if (meta.get("labels") or {}).get(LABEL_MANAGED_BY) != COMPONENT or owner is None:
        return "exists and is not managed by azure-keyvault-issuer"
    if owner != issuer_identity(key):
        return held.format(owner=owner)
    return None


def addressed_issuer(obj: Mapping[str, Any]) -> IssuerKey | None:
    """The issuer a CertificateRequest's ``spec.issuerRef`` names, or None when it
    is not one of ours."""
    meta = obj.get("metadata") or {}
    ref = (obj.get("spec") or {}).get("issuerRef") or {}
    # cert-manager treats an empty kind as a namespaced Issuer.
    kind = str(ref.get("kind") or ISSUER_KIND)
    if str(ref.get("group") or "") != GROUP or kind not in ISSUER_KINDS:
        return None
    name = str(ref.get("name") or "")
    if kind == CLUSTER_ISSUER_KIND:
        return IssuerKey(CLUSTER_ISSUER_KIND, "", name)
    # issuerRef names only the Issuer: it is looked up in the request's own
    # namespace, so a namespaced Issuer can never serve another namespace.
    return IssuerKey(ISSUER_KIND, str(meta.get("namespace") or ""), name)
