"""The life of a request, written once for every request kind.

ignore -> wait for approval -> denied | pending (issuer missing or not
ready) -> sign -> issued | failed (can never succeed) | pending and retried
(transient Key Vault error, within the retry budget) | issuer fault (the
issuer is flipped to not Ready and re-checked; the request waits for it).
The decisions are the pure functions of :mod:`.decide`; the request kind
(:mod:`.kind`) reads a request's fields and writes its result. What the flow
keeps between events (and why it stays bounded) is :mod:`.memory`; how it
reports each outcome (status, event, metric, audit record) is :mod:`.outcomes`.

A request's first attempt works from the watch's copy, saving a GET per
certificate; every later attempt (after a conflict, a transient error or a
failed write) reads it fresh. The Issued write carries the copy's
resourceVersion as a precondition, so a copy that lags behind ends in a 409
and a fresh read, never in a replaced certificate.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, Generic, cast

from lightkube import ApiError

from akv_issuer.controller.api import CertificateRequestEvent, PendingReason
from akv_issuer.controller.core import CheckedIssuer, IssuerKey, IssuerSide
from akv_issuer.controller.core.config import ControllerConfig
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.controller.requests.decide import (
    GiveUp,
    MarkDenied,
    Refuse,
    RequestView,
    SetPending,
    Sign,
    after_transient_error,
    decide,
)
from akv_issuer.controller.requests.kind import Denied, Failed, RequestKind
from akv_issuer.controller.requests.memory import RequestMemory, RequestT
from akv_issuer.controller.requests.outcomes import Outcomes
from akv_issuer.controller.requests.signing import (
    Outcome,
    RequestRefused,
    RequestSigner,
    Signed,
    Transient,
)
from akv_issuer.runtime.controller import DONE, Controller, QueueGauges, Result
from akv_issuer.runtime.decoding import whole
from akv_issuer.runtime.events import EventRecorder
from akv_issuer.runtime.informer import object_key
from akv_issuer.runtime.kubeapi import KubeApi
from akv_issuer.runtime.queue import Backoff

__all__ = ["UNCHECKED_ISSUER_RETRY", "RequestFlow", "RequestT"]

log = logging.getLogger(__name__)

# An issuer whose status says Ready but that this process has not checked yet
# (say, it just became leader) is checked at once; its check requeues the
# requests waiting for it, and this is the fallback should that not happen.
UNCHECKED_ISSUER_RETRY = 30.0


class RequestFlow(Generic[RequestT]):
    def __init__(
        self,
        kind: RequestKind[RequestT],
        *,
        api: KubeApi,
        issuers: IssuerSide,
        signer: RequestSigner,
        metrics: Metrics,
        events: EventRecorder,
        config: ControllerConfig,
        workers: int,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.kind = kind
        self._api = api
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
        self._memory: RequestMemory[RequestT] = RequestMemory()
        self._outcomes = Outcomes(
            kind,
            self._memory,
            issuers=issuers,
            metrics=metrics,
            events=events,
            backoff=self.backoff,
            now=now,
            forget=self._forget,
        )

    def _typed(self, obj: dict[str, Any]) -> RequestT:
        """A request as the API server sent it, as its kind's object type (the
        API server's schema validation guarantees the fields' types)."""
        return cast(RequestT, obj)

    # -- informer handler -------------------------------------------------------

    def on_upsert(self, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        view = self.kind.view(self._typed(obj))
        if self._memory.older_than_our_write(key, view.resource_version):
            return  # not news
        if view.issuer is None or view.finished:
            self._forget(key, view.uid)
            return
        approval = (view.approved, view.denied is not None)
        if approval == (False, False):
            return  # nothing to do until it is approved or denied
        # The informer decodes only the kind's shape; what is kept is whole.
        previous = self._memory.remember(key, view.issuer, approval, self._typed(whole(obj)))
        if previous is not None and previous.approval == approval:
            # Most likely our own write: it must not cut a backoff short.
            self.controller.enqueue_unless_backing_off(key)
        else:
            self.controller.enqueue(key)

    def on_delete(self, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        self._memory.deleted(key)
        self._forget(key, str((obj.get("metadata") or {}).get("uid") or ""))

    def on_listed(self, keys: set[str]) -> None:
        for key in self._memory.missing(keys):
            self._forget(key, None)

    def issuer_changed(self, issuer: IssuerKey) -> None:
        """Requests waiting for ``issuer`` look again (unless backing off)."""
        for key in self._memory.waiting_for(issuer):
            self.controller.enqueue_unless_backing_off(key)

    def _forget(self, key: str, uid: str | None) -> None:
        self.controller.cancel(key)
        uid = self._memory.forget(key, uid)
        if uid:
            self._signer.forget(uid)

    # -- reconcile ---------------------------------------------------------------

    async def reconcile(self, key: str, failures: int) -> Result:
        entry = self._memory.entries.get(key)
        if entry is not None and failures == 0 and not self._memory.awaits_our_write(key):
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

        kept = self._memory.signed.get(view.uid)
        if kept is not None:
            # Signed before, the write did not land: write the SAME certificate.
            return await self._outcomes.issued(key, obj, view, kept, failures)

        issuer, checked = self._issuers.lookup(view.issuer)
        action = decide(view, issuer)
        labels = view.issuer.labels
        if isinstance(action, MarkDenied):
            return await self._outcomes.finish(key, obj, view, Denied(action.message), failures)
        if isinstance(action, Refuse):
            return await self._outcomes.finish(key, obj, view, _refusal(action), failures)
        if isinstance(action, SetPending):
            waited = self._waited_too_long(view)
            if waited is not None and waited <= dt.timedelta(0):
                # A kind that cannot say Pending waits for its issuer only so long.
                failed = Failed(
                    str(action.reason),
                    f"{action.message}; waited {self.kind.wait_limit} since the request "
                    "was created",
                    invalid=False,
                )
                return await self._outcomes.finish(key, obj, view, failed, failures)
            await self._outcomes.pending(
                key, obj, action.reason, action.message, action.event_reason
            )
            self._metrics.pending.labels(*labels, str(action.reason)).inc()
            if waited is not None:
                return Result.requeue(waited.total_seconds())
            return DONE
        if not isinstance(action, Sign):
            return DONE  # Ignore (handled above) or WaitForApproval
        if checked is None:
            self._issuers.request_check(view.issuer)
            return Result.requeue(UNCHECKED_ISSUER_RETRY)
        return await self._sign(key, obj, view, checked, failures)

    def _waited_too_long(self, view: RequestView) -> dt.timedelta | None:
        """For a kind with a wait limit: how long the request may still wait
        for its issuer (<= 0: no longer); None: as long as it takes."""
        limit = self.kind.wait_limit
        if limit is None:
            return None
        if view.created is None:
            return limit
        return view.created + limit - self._now()

    async def _read(self, key: str) -> RequestT | None:
        namespace, _, name = key.rpartition("/")
        try:
            return self._typed(
                await self._api.get(self.kind.resource, name, namespace=namespace or None)
            )
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise

    async def _sign(
        self,
        key: str,
        obj: RequestT,
        view: RequestView,
        checked: CheckedIssuer,
        failures: int,
    ) -> Result:
        # A kind that nothing approves: the issuer's policy is the approval,
        # checked against the issuer as it is now, right before signing.
        refused = await self.kind.admit(obj, checked)
        if refused is not None:
            return await self._outcomes.finish(key, obj, view, refused, failures)
        outcome: Outcome
        try:
            encoded, request = self.kind.parameters(obj, checked)
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
            self._memory.signed[view.uid] = outcome
            return await self._outcomes.issued(key, obj, view, outcome, failures)
        if isinstance(outcome, RequestRefused):
            failed = Failed(outcome.kind, outcome.message, invalid=True)
            return await self._outcomes.finish(key, obj, view, failed, failures)
        if isinstance(outcome, Transient) and outcome.deferred:
            # Waiting for the vault's throttling budget is not a failure: back at the
            # time the budget gave, without a status write or an event.
            log.debug("%s", outcome.message)
            return Result.requeue(outcome.retry_after or 1.0)
        if isinstance(outcome, Transient):
            return await self._transient(key, obj, view, checked.key, outcome, failures)
        failure = outcome.failure
        await self._issuers.report_fault(checked.key, failure, recheck_now=outcome.recheck_now)
        # The issuer's re-check requeues the requests waiting for it.
        await self._outcomes.pending(
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
        obj: RequestT,
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
            return await self._outcomes.finish(key, obj, view, failed, failures)
        log.warning("%s (retrying in %.0fs)", outcome.message, decision.delay)
        await self._outcomes.pending(
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


def _refusal(action: Refuse) -> Denied | Failed:
    if action.denied:
        return Denied(action.message, action.reason)
    return Failed(action.reason, action.message, invalid=True)
