"""Re-issuing Certificates after the issuer's CA changed (``spec.reissue``).

When an issuer switches to another CA (a new key version with its CA
certificate, or a new CA altogether), leaves of the previous CA stay valid
until they expire, which may be months after the old CA is retired from
trust bundles. With ``reissue.onCAChange`` the controller renews them early,
through cert-manager's own mechanism, as ``cmctl renew`` does: it sets the
Certificate's ``Issuing`` condition (reason ``ManuallyTriggered``) and
cert-manager creates the new CertificateRequest, which this issuer signs.

Which Certificates: those whose ``issuerRef`` names this issuer (an Issuer's
only in its own namespace) and whose current certificate, read from the
CertificateRequest of the Certificate's current revision, was not signed by
the current CA. A renewed root with the same key counts as the same CA (its
leaves verify against both). Secrets are never read. A Certificate whose
current request is gone (garbage-collected) is re-issued too: nothing shows
it is current. One already being issued is left alone.

At most ``reissue.perMinute`` are triggered per minute, so Key Vault and the
API server see a steady trickle rather than a storm. Progress is in the
issuer's ``Reissuing`` condition and in metrics. The work runs in the
background; a restart finds ``Reissuing=True`` in the issuer's status and
sweeps again (already re-issued Certificates then count as current).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from lightkube import ApiError, AsyncClient
from lightkube.core.generic_client import ALL_NS
from lightkube.types import PatchType

from akv_issuer.controller.api import (
    CONDITION_REISSUING,
    GROUP,
    ISSUER_KIND,
    Certificate,
    CertificateRequest,
    conditions_of,
    find_condition,
    first_certificate,
    format_time,
)
from akv_issuer.controller.core import (
    CheckedIssuer,
    FeatureCondition,
    FollowUp,
    IssuerKey,
    permissions,
    published_ca,
)
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.pki import issued_by

log = logging.getLogger(__name__)

REVISION_ANNOTATION = "cert-manager.io/certificate-revision"
ISSUING = "Issuing"


@dataclass
class Progress:
    """One sweep: Certificates of the issuer, how many needed re-issuing, how
    many were triggered so far."""

    ca_serial: int
    total: int = 0
    stale: int = 0
    triggered: int = 0
    done: bool = False
    error: str | None = None
    forbidden: bool = False  # the error is the controller's missing RBAC (rbac.reissue)
    stopped_at: float | None = None  # time.monotonic() of the error
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def remaining(self) -> int:
        return self.stale - self.triggered

    def describe(self) -> str:
        if self.error:
            return f"re-issuing stopped: {self.error}; retried at the next check"
        if self.done:
            return (
                f"{self.triggered} of {self.total} Certificates re-issued after the CA changed; "
                "none is left on a previous CA"
            )
        return (
            f"re-issuing Certificates of a previous CA: {self.triggered} of {self.stale} "
            f"triggered ({self.total} Certificates use this issuer)"
        )


def addresses(certificate: dict[str, Any], key: IssuerKey) -> bool:
    """Whether a cert-manager Certificate's issuerRef names the issuer ``key``."""
    ref = (certificate.get("spec") or {}).get("issuerRef") or {}
    if str(ref.get("group") or "") != GROUP:
        return False
    if str(ref.get("kind") or ISSUER_KIND) != key.kind or str(ref.get("name") or "") != key.name:
        return False
    namespace = str((certificate.get("metadata") or {}).get("namespace") or "")
    return key.kind != ISSUER_KIND or namespace == key.namespace


def current_leaf(
    certificate: dict[str, Any], requests: list[dict[str, Any]]
) -> x509.Certificate | None:
    """The leaf of the Certificate's current revision, from its CertificateRequest."""
    meta = certificate.get("metadata") or {}
    revision = str((certificate.get("status") or {}).get("revision") or "")
    if not revision:
        return None
    for request in requests:
        rmeta = request.get("metadata") or {}
        owners = rmeta.get("ownerReferences") or []
        if not any(o.get("uid") == meta.get("uid") for o in owners):
            continue
        if (rmeta.get("annotations") or {}).get(REVISION_ANNOTATION) != revision:
            continue
        return first_certificate((request.get("status") or {}).get("certificate"))
    return None


def is_issuing(certificate: dict[str, Any]) -> bool:
    issuing = find_condition(conditions_of(certificate), ISSUING)
    return issuing is not None and issuing.status == "True"


class Reissuer:
    def __init__(
        self,
        client: AsyncClient,
        metrics: Metrics,
        on_done: Callable[[IssuerKey], None],
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._on_done = on_done
        self._sleep = sleep
        self._tasks: dict[IssuerKey, asyncio.Task[None]] = {}
        self._progress: dict[IssuerKey, Progress] = {}

    def progress(self, key: IssuerKey) -> Progress | None:
        return self._progress.get(key)

    def running(self, key: IssuerKey) -> bool:
        task = self._tasks.get(key)
        return task is not None and not task.done()

    def may_resume(self, key: IssuerKey) -> bool:
        """Whether an unfinished sweep may start again: not while one runs, and
        after an error not at the check its end asks for at once, but at the
        next one (``REISSUE_PROGRESS_INTERVAL`` later): a sweep that keeps
        failing (a missing permission) must not restart in a tight loop."""
        if self.running(key):
            return False
        progress = self._progress.get(key)
        if progress is None or progress.stopped_at is None:
            return True
        return time.monotonic() - progress.stopped_at >= REISSUE_PROGRESS_INTERVAL / 2

    def start(self, key: IssuerKey, checked: CheckedIssuer) -> None:
        """Sweep the issuer's Certificates against its current CA, unless a sweep
        against that same CA runs already (a sweep for an older CA is replaced)."""
        serial = checked.ca_cert.serial_number
        current = self._progress.get(key)
        if self.running(key) and current is not None and current.ca_serial == serial:
            return
        self.stop(key)
        progress = Progress(ca_serial=serial)
        self._progress[key] = progress
        self._tasks[key] = asyncio.create_task(
            self._sweep(key, checked, progress), name=f"reissue-{key.name}"
        )

    def stop(self, key: IssuerKey) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()
        self._progress.pop(key, None)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _sweep(self, key: IssuerKey, checked: CheckedIssuer, progress: Progress) -> None:
        labels = key.labels
        try:
            namespace = key.namespace if key.kind == ISSUER_KIND else ALL_NS
            mine = [
                dict(c)
                async for c in self._client.list(Certificate, namespace=namespace)
                if addresses(dict(c), key)
            ]
            progress.total = len(mine)
            requests: dict[str, list[dict[str, Any]]] = {}
            stale = []
            for certificate in mine:
                if is_issuing(certificate):
                    continue  # being issued now, by the current CA
                ns = str(certificate["metadata"].get("namespace") or "")
                if ns not in requests:
                    requests[ns] = [
                        dict(r) async for r in self._client.list(CertificateRequest, namespace=ns)
                    ]
                leaf = current_leaf(certificate, requests[ns])
                if leaf is None or not issued_by(leaf, checked.ca_cert):
                    stale.append(certificate)
            progress.stale = len(stale)
            self._metrics.reissue_pending.labels(*labels).set(progress.remaining)
            interval = 60.0 / max(1, checked.spec.reissue.per_minute)
            for certificate in stale:
                if await self._trigger(certificate):
                    self._metrics.reissue_triggered.labels(*labels).inc()
                progress.triggered += 1
                self._metrics.reissue_pending.labels(*labels).set(progress.remaining)
                if progress.remaining:
                    await self._sleep(interval)
            progress.done = True
            log.info("%s: %s", key, progress.describe())
        except asyncio.CancelledError:
            raise
        except ApiError as err:
            if permissions.is_forbidden(err):
                progress.forbidden = True
                progress.error = permissions.REISSUE.missing()
            else:
                progress.error = f"HTTP {err.status.code}: {err.status.message}"
            progress.stopped_at = time.monotonic()
            log.warning("%s: re-issuing stopped: %s", key, progress.error)
        finally:
            self._metrics.reissue_pending.labels(*labels).set(
                0 if progress.done else progress.remaining
            )
        self._on_done(key)

    async def _trigger(self, certificate: dict[str, Any]) -> bool:
        """Set Issuing=True/ManuallyTriggered as cmctl renew does; False if the
        Certificate is gone or already being issued."""
        meta = certificate.get("metadata") or {}
        name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
        for _attempt in range(3):
            try:
                fresh = dict(await self._client.get(Certificate, name, namespace=namespace))
            except ApiError as err:
                if err.status.code == 404:
                    return False
                raise
            if is_issuing(fresh):
                return False
            status = fresh.get("status") or {}
            conditions = [c for c in status.get("conditions") or () if c.get("type") != ISSUING]
            conditions.append(
                {
                    "type": ISSUING,
                    "status": "True",
                    "reason": "ManuallyTriggered",
                    "message": (
                        "Certificate re-issuance triggered by azure-keyvault-issuer: "
                        "its certificate was issued by a previous CA"
                    ),
                    "lastTransitionTime": format_time(dt.datetime.now(dt.UTC)),
                    "observedGeneration": (fresh.get("metadata") or {}).get("generation"),
                }
            )
            body = {
                "metadata": {"resourceVersion": fresh["metadata"]["resourceVersion"]},
                "status": {"conditions": conditions},
            }
            try:
                await self._client.patch(
                    Certificate.Status, name, body, namespace=namespace, patch_type=PatchType.MERGE
                )
            except ApiError as err:
                if err.status.code == 409:
                    continue  # changed meanwhile: read again
                raise
            log.info("re-issuing Certificate %s/%s: issued by a previous CA", namespace, name)
            return True
        return False


def condition_text(progress: Progress | None) -> tuple[str, str] | None:
    """(reason, message) of a Reissuing=True condition, None when not in progress."""
    if progress is None or progress.done:
        return None
    if progress.forbidden:
        return permissions.REASON_FORBIDDEN, progress.describe()
    reason = "Stopped" if progress.error else "CAChanged"
    return reason, progress.describe()


# How often an issuer is re-checked (and its Reissuing progress written) while
# Certificates are being re-issued.
REISSUE_PROGRESS_INTERVAL = 30.0
# The Reissuing condition once no sweep is in progress.
REISSUE_COMPLETE = ("Complete", "no Certificate of this issuer is left on a previous CA")


class ReissueOnCAChange:
    """Follows every successful issuer check (``core.CheckFollower``): starts
    re-issuing after a CA change (``spec.reissue.onCAChange``), or resumes one a
    restart interrupted, and owns the issuer's Reissuing condition."""

    condition_types = (CONDITION_REISSUING,)

    def __init__(self, reissuer: Reissuer) -> None:
        self._reissuer = reissuer

    def checked(self, obj: dict[str, Any], checked: CheckedIssuer) -> FollowUp:
        key = checked.key
        if not checked.spec.reissue.on_ca_change:
            self._reissuer.stop(key)
            active = None
        else:
            published = published_ca(obj)
            changed = published is not None and not _same_ca(published, checked.ca_cert)
            was = find_condition(conditions_of(obj), CONDITION_REISSUING)
            progress = self._reissuer.progress(key)
            finished = progress is not None and progress.done
            unfinished = was is not None and was.status == "True" and not finished
            if changed or (unfinished and self._reissuer.may_resume(key)):
                self._reissuer.start(key, checked)
            active = condition_text(self._reissuer.progress(key))
        return FollowUp(
            conditions=(FeatureCondition(CONDITION_REISSUING, active, REISSUE_COMPLETE),),
            # Show progress while Certificates are re-issued; the sweep's end
            # also brings the issuer back at once.
            recheck_within=REISSUE_PROGRESS_INTERVAL if active is not None else None,
        )

    async def settled(self, obj: dict[str, Any], checked: CheckedIssuer, now: dt.datetime) -> bool:
        return True

    def forget(self, key: IssuerKey) -> None:
        self._reissuer.stop(key)

    async def close(self) -> None:
        await self._reissuer.close()


def _same_ca(old: x509.Certificate, new: x509.Certificate) -> bool:
    """Same key and subject: what one signed verifies against the other (a
    renewed root), so its leaves need no re-issuing."""
    return old.subject == new.subject and old.public_key() == new.public_key()
