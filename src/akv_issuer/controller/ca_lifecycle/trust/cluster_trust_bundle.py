"""Signer-linked ClusterTrustBundles (``spec.clusterTrustBundles``): the second
target of the trust-bundle state machine (:mod:`.plan`), beside the ConfigMap
(:mod:`.configmap`).

For each issuer that opts in, one cluster-scoped ``certificates.k8s.io/v1``
ClusterTrustBundle named ``<signer name, '/' as ':'>:trust-anchors`` with
``spec.signerName`` = the issuer's signer name (the one its Kubernetes CSRs
and PodCertificateRequests use). Its ``trustBundle`` is the plan's PEM: the
current CA's trust anchor and, after a rotation, previous anchors until their
certificates may have expired. The plan's state lives in the bundle's own
annotation, as on the ConfigMap, so a restart or a new leader carries on.

Pods select it with a ``clusterTrustBundle`` projected volume by signer name
and a label selector: the bundle carries the controller's labels and the
spec's ``labels``. One bundle per issuer, holding every anchor a relying party
needs *now*: a Pod that selected only "the current anchor" would reject
still-valid certificates of the previous CA during the overlap, which is what
the overlap exists to prevent (docs/api.md, "ClusterTrustBundles").

Writing a bundle that names a signer needs ``attest`` on that signer name
(the API server's ClusterTrustBundleAttest admission); the chart grants it for
our two signer-name domains only (``controller.clusterTrustBundles``).

Life cycle: written after each successful check (a get; a server-side apply
only when something changed); deleted when ``clusterTrustBundles`` leaves the
spec, when the issuer is deleted (a ClusterIssuer's bundle also carries an
owner reference, so the garbage collector removes it even without us), and,
for issuers deleted while no controller ran, by a sweep over the bundles
labelled as ours when this replica starts leading.

API servers older than 1.37 do not serve ``certificates.k8s.io/v1``
ClusterTrustBundles: a list answered 404 says so; then nothing is written, an
issuer that asks for a bundle gets the condition ``ClusterTrustBundleBlocked``
(reason ``APINotServed``) and an event, the controller logs it once, and asks
the API server again after :data:`.served_probe.REPROBE_AFTER`.

This module is the publisher: *when* to write and delete, and what the
condition and events say. What a bundle of ours is (name, labels, body, owner)
is :mod:`.signer_bundle`, pure and shared with the sweep; whether the API is
served is :mod:`.served_probe`, state about the API server rather than any
issuer. Writing and deleting stay together here: both keep the per-issuer
state (what was written, which bundles this process owns, the last warning).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any, Final

from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from akv_issuer.controller.api import (
    ISSUER_KIND,
    ClusterIssuer,
    ClusterTrustBundle,
    ClusterTrustBundlesSpec,
    Issuer,
)
from akv_issuer.controller.api.objects import IssuerObject
from akv_issuer.controller.ca_lifecycle.trust.plan import (
    ANNOTATION_STATE,
    Published,
    plan_bundle,
    retention_window,
)
from akv_issuer.controller.ca_lifecycle.trust.served_probe import (
    NOT_SERVED_MESSAGE,
    NotServed,
    ServedProbe,
)
from akv_issuer.controller.ca_lifecycle.trust.signer_bundle import (
    LABEL_CLUSTER_TRUST_BUNDLE,
    MAX_TRUST_BUNDLE_SIZE,
    bundle_body,
    bundle_name,
    in_sync,
    issuer_of,
    signer_name,
)
from akv_issuer.controller.core import (
    COMPONENT,
    LABEL_MANAGED_BY,
    CheckedIssuer,
    ControllerConfig,
    FeatureCondition,
    FollowUp,
    IssuerKey,
    IssuerSide,
    ownership_conflict,
    permissions,
)
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.runtime.controller import Controller, Result
from akv_issuer.runtime.errors import api_error_text, expected
from akv_issuer.runtime.events import NORMAL, WARNING, EventRecorder, ObjectRef
from akv_issuer.runtime.queue import Backoff

log = logging.getLogger(__name__)

CONDITION_BLOCKED: Final = "ClusterTrustBundleBlocked"
"""True while an issuer's ``spec.clusterTrustBundles`` cannot be honoured."""
REASON_NOT_ENABLED: Final = "NotEnabled"
REASON_API_NOT_SERVED: Final = "APINotServed"
REASON_FAILED: Final = "PublishFailed"
REASON_PUBLISHED: Final = "Published"
REASON_NOT_REQUESTED: Final = "NotRequested"

EVENT_UPDATED: Final = "ClusterTrustBundleUpdated"
EVENT_FAILED: Final = "ClusterTrustBundleFailed"
EVENT_DELETED: Final = "ClusterTrustBundleDeleted"

NOT_ENABLED_MESSAGE: Final = (
    "spec.clusterTrustBundles is set, but the controller runs without "
    "--cluster-trust-bundles (the Helm value controller.clusterTrustBundles=true turns it "
    "on with its RBAC; kustomize: the component cluster-trust-bundles)"
)

SWEEP: Final = "sweep"

# The component of its unexpected errors (akv_issuer_unexpected_errors_total).
UNEXPECTED_COMPONENT = "cluster-trust-bundle"


class ClusterTrustBundlePublisher:
    """Publishes an issuer's signer-linked ClusterTrustBundle after a successful
    check (a ``core.CheckFollower``), deletes it when the issuer or its opt-in
    goes, and reports through the ``ClusterTrustBundleBlocked`` condition,
    events and the log."""

    condition_types: tuple[str, ...] = (CONDITION_BLOCKED,)

    def __init__(
        self,
        config: ControllerConfig,
        client: AsyncClient,
        issuers: IssuerSide,
        metrics: Metrics,
        events: EventRecorder,
        *,
        now: Callable[[], dt.datetime],
    ) -> None:
        self._config = config
        self._client = client
        self._issuers = issuers
        self._metrics = metrics
        self._events = events
        self._api = ServedProbe(client, now)
        # Per issuer: the outcome of the last publication, as (reason, message)
        # of the condition (reason None: published), and what checked() showed.
        self._outcome: dict[IssuerKey, tuple[str | None, str]] = {}
        self._shown: dict[IssuerKey, tuple[str | None, str] | None] = {}
        # Digest of what was last applied per issuer: an unchanged bundle costs
        # one GET per check and no write.
        self._written: dict[IssuerKey, str] = {}
        self._last_failure: dict[IssuerKey, str] = {}
        # Issuers this process published a bundle for (opt-out deletes it).
        self._owned: set[IssuerKey] = set()
        backoff = Backoff(base=2.0, cap=300.0)
        self.cleanup: Controller[IssuerKey] = Controller(
            "clustertrustbundles",
            self._cleanup,
            workers=1,
            backoff=backoff,
            unexpected=metrics.unexpected,
        )
        self.sweep: Controller[str] = _StartSweep(
            "clustertrustbundle-sweep",
            self._sweep,
            workers=1,
            backoff=backoff,
            unexpected=metrics.unexpected,
        )

    # -- core.CheckFollower ------------------------------------------------------

    def checked(self, obj: IssuerObject, checked: CheckedIssuer) -> FollowUp:
        key = checked.key
        if checked.spec.cluster_trust_bundles is None:
            self._shown.pop(key, None)
            inactive = (REASON_NOT_REQUESTED, "spec.clusterTrustBundles is unset")
            return FollowUp((FeatureCondition(CONDITION_BLOCKED, None, inactive),))
        outcome = self._expected_outcome(key)
        self._shown[key] = outcome
        active: tuple[str, str] | None = None
        inactive = (REASON_PUBLISHED, f"ClusterTrustBundle {bundle_name(key)} is published")
        if outcome is not None:
            reason, message = outcome
            if reason is None:
                inactive = (REASON_PUBLISHED, message)
            else:
                active = (reason, message)
        return FollowUp((FeatureCondition(CONDITION_BLOCKED, active, inactive),))

    def _expected_outcome(self, key: IssuerKey) -> tuple[str | None, str] | None:
        """What the condition says before this check's publication: known at once
        when the feature is off or the API not served, else the last outcome."""
        if not self._config.cluster_trust_bundles:
            return (REASON_NOT_ENABLED, NOT_ENABLED_MESSAGE)
        if self._api.known_not_served:
            return (REASON_API_NOT_SERVED, NOT_SERVED_MESSAGE)
        return self._outcome.get(key)

    async def settled(self, obj: IssuerObject, checked: CheckedIssuer, now: dt.datetime) -> bool:
        key = checked.key
        spec = checked.spec.cluster_trust_bundles
        if spec is None:
            self._outcome.pop(key, None)
            if key in self._owned and self._config.cluster_trust_bundles:
                return await self._opted_out(obj, key)
            return True
        if not self._config.cluster_trust_bundles:
            outcome: tuple[str | None, str] = (REASON_NOT_ENABLED, NOT_ENABLED_MESSAGE)
            await self._warn_once(obj, key, NOT_ENABLED_MESSAGE)
            ok = True
        else:
            outcome, ok = await self._publish(obj, checked, spec, now)
        self._outcome[key] = outcome
        if ok and _blocked(self._shown.get(key)) != _blocked(outcome):
            # The status shows an older outcome: check again soon so that the
            # condition catches up (a failure is retried with backoff anyway).
            self._issuers.request_check(key)
        return ok

    def forget(self, key: IssuerKey) -> None:
        self._outcome.pop(key, None)
        self._shown.pop(key, None)
        self._written.pop(key, None)
        self._last_failure.pop(key, None)
        if self._config.cluster_trust_bundles:
            # The issuer is gone: its bundle goes too (the cleanup checks the API
            # server first, so a re-created issuer keeps it).
            self.cleanup.enqueue(key)

    async def close(self) -> None:
        return None

    # -- publishing ----------------------------------------------------------------

    async def _publish(
        self,
        obj: IssuerObject,
        checked: CheckedIssuer,
        spec: ClusterTrustBundlesSpec,
        now: dt.datetime,
    ) -> tuple[tuple[str | None, str], bool]:
        key = checked.key
        name = bundle_name(key)
        try:
            if not await self._api.served():
                raise NotServed()
            existing = await self._get_bundle(name)
            conflict = ownership_conflict(key, existing, "is the ClusterTrustBundle of {owner}")
            if conflict is not None:
                return await self._failed(
                    obj,
                    key,
                    REASON_FAILED,
                    f"ClusterTrustBundle {name} {conflict}; not overwritten",
                )
            meta = (existing or {}).get("metadata") or {}
            published = Published.read(
                ((existing or {}).get("spec") or {}).get("trustBundle"),
                (meta.get("annotations") or {}).get(ANNOTATION_STATE),
            )
            plan = plan_bundle(
                checked.ca, published, retention_window(checked.spec, spec.overlap), now
            )
            body = bundle_body(key, checked.uid, spec, plan)
            if len(body["spec"]["trustBundle"]) > MAX_TRUST_BUNDLE_SIZE:
                return await self._failed(
                    obj,
                    key,
                    REASON_FAILED,
                    f"ClusterTrustBundle {name} would hold {len(plan.certificates)} anchors, "
                    f"more than the API's {MAX_TRUST_BUNDLE_SIZE} bytes",
                )
            digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
            if not (self._written.get(key) == digest and in_sync(existing, body)):
                await self._client.patch(
                    ClusterTrustBundle,
                    name,
                    body,
                    patch_type=PatchType.APPLY,
                    field_manager=self._config.field_manager,
                    force=True,
                )
        except NotServed:
            await self._warn_once(obj, key, NOT_SERVED_MESSAGE)
            return (REASON_API_NOT_SERVED, NOT_SERVED_MESSAGE), True
        except ApiError as err:
            if err.status.code == 404 and await self._api.gone():
                await self._warn_once(obj, key, NOT_SERVED_MESSAGE)
                return (REASON_API_NOT_SERVED, NOT_SERVED_MESSAGE), True
            if permissions.is_forbidden(err):
                detail = err.status.message or "forbidden"
                return await self._failed(
                    obj,
                    key,
                    permissions.REASON_FORBIDDEN,
                    f"ClusterTrustBundle {name} not written: "
                    f"{permissions.cluster_trust_bundles(signer_name(key)).missing()} "
                    f"(API server: {detail})",
                )
            detail = err.status.message or f"HTTP {err.status.code}"
            return await self._failed(
                obj, key, REASON_FAILED, f"writing ClusterTrustBundle {name}: {detail}"
            )
        except Exception as exc:  # network errors and the like: retried the same way
            if not expected(exc):  # a bug: its traceback once, counted
                self._metrics.unexpected.report(
                    log,
                    UNEXPECTED_COMPONENT,
                    key,
                    exc,
                    "writing the ClusterTrustBundle of %s failed",
                    key,
                )
            return await self._failed(
                obj,
                key,
                REASON_FAILED,
                f"writing ClusterTrustBundle {name}: {type(exc).__name__}: {exc}",
            )
        self._metrics.unexpected.forget(UNEXPECTED_COMPONENT, key)
        self._written[key] = digest
        self._owned.add(key)
        self._last_failure.pop(key, None)
        message = f"ClusterTrustBundle {name} holds {len(plan.certificates)} trust anchor(s)"
        if plan.changed or existing is None:
            await self._events.record(
                ObjectRef.of(obj), NORMAL, EVENT_UPDATED, f"{message}: {plan.summary()}"
            )
        return (None, message), True

    async def _failed(
        self, obj: IssuerObject, key: IssuerKey, reason: str, message: str
    ) -> tuple[tuple[str | None, str], bool]:
        self._written.pop(key, None)
        log.warning("%s: ClusterTrustBundle not published: %s", key, message)
        event = (
            permissions.REASON_FORBIDDEN if reason == permissions.REASON_FORBIDDEN else EVENT_FAILED
        )
        await self._warn_once(obj, key, message, event)
        return (reason, message), False

    async def _warn_once(
        self, obj: IssuerObject, key: IssuerKey, message: str, reason: str = EVENT_FAILED
    ) -> None:
        """A Warning event on the issuer, once per distinct message."""
        if self._last_failure.get(key) != message:
            self._last_failure[key] = message
            await self._events.record(ObjectRef.of(obj), WARNING, reason, message)

    async def _get_bundle(self, name: str) -> dict[str, Any] | None:
        """The bundle (None: absent); :class:`NotServed` when the API is not."""
        try:
            found: Any = await self._client.get(ClusterTrustBundle, name)
        except ApiError as err:
            if err.status.code != 404:
                raise
            if await self._api.gone():
                raise NotServed() from None
            return None
        return dict(found.to_dict())

    # -- deleting --------------------------------------------------------------------

    async def _opted_out(self, obj: IssuerObject, key: IssuerKey) -> bool:
        """``clusterTrustBundles`` left the spec: delete the bundle."""
        try:
            deleted = await self._delete_bundle(key)
        except NotServed:
            return True
        except ApiError as err:
            message = f"deleting ClusterTrustBundle {bundle_name(key)}: {api_error_text(err)}"
            log.warning("%s: %s", key, message)
            await self._warn_once(obj, key, message)
            return False
        self._owned.discard(key)
        self._written.pop(key, None)
        if deleted:
            await self._events.record(
                ObjectRef.of(obj),
                NORMAL,
                EVENT_DELETED,
                f"ClusterTrustBundle {bundle_name(key)} deleted: spec.clusterTrustBundles is unset",
            )
        return True

    async def _delete_bundle(self, key: IssuerKey) -> bool:
        """Delete ``key``'s bundle if it is there and ours; True when deleted."""
        name = bundle_name(key)
        existing = await self._get_bundle(name)
        if existing is None:
            return False
        conflict = ownership_conflict(key, existing, "is the ClusterTrustBundle of {owner}")
        if conflict is not None:
            log.warning("%s: ClusterTrustBundle %s %s; not deleted", key, name, conflict)
            return False
        try:
            await self._client.delete(ClusterTrustBundle, name)
        except ApiError as err:
            if err.status.code == 404:
                return False
            raise
        log.info("%s: deleted ClusterTrustBundle %s", key, name)
        return True

    async def _cleanup(self, key: IssuerKey, failures: int) -> Result:
        """The issuer went (or a sweep found its bundle): delete the bundle
        unless the issuer exists (asked of the API server, not a cache that may
        not be filled yet) and still asks for it."""
        if key in self._issuers_wanting():
            return Result()
        resource: Any = Issuer if key.kind == ISSUER_KIND else ClusterIssuer
        try:
            issuer: Any = await self._client.get(
                resource, key.name, namespace=key.namespace or None
            )
        except ApiError as err:
            if err.status.code != 404:
                raise
            issuer = None
        spec = (issuer.to_dict().get("spec") or {}) if issuer is not None else {}
        if spec.get("clusterTrustBundles") is not None:
            return Result()
        if not await self._api.served():
            return Result()
        try:
            await self._delete_bundle(key)
        except NotServed:
            return Result()
        self._owned.discard(key)
        return Result()

    def _issuers_wanting(self) -> set[IssuerKey]:
        """Issuers whose last publication this process did (they exist and opt in)."""
        return {k for k, (reason, _m) in self._outcome.items() if reason is None}

    async def _sweep(self, key: str, failures: int) -> Result:
        """When this replica starts leading: every bundle labelled as ours goes
        through the cleanup (issuers deleted, or opted out, while no controller ran)."""
        if not await self._api.served():
            return Result()
        found = 0
        labels: dict[str, Any] = {LABEL_MANAGED_BY: COMPONENT, LABEL_CLUSTER_TRUST_BUNDLE: "true"}
        item: Any
        async for item in self._client.list(ClusterTrustBundle, labels=labels):
            owner = issuer_of(item.to_dict())
            if owner is not None:
                found += 1
                self.cleanup.enqueue(owner)
        log.info("%d ClusterTrustBundle(s) of ours found; checking their issuers", found)
        return Result()


class _StartSweep(Controller[str]):
    """A controller whose one key is the sweep, queued each time its workers
    start (when this replica starts leading)."""

    def start(self) -> list[asyncio.Task[None]]:
        self.enqueue(SWEEP)
        return super().start()


def _blocked(outcome: tuple[str | None, str] | None) -> tuple[str, str] | None:
    """What the condition shows of an outcome: True with (reason, message) while
    blocked; a publication (or none yet) shows as not blocked."""
    if outcome is None or outcome[0] is None:
        return None
    return (outcome[0], outcome[1])
