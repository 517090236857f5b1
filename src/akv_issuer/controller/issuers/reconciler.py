"""Issuers and ClusterIssuers: watched, checked, their status written.

This module keeps the issuer objects the watch delivers and, for each one
that passed its check (:mod:`akv_issuer.controller.issuers.check`), the
:class:`CheckedIssuer` that signing needs. The request side reaches it only
through the narrow interface of :class:`IssuerReconciler` (``lookup``,
``request_check``, ``report_fault``), so it never sees the
cache, the queue or how a check is done. Every other feature uses it through
``core.IssuerSide`` and plugs in through its hooks (``subscribe``, ``follow``,
``renew_ca_with``; see :mod:`akv_issuer.controller.core.hooks`).

A check runs when an issuer's spec changes (a new generation), after a
failure with backoff, and every ``--issuer-recheck-interval``; a signing
attempt that reveals an issuer-level fault flips the issuer to not Ready at
once and brings the check forward.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from akv_issuer.controller.api import (
    API_VERSION,
    ISSUER_KIND,
    ClusterIssuer,
    Issuer,
    IssuerReason,
)
from akv_issuer.controller.api.objects import HasMetadata, IssuerObject, typed
from akv_issuer.controller.core import (
    CARenewal,
    CheckedIssuer,
    CheckFailed,
    CheckFollower,
    ControllerConfig,
    FeatureCondition,
    IssuerHooks,
    IssuerKey,
    IssuerListener,
    IssuerView,
)
from akv_issuer.controller.issuers.check import IssuerChecker
from akv_issuer.controller.issuers.events import IssuerEvents
from akv_issuer.controller.issuers.status import issuer_status, ready_message
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.runtime.controller import Controller, QueueGauges, Result
from akv_issuer.runtime.errors import api_error_text, expected
from akv_issuer.runtime.events import EventRecorder
from akv_issuer.runtime.queue import Backoff

log = logging.getLogger(__name__)


def resource_version_newer(new: HasMetadata, old: HasMetadata | None) -> bool:
    """Whether ``new`` is at least as recent as ``old`` (etcd resourceVersions are
    increasing integers; anything unreadable counts as newer, so it is kept)."""
    if old is None:
        return True
    try:
        return int(new["metadata"]["resourceVersion"]) >= int(old["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return True


class IssuerReconciler:
    def __init__(
        self,
        config: ControllerConfig,
        client: AsyncClient,
        checker: IssuerChecker,
        metrics: Metrics,
        events: EventRecorder,
        hooks: IssuerHooks,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.config = config
        self._client = client
        self._checker = checker
        self._metrics = metrics
        self._events = events
        self._now = now
        recheck = config.issuer_recheck_interval.total_seconds()
        self.backoff = Backoff(base=2.0, cap=min(300.0, recheck))
        self.controller: Controller[IssuerKey] = Controller(
            "issuers",
            self.reconcile,
            workers=config.issuer_concurrency,
            backoff=self.backoff,
            gauges=QueueGauges(metrics.queue_depth, metrics.queue_delayed),
            unexpected=metrics.unexpected,
        )
        self._objects: dict[IssuerKey, IssuerObject] = {}
        self._checked: dict[IssuerKey, CheckedIssuer] = {}
        self._checked_generation: dict[IssuerKey, tuple[str, int]] = {}
        self._issuer_events = IssuerEvents(config, metrics, events)
        # What other features registered: listeners, followers, the CA renewal.
        self._hooks = hooks

    # -- the interface of the request side ------------------------------------

    def lookup(self, key: IssuerKey) -> tuple[IssuerView | None, CheckedIssuer | None]:
        """The issuer as last observed (None: it does not exist) and, when this
        process has checked its current generation successfully, what signing needs."""
        obj = self._objects.get(key)
        if obj is None:
            return None, None
        view = IssuerView.from_object(obj)
        checked = self._checked.get(key)
        if checked is not None and checked.generation != view.generation:
            checked = None
        return view, checked

    def issuer_object(self, key: IssuerKey) -> IssuerObject | None:
        """The issuer object as last observed (for events about it)."""
        return self._objects.get(key)

    def request_check(self, key: IssuerKey) -> None:
        """Check ``key`` soon (its status says Ready, but this process has not checked it)."""
        self.controller.enqueue(key)

    def subscribe(self, listener: IssuerListener) -> None:
        """Call ``listener(key)`` whenever an issuer changes: checked, failed, deleted."""
        self._hooks.subscribe(listener)

    def follow(self, follower: CheckFollower) -> None:
        """Have ``follower`` work on every successful check (see ``core.hooks``)."""
        self._hooks.follow(follower)

    def renew_ca_with(self, renewal: CARenewal) -> None:
        """Renew CA certificates in their renewal window during the check."""
        self._hooks.renew_ca_with(renewal)

    async def report_fault(
        self, key: IssuerKey, failure: CheckFailed, *, recheck_now: bool
    ) -> None:
        """A signing attempt showed the issuer cannot sign: flip it and re-check.

        ``recheck_now``: the fault is one the check itself will confirm (the CA
        stopped being valid), so check at once instead of after the backoff.
        """
        self._checked.pop(key, None)
        obj = self._objects.get(key)
        self._metrics.issuer_ready.labels(*key.labels).set(0)
        if obj is not None:
            now = self._now()
            old_ready = IssuerView.from_object(obj).ready
            try:
                await self._write_status(key, obj, failure=failure, now=now)
            except Exception as exc:
                if expected(exc):
                    log.warning(
                        "could not mark %s not ready: %s: %s",
                        key,
                        type(exc).__name__,
                        api_error_text(exc),
                    )
                else:
                    self._metrics.unexpected.report(
                        log, self.controller.name, key, exc, "could not mark %s not ready", key
                    )
            await self._issuer_events.transition(
                obj, old_ready, "False", failure.reason, failure.message
            )
        log.warning(
            "%s flipped to not ready while signing: %s: %s", key, failure.reason, failure.message
        )
        if recheck_now:
            self.controller.enqueue(key)
        else:
            self.controller.retry(key, at_least=failure.retry_after or 0.0)

    # -- informer handler (one per kind) ----------------------------------------

    def handler(self, kind: str) -> _Handler:
        return _Handler(self, kind)

    def _key(self, kind: str, obj: HasMetadata) -> IssuerKey:
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "") if kind == ISSUER_KIND else ""
        return IssuerKey(kind, namespace, str(meta.get("name") or ""))

    def upserted(self, kind: str, raw: dict[str, Any]) -> None:
        obj = typed(raw, IssuerObject)
        key = self._key(kind, obj)
        if not resource_version_newer(obj, self._objects.get(key)):
            return
        self._objects[key] = obj
        meta = obj.get("metadata") or {}
        identity = (str(meta.get("uid") or ""), int(meta.get("generation") or 0))
        if self._checked_generation.get(key) != identity:
            # A new spec (or a new object under an old name): check it now,
            # dropping any backoff left from the previous spec.
            self._checked.pop(key, None)
            self.controller.enqueue(key, reset=True)
        self._notify(key)

    def deleted(self, kind: str, raw: dict[str, Any]) -> None:
        key = self._key(kind, typed(raw, HasMetadata))
        self._forget(key)
        self._notify(key)

    def listed(self, kind: str, keys: set[str]) -> None:
        for key in [k for k in self._objects if k.kind == kind]:
            name = f"{key.namespace}/{key.name}" if key.namespace else key.name
            if name not in keys:
                self._forget(key)
                self._notify(key)

    def _forget(self, key: IssuerKey) -> None:
        self._objects.pop(key, None)
        self._checked.pop(key, None)
        self._checked_generation.pop(key, None)
        self._issuer_events.forget(key)
        self._checker.forget(key)
        self._hooks.forget(key)
        self.controller.cancel(key)
        self._metrics.forget_issuer(*key.labels)

    def _notify(self, key: IssuerKey) -> None:
        self._hooks.notify(key)

    # -- reconcile --------------------------------------------------------------

    async def reconcile(self, key: IssuerKey, failures: int) -> Result:
        obj = self._objects.get(key)
        if obj is None:
            return Result()
        meta = obj.get("metadata") or {}
        generation = int(meta.get("generation") or 0)
        now = self._now()
        old_ready = IssuerView.from_object(obj).ready
        recheck = self.config.issuer_recheck_interval.total_seconds()
        try:
            checked = await self._checker.check(key, obj, now)
        except CheckFailed as failure:
            self._checked.pop(key, None)
            self._checked_generation[key] = (str(meta.get("uid") or ""), generation)
            await self._write_status(key, obj, failure=failure, now=now)
            await self._issuer_events.transition(
                obj, old_ready, "False", failure.reason, failure.message
            )
            self._metrics.issuer_ready.labels(*key.labels).set(0)
            self._metrics.set_not_ready_reason(*key.labels, str(failure.reason))
            if failure.retryable:
                delay = max(self.backoff.delay(failures + 1), failure.retry_after or 0.0)
                result = Result.retry(delay)
            else:
                delay = recheck
                result = Result.requeue(delay)
            log.warning(
                "%s is not ready: %s: %s (next check in %.0fs)",
                key,
                failure.reason,
                failure.message,
                delay,
            )
            self._notify(key)
            return result

        self._checked[key] = checked
        self._checked_generation[key] = (checked.uid, generation)
        follow_up = self._hooks.checked(obj, checked)
        await self._write_status(
            key, obj, checked=checked, now=now, conditions=follow_up.conditions
        )
        message = ready_message(checked)
        await self._issuer_events.transition(obj, old_ready, "True", IssuerReason.CHECKED, message)
        self._metrics.issuer_ready.labels(*key.labels).set(1)
        self._metrics.set_not_ready_reason(*key.labels, None)
        await self._issuer_events.after_check(key, obj, checked, now)
        self._notify(key)
        # Work a follower could not do (a trust bundle that cannot be written)
        # leaves the issuer Ready (signing does not need it): the follower
        # reports it, and the issuer is retried with backoff.
        if not await self._hooks.settled(obj, checked, now):
            return Result.retry(self.backoff.delay(failures + 1))
        if checked.probe_in is not None:
            # A CA pool member is set aside: check again when its breaker lets the
            # check probe it (pool_check), so it shows Ready once its vault is back.
            recheck = min(recheck, max(1.0, checked.probe_in))
        if follow_up.recheck_within is not None:
            # A follower shows progress (re-issuing Certificates).
            return Result.requeue(min(recheck, follow_up.recheck_within))
        return Result.requeue(recheck)

    async def close(self) -> None:
        """Stop the followers' background work (re-issuing); call after the workers stopped."""
        await self._hooks.close()

    # -- status -----------------------------------------------------------------

    async def _write_status(
        self,
        key: IssuerKey,
        obj: IssuerObject,
        *,
        now: dt.datetime,
        checked: CheckedIssuer | None = None,
        failure: CheckFailed | None = None,
        conditions: tuple[FeatureCondition, ...] = (),
    ) -> None:
        status = issuer_status(
            obj,
            now=now,
            checked=checked,
            failure=failure,
            conditions=conditions,
            kept=self._hooks.condition_types,
        )
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
        updated = typed(dict(result), IssuerObject)
        if key in self._objects and resource_version_newer(updated, self._objects[key]):
            self._objects[key] = updated


class _Handler:
    """The informer handler of one issuer kind."""

    def __init__(self, issuers: IssuerReconciler, kind: str) -> None:
        self._issuers = issuers
        self._kind = kind

    def on_upsert(self, obj: dict[str, Any]) -> None:
        self._issuers.upserted(self._kind, obj)

    def on_delete(self, obj: dict[str, Any]) -> None:
        self._issuers.deleted(self._kind, obj)

    def on_listed(self, keys: set[str]) -> None:
        self._issuers.listed(self._kind, keys)
