"""Kubernetes PodCertificateRequests (``certificates.k8s.io/v1``, 1.37) signed by our issuers.

A Pod asks for a certificate through a ``podCertificate`` projected volume;
its node's kubelet makes the key and creates a PodCertificateRequest in the
Pod's namespace naming the signer, the Pod, its ServiceAccount and node, and
a stub PKCS#10 request that only carries (and proves possession of) the
public key. The signer names are those of our Kubernetes CSRs:
``clusterissuers.<group>/<name>`` for a ClusterIssuer,
``issuers.<group>/<namespace>.<name>`` for an Issuer, which signs only for
Pods of its own namespace.

Nothing approves a PodCertificateRequest: the issuer's ``spec.podCertificates``
is the approval (:mod:`.pod_admission`, checked against the issuer as it is
right before signing); what does not pass ends ``Denied`` with a reason that
says which. The identity written into the certificate (:mod:`.pod_identity`)
comes from the policy and the request's spec (which the API server and the
kubelet fill in), never from the CSR: an empty subject, a SPIFFE URI
``spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`` and/or DNS names
from the policy's templates.

This module is the request kind: the API's object (signer name to issuer,
view, requester) and its status writes under the API's rules below.

The API's rules (certificates/v1 validation): the status is immutable but for
the one transition to a terminal condition (``Issued``, ``Denied`` or
``Failed``, status True, at most one); so waiting is said in events only, and
a request whose issuer stays missing or not Ready for :data:`WAIT_LIMIT` ends
``Failed``. An Issued status holds ``certificateChain`` (the leaf first, then
intermediates below the root: trust anchors are published apart),
``notBefore``/``notAfter`` equal to the leaf's, NotBefore within 5 minutes of
the API server's clock, a lifetime of at least 1 h and at most
``spec.maxExpirationSeconds``, and ``beginRefreshAt`` at least 10 minutes
after NotBefore and before NotAfter. ``beginRefreshAt`` is two thirds into
the lifetime, or where the policy's ``refreshBeforePercentage`` puts it.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Final, TypedDict

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lightkube import ApiError

from akv_issuer.controller.api import (
    CLUSTER_ISSUER_KIND,
    GROUP,
    ISSUER_KIND,
    POD_CERTIFICATE_REQUESTS,
    POD_MIN_LIFETIME,
    conditions_of,
    find_condition,
    format_time,
)
from akv_issuer.controller.api.objects import (
    ConditionFields,
    HasMetadata,
    PodCertificateRequestObject,
    PodCertificateRequestStatus,
    typed,
)
from akv_issuer.controller.core import CheckedIssuer, IssuerKey
from akv_issuer.controller.observability.audit import PodRef, Requester
from akv_issuer.controller.requests.decide import Refuse, RequestView
from akv_issuer.controller.requests.kind import (
    Denied,
    Failed,
    Issued,
    RequestConflict,
    StatusUpdate,
)
from akv_issuer.controller.requests.kubecsr import SignerNameError, issuer_of_signer
from akv_issuer.controller.requests.pod_admission import (
    REASON_INVALID_REQUEST,
    REASON_ISSUER_IN_ANOTHER_NAMESPACE,
    admit,
)
from akv_issuer.controller.requests.pod_identity import (
    begin_refresh_at,
    identity,
    lifetime,
    stub_csr,
)
from akv_issuer.pki import IssuanceRequest
from akv_issuer.runtime.kubeapi import MERGE_PATCH, ApiResource, KubeApi

# The API's condition types; each is terminal, with status True.
ISSUED: Final = "Issued"
DENIED: Final = "Denied"
FAILED: Final = "Failed"
TERMINAL: Final = (ISSUED, DENIED, FAILED)

# How long a request waits for a missing or not-Ready issuer before it ends
# Failed (its status cannot say Pending; the kubelet shows the Failed reason
# as an event on the Pod, which then has to be re-created).
WAIT_LIMIT: Final = dt.timedelta(minutes=5)


class _Metadata(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    creationTimestamp: str


class _Spec(TypedDict, total=False):
    signerName: str


class _Status(TypedDict, total=False):
    conditions: list[ConditionFields]


class PCRFields(TypedDict, total=False):
    """What the informer decodes of each PodCertificateRequest: what
    :func:`view` reads (the flow keeps whole the few it works on)."""

    metadata: _Metadata
    spec: _Spec
    status: _Status


def _finished(obj: PodCertificateRequestObject) -> bool:
    conditions = conditions_of(obj)
    return any(
        (found := find_condition(conditions, type_)) is not None and found.status == "True"
        for type_ in TERMINAL
    )


def view(obj: PodCertificateRequestObject) -> RequestView:
    """The request view of a PodCertificateRequest: addressed to one of our
    issuers by its signerName, approved from the start (the issuer's policy
    decides, see :meth:`PodCertificateRequests.admit`)."""
    meta = obj.get("metadata") or {}
    signer = str((obj.get("spec") or {}).get("signerName") or "")
    namespace = str(meta.get("namespace") or "")
    refusal: Refuse | None = None
    try:
        issuer = issuer_of_signer(signer, GROUP)
    except SignerNameError as err:
        # Ours to answer, never to ignore; the key names no issuer that can exist.
        issuer = IssuerKey(CLUSTER_ISSUER_KIND, "", signer)
        refusal = Refuse(REASON_INVALID_REQUEST, str(err), denied=False)
    if issuer is None and _under_our_domain(signer):
        issuer = IssuerKey(CLUSTER_ISSUER_KIND, "", signer)
        refusal = Refuse(
            REASON_INVALID_REQUEST,
            f"signerName {signer!r} is under {GROUP} but names no issuer: use "
            f"clusterissuers.{GROUP}/<name> or issuers.{GROUP}/<namespace>.<name>",
            denied=False,
        )
    if issuer is not None and issuer.kind == ISSUER_KIND and issuer.namespace != namespace:
        refusal = Refuse(
            REASON_ISSUER_IN_ANOTHER_NAMESPACE,
            f"Issuer {issuer.namespace}/{issuer.name} signs only for Pods in namespace "
            f"{issuer.namespace}, this Pod is in {namespace}; use an Issuer of namespace "
            f"{namespace} (signerName issuers.{GROUP}/{namespace}.<name>) or a ClusterIssuer",
            denied=True,
        )
    return RequestView.read(
        obj, issuer=issuer, finished=_finished(obj), approved=True, refusal=refusal
    )


def _under_our_domain(signer: str) -> bool:
    """A signer name whose domain is our group or below it: ours to answer."""
    domain = signer.partition("/")[0]
    return domain == GROUP or domain.endswith(f".{GROUP}")


class PodCertificateRequests:
    """The request kind of Kubernetes PodCertificateRequests (``certificates.k8s.io/v1``)."""

    name = "podcertificaterequests"
    object_kind = "PodCertificateRequest"
    resource: ApiResource = POD_CERTIFICATE_REQUESTS
    shape: type = PCRFields
    wait_limit: dt.timedelta | None = WAIT_LIMIT

    def __init__(self, api: KubeApi) -> None:
        self._api = api
        # The policy's refreshBeforePercentage of each request being signed
        # (by uid), from parameters() to the Issued write: the status is
        # written without the issuer at hand. Lost with a restart, like the
        # flow's kept certificate; the default then applies.
        self._refresh_before: dict[str, int] = {}

    def view(self, obj: PodCertificateRequestObject) -> RequestView:
        return view(obj)

    async def admit(
        self, obj: PodCertificateRequestObject, issuer: CheckedIssuer
    ) -> Denied | Failed | None:
        """The issuer's ``spec.podCertificates`` decides (:func:`.pod_admission.admit`)."""
        return await admit(self._api, obj, issuer)

    def parameters(
        self, obj: PodCertificateRequestObject, issuer: CheckedIssuer
    ) -> tuple[str, IssuanceRequest]:
        policy = issuer.spec.pod_certificates
        if policy is None:  # admit() denied it already
            raise ValueError(f"{issuer.key} does not sign PodCertificateRequests")
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        if policy.refresh_before_percentage is not None:
            self._refresh_before[uid] = policy.refresh_before_percentage
        else:
            self._refresh_before.pop(uid, None)
        return self.csr(obj), IssuanceRequest(
            duration=lifetime(obj, policy),
            usages=policy.usages,
            names=identity(obj, policy),
            not_before_now=True,
            min_duration=POD_MIN_LIFETIME,
        )

    def csr(self, obj: PodCertificateRequestObject) -> str:
        """The stub CSR as base64 of its PEM, as the flow takes every kind's CSR."""
        try:
            pem = stub_csr(obj).public_bytes(serialization.Encoding.PEM)
        except ValueError:
            return ""
        return base64.b64encode(pem).decode()

    def requester(self, obj: PodCertificateRequestObject) -> Requester:
        # The API server records no creator in a PodCertificateRequest; it is
        # the kubelet of spec.nodeName (the node authorizer lets a kubelet
        # create them only for Pods bound to its node) or an administrator.
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        return Requester(
            username="",
            uid="",
            groups=(),
            pod=PodRef(
                namespace=str(meta.get("namespace") or ""),
                name=str(spec.get("podName") or ""),
                uid=str(spec.get("podUID") or ""),
                service_account=str(spec.get("serviceAccountName") or ""),
                service_account_uid=str(spec.get("serviceAccountUID") or ""),
                node=str(spec.get("nodeName") or ""),
                node_uid=str(spec.get("nodeUID") or ""),
            ),
        )

    def shows(self, obj: PodCertificateRequestObject, update: StatusUpdate) -> bool:
        return False  # nothing is written for Pending (the status cannot say it)

    async def write(
        self, obj: PodCertificateRequestObject, update: StatusUpdate, now: dt.datetime
    ) -> HasMetadata | None:
        moment = format_time(now)
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        status: PodCertificateRequestStatus
        if isinstance(update, Issued):
            leaf = x509.load_pem_x509_certificate(update.certificate_pem)
            not_before = leaf.not_valid_before_utc
            not_after = leaf.not_valid_after_utc
            status = {
                "conditions": [
                    _condition(
                        ISSUED,
                        "Issued",
                        f"Certificate issued (serial {leaf.serial_number:x})",
                        moment,
                    )
                ],
                "certificateChain": update.certificate_pem.decode(),
                "notBefore": format_time(not_before),
                "beginRefreshAt": format_time(
                    begin_refresh_at(not_before, not_after, self._refresh_before.get(uid))
                ),
                "notAfter": format_time(not_after),
            }
        elif isinstance(update, Denied):
            status = {"conditions": [_condition(DENIED, update.reason, update.message, moment)]}
        elif isinstance(update, Failed):
            status = {"conditions": [_condition(FAILED, update.reason, update.message, moment)]}
        else:
            return None  # Pending: the status cannot say it (events do)
        name = str(meta.get("name") or "")
        body = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": status}
        try:
            written = await self._api.patch(
                POD_CERTIFICATE_REQUESTS,
                name,
                body,
                namespace=str(meta.get("namespace") or ""),
                subresource="status",
                content_type=MERGE_PATCH,
            )
        except ApiError as err:
            if err.status.code == 409:
                raise RequestConflict(name) from err
            raise
        self._refresh_before.pop(uid, None)  # terminal: nothing more is written
        return typed(written, HasMetadata)


def _condition(type_: str, reason: str, message: str, moment: str) -> ConditionFields:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": moment,
    }


__all__ = [
    "WAIT_LIMIT",
    "PodCertificateRequests",
    "view",
]
