"""Kubernetes CertificateSigningRequests (``certificates.k8s.io/v1``) signed by a ClusterIssuer.

A CSR with ``signerName: clusterissuers.<group>/<name>`` is signed by that
ClusterIssuer once it is Approved, as cert-manager's own CSR signers do:
duration from ``spec.expirationSeconds`` or the annotation
``experimental.cert-manager.io/request-duration``, isCA from
``experimental.cert-manager.io/request-is-ca``, usages from ``spec.usages``.
The requester of the audit records is ``spec.username`` / ``spec.uid`` /
``spec.groups``, which the API server itself sets from the creator's
authenticated identity (a client cannot choose them).
The certificate (leaf and intermediates, PEM) goes to ``status.certificate``;
the CA is not part of a CSR's status and is published in the ClusterIssuer's
``status.caCertificate``.

Kubernetes CSRs have no Pending condition: waiting for the issuer and
transient Key Vault errors are reported as events on the CSR; a request that
can never succeed gets ``Failed=True`` with the same reasons a
CertificateRequest would get (``InvalidCSR``, ``PolicyViolation``,
``InvalidRequest``, ``RetryBudgetExhausted``).

Written with a JSON merge patch guarded by the resourceVersion the CSR was
read at: a merge patch replaces the whole conditions list, so every condition
there is (Approved included) is kept, and a CSR that changed meanwhile makes
the write fail with 409 rather than lose a condition or a certificate.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from typing import Any, TypedDict

from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from akv_issuer.controller.api import (
    CLUSTER_ISSUER_KIND,
    GROUP,
    Condition,
    KubeCertificateSigningRequest,
    conditions_of,
    find_condition,
    format_time,
    parse_go_duration,
)
from akv_issuer.controller.core import IssuerKey
from akv_issuer.controller.observability.audit import Requester, requester_of
from akv_issuer.controller.requests.decide import RequestView
from akv_issuer.controller.requests.kind import (
    Failed,
    Issued,
    RequestConflict,
    StatusUpdate,
)
from akv_issuer.pki import DEFAULT_DURATION, DEFAULT_USAGES, IssuanceRequest

ANNOTATION_DURATION = "experimental.cert-manager.io/request-duration"
ANNOTATION_IS_CA = "experimental.cert-manager.io/request-is-ca"

# Kubernetes' own condition types; a signer adds only Failed.
CSR_APPROVED = "Approved"
CSR_DENIED = "Denied"
CSR_FAILED = "Failed"


def issuance_request(obj: Mapping[str, Any]) -> IssuanceRequest:
    """The issuance parameters of a Kubernetes CSR; ValueError names a bad field."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    annotations = meta.get("annotations") or {}
    seconds = spec.get("expirationSeconds")
    duration_text = annotations.get(ANNOTATION_DURATION)
    if seconds is not None:
        duration = dt.timedelta(seconds=int(seconds))
    elif duration_text:
        try:
            duration = parse_go_duration(str(duration_text))
        except ValueError as err:
            raise ValueError(f"annotation {ANNOTATION_DURATION}: {err}") from None
    else:
        duration = DEFAULT_DURATION
    is_ca_text = str(annotations.get(ANNOTATION_IS_CA, "false")).strip().lower()
    if is_ca_text not in ("true", "false"):
        raise ValueError(f'annotation {ANNOTATION_IS_CA} must be "true" or "false"')
    usages = spec.get("usages")
    return IssuanceRequest(
        duration=duration,
        usages=tuple(str(u) for u in usages) if usages else DEFAULT_USAGES,
        is_ca=is_ca_text == "true",
    )


def cluster_issuer_of_signer(signer_name: str, group: str) -> str | None:
    """The ClusterIssuer a signerName ``clusterissuers.<group>/<name>`` names, else None.

    Only ClusterIssuers sign Kubernetes CSRs: a CSR is cluster-scoped, so a
    namespaced Issuer serving one would let anyone who may create CSRs use a
    namespace's CA without any right in that namespace.
    """
    prefix = f"clusterissuers.{group}/"
    if not signer_name.startswith(prefix):
        return None
    name = signer_name[len(prefix) :]
    return name if name and "/" not in name else None


class _Metadata(TypedDict, total=False):
    name: str
    uid: str
    resourceVersion: str
    creationTimestamp: str


class _Spec(TypedDict, total=False):
    signerName: str


class _Status(TypedDict, total=False):
    conditions: list[dict[str, Any]]
    certificate: str


class CSRFields(TypedDict, total=False):
    """What the informer decodes of each CSR: what :func:`view` reads (the
    certificate only for whether there is one)."""

    metadata: _Metadata
    spec: _Spec
    status: _Status


def _true(conditions: tuple[Condition, ...], type_: str) -> bool:
    found = find_condition(conditions, type_)
    return found is not None and found.status == "True"


def view(obj: dict[str, Any]) -> RequestView:
    spec = obj.get("spec") or {}
    conditions = conditions_of(obj)
    name = cluster_issuer_of_signer(str(spec.get("signerName") or ""), GROUP)
    return RequestView.read(
        obj,
        issuer=IssuerKey(CLUSTER_ISSUER_KIND, "", name) if name is not None else None,
        # Denied is final too: Kubernetes CSRs have no terminal condition for a
        # signer to add after a denial, so there is nothing left to do.
        finished=(
            bool((obj.get("status") or {}).get("certificate"))
            or _true(conditions, CSR_FAILED)
            or _true(conditions, CSR_DENIED)
        ),
        approved=_true(conditions, CSR_APPROVED),
    )


class KubeCSRs:
    """The request kind of Kubernetes CertificateSigningRequests (``certificates.k8s.io/v1``)."""

    name = "certificatesigningrequests"
    object_kind = "CertificateSigningRequest"
    resource: Any = KubeCertificateSigningRequest
    shape: type = CSRFields

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def view(self, obj: dict[str, Any]) -> RequestView:
        return view(obj)

    def parameters(self, obj: dict[str, Any]) -> tuple[str, IssuanceRequest]:
        return self.csr(obj), issuance_request(obj)

    def csr(self, obj: dict[str, Any]) -> str:
        return str((obj.get("spec") or {}).get("request") or "")

    def requester(self, obj: dict[str, Any]) -> Requester:
        return requester_of(obj)

    def shows(self, obj: dict[str, Any], update: StatusUpdate) -> bool:
        return False  # nothing is written for Pending (no such condition), so never shown

    async def write(
        self, obj: dict[str, Any], update: StatusUpdate, now: dt.datetime
    ) -> dict[str, Any] | None:
        if isinstance(update, Issued):
            # The leaf and its intermediates; the CA is published in the
            # ClusterIssuer's status.caCertificate (a CSR has no field for it).
            return await self._patch(
                obj, {"certificate": base64.b64encode(update.certificate_pem).decode()}
            )
        if isinstance(update, Failed):
            moment = format_time(now)
            kept = [
                c
                for c in (obj.get("status") or {}).get("conditions") or ()
                if c.get("type") != CSR_FAILED
            ]
            failed = {
                "type": CSR_FAILED,
                "status": "True",
                "reason": update.reason,
                "message": update.message,
                "lastUpdateTime": moment,
                "lastTransitionTime": moment,
            }
            return await self._patch(obj, {"conditions": [*kept, failed]})
        # Pending: no condition for it (events say why); Denied: never reached,
        # a denied CSR is finished.
        return None

    async def _patch(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        body = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": status}
        try:
            written = await self._client.patch(
                KubeCertificateSigningRequest.Status,
                str(meta.get("name") or ""),
                body,
                patch_type=PatchType.MERGE,
            )
        except ApiError as err:
            if err.status.code == 409:
                raise RequestConflict(str(meta.get("name") or "")) from err
            raise
        return dict(written)
