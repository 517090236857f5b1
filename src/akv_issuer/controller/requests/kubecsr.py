"""Kubernetes CertificateSigningRequests (``certificates.k8s.io/v1``) signed by our issuers.

A CSR with ``signerName: clusterissuers.<group>/<name>`` is signed by that
ClusterIssuer, one with ``issuers.<group>/<namespace>.<name>`` by that
Issuer, once it is Approved, as cert-manager's own CSR signers do:
duration from ``spec.expirationSeconds`` or the annotation
``experimental.cert-manager.io/request-duration``, isCA from
``experimental.cert-manager.io/request-is-ca``, usages from ``spec.usages``.
The requester of the audit records is ``spec.username`` / ``spec.uid`` /
``spec.groups``, which the API server itself sets from the creator's
authenticated identity (a client cannot choose them).
The certificate (leaf and intermediates, PEM) goes to ``status.certificate``;
the CA is not part of a CSR's status and is published in the issuer's
``status.caCertificate``.

A CSR is cluster-scoped: whoever may create CSRs could name any namespace's
Issuer. So a namespaced Issuer's CSR is signed only if its requester may
``reference`` that Issuer -- verb ``reference`` on ``signers`` in group
``cert-manager.io``, in the Issuer's namespace, for the Issuer's name or
``*`` -- which a SubjectAccessReview for the requester (``spec.username``,
``groups``, ``uid``, ``extra``) asks the API server, exactly as cert-manager
checks for its own Issuers (so the same Role grants both). That check is
:class:`ReferenceReviews`, beside the request flow on the same informer: the
flow leaves such a CSR alone (``RequestView.referable``) until the review
allowed it, and a refusal ends the CSR ``Failed``/``DeniedReference`` with a
Warning event. A signerName of our group that names no issuer properly ends
``Failed``/``InvalidRequest``: it is ours to answer, never to ignore.

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
import logging
import re
from collections.abc import Callable
from typing import Final, TypedDict

from lightkube import ApiError

from akv_issuer.controller.api import (
    CLUSTER_ISSUER_KIND,
    GROUP,
    ISSUER_KIND,
    KUBE_CSRS,
    Condition,
    conditions_of,
    find_condition,
    format_time,
    parse_go_duration,
)
from akv_issuer.controller.api.objects import (
    ConditionFields,
    HasMetadata,
    KubeCSRObject,
    KubeCSRStatus,
    typed,
)
from akv_issuer.controller.core import CheckedIssuer, IssuerKey
from akv_issuer.controller.observability.audit import Requester, requester_of
from akv_issuer.controller.requests.decide import RequestView
from akv_issuer.controller.requests.kind import (
    Denied,
    Failed,
    Issued,
    RequestConflict,
    StatusUpdate,
)
from akv_issuer.pki import DEFAULT_DURATION, DEFAULT_USAGES, IssuanceRequest
from akv_issuer.runtime.kubeapi import MERGE_PATCH, ApiResource, KubeApi

log = logging.getLogger(__name__)

ANNOTATION_DURATION = "experimental.cert-manager.io/request-duration"
ANNOTATION_IS_CA = "experimental.cert-manager.io/request-is-ca"

# Kubernetes' own condition types; a signer adds only Failed.
CSR_APPROVED = "Approved"
CSR_DENIED = "Denied"
CSR_FAILED = "Failed"

REASON_INVALID_REQUEST: Final = "InvalidRequest"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def issuance_request(obj: KubeCSRObject) -> IssuanceRequest:
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
    """The ClusterIssuer a signerName ``clusterissuers.<group>/<name>`` names, else None."""
    prefix = f"clusterissuers.{group}/"
    if not signer_name.startswith(prefix):
        return None
    name = signer_name[len(prefix) :]
    return name if name and "/" not in name else None


class SignerNameError(ValueError):
    """A signerName of our group that names no issuer; the message says why."""


def issuer_of_signer(signer_name: str, group: str) -> IssuerKey | None:
    """The issuer a signerName names: ``clusterissuers.<group>/<name>`` a
    ClusterIssuer, ``issuers.<group>/<namespace>.<name>`` an Issuer (the
    namespace, a DNS label, ends at the first dot; the name may hold more).
    None for another signer's name; :class:`SignerNameError` for one of our
    group that names no issuer."""
    cluster = f"clusterissuers.{group}/"
    namespaced = f"issuers.{group}/"
    if signer_name.startswith(cluster):
        name = signer_name[len(cluster) :]
        if not _DNS_SUBDOMAIN.match(name):
            raise SignerNameError(
                f"signerName {signer_name!r} names no ClusterIssuer: expected "
                f"{cluster}<name> with a Kubernetes object name"
            )
        return IssuerKey(CLUSTER_ISSUER_KIND, "", name)
    if signer_name.startswith(namespaced):
        namespace, _, name = signer_name[len(namespaced) :].partition(".")
        if not _DNS_LABEL.match(namespace) or not _DNS_SUBDOMAIN.match(name):
            raise SignerNameError(
                f"signerName {signer_name!r} names no Issuer: expected "
                f"{namespaced}<namespace>.<name>"
            )
        return IssuerKey(ISSUER_KIND, namespace, name)
    return None


class _Metadata(TypedDict, total=False):
    name: str
    uid: str
    resourceVersion: str
    creationTimestamp: str


class _Spec(TypedDict, total=False):
    signerName: str


class _Status(TypedDict, total=False):
    conditions: list[ConditionFields]
    certificate: str


class CSRFields(TypedDict, total=False):
    """What the informer decodes of each CSR: what :func:`view` reads (the
    certificate only for whether there is one)."""

    metadata: _Metadata
    spec: _Spec
    status: _Status


def condition_true(conditions: tuple[Condition, ...], type_: str) -> bool:
    found = find_condition(conditions, type_)
    return found is not None and found.status == "True"


def _signer_issuer(obj: KubeCSRObject) -> IssuerKey | None:
    """The issuer a CSR names, None when not one of ours or malformed (the
    reference reviews answer a malformed one)."""
    try:
        return issuer_of_signer(str((obj.get("spec") or {}).get("signerName") or ""), GROUP)
    except SignerNameError:
        return None


def csr_finished(obj: KubeCSRObject, conditions: tuple[Condition, ...]) -> bool:
    # Denied is final too: Kubernetes CSRs have no terminal condition for a
    # signer to add after a denial, so there is nothing left to do.
    return (
        bool((obj.get("status") or {}).get("certificate"))
        or condition_true(conditions, CSR_FAILED)
        or condition_true(conditions, CSR_DENIED)
    )


def view(
    obj: KubeCSRObject, referable: Callable[[KubeCSRObject], bool] | None = None
) -> RequestView:
    """The request view of a CSR; ``referable`` says whether a namespaced
    Issuer's CSR passed its reference review (none given: not yet)."""
    conditions = conditions_of(obj)
    issuer = _signer_issuer(obj)
    namespaced = issuer is not None and issuer.kind == ISSUER_KIND
    return RequestView.read(
        obj,
        issuer=issuer,
        finished=csr_finished(obj, conditions),
        approved=condition_true(conditions, CSR_APPROVED),
        referable=not namespaced or (referable is not None and referable(obj)),
    )


class KubeCSRs:
    """The request kind of Kubernetes CertificateSigningRequests (``certificates.k8s.io/v1``)."""

    name = "certificatesigningrequests"
    object_kind = "CertificateSigningRequest"
    resource: ApiResource = KUBE_CSRS
    shape: type = CSRFields

    def __init__(self, api: KubeApi) -> None:
        self._api = api
        # CSR name -> uid of each CSR whose requester the reference review
        # allowed to use the namespaced Issuer it names (until it is finished).
        self._referable: dict[str, str] = {}

    def view(self, obj: KubeCSRObject) -> RequestView:
        return view(obj, self.referable)

    def referable(self, obj: KubeCSRObject) -> bool:
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        return bool(uid) and self._referable.get(str(meta.get("name") or "")) == uid

    def allow(self, name: str, uid: str) -> None:
        self._referable[name] = uid

    def forget(self, name: str) -> None:
        self._referable.pop(name, None)

    def forget_all_but(self, names: set[str]) -> None:
        for name in [n for n in self._referable if n not in names]:
            del self._referable[name]

    # Pending is a state of this kind: it waits for its issuer as long as it takes.
    wait_limit: dt.timedelta | None = None

    async def admit(self, obj: KubeCSRObject, issuer: CheckedIssuer) -> Denied | Failed | None:
        return None  # approved (by an approver): nothing more to admit

    def parameters(self, obj: KubeCSRObject, issuer: CheckedIssuer) -> tuple[str, IssuanceRequest]:
        return self.csr(obj), issuance_request(obj)

    def csr(self, obj: KubeCSRObject) -> str:
        return str((obj.get("spec") or {}).get("request") or "")

    def requester(self, obj: KubeCSRObject) -> Requester:
        return requester_of(obj)

    def shows(self, obj: KubeCSRObject, update: StatusUpdate) -> bool:
        return False  # nothing is written for Pending (no such condition), so never shown

    async def write(
        self, obj: KubeCSRObject, update: StatusUpdate, now: dt.datetime
    ) -> HasMetadata | None:
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
            failed: ConditionFields = {
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

    async def _patch(self, obj: KubeCSRObject, status: KubeCSRStatus) -> HasMetadata:
        meta = obj.get("metadata") or {}
        body = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": status}
        try:
            written = await self._api.patch(
                KUBE_CSRS,
                str(meta.get("name") or ""),
                body,
                subresource="status",
                content_type=MERGE_PATCH,
            )
        except ApiError as err:
            if err.status.code == 409:
                raise RequestConflict(str(meta.get("name") or "")) from err
            raise
        return typed(written, HasMetadata)
