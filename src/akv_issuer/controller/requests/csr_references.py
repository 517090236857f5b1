"""The reference reviews of Kubernetes CSRs for namespaced Issuers (see :mod:`.kubecsr`).

A CSR is cluster-scoped: whoever may create CSRs could name any namespace's
Issuer. So a namespaced Issuer's CSR is signed only if its requester may
``reference`` that Issuer -- verb ``reference`` on ``signers`` in group
``cert-manager.io``, in the Issuer's namespace, for the Issuer's name or
``*`` -- which a SubjectAccessReview for the requester asks the API server,
exactly as cert-manager checks for its own Issuers. :class:`ReferenceReviews`
runs beside the request flow on the same informer; a refusal ends the CSR
``Failed``/``DeniedReference``, a malformed signerName of our group
``Failed``/``InvalidRequest``.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

from lightkube import ApiError, AsyncClient
from lightkube.resources.authorization_v1 import SubjectAccessReview

from akv_issuer.controller.api import (
    CERT_MANAGER_GROUP,
    GROUP,
    ISSUER_KIND,
    CertificateRequestEvent,
    KubeCertificateSigningRequest,
    conditions_of,
)
from akv_issuer.controller.api.objects import KubeCSRObject, typed
from akv_issuer.controller.core import IssuerKey, permissions
from akv_issuer.controller.observability import audit
from akv_issuer.controller.observability.audit import requester_of
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.controller.requests.kind import Failed, RequestConflict
from akv_issuer.controller.requests.kubecsr import (
    CSR_APPROVED,
    REASON_INVALID_REQUEST,
    KubeCSRs,
    SignerNameError,
    condition_true,
    csr_finished,
    issuer_of_signer,
)
from akv_issuer.runtime.controller import DONE, Controller, QueueGauges, Result
from akv_issuer.runtime.events import WARNING, EventRecorder, ObjectRef
from akv_issuer.runtime.queue import Backoff

# The CSR flow's logger: these lines were kubecsr's before the split.
log = logging.getLogger("akv_issuer.controller.requests.kubecsr")

# The Failed reason (and Warning event) of a CSR whose requester may not
# reference the namespaced Issuer it names: cert-manager's word for it.
REASON_DENIED_REFERENCE: Final = "DeniedReference"
# What a requester needs, as cert-manager asks it for its own Issuers.
REFERENCE_VERB: Final = "reference"
REFERENCE_RESOURCE: Final = "signers"
# The controller may not create SubjectAccessReviews: an administrator has to
# grant it; look again this often meanwhile.
FORBIDDEN_RETRY: Final = 120.0


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
    def _needs_review(obj: KubeCSRObject) -> bool:
        """Approved, unfinished, and addressed to a namespaced Issuer of ours or
        to a malformed signerName of our group."""
        conditions = conditions_of(obj)
        if csr_finished(obj, conditions) or not condition_true(conditions, CSR_APPROVED):
            return False
        try:
            issuer = issuer_of_signer(str((obj.get("spec") or {}).get("signerName") or ""), GROUP)
        except SignerNameError:
            return True
        return issuer is not None and issuer.kind == ISSUER_KIND

    def on_upsert(self, raw: dict[str, Any]) -> None:
        obj = typed(raw, KubeCSRObject)
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
            obj = typed(
                dict(await self._client.get(KubeCertificateSigningRequest, name)), KubeCSRObject
            )
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

    async def _may_reference(self, obj: KubeCSRObject, issuer: IssuerKey) -> bool:
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
        obj: KubeCSRObject,
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
        log.info("ended Failed: %s", message)
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

    async def _warn_forbidden(self, obj: KubeCSRObject, message: str) -> None:
        name = str((obj.get("metadata") or {}).get("name") or "")
        if self._warned.get(name) == message:
            return
        self._warned[name] = message
        log.warning("%s", message)
        await self._events.record(ObjectRef.of(obj), WARNING, permissions.REASON_FORBIDDEN, message)
