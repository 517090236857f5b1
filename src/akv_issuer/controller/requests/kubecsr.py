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
from collections.abc import Callable, Mapping
from typing import Any, Final, TypedDict, cast

from lightkube import ApiError, AsyncClient
from lightkube.resources.authorization_v1 import SubjectAccessReview
from lightkube.types import PatchType

from akv_issuer.controller.api import (
    CERT_MANAGER_GROUP,
    CLUSTER_ISSUER_KIND,
    GROUP,
    ISSUER_KIND,
    CertificateRequestEvent,
    Condition,
    KubeCertificateSigningRequest,
    conditions_of,
    find_condition,
    format_time,
    parse_go_duration,
)
from akv_issuer.controller.core import IssuerKey, permissions
from akv_issuer.controller.observability import audit
from akv_issuer.controller.observability.audit import Requester, requester_of
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.controller.requests.decide import RequestView
from akv_issuer.controller.requests.kind import (
    Failed,
    Issued,
    RequestConflict,
    StatusUpdate,
)
from akv_issuer.pki import DEFAULT_DURATION, DEFAULT_USAGES, IssuanceRequest
from akv_issuer.runtime.controller import DONE, Controller, QueueGauges, Result
from akv_issuer.runtime.events import WARNING, EventRecorder, ObjectRef
from akv_issuer.runtime.queue import Backoff

log = logging.getLogger(__name__)

ANNOTATION_DURATION = "experimental.cert-manager.io/request-duration"
ANNOTATION_IS_CA = "experimental.cert-manager.io/request-is-ca"

# Kubernetes' own condition types; a signer adds only Failed.
CSR_APPROVED = "Approved"
CSR_DENIED = "Denied"
CSR_FAILED = "Failed"

# The Failed reason (and Warning event) of a CSR whose requester may not
# reference the namespaced Issuer it names: cert-manager's word for it.
REASON_DENIED_REFERENCE: Final = "DeniedReference"
REASON_INVALID_REQUEST: Final = "InvalidRequest"
# What a requester needs, as cert-manager asks it for its own Issuers.
REFERENCE_VERB: Final = "reference"
REFERENCE_RESOURCE: Final = "signers"
# The controller may not create SubjectAccessReviews: an administrator has to
# grant it; look again this often meanwhile.
FORBIDDEN_RETRY: Final = 120.0
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


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


def reference_review(obj: Mapping[str, Any], issuer: IssuerKey, name: str) -> dict[str, Any]:
    """The SubjectAccessReview asking whether the CSR's requester may
    ``reference`` the Issuer ``issuer`` (``name``: its name, or ``*`` for all
    of its namespace), as cert-manager asks for its own Issuers."""
    spec = obj.get("spec") or {}
    extra = spec.get("extra") or {}
    body: dict[str, Any] = {
        "user": str(spec.get("username") or ""),
        "groups": [str(g) for g in spec.get("groups") or ()],
        "uid": str(spec.get("uid") or ""),
        "extra": {str(k): [str(v) for v in values or ()] for k, values in extra.items()},
        "resourceAttributes": {
            "group": CERT_MANAGER_GROUP,
            "resource": REFERENCE_RESOURCE,
            "verb": REFERENCE_VERB,
            "namespace": issuer.namespace,
            "name": name,
            "version": "*",
        },
    }
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": body}


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


def _signer_issuer(obj: Mapping[str, Any]) -> IssuerKey | None:
    """The issuer a CSR names, None when not one of ours or malformed (the
    reference reviews answer a malformed one)."""
    try:
        return issuer_of_signer(str((obj.get("spec") or {}).get("signerName") or ""), GROUP)
    except SignerNameError:
        return None


def _finished(obj: Mapping[str, Any], conditions: tuple[Condition, ...]) -> bool:
    # Denied is final too: Kubernetes CSRs have no terminal condition for a
    # signer to add after a denial, so there is nothing left to do.
    return (
        bool((obj.get("status") or {}).get("certificate"))
        or _true(conditions, CSR_FAILED)
        or _true(conditions, CSR_DENIED)
    )


def view(
    obj: dict[str, Any], referable: Callable[[Mapping[str, Any]], bool] | None = None
) -> RequestView:
    """The request view of a CSR; ``referable`` says whether a namespaced
    Issuer's CSR passed its reference review (none given: not yet)."""
    conditions = conditions_of(obj)
    issuer = _signer_issuer(obj)
    namespaced = issuer is not None and issuer.kind == ISSUER_KIND
    return RequestView.read(
        obj,
        issuer=issuer,
        finished=_finished(obj, conditions),
        approved=_true(conditions, CSR_APPROVED),
        referable=not namespaced or (referable is not None and referable(obj)),
    )


class KubeCSRs:
    """The request kind of Kubernetes CertificateSigningRequests (``certificates.k8s.io/v1``)."""

    name = "certificatesigningrequests"
    object_kind = "CertificateSigningRequest"
    resource: Any = KubeCertificateSigningRequest
    shape: type = CSRFields

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        # CSR name -> uid of each CSR whose requester the reference review
        # allowed to use the namespaced Issuer it names (until it is finished).
        self._referable: dict[str, str] = {}

    def view(self, obj: dict[str, Any]) -> RequestView:
        return view(obj, self.referable)

    def referable(self, obj: Mapping[str, Any]) -> bool:
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


class ReferenceReviews:
    """The CSRs of our group the request flow does not serve by itself: a
    namespaced Issuer's (signed once a SubjectAccessReview shows that its
    requester may reference the Issuer, else ``Failed``/``DeniedReference``)
    and a malformed signerName (``Failed``/``InvalidRequest``). An informer
    handler beside the flow's, with a small queue of its own; ``wake`` hands
    an allowed CSR back to the flow."""

    def __init__(
        self,
        kind: KubeCSRs,
        client: AsyncClient,
        events: EventRecorder,
        metrics: Metrics,
        wake: Callable[[str], None],
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._kind = kind
        self._client = client
        self._events = events
        self._metrics = metrics
        self._wake = wake
        self._now = now
        self.backoff = Backoff(base=1.0, cap=300.0)
        self.controller: Controller[str] = Controller(
            "csr-references",
            self.reconcile,
            workers=1,
            backoff=self.backoff,
            gauges=QueueGauges(metrics.queue_depth, metrics.queue_delayed),
        )
        # The last Forbidden warning per CSR, so a retry does not repeat it.
        self._warned: dict[str, str] = {}

    # -- informer handler -------------------------------------------------------

    @staticmethod
    def _needs_review(obj: Mapping[str, Any]) -> bool:
        """Approved, unfinished, and addressed to a namespaced Issuer of ours or
        to a malformed signerName of our group."""
        conditions = conditions_of(obj)
        if _finished(obj, conditions) or not _true(conditions, CSR_APPROVED):
            return False
        try:
            issuer = issuer_of_signer(str((obj.get("spec") or {}).get("signerName") or ""), GROUP)
        except SignerNameError:
            return True
        return issuer is not None and issuer.kind == ISSUER_KIND

    def on_upsert(self, obj: dict[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name") or "")
        if not self._needs_review(obj):
            self._forget(name)
        elif not self._kind.referable(obj):
            self.controller.enqueue(name)

    def on_delete(self, obj: dict[str, Any]) -> None:
        self._forget(str((obj.get("metadata") or {}).get("name") or ""))

    def on_listed(self, keys: set[str]) -> None:
        self._kind.forget_all_but(keys)
        for name in [n for n in self._warned if n not in keys]:
            del self._warned[name]

    def _forget(self, name: str) -> None:
        self._kind.forget(name)
        self._warned.pop(name, None)
        self.controller.cancel(name)

    # -- reconcile ---------------------------------------------------------------

    async def reconcile(self, name: str, failures: int) -> Result:
        try:
            obj = dict(await self._client.get(KubeCertificateSigningRequest, name))
        except ApiError as err:
            if err.status.code == 404:
                self._forget(name)
                return DONE
            raise
        if not self._needs_review(obj) or self._kind.referable(obj):
            return DONE
        signer = str((obj.get("spec") or {}).get("signerName") or "")
        try:
            issuer = issuer_of_signer(signer, GROUP)
        except SignerNameError as err:
            return await self._fail(obj, None, REASON_INVALID_REQUEST, str(err), failures)
        if issuer is None:
            return DONE
        try:
            allowed = await self._may_reference(obj, issuer)
        except ApiError as err:
            if not permissions.is_forbidden(err):
                raise
            await self._warn_forbidden(
                obj,
                f"whether the requester may use {issuer} cannot be checked: "
                f"{permissions.SUBJECT_ACCESS_REVIEWS.missing()}; retried every "
                f"{FORBIDDEN_RETRY:.0f}s",
            )
            return Result.retry(FORBIDDEN_RETRY)
        meta = obj.get("metadata") or {}
        if allowed:
            self._kind.allow(name, str(meta.get("uid") or ""))
            self._warned.pop(name, None)
            self._wake(name)
            return DONE
        requester = str((obj.get("spec") or {}).get("username") or "")
        message = (
            f"the requester {requester!r} may not reference Issuer "
            f"{issuer.namespace}/{issuer.name}: it needs verb {REFERENCE_VERB} on "
            f"{REFERENCE_RESOURCE} ({CERT_MANAGER_GROUP}) in namespace {issuer.namespace}, "
            f"resourceName {issuer.name} or all"
        )
        return await self._fail(obj, issuer, REASON_DENIED_REFERENCE, message, failures)

    async def _may_reference(self, obj: Mapping[str, Any], issuer: IssuerKey) -> bool:
        for name in (issuer.name, "*"):
            review = cast(
                SubjectAccessReview,
                SubjectAccessReview.from_dict(reference_review(obj, issuer, name)),
            )
            answered = await self._client.create(review)
            if answered.status is not None and answered.status.allowed:
                return True
        return False

    async def _fail(
        self,
        obj: dict[str, Any],
        issuer: IssuerKey | None,
        reason: str,
        message: str,
        failures: int,
    ) -> Result:
        name = str((obj.get("metadata") or {}).get("name") or "")
        try:
            await self._kind.write(obj, Failed(reason, message, invalid=True), self._now())
        except RequestConflict:
            return Result.retry(self.backoff.delay(failures + 1))  # changed: decide anew
        self._forget(name)
        if issuer is not None:
            self._metrics.failed.labels(*issuer.labels, reason).inc()
        event = (
            REASON_DENIED_REFERENCE
            if reason == REASON_DENIED_REFERENCE
            else CertificateRequestEvent.PERMANENT_ERROR
        )
        await self._events.record(ObjectRef.of(obj), WARNING, str(event), message)
        log.info("%s %s ended Failed: %s", self._kind.name, name, message)
        try:
            csr_pem: bytes | None = base64.b64decode(self._kind.csr(obj), validate=True)
        except ValueError:
            csr_pem = None
        audit.emit(
            audit.refused(
                request=audit.RequestRef.of(self._kind.object_kind, obj),
                requester=requester_of(obj),
                issuer=issuer,
                reason=reason,
                message=message,
                csr_pem=csr_pem,
                ca=None,
                at=self._now(),
            )
        )
        return DONE

    async def _warn_forbidden(self, obj: dict[str, Any], message: str) -> None:
        name = str((obj.get("metadata") or {}).get("name") or "")
        if self._warned.get(name) == message:
            return
        self._warned[name] = message
        log.warning("%s %s: %s", self._kind.name, name, message)
        await self._events.record(ObjectRef.of(obj), WARNING, permissions.REASON_FORBIDDEN, message)
