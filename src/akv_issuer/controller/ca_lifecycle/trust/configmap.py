"""Publishing an issuer's trust bundle: read the ConfigMap back, apply the plan.

What goes into the bundle and for how long is decided, without I/O, in
:mod:`akv_issuer.controller.ca_lifecycle.trust.plan`; this module does the two API calls
per check (a GET, and a server-side apply only when the content changed) and
reports through events and metrics. A failed write never makes the issuer
un-Ready: signing works without the bundle, and the reconciler retries with
backoff.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import ConfigMap, Secret
from lightkube.types import PatchType

from akv_issuer.controller.api import TrustBundleSpec
from akv_issuer.controller.api.objects import IssuerObject
from akv_issuer.controller.ca_lifecycle.trust.plan import (
    ANNOTATION_STATE,
    EVENT_FAILED,
    EVENT_UPDATED,
    BundlePlan,
    Published,
    bundle_labels,
    metadata_in_sync,
    owner_conflict,
    plan_bundle,
    retention_window,
)
from akv_issuer.controller.core import (
    ANNOTATION_ISSUER,
    CheckedIssuer,
    FollowUp,
    IssuerKey,
    issuer_identity,
    owner_namespace,
    permissions,
)
from akv_issuer.controller.core.config import ControllerConfig
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.runtime.errors import expected
from akv_issuer.runtime.events import NORMAL, WARNING, EventRecorder, ObjectRef

log = logging.getLogger(__name__)

# The component of its unexpected errors (akv_issuer_unexpected_errors_total).
UNEXPECTED_COMPONENT = "trust-bundle"


class TrustBundlePublisher:
    """Publishes an issuer's trust bundle after a successful check: follows the
    issuer checks (``core.CheckFollower``), its work done once the issuer's
    status is written (:meth:`settled`)."""

    condition_types: tuple[str, ...] = ()

    def __init__(
        self,
        config: ControllerConfig,
        client: AsyncClient,
        metrics: Metrics,
        events: EventRecorder,
    ) -> None:
        self._config = config
        self._client = client
        self._metrics = metrics
        self._events = events
        # Digest of what was last written per issuer, so an unchanged bundle
        # costs one GET per check and no write.
        self._written: dict[IssuerKey, str] = {}
        self._last_failure: dict[IssuerKey, str] = {}

    def forget(self, key: IssuerKey) -> None:
        self._written.pop(key, None)
        self._last_failure.pop(key, None)

    def checked(self, obj: IssuerObject, checked: CheckedIssuer) -> FollowUp:
        return FollowUp()

    async def settled(self, obj: IssuerObject, checked: CheckedIssuer, now: dt.datetime) -> bool:
        """:meth:`publish`: a bundle that cannot be written leaves the issuer
        Ready (signing does not need it): an event, a metric, and a retry."""
        return await self.publish(obj, checked, now)

    async def close(self) -> None:
        return None

    async def publish(self, obj: IssuerObject, checked: CheckedIssuer, now: dt.datetime) -> bool:
        """Bring the bundle up to date; False when it could not be (an event
        says why, and the caller retries with backoff)."""
        spec = checked.spec.trust_bundle
        key = checked.key
        if spec is None:
            return True
        cluster_ns = self._config.cluster_resource_namespace
        namespace = owner_namespace(key, cluster_ns)
        where = f"ConfigMap {namespace}/{spec.config_map_name}"
        permission = permissions.configmaps(namespace, cluster_ns)
        try:
            existing = await self._get(ConfigMap, spec.config_map_name, namespace)
            conflict = owner_conflict(key, existing)
            if conflict is not None:
                return await self._failed(obj, key, f"{where} {conflict}; not overwritten")
            meta = (existing or {}).get("metadata") or {}
            published = Published.read(
                ((existing or {}).get("data") or {}).get(spec.key),
                (meta.get("annotations") or {}).get(ANNOTATION_STATE),
            )
            plan = plan_bundle(
                checked.ca, published, retention_window(checked.spec, spec.overlap), now
            )
            body = self._body("ConfigMap", key, spec, namespace, spec.config_map_name, plan)
            digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
            current = _in_sync(existing, body)
            if current and self._written.get(key) == digest:
                self._succeeded(key, plan)
                return True
            if not current:
                await self._apply(ConfigMap, body, force=True)
            if spec.secret_name:
                where = f"Secret {namespace}/{spec.secret_name}"
                permission = permissions.trust_bundle_secrets(namespace)
                secret = self._body("Secret", key, spec, namespace, spec.secret_name, plan)
                await self._apply(Secret, secret, force=False)
        except ApiError as err:
            if permissions.is_forbidden(err):
                # The feature is used where the RBAC does not allow it: say
                # which permission is missing and which value grants it.
                return await self._failed(
                    obj,
                    key,
                    f"trust bundle {where} not written: {permission.missing()}",
                    reason=permissions.REASON_FORBIDDEN,
                )
            detail = err.status.message or f"HTTP {err.status.code}"
            return await self._failed(obj, key, f"writing {where}: {detail}")
        except Exception as exc:  # network errors and the like: retried the same way
            if not expected(exc):  # a bug: its traceback once, counted
                self._metrics.unexpected.report(
                    log,
                    UNEXPECTED_COMPONENT,
                    key,
                    exc,
                    "writing the trust bundle of %s failed",
                    key,
                )
            return await self._failed(obj, key, f"writing {where}: {type(exc).__name__}: {exc}")
        self._written[key] = digest
        self._succeeded(key, plan)
        if plan.changed or existing is None:
            await self._events.record(
                ObjectRef.of(obj),
                NORMAL,
                EVENT_UPDATED,
                f"trust bundle {namespace}/{spec.config_map_name} holds "
                f"{len(plan.certificates)} CA certificate(s): {plan.summary()}",
            )
        return True

    def _succeeded(self, key: IssuerKey, plan: BundlePlan) -> None:
        self._metrics.unexpected.forget(UNEXPECTED_COMPONENT, key)
        self._last_failure.pop(key, None)
        self._metrics.trust_bundle_certificates.labels(*key.labels).set(len(plan.certificates))

    async def _failed(
        self, obj: IssuerObject, key: IssuerKey, message: str, *, reason: str = EVENT_FAILED
    ) -> bool:
        self._metrics.trust_bundle_failures.labels(*key.labels).inc()
        self._written.pop(key, None)
        log.warning("%s: trust bundle not published: %s", key, message)
        if self._last_failure.get(key) != message:
            self._last_failure[key] = message
            await self._events.record(ObjectRef.of(obj), WARNING, reason, message)
        return False

    async def _get(self, resource: Any, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            found: Any = await self._client.get(resource, name, namespace=namespace)
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise
        return dict(found.to_dict())

    async def _apply(self, resource: Any, body: dict[str, Any], *, force: bool) -> None:
        meta = body["metadata"]
        await self._client.patch(
            resource,
            meta["name"],
            body,
            namespace=meta["namespace"],
            patch_type=PatchType.APPLY,
            field_manager=self._config.field_manager,
            force=force,
        )

    @staticmethod
    def _body(
        kind: str,
        key: IssuerKey,
        spec: TrustBundleSpec,
        namespace: str,
        name: str,
        plan: BundlePlan,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": bundle_labels(key),
                "annotations": {
                    ANNOTATION_ISSUER: issuer_identity(key),
                    ANNOTATION_STATE: plan.state.encode(),
                },
            },
        }
        if kind == "Secret":
            body["type"] = "Opaque"
            body["data"] = {spec.key: base64.b64encode(plan.pem().encode()).decode()}
        else:
            body["data"] = {spec.key: plan.pem()}
        return body


def _in_sync(existing: Mapping[str, Any] | None, body: Mapping[str, Any]) -> bool:
    """Whether the existing ConfigMap already has everything ``body`` sets."""
    if existing is None:
        return False
    return metadata_in_sync(existing, body) and all(
        (existing.get("data") or {}).get(k) == v for k, v in body["data"].items()
    )
