"""Reconcilers: issuer checks and CertificateRequest signing.

What is cached (and why memory stays bounded):

- issuers: the objects (few), and for each one that passed its check the
  :class:`CheckedIssuer` (key, CA chain) needed for signing;
- CertificateRequests: only the keys of *unfinished* requests addressed to us,
  with the issuer each names and its approval state, and for approved (or
  denied) ones the object as the watch last delivered it: that is the work in
  flight. Finished ones are forgotten as soon as they are seen finished;
- signed certificates whose status write has not succeeded yet, by request
  uid, so a failed write is retried with the same certificate rather than a
  new signature;
- the resourceVersion of each status write of ours until the watch delivers
  it, so that an event older than our own write is not taken for news.

A request's first attempt works from the watch's copy, saving a GET per
certificate; every later attempt (after a conflict, a transient error or a
failed write) reads it fresh. The Issued write carries the copy's
resourceVersion as a precondition, so a copy that lags behind ends in a 409
and a fresh read, never in a replaced certificate; and since an event older
than our own last write is ignored, a request we just finished is not signed
again because a stale event of it arrived late.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from akv_issuer.controller.api import (
    API_VERSION,
    CERT_MANAGER_GROUP,
    CERT_MANAGER_VERSION,
    CERTIFICATE_REQUEST_KIND,
    CLUSTER_ISSUER_KIND,
    CONDITION_READY,
    GROUP,
    ISSUER_KIND,
    ISSUER_KINDS,
    CertificateRequest,
    CertificateRequestCondition,
    CertificateRequestEvent,
    CertificateRequestReason,
    ClusterIssuer,
    ConditionStatus,
    Issuer,
    IssuerReason,
    PendingReason,
    build_issuer_status,
    make_condition,
    parse_go_duration,
)
from akv_issuer.controller.config import ControllerConfig
from akv_issuer.controller.decide import (
    APPROVED,
    DENIED,
    Condition,
    GiveUp,
    Ignore,
    IssuerView,
    MarkDenied,
    RequestView,
    SetPending,
    Sign,
    WaitForApproval,
    after_transient_error,
    decide,
    find_condition,
    format_time,
    is_finished,
    is_ours,
)
from akv_issuer.controller.issuers import (
    CheckedIssuer,
    CheckFailed,
    IssuerChecker,
    IssuerKey,
)
from akv_issuer.controller.metrics import Metrics
from akv_issuer.controller.signing import (
    IssuerFault,
    Outcome,
    Refused,
    RequestSigner,
    Signed,
    Transient,
)
from akv_issuer.keyvault import KeyVaultAccess
from akv_issuer.pki import (
    DEFAULT_DURATION,
    DEFAULT_USAGES,
    IssuanceRequest,
)
from akv_issuer.runtime.events import NORMAL, WARNING, EventRecorder, ObjectRef
from akv_issuer.runtime.informer import object_key
from akv_issuer.runtime.queue import Backoff, ShutDown, WorkQueue

log = logging.getLogger(__name__)

CR_API_VERSION = f"{CERT_MANAGER_GROUP}/{CERT_MANAGER_VERSION}"
EVENT_CA_EXPIRING = "CAExpiringSoon"
EVENT_CHECKED = "Checked"


@dataclass(frozen=True, slots=True)
class PendingEntry:
    issuer: IssuerKey
    approval: tuple[str, str]  # (Approved status, Denied status)
    obj: dict[str, Any] | None = None  # the watch's copy, once approved or denied


class _StatusConflict(Exception):
    pass


def issuer_key_for(view: RequestView) -> IssuerKey:
    ref = view.issuer_ref
    if ref.kind == CLUSTER_ISSUER_KIND:
        return IssuerKey(CLUSTER_ISSUER_KIND, "", ref.name)
    # issuerRef names only the Issuer: it is looked up in the request's own
    # namespace, so a namespaced Issuer can never serve another namespace.
    return IssuerKey(ISSUER_KIND, view.namespace, ref.name)


def _approval_state(view: RequestView) -> tuple[str, str]:
    approved = view.condition(APPROVED)
    denied = view.condition(DENIED)
    return (approved.status if approved else "", denied.status if denied else "")


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _resource_version(obj: dict[str, Any]) -> int:
    # resourceVersions are opaque to clients in general, but etcd-backed ones
    # (every one this controller sees) are increasing integers; one that is
    # not reads as 0, i.e. "not newer than anything we wrote".
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _newer(new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    if old is None:
        return True
    try:
        return int(new["metadata"]["resourceVersion"]) >= int(old["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return True


class Reconciler:
    def __init__(
        self,
        config: ControllerConfig,
        client: AsyncClient,
        keyvault: KeyVaultAccess,
        metrics: Metrics,
        events: EventRecorder,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.config = config
        self._client = client
        self._kv = keyvault
        self.metrics = metrics
        self.events = events
        self._now = now
        self.checker = IssuerChecker(client, keyvault, metrics, config.cluster_resource_namespace)
        self.signer = RequestSigner(keyvault, self.checker, metrics, config.concurrency)
        recheck = config.issuer_recheck_interval.total_seconds()
        self.issuer_queue: WorkQueue[IssuerKey] = WorkQueue(
            "issuers", Backoff(base=2.0, cap=min(300.0, recheck))
        )
        self.cr_queue: WorkQueue[str] = WorkQueue(
            "certificaterequests", Backoff(base=1.0, cap=300.0)
        )
        self.issuers: dict[IssuerKey, dict[str, Any]] = {}
        self.checked: dict[IssuerKey, CheckedIssuer] = {}
        self._checked_generation: dict[IssuerKey, tuple[str, int]] = {}
        self._expiring: set[IssuerKey] = set()
        self.pending: dict[str, PendingEntry] = {}
        self.signed: dict[str, Signed] = {}
        self._written_rv: dict[str, int] = {}
        # Called with an issuer's key whenever it changes (checked, failed,
        # deleted): other request kinds waiting for it requeue themselves.
        self.issuer_listeners: list[Callable[[IssuerKey], None]] = []
        self.extra_queues: list[WorkQueue[Any]] = []

    # ------------------------------------------------------------------
    # Informer handlers (synchronous: they only update caches and queues)

    def issuer_handler(self, kind: str) -> _IssuerHandler:
        return _IssuerHandler(self, kind)

    def cr_handler(self) -> _CRHandler:
        return _CRHandler(self)

    def _issuer_key(self, kind: str, obj: dict[str, Any]) -> IssuerKey:
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "") if kind == ISSUER_KIND else ""
        return IssuerKey(kind, namespace, str(meta.get("name") or ""))

    def issuer_upserted(self, kind: str, obj: dict[str, Any]) -> None:
        key = self._issuer_key(kind, obj)
        if not _newer(obj, self.issuers.get(key)):
            return
        self.issuers[key] = obj
        meta = obj.get("metadata") or {}
        identity = (str(meta.get("uid") or ""), int(meta.get("generation") or 0))
        if self._checked_generation.get(key) != identity:
            # A new spec (or a new object under an old name): check it now,
            # dropping any backoff left from the previous spec.
            self.checked.pop(key, None)
            self.issuer_queue.forget(key)
            self.issuer_queue.add(key)
        self._requeue_requests_of(key)

    def issuer_deleted(self, kind: str, obj: dict[str, Any]) -> None:
        key = self._issuer_key(kind, obj)
        self._forget_issuer(key)
        self._requeue_requests_of(key)

    def issuers_listed(self, kind: str, keys: set[str]) -> None:
        for key in [k for k in self.issuers if k.kind == kind]:
            name = f"{key.namespace}/{key.name}" if key.namespace else key.name
            if name not in keys:
                self._forget_issuer(key)
                self._requeue_requests_of(key)

    def _forget_issuer(self, key: IssuerKey) -> None:
        self.issuers.pop(key, None)
        self.checked.pop(key, None)
        self._checked_generation.pop(key, None)
        self._expiring.discard(key)
        self.issuer_queue.cancel(key)
        self.metrics.forget_issuer(*key.labels)

    def _requeue_requests_of(self, key: IssuerKey) -> None:
        for listener in self.issuer_listeners:
            listener(key)
        for cr_key, entry in self.pending.items():
            if (
                entry.issuer == key
                and entry.approval != ("", "")
                and self.cr_queue.failures(cr_key) == 0
            ):
                self.cr_queue.add(cr_key)

    def cr_upserted(self, obj: dict[str, Any]) -> None:
        view = RequestView.from_object(obj)
        key = object_key(obj)
        written = self._written_rv.get(key)
        if written is not None:
            if _resource_version(obj) < written:
                return  # older than our own last write: not news
            del self._written_rv[key]
        if not is_ours(view.issuer_ref, GROUP, ISSUER_KINDS) or is_finished(view):
            self._forget_request(key, view.uid)
            return
        approval = _approval_state(view)
        entry = PendingEntry(issuer_key_for(view), approval, obj if approval != ("", "") else None)
        previous = self.pending.get(key)
        self.pending[key] = entry
        if entry.approval == ("", ""):
            return  # neither approved nor denied: nothing to do until that changes
        if (
            previous is not None
            and previous.approval == entry.approval
            and self.cr_queue.failures(key) > 0
        ):
            # Backing off (e.g. Key Vault throttling): our own Pending write
            # must not cut the backoff short. The timer brings it back.
            return
        self.cr_queue.add(key)

    def cr_deleted(self, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        self._written_rv.pop(key, None)
        self._forget_request(key, str((obj.get("metadata") or {}).get("uid") or ""))

    def crs_listed(self, keys: set[str]) -> None:
        for key in [k for k in self.pending if k not in keys]:
            self._forget_request(key, None)
        for key in [k for k in self._written_rv if k not in keys]:
            del self._written_rv[key]

    def _forget_request(self, key: str, uid: str | None) -> None:
        self.pending.pop(key, None)
        self.cr_queue.cancel(key)
        if uid:
            self.signed.pop(uid, None)

    # ------------------------------------------------------------------
    # Workers

    async def run_worker(self, queue: WorkQueue[Any], handle: Callable[[Any], Any]) -> None:
        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            try:
                await handle(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("unexpected error reconciling %s %s", queue.name, key)
                queue.add_rate_limited(key)
            finally:
                queue.done(key)
                self.update_queue_metrics()

    def update_queue_metrics(self) -> None:
        queues: list[WorkQueue[Any]] = [self.issuer_queue, self.cr_queue, *self.extra_queues]
        for queue in queues:
            self.metrics.queue_depth.labels(queue.name).set(len(queue))
            self.metrics.queue_delayed.labels(queue.name).set(queue.delayed)

    # ------------------------------------------------------------------
    # Issuers

    async def reconcile_issuer(self, key: IssuerKey) -> None:
        obj = self.issuers.get(key)
        if obj is None:
            return
        meta = obj.get("metadata") or {}
        generation = int(meta.get("generation") or 0)
        now = self._now()
        old_ready = IssuerView.from_object(obj).ready
        try:
            checked = await self.checker.check(key, obj, now)
        except CheckFailed as failure:
            self.checked.pop(key, None)
            self._checked_generation[key] = (str(meta.get("uid") or ""), generation)
            await self._write_issuer_status(key, obj, failure=failure, now=now)
            await self._issuer_transition_event(
                obj, old_ready, "False", failure.reason, failure.message
            )
            self.metrics.issuer_ready.labels(*key.labels).set(0)
            if failure.retryable:
                delay = self.issuer_queue.add_rate_limited(key, at_least=failure.retry_after or 0.0)
            else:
                delay = self.config.issuer_recheck_interval.total_seconds()
                self.issuer_queue.add_after(key, delay)
            log.warning(
                "%s is not ready: %s: %s (next check in %.0fs)",
                key,
                failure.reason,
                failure.message,
                delay,
            )
            self._requeue_requests_of(key)
            return

        self.checked[key] = checked
        self._checked_generation[key] = (checked.uid, generation)
        self.issuer_queue.forget(key)
        await self._write_issuer_status(key, obj, checked=checked, now=now)
        message = self._ready_message(checked)
        await self._issuer_transition_event(obj, old_ready, "True", IssuerReason.CHECKED, message)
        self.metrics.issuer_ready.labels(*key.labels).set(1)
        self.metrics.ca_expiry.labels(*key.labels).set(checked.not_after.timestamp())
        await self._warn_ca_expiry(key, obj, checked, now)
        self.issuer_queue.add_after(key, self.config.issuer_recheck_interval.total_seconds())
        self._requeue_requests_of(key)

    def _ready_message(self, checked: CheckedIssuer) -> str:
        return (
            f"key {checked.spec.key_name} version {checked.key_version} signs with "
            f"{checked.algorithm}; CA {checked.ca_cert.subject.rfc4514_string()} valid until "
            f"{format_time(checked.not_after)}"
        )

    async def _warn_ca_expiry(
        self, key: IssuerKey, obj: dict[str, Any], checked: CheckedIssuer, now: dt.datetime
    ) -> None:
        left = checked.not_after - now
        expiring = left <= self.config.ca_expiry_warning
        self.metrics.ca_expiring.labels(*key.labels).set(1 if expiring else 0)
        if expiring and key not in self._expiring:
            self._expiring.add(key)
            await self.events.record(
                ObjectRef.of(obj),
                WARNING,
                EVENT_CA_EXPIRING,
                f"CA certificate expires at {format_time(checked.not_after)} "
                f"(in {left.days} days); issue a new CA and update the secret "
                f"{checked.spec.ca_secret_name}",
            )
        elif not expiring:
            self._expiring.discard(key)

    async def _issuer_transition_event(
        self,
        obj: dict[str, Any],
        old: Condition | None,
        status: str,
        reason: str,
        message: str,
    ) -> None:
        if (
            old is not None
            and old.status == status
            and old.reason == reason
            and old.message == message
        ):
            return
        type_ = NORMAL if status == "True" else WARNING
        await self.events.record(ObjectRef.of(obj), type_, str(reason), message)

    async def _write_issuer_status(
        self,
        key: IssuerKey,
        obj: dict[str, Any],
        *,
        now: dt.datetime,
        checked: CheckedIssuer | None = None,
        failure: CheckFailed | None = None,
    ) -> None:
        meta = obj.get("metadata") or {}
        generation = int(meta.get("generation") or 0)
        old_status = obj.get("status") or {}
        old_ready = find_condition(
            tuple(Condition.from_dict(c) for c in old_status.get("conditions") or ()),
            CONDITION_READY,
        )
        if checked is not None:
            status_value, reason, message = (
                ConditionStatus.TRUE,
                str(IssuerReason.CHECKED),
                self._ready_message(checked),
            )
        else:
            assert failure is not None
            status_value, reason, message = (
                ConditionStatus.FALSE,
                str(failure.reason),
                failure.message,
            )
        condition = make_condition(
            CONDITION_READY, status_value, reason, message, observed_generation=generation, now=now
        )
        if (
            old_ready is not None
            and old_ready.status == str(status_value)
            and old_ready.last_transition_time
        ):
            condition["lastTransitionTime"] = old_ready.last_transition_time
        if checked is not None:
            status = build_issuer_status(
                conditions=[condition],
                ca_certificate_pem=checked.ca_pem,
                key_id=checked.key_id or None,
                key_version=checked.key_version or None,
                signature_algorithm=str(checked.algorithm),
                ca_not_after=checked.not_after,
                last_check_time=now,
            )
        else:
            status = build_issuer_status(conditions=[condition], last_check_time=now)
            if failure is not None and failure.reason in (
                IssuerReason.THROTTLED,
                IssuerReason.KEY_VAULT_UNREACHABLE,
            ):
                # A passing outage says nothing new about the CA: keep what
                # consumers of status.caCertificate already rely on.
                for field_name in (
                    "caCertificate",
                    "keyID",
                    "keyVersion",
                    "signatureAlgorithm",
                    "caNotAfter",
                ):
                    if field_name in old_status:
                        status[field_name] = old_status[field_name]
        await self._apply_issuer_status(key, status)

    async def _apply_issuer_status(self, key: IssuerKey, status: dict[str, Any]) -> None:
        resource: Any = Issuer if key.kind == ISSUER_KIND else ClusterIssuer
        metadata: dict[str, Any] = {"name": key.name}
        if key.namespace:
            metadata["namespace"] = key.namespace
        body = {"apiVersion": API_VERSION, "kind": key.kind, "metadata": metadata, "status": status}
        try:
            result: Any = await self._client.patch(
                resource.Status,
                key.name,
                body,
                namespace=key.namespace or None,
                patch_type=PatchType.APPLY,
                field_manager=self.config.field_manager,
                force=True,
            )
        except ApiError as err:
            if err.status.code == 404:
                return
            raise
        # Keep the cache as fresh as our own write, so requests queued right
        # now see the new Ready condition without waiting for the watch.
        updated = dict(result)
        if key in self.issuers and _newer(updated, self.issuers[key]):
            self.issuers[key] = updated

    async def issuer_fault(self, key: IssuerKey, failure: CheckFailed) -> None:
        """A signing attempt showed the issuer cannot sign: flip it and re-check."""
        self.checked.pop(key, None)
        obj = self.issuers.get(key)
        self.metrics.issuer_ready.labels(*key.labels).set(0)
        if obj is not None:
            now = self._now()
            old_ready = IssuerView.from_object(obj).ready
            try:
                await self._write_issuer_status(key, obj, failure=failure, now=now)
            except Exception as exc:
                log.warning("could not mark %s not ready: %s", key, type(exc).__name__)
            await self._issuer_transition_event(
                obj, old_ready, "False", failure.reason, failure.message
            )
        log.warning(
            "%s flipped to not ready while signing: %s: %s", key, failure.reason, failure.message
        )
        self.issuer_queue.add_rate_limited(key, at_least=failure.retry_after or 0.0)

    # ------------------------------------------------------------------
    # CertificateRequests

    async def reconcile_request(self, key: str) -> None:
        entry = self.pending.get(key)
        obj: dict[str, Any]
        if (
            entry is not None
            and entry.obj is not None
            and self.cr_queue.failures(key) == 0
            and key not in self._written_rv
        ):
            obj = entry.obj  # first attempt: the watch's copy is as fresh as a GET
        else:
            namespace, _, name = key.partition("/")
            try:
                obj = dict(await self._client.get(CertificateRequest, name, namespace=namespace))
            except ApiError as err:
                if err.status.code == 404:
                    self._forget_request(key, None)
                    return
                raise
        view = RequestView.from_object(obj)
        if not is_ours(view.issuer_ref, GROUP, ISSUER_KINDS) or is_finished(view):
            self._forget_request(key, view.uid)
            return

        kept = self.signed.get(view.uid)
        if kept is not None:
            # Signed before, the write did not land: write the SAME certificate.
            await self._write_issued(key, obj, view, kept)
            return

        issuer_key = issuer_key_for(view)
        issuer_obj = self.issuers.get(issuer_key)
        issuer = IssuerView.from_object(issuer_obj) if issuer_obj is not None else None
        action = decide(view, issuer, group=GROUP, kinds=ISSUER_KINDS)
        labels = issuer_key.labels

        if isinstance(action, (Ignore, WaitForApproval)):
            return
        if isinstance(action, MarkDenied):
            await self._write_final(
                obj,
                view,
                CertificateRequestReason.DENIED,
                f"The CertificateRequest was denied: {action.message}",
            )
            self.metrics.failed.labels(*labels, "Denied").inc()
            self._forget_request(key, view.uid)
            return
        if isinstance(action, SetPending):
            await self._write_pending(
                obj, view, action.reason, action.message, action.event_reason, NORMAL
            )
            self.metrics.pending.labels(*labels, str(action.reason)).inc()
            return
        assert isinstance(action, Sign)

        checked = self.checked.get(issuer_key)
        if checked is None or checked.generation != (issuer.generation if issuer else -1):
            # The issuer's status says Ready but this process has not checked
            # it yet (e.g. just became leader): its check will requeue us.
            self.issuer_queue.add(issuer_key)
            self.cr_queue.add_after(key, 30.0)
            return

        await self._sign(key, obj, view, checked)

    async def _sign(
        self, key: str, obj: dict[str, Any], view: RequestView, checked: CheckedIssuer
    ) -> None:
        spec = obj.get("spec") or {}
        outcome: Outcome
        try:
            csr_pem = base64.b64decode(spec.get("request") or "", validate=True)
            duration_raw = spec.get("duration")
            usages = spec.get("usages")
            request = IssuanceRequest(
                duration=parse_go_duration(duration_raw) if duration_raw else DEFAULT_DURATION,
                usages=tuple(usages) if usages else DEFAULT_USAGES,
                is_ca=bool(spec.get("isCA")),
            )
        except ValueError as err:
            # Undecodable base64 in spec.request, or a duration Go would refuse.
            outcome = Refused("InvalidRequest", str(err))
        else:
            outcome = await self.signer.sign(csr_pem, request, checked, self._now())

        if isinstance(outcome, Refused):
            await self._write_final(
                obj, view, CertificateRequestReason.FAILED, outcome.message, invalid=True
            )
            self.metrics.failed.labels(*checked.key.labels, outcome.kind).inc()
            self._forget_request(key, view.uid)
        elif isinstance(outcome, Transient):
            await self._transient(key, obj, view, checked.key, outcome.message, outcome.retry_after)
        elif isinstance(outcome, IssuerFault):
            failure = outcome.failure
            await self.issuer_fault(checked.key, failure)
            await self._write_pending(
                obj,
                view,
                PendingReason.ISSUER_NOT_READY,
                f"{checked.key} is not ready ({failure.reason}: {failure.message})",
                CertificateRequestEvent.WAITING_FOR_ISSUER_READY,
                WARNING,
            )
        else:
            self.signed[view.uid] = outcome
            await self._write_issued(key, obj, view, outcome)

    async def _transient(
        self,
        key: str,
        obj: dict[str, Any],
        view: RequestView,
        issuer_key: IssuerKey,
        message: str,
        retry_after: float | None,
    ) -> None:
        failures = self.cr_queue.failures(key) + 1
        outcome = after_transient_error(
            view.created,
            self._now(),
            self.config.retry_budget,
            self.cr_queue.backoff.delay(failures),
            retry_after,
        )
        if isinstance(outcome, GiveUp):
            await self._write_final(
                obj,
                view,
                CertificateRequestReason.FAILED,
                f"{outcome.message}; last error: {message}",
            )
            self.metrics.failed.labels(*issuer_key.labels, "RetryBudgetExhausted").inc()
            self._forget_request(key, view.uid)
            return
        # The delay already honours Retry-After and the budget's deadline.
        self.cr_queue.note_failure(key)
        self.cr_queue.add_after(key, outcome.delay)
        await self._write_pending(
            obj,
            view,
            PendingReason.RETRYABLE_ERROR,
            f"{message} (retrying in {outcome.delay:.0f}s)",
            CertificateRequestEvent.RETRYABLE_ERROR,
            WARNING,
        )
        self.metrics.pending.labels(*issuer_key.labels, str(PendingReason.RETRYABLE_ERROR)).inc()

    # -- status writes ---------------------------------------------------

    def _ready_condition(
        self, view: RequestView, status: str, reason: str, message: str, now: dt.datetime
    ) -> dict[str, Any]:
        condition = make_condition(
            CertificateRequestCondition.READY,
            status,
            reason,
            message,
            observed_generation=None,
            now=now,
        )
        old = view.condition(CONDITION_READY)
        if old is not None and old.status == status and old.last_transition_time:
            condition["lastTransitionTime"] = old.last_transition_time
        return condition

    async def _apply_request_status(
        self, view: RequestView, status: dict[str, Any], resource_version: str | None = None
    ) -> None:
        metadata: dict[str, Any] = {"name": view.name, "namespace": view.namespace}
        if resource_version:
            # A precondition: if the request changed since we read it (maybe
            # another replica finished it), the write fails with 409 instead
            # of replacing a certificate that is already there.
            metadata["resourceVersion"] = resource_version
        body = {
            "apiVersion": CR_API_VERSION,
            "kind": CERTIFICATE_REQUEST_KIND,
            "metadata": metadata,
            "status": status,
        }
        try:
            written = await self._client.patch(
                CertificateRequest.Status,
                view.name,
                body,
                namespace=view.namespace,
                patch_type=PatchType.APPLY,
                field_manager=self.config.field_manager,
                force=True,
            )
        except ApiError as err:
            if err.status.code == 409:
                raise _StatusConflict from err
            raise
        self._written_rv[f"{view.namespace}/{view.name}"] = _resource_version(dict(written))

    async def _write_pending(
        self,
        obj: dict[str, Any],
        view: RequestView,
        reason: str,
        message: str,
        event_reason: str,
        event_type: str,
    ) -> None:
        full = f"{reason}: {message}"
        old = view.condition(CONDITION_READY)
        if (
            old is not None
            and old.status == "False"
            and old.reason == CertificateRequestReason.PENDING
            and old.message == full
        ):
            return
        now = self._now()
        condition = self._ready_condition(
            view, "False", CertificateRequestReason.PENDING, full, now
        )
        await self._apply_request_status(view, {"conditions": [condition]})
        await self.events.record(ObjectRef.of(obj), event_type, str(event_reason), message)

    async def _write_final(
        self,
        obj: dict[str, Any],
        view: RequestView,
        reason: CertificateRequestReason,
        message: str,
        *,
        invalid: bool = False,
    ) -> None:
        now = self._now()
        conditions = [self._ready_condition(view, "False", reason, message, now)]
        if invalid:
            conditions.append(
                make_condition(
                    CertificateRequestCondition.INVALID_REQUEST,
                    "True",
                    CertificateRequestReason.FAILED,
                    message,
                    observed_generation=None,
                    now=now,
                )
            )
        status = {"conditions": conditions, "failureTime": format_time(now)}
        await self._apply_request_status(view, status)
        if reason != CertificateRequestReason.DENIED:
            await self.events.record(
                ObjectRef.of(obj), WARNING, CertificateRequestEvent.PERMANENT_ERROR, message
            )
        log.info("%s/%s ended %s: %s", view.namespace, view.name, reason, message)

    async def _write_issued(
        self, key: str, obj: dict[str, Any], view: RequestView, result: Signed
    ) -> None:
        now = self._now()
        status = {
            "conditions": [
                self._ready_condition(
                    view, "True", CertificateRequestReason.ISSUED, "Certificate issued", now
                )
            ],
            "certificate": _b64(result.certificate_pem),
            "ca": _b64(result.ca_pem),
        }
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "") or None
        try:
            await self._apply_request_status(view, status, resource_version=rv)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.status_write_retries.inc()
            delay = self.cr_queue.add_rate_limited(key)
            log.warning(
                "%s: writing the issued certificate failed (%s); retrying the same "
                "certificate in %.1fs",
                key,
                "conflict" if isinstance(exc, _StatusConflict) else type(exc).__name__,
                delay,
            )
            return
        self.signed.pop(view.uid, None)
        self.metrics.issued.labels(*result.issuer.labels).inc()
        self._forget_request(key, view.uid)
        log.info("%s issued by %s", key, result.issuer)
        await self.events.record(
            ObjectRef.of(obj), NORMAL, CertificateRequestEvent.ISSUED, "Certificate issued"
        )


class _IssuerHandler:
    def __init__(self, reconciler: Reconciler, kind: str) -> None:
        self._r = reconciler
        self._kind = kind

    def on_upsert(self, obj: dict[str, Any]) -> None:
        self._r.issuer_upserted(self._kind, obj)

    def on_delete(self, obj: dict[str, Any]) -> None:
        self._r.issuer_deleted(self._kind, obj)

    def on_listed(self, keys: set[str]) -> None:
        self._r.issuers_listed(self._kind, keys)


class _CRHandler:
    def __init__(self, reconciler: Reconciler) -> None:
        self._r = reconciler

    def on_upsert(self, obj: dict[str, Any]) -> None:
        self._r.cr_upserted(obj)

    def on_delete(self, obj: dict[str, Any]) -> None:
        self._r.cr_deleted(obj)

    def on_listed(self, keys: set[str]) -> None:
        self._r.crs_listed(keys)
