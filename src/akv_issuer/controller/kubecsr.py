"""Kubernetes CertificateSigningRequests (``certificates.k8s.io/v1``) signed by a ClusterIssuer.

A CSR with ``signerName: clusterissuers.<group>/<name>`` is signed by that
ClusterIssuer once it is Approved, as cert-manager's own CSR signers do:
duration from ``spec.expirationSeconds`` or the annotation
``experimental.cert-manager.io/request-duration``, isCA from
``experimental.cert-manager.io/request-is-ca``, usages from ``spec.usages``.
The certificate (leaf and intermediates, PEM) goes to ``status.certificate``;
the CA is not part of a CSR's status and is published in the ClusterIssuer's
``status.caCertificate``.

Kubernetes CSRs have no Pending condition: waiting for the issuer and
transient Key Vault errors are reported as events on the CSR; a request that
can never succeed gets ``Failed=True`` with the same reasons a
CertificateRequest would get (``InvalidCSR``, ``PolicyViolation``,
``InvalidRequest``, ``RetryBudgetExhausted``).

Memory: only the names of approved, unfinished CSRs for our signers are kept,
with the last event sent for each (to send one event per change, not per retry).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from akv_issuer.controller.api import (
    CLUSTER_ISSUER_KIND,
    GROUP,
    CertificateRequestEvent,
    KubeCertificateSigningRequest,
    parse_go_duration,
)
from akv_issuer.controller.config import ControllerConfig
from akv_issuer.controller.decide import (
    CSR_APPROVED,
    CSR_FAILED,
    GiveUp,
    Ignore,
    IssuerView,
    KubeCSRView,
    SetPending,
    Sign,
    WaitForApproval,
    after_transient_error,
    cluster_issuer_of_signer,
    decide_kube_csr,
    format_time,
)
from akv_issuer.controller.issuers import CheckedIssuer, CheckFailed, IssuerKey
from akv_issuer.controller.metrics import Metrics
from akv_issuer.controller.signing import (
    IssuerFault,
    Outcome,
    Refused,
    RequestSigner,
    Signed,
    Transient,
)
from akv_issuer.pki import DEFAULT_DURATION, DEFAULT_USAGES, IssuanceRequest
from akv_issuer.runtime.events import NORMAL, WARNING, EventRecorder, ObjectRef
from akv_issuer.runtime.queue import Backoff, WorkQueue

log = logging.getLogger(__name__)

ANNOTATION_DURATION = "experimental.cert-manager.io/request-duration"
ANNOTATION_IS_CA = "experimental.cert-manager.io/request-is-ca"
CSR_API_VERSION = "certificates.k8s.io/v1"
CSR_KIND = "CertificateSigningRequest"


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


def _issuer_key(view: KubeCSRView) -> IssuerKey | None:
    """The ClusterIssuer a CSR's signerName names, None for another signer."""
    name = cluster_issuer_of_signer(view.signer_name, GROUP)
    return IssuerKey(CLUSTER_ISSUER_KIND, "", name) if name is not None else None


@dataclass(frozen=True, slots=True)
class _Waiting:
    issuer: IssuerKey
    last_event: tuple[str, str] | None = None  # (reason, message) last recorded


class KubeCSRSigner:
    """Informer handler and reconciler for Kubernetes CSRs of our signers."""

    def __init__(
        self,
        config: ControllerConfig,
        client: AsyncClient,
        signer: RequestSigner,
        metrics: Metrics,
        events: EventRecorder,
        issuers: Mapping[IssuerKey, dict[str, Any]],
        checked: Mapping[IssuerKey, CheckedIssuer],
        recheck_issuer: Callable[[IssuerKey], None],
        issuer_fault: Callable[[IssuerKey, CheckFailed], Awaitable[None]],
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.config = config
        self._client = client
        self._signer = signer
        self._metrics = metrics
        self._events = events
        self._issuers = issuers
        self._checked = checked
        self._recheck_issuer = recheck_issuer
        self._issuer_fault = issuer_fault
        self._now = now
        self.queue: WorkQueue[str] = WorkQueue(
            "certificatesigningrequests", Backoff(base=1.0, cap=300.0)
        )
        self.waiting: dict[str, _Waiting] = {}
        self.signed: dict[str, Signed] = {}  # by uid, until the write lands

    # -- informer handler -------------------------------------------------

    def on_upsert(self, obj: dict[str, Any]) -> None:
        view = KubeCSRView.from_object(obj)
        key = _issuer_key(view)
        if key is None or view.is_finished():
            self._forget(view.name, view.uid)
            return
        if not view.condition_true(CSR_APPROVED):
            return  # nothing to do until it is approved (or denied)
        previous = self.waiting.get(view.name)
        self.waiting[view.name] = _Waiting(key, previous.last_event if previous else None)
        if previous is not None and self.queue.failures(view.name) > 0:
            return  # backing off: our own event must not cut the backoff short
        self.queue.add(view.name)

    def on_delete(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        self._forget(str(meta.get("name") or ""), str(meta.get("uid") or ""))

    def on_listed(self, keys: set[str]) -> None:
        for name in [n for n in self.waiting if n not in keys]:
            self._forget(name, None)

    def issuer_changed(self, key: IssuerKey) -> None:
        for name, entry in self.waiting.items():
            if entry.issuer == key and self.queue.failures(name) == 0:
                self.queue.add(name)

    def _forget(self, name: str, uid: str | None) -> None:
        self.waiting.pop(name, None)
        self.queue.cancel(name)
        if uid:
            self.signed.pop(uid, None)

    # -- reconcile --------------------------------------------------------

    async def reconcile(self, name: str) -> None:
        try:
            obj: dict[str, Any] = dict(await self._client.get(KubeCertificateSigningRequest, name))
        except ApiError as err:
            if err.status.code == 404:
                self._forget(name, None)
                return
            raise
        view = KubeCSRView.from_object(obj)
        kept = self.signed.get(view.uid)
        if kept is not None and not view.is_finished():
            await self._write_certificate(obj, view, kept)
            return
        key = _issuer_key(view)
        issuer_obj = self._issuers.get(key) if key is not None else None
        issuer = IssuerView.from_object(issuer_obj) if issuer_obj is not None else None
        action = decide_kube_csr(view, issuer, group=GROUP)
        if key is None or isinstance(action, Ignore):
            self._forget(name, view.uid)
            return
        if isinstance(action, WaitForApproval):
            return
        if isinstance(action, SetPending):
            await self._event_once(obj, NORMAL, str(action.event_reason), action.message)
            self._metrics.pending.labels(*key.labels, str(action.reason)).inc()
            return
        assert isinstance(action, Sign)
        checked = self._checked.get(key)
        if checked is None or issuer is None or checked.generation != issuer.generation:
            # Ready in its status, not yet checked by this process: its check requeues us.
            self._recheck_issuer(key)
            self.queue.add_after(name, 30.0)
            return

        outcome: Outcome
        try:
            csr_pem = base64.b64decode((obj.get("spec") or {}).get("request") or "")
            request = issuance_request(obj)
        except ValueError as err:
            outcome = Refused("InvalidRequest", str(err))
        else:
            outcome = await self._signer.sign(csr_pem, request, checked, self._now())

        if isinstance(outcome, Signed):
            self.signed[view.uid] = outcome
            await self._write_certificate(obj, view, outcome)
        elif isinstance(outcome, Refused):
            await self._write_failed(obj, view, outcome.kind, outcome.message)
            self._metrics.failed.labels(*key.labels, outcome.kind).inc()
        elif isinstance(outcome, Transient):
            await self._transient(obj, view, key, outcome)
        else:
            assert isinstance(outcome, IssuerFault)
            failure = outcome.failure
            await self._issuer_fault(key, failure)  # flips it not Ready; its re-check requeues us
            await self._event_once(
                obj,
                WARNING,
                str(CertificateRequestEvent.WAITING_FOR_ISSUER_READY),
                f"{key} is not ready ({failure.reason}: {failure.message})",
            )

    async def _transient(
        self, obj: dict[str, Any], view: KubeCSRView, key: IssuerKey, outcome: Transient
    ) -> None:
        failures = self.queue.failures(view.name) + 1
        decision = after_transient_error(
            view.created,
            self._now(),
            self.config.retry_budget,
            self.queue.backoff.delay(failures),
            outcome.retry_after,
        )
        if isinstance(decision, GiveUp):
            await self._write_failed(
                obj,
                view,
                "RetryBudgetExhausted",
                f"{decision.message}; last error: {outcome.message}",
            )
            self._metrics.failed.labels(*key.labels, "RetryBudgetExhausted").inc()
            return
        self.queue.note_failure(view.name)
        self.queue.add_after(view.name, decision.delay)
        log.warning("CSR %s: %s (retrying in %.0fs)", view.name, outcome.message, decision.delay)
        # One event per distinct error, not one per retry.
        await self._event_once(
            obj, WARNING, str(CertificateRequestEvent.RETRYABLE_ERROR), outcome.message
        )

    # -- writes -----------------------------------------------------------

    async def _patch_status(self, obj: dict[str, Any], status: dict[str, Any]) -> None:
        """Merge ``status`` into the CSR, on condition that it is still the version
        ``obj`` was read at (else the API server answers 409)."""
        meta = obj.get("metadata") or {}
        body = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": status}
        await self._client.patch(
            KubeCertificateSigningRequest.Status,
            str(meta.get("name") or ""),
            body,
            patch_type=PatchType.MERGE,
        )

    async def _write_certificate(
        self, obj: dict[str, Any], view: KubeCSRView, result: Signed
    ) -> None:
        # If the CSR changed since it was read, the write fails with 409 and is
        # retried with the same certificate (kept by uid), never a second signature.
        try:
            await self._patch_status(
                obj, {"certificate": base64.b64encode(result.certificate_pem).decode()}
            )
        except ApiError as err:
            self._metrics.status_write_retries.inc()
            delay = self.queue.add_rate_limited(view.name)
            log.warning(
                "CSR %s: writing the certificate failed (HTTP %s); retrying the same "
                "certificate in %.1fs",
                view.name,
                err.status.code,
                delay,
            )
            return
        self._metrics.issued.labels(*result.issuer.labels).inc()
        self._forget(view.name, view.uid)
        log.info("CSR %s issued by %s", view.name, result.issuer)
        await self._events.record(
            ObjectRef.of(obj), NORMAL, str(CertificateRequestEvent.ISSUED), "Certificate issued"
        )

    async def _write_failed(
        self, obj: dict[str, Any], view: KubeCSRView, reason: str, message: str
    ) -> None:
        now = format_time(self._now())
        # A merge patch replaces the whole list: keep every condition there is
        # (Approved included), guarded by the resourceVersion they were read at.
        conditions = [
            c
            for c in (obj.get("status") or {}).get("conditions") or ()
            if c.get("type") != CSR_FAILED
        ]
        conditions.append(
            {
                "type": CSR_FAILED,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastUpdateTime": now,
                "lastTransitionTime": now,
            }
        )
        try:
            await self._patch_status(obj, {"conditions": conditions})
        except ApiError as err:
            if err.status.code != 409:
                raise
            self.queue.add_rate_limited(view.name)  # changed meanwhile: decide again
            return
        self._forget(view.name, view.uid)
        log.info("CSR %s failed: %s", view.name, message)
        await self._events.record(
            ObjectRef.of(obj), WARNING, str(CertificateRequestEvent.PERMANENT_ERROR), message
        )

    async def _event_once(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Record an event unless it repeats the last one for this CSR."""
        name = str((obj.get("metadata") or {}).get("name") or "")
        entry = self.waiting.get(name)
        if entry is not None:
            if entry.last_event == (reason, message):
                return
            self.waiting[name] = _Waiting(entry.issuer, (reason, message))
        await self._events.record(ObjectRef.of(obj), type_, reason, message)
