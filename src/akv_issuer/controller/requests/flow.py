"""The life of a request, written once for every request kind.

ignore -> wait for approval -> denied | pending (issuer missing or not
ready) -> sign -> issued | failed (can never succeed) | pending and retried
(transient Key Vault error, within the retry budget) | issuer fault (the
issuer is flipped to not Ready and re-checked; the request waits for it).
The decisions are the pure functions of :mod:`.decide`; the request kind
(:mod:`.kind`) reads a request's fields and writes its result.

What is kept in memory (and why it stays bounded):

- for each approved or denied, unfinished request addressed to us: the issuer
  it names, its approval state, the object as the watch last delivered it
  and the last event sent for it (one event per distinct message, not per
  retry). Finished ones are forgotten as soon as they are seen finished;
- signed certificates whose status write has not landed yet, by request uid,
  so a failed write is retried with the *same* certificate, never a second
  signature;
- the resourceVersion of each status write of ours until the watch delivers
  it, so an event older than our own write is not taken for news.

Every final outcome the flow writes leaves one audit record (:mod:`..observability.audit`):
``issued`` after the Issued write, ``refused`` after a Failed or Denied write;
the Issued event names the certificate's serial.

A request's first attempt works from the watch's copy, saving a GET per
certificate; every later attempt (after a conflict, a transient error or a
failed write) reads it fresh. The Issued write carries the copy's
resourceVersion as a precondition, so a copy that lags behind ends in a 409
and a fresh read, never in a replaced certificate.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from lightkube import ApiError, AsyncClient

from akv_issuer.controller.api import CertificateRequestEvent, PendingReason
from akv_issuer.controller.core import CheckedIssuer, IssuerKey, IssuerSide
from akv_issuer.controller.core.config import ControllerConfig
from akv_issuer.controller.observability import audit
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.controller.requests.decide import (
    GiveUp,
    MarkDenied,
    RequestView,
    SetPending,
    Sign,
    after_transient_error,
    decide,
)
from akv_issuer.controller.requests.kind import (
    Denied,
    Failed,
    Issued,
    Pending,
    RequestConflict,
    RequestKind,
    StatusUpdate,
)
from akv_issuer.controller.requests.signing import (
    Outcome,
    RequestRefused,
    RequestSigner,
    Signed,
    Transient,
)
from akv_issuer.runtime.controller import DONE, Controller, QueueGauges, Result
from akv_issuer.runtime.decoding import whole
from akv_issuer.runtime.events import NORMAL, WARNING, EventRecorder, ObjectRef
from akv_issuer.runtime.informer import object_key
from akv_issuer.runtime.queue import Backoff

log = logging.getLogger(__name__)

# An issuer whose status says Ready but that this process has not checked yet
# (say, it just became leader) is checked at once; its check requeues the
# requests waiting for it, and this is the fallback should that not happen.
UNCHECKED_ISSUER_RETRY = 30.0


@dataclass(frozen=True, slots=True)
class _Entry:
    issuer: IssuerKey
    approval: tuple[bool, bool]  # (approved, denied)
    obj: dict[str, Any]  # the watch's copy
    last_event: tuple[str, str] | None = None  # (reason, message) last recorded


class RequestFlow:
    def __init__(
        self,
        kind: RequestKind,
        *,
        client: AsyncClient,
        issuers: IssuerSide,
        signer: RequestSigner,
        metrics: Metrics,
        events: EventRecorder,
        config: ControllerConfig,
        workers: int,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.kind = kind
        self._client = client
        self._issuers = issuers
        self._signer = signer
        self._metrics = metrics
        self._events = events
        self._budget = config.retry_budget
        self._now = now
        # Transient errors: 1 s doubling to 5 min, jittered, never sooner than
        # Retry-After, never past the retry budget's deadline.
        self.backoff = Backoff(base=1.0, cap=300.0)
        self.controller: Controller[str] = Controller(
            kind.name,
            self.reconcile,
            workers=workers,
            backoff=self.backoff,
            gauges=QueueGauges(metrics.queue_depth, metrics.queue_delayed),
            unexpected=metrics.unexpected,
        )
        self._entries: dict[str, _Entry] = {}
        self._signed: dict[str, Signed] = {}
        self._written_rv: dict[str, int] = {}

    # -- informer handler -------------------------------------------------------

    def on_upsert(self, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        view = self.kind.view(obj)
        written = self._written_rv.get(key)
        if written is not None:
            if view.resource_version < written:
                return  # older than our own last write: not news
            del self._written_rv[key]
        if view.issuer is None or view.finished:
            self._forget(key, view.uid)
            return
        approval = (view.approved, view.denied is not None)
        if approval == (False, False):
            return  # nothing to do until it is approved or denied
        previous = self._entries.get(key)
        # The informer decodes only the kind's shape; what is kept is whole.
        self._entries[key] = _Entry(
            view.issuer, approval, whole(obj), previous.last_event if previous else None
        )
        if previous is not None and previous.approval == approval:
            # Most likely our own write: it must not cut a backoff short.
            self.controller.enqueue_unless_backing_off(key)
        else:
            self.controller.enqueue(key)

    def on_delete(self, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        self._written_rv.pop(key, None)
        self._forget(key, str((obj.get("metadata") or {}).get("uid") or ""))

    def on_listed(self, keys: set[str]) -> None:
        for key in [k for k in self._entries if k not in keys]:
            self._forget(key, None)
        for key in [k for k in self._written_rv if k not in keys]:
            del self._written_rv[key]

    def issuer_changed(self, issuer: IssuerKey) -> None:
        """Requests waiting for ``issuer`` look again (unless backing off)."""
        for key, entry in self._entries.items():
            if entry.issuer == issuer:
                self.controller.enqueue_unless_backing_off(key)

    def _forget(self, key: str, uid: str | None) -> None:
        entry = self._entries.pop(key, None)
        self.controller.cancel(key)
        if not uid and entry is not None:
            uid = str((entry.obj.get("metadata") or {}).get("uid") or "")
        if uid:
            self._signed.pop(uid, None)
            self._signer.forget(uid)

    # -- reconcile ---------------------------------------------------------------

    async def reconcile(self, key: str, failures: int) -> Result:
        entry = self._entries.get(key)
        if entry is not None and failures == 0 and key not in self._written_rv:
            obj = entry.obj  # first attempt: the watch's copy is as fresh as a GET
        else:
            read = await self._read(key)
            if read is None:
                self._forget(key, None)
                return DONE
            obj = read
        view = self.kind.view(obj)
        if view.issuer is None or view.finished:
            self._forget(key, view.uid)
            return DONE

        kept = self._signed.get(view.uid)
        if kept is not None:
            # Signed before, the write did not land: write the SAME certificate.
            return await self._write_issued(key, obj, view, kept, failures)

        issuer, checked = self._issuers.lookup(view.issuer)
        action = decide(view, issuer)
        labels = view.issuer.labels
        if isinstance(action, MarkDenied):
            return await self._finish(key, obj, view, Denied(action.message), failures)
        if isinstance(action, SetPending):
            await self._pending(key, obj, action.reason, action.message, action.event_reason)
            self._metrics.pending.labels(*labels, str(action.reason)).inc()
            return DONE
        if not isinstance(action, Sign):
            return DONE  # Ignore (handled above) or WaitForApproval
        if checked is None:
            self._issuers.request_check(view.issuer)
            return Result.requeue(UNCHECKED_ISSUER_RETRY)
        return await self._sign(key, obj, view, checked, failures)

    async def _read(self, key: str) -> dict[str, Any] | None:
        namespace, _, name = key.rpartition("/")
        try:
            found = await self._client.get(self.kind.resource, name, namespace=namespace or None)
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise
        return dict(found)

    async def _sign(
        self,
        key: str,
        obj: dict[str, Any],
        view: RequestView,
        checked: CheckedIssuer,
        failures: int,
    ) -> Result:
        outcome: Outcome
        try:
            encoded, request = self.kind.parameters(obj)
            csr_pem = base64.b64decode(encoded, validate=True)
        except ValueError as err:
            # Undecodable base64 (binascii.Error is a ValueError), a duration
            # Go would refuse, a bad annotation.
            outcome = RequestRefused("InvalidRequest", str(err))
        else:
            outcome = await self._signer.sign(
                csr_pem, request, checked, self._now(), request_key=view.uid, created=view.created
            )

        labels = checked.key.labels
        if isinstance(outcome, Signed):
            self._signed[view.uid] = outcome
            return await self._write_issued(key, obj, view, outcome, failures)
        if isinstance(outcome, RequestRefused):
            failed = Failed(outcome.kind, outcome.message, invalid=True)
            return await self._finish(key, obj, view, failed, failures)
        if isinstance(outcome, Transient):
            return await self._transient(key, obj, view, checked.key, outcome, failures)
        failure = outcome.failure
        await self._issuers.report_fault(checked.key, failure, recheck_now=outcome.recheck_now)
        # The issuer's re-check requeues the requests waiting for it.
        await self._pending(
            key,
            obj,
            PendingReason.ISSUER_NOT_READY,
            f"{checked.key} is not ready ({failure.reason}: {failure.message})",
            CertificateRequestEvent.WAITING_FOR_ISSUER_READY,
            warning=True,
        )
        self._metrics.pending.labels(*labels, str(PendingReason.ISSUER_NOT_READY)).inc()
        return DONE

    async def _transient(
        self,
        key: str,
        obj: dict[str, Any],
        view: RequestView,
        issuer: IssuerKey,
        outcome: Transient,
        failures: int,
    ) -> Result:
        decision = after_transient_error(
            view.created,
            self._now(),
            self._budget,
            self.backoff.delay(failures + 1),
            outcome.retry_after,
        )
        if isinstance(decision, GiveUp):
            message = f"{decision.message}; last error: {outcome.message}"
            failed = Failed("RetryBudgetExhausted", message, invalid=False)
            return await self._finish(key, obj, view, failed, failures)
        log.warning(
            "%s %s: %s (retrying in %.0fs)", self.kind.name, key, outcome.message, decision.delay
        )
        await self._pending(
            key,
            obj,
            PendingReason.RETRYABLE_ERROR,
            outcome.message,
            CertificateRequestEvent.RETRYABLE_ERROR,
            warning=True,
            detail=f" (retrying in {decision.delay:.0f}s)",
        )
        self._metrics.pending.labels(*issuer.labels, str(PendingReason.RETRYABLE_ERROR)).inc()
        # The delay already honours Retry-After and the budget's deadline.
        return Result.retry(decision.delay)

    # -- writes ----------------------------------------------------------------------

    async def _write(self, key: str, obj: dict[str, Any], update: StatusUpdate) -> None:
        written = await self.kind.write(obj, update, self._now())
        if written is not None:
            meta = written.get("metadata") or {}
            try:
                self._written_rv[key] = int(meta.get("resourceVersion") or 0)
            except (TypeError, ValueError):
                self._written_rv.pop(key, None)

    async def _pending(
        self,
        key: str,
        obj: dict[str, Any],
        reason: str,
        message: str,
        event_reason: str,
        *,
        warning: bool = False,
        detail: str = "",
    ) -> None:
        """Say why the request waits: in its status where the kind has a field
        for it, and in one event per distinct message (not one per retry)."""
        update = Pending(reason, f"{reason}: {message}{detail}")
        if self.kind.shows(obj, update):
            return
        await self._write(key, obj, update)
        entry = self._entries.get(key)
        if entry is not None:
            if entry.last_event == (event_reason, message):
                return
            self._entries[key] = replace(entry, last_event=(event_reason, message))
        await self._events.record(
            ObjectRef.of(obj), WARNING if warning else NORMAL, str(event_reason), message
        )

    async def _finish(
        self,
        key: str,
        obj: dict[str, Any],
        view: RequestView,
        update: Denied | Failed,
        failures: int,
    ) -> Result:
        """A final status: written, evented, forgotten. If the request changed
        meanwhile (409), it is read again and decided anew."""
        try:
            await self._write(key, obj, update)
        except RequestConflict:
            delay = self.backoff.delay(failures + 1)
            log.info("%s %s changed while being written; deciding again", self.kind.name, key)
            return Result.retry(delay)
        self._forget(key, view.uid)
        reason = update.reason if isinstance(update, Failed) else "Denied"
        if view.issuer is not None:
            self._metrics.failed.labels(*view.issuer.labels, reason).inc()
        if isinstance(update, Failed):
            await self._events.record(
                ObjectRef.of(obj), WARNING, CertificateRequestEvent.PERMANENT_ERROR, update.message
            )
        log.info("%s %s ended %s: %s", self.kind.name, key, type(update).__name__, update.message)
        self._audit_refusal(obj, view, reason, update.message)
        return DONE

    def _audit_refusal(
        self, obj: dict[str, Any], view: RequestView, reason: str, message: str
    ) -> None:
        try:
            csr_pem: bytes | None = base64.b64decode(self.kind.csr(obj), validate=True)
        except ValueError:
            csr_pem = None
        checked = self._issuers.lookup(view.issuer)[1] if view.issuer is not None else None
        audit.emit(
            audit.refused(
                request=audit.RequestRef.of(self.kind.object_kind, obj),
                requester=self.kind.requester(obj),
                issuer=view.issuer,
                reason=reason,
                message=message,
                csr_pem=csr_pem,
                ca=checked.audit_ca if checked is not None else None,
                at=self._now(),
            )
        )

    async def _write_issued(
        self, key: str, obj: dict[str, Any], view: RequestView, result: Signed, failures: int
    ) -> Result:
        try:
            await self._write(key, obj, Issued(result.certificate_pem, result.ca_pem))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # If the request changed since it was read (409) or the API server
            # failed, the same certificate (kept by uid) is written next time.
            self._metrics.status_write_retries.inc()
            delay = self.controller.backoff.delay(failures + 1)
            log.warning(
                "%s %s: writing the issued certificate failed (%s); retrying the same "
                "certificate in %.1fs",
                self.kind.name,
                key,
                "conflict" if isinstance(exc, RequestConflict) else type(exc).__name__,
                delay,
            )
            return Result.retry(delay)
        self._signed.pop(view.uid, None)
        self._metrics.issued.labels(*result.issuer.labels).inc()
        self._forget(key, view.uid)
        serial = f"{result.leaf.serial_number:x}"
        log.info("%s %s issued by %s (serial %s)", self.kind.name, key, result.issuer, serial)
        audit.emit(
            audit.issued(
                request=audit.RequestRef.of(self.kind.object_kind, obj),
                requester=self.kind.requester(obj),
                issuer=result.issuer,
                certificate=result.leaf,
                ca=result.ca_key,
                at=self._now(),
            )
        )
        await self._events.record(
            ObjectRef.of(obj),
            NORMAL,
            CertificateRequestEvent.ISSUED,
            f"Certificate issued (serial {serial})",
        )
        return DONE
