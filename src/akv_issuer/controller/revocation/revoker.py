"""Revocation in the cluster: ``kubectl annotate certificaterequest NAME
azure-keyvault-issuer.gonicus.de/revoke=<reason>``.

Why an annotation on the CertificateRequest: it is the object that carried the
certificate (the serial and the issuer are in it), so revoking needs no new
resource, no new CRD and no new RBAC for users -- whoever may patch
CertificateRequests in a namespace may revoke there, and the API server's
audit log records who annotated. A namespaced Issuer's requests live in its
namespace, so its revocations can only come from there.

The request flow (:mod:`akv_issuer.controller.requests.flow`) ignores finished
requests, and this controller only looks at finished (Issued) ones that carry
the annotation; they share the CertificateRequest informer through a small
fan-out handler in the manager and nothing else.

Order of a revocation, so that nothing accepted is ever lost:

1. checks: addressed to one of our issuers; ``Ready=True/Issued``; the leaf in
   ``status.certificate`` verifies against the issuer's current CA (signature
   and issuer name; a CA certificate renewed on the same key counts);
2. the record is written into the issuer's revocation ConfigMap
   (:mod:`akv_issuer.controller.revocation.store`) with a resourceVersion
   precondition -- from here on the next CRL contains it, whatever happens;
3. only then the request gets ``.../revoked`` (so a restart does not redo
   it; redoing would be harmless, the record is found by serial), the
   events ``Revoked`` on the request and on the issuer, and a ``revoked``
   audit record (:mod:`akv_issuer.controller.observability.audit`; its requester is who
   requested the certificate, who annotated is in the API server's audit log).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from akv_issuer.controller.api import (
    CERTIFICATE_REQUEST_KIND,
    CertificateRequest,
    CertificateRequestCondition,
    conditions_of,
    find_condition,
    first_certificate,
    format_time,
)
from akv_issuer.controller.api.objects import CertificateRequestObject, typed
from akv_issuer.controller.core import (
    CheckedIssuer,
    IssuerKey,
    IssuerSide,
    addressed_issuer,
    permissions,
)
from akv_issuer.controller.observability import audit
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.controller.revocation.store import (
    ANNOTATION_REVOKE,
    ANNOTATION_REVOKED,
    NotOurs,
    ReasonError,
    Revocation,
    RevocationListConflict,
    RevocationStore,
    key_id,
    parse_reason,
)
from akv_issuer.runtime.controller import DONE, Controller, QueueGauges, Result
from akv_issuer.runtime.events import NORMAL, WARNING, EventRecorder, ObjectRef
from akv_issuer.runtime.informer import object_key
from akv_issuer.runtime.queue import Backoff

log = logging.getLogger(__name__)

EVENT_REVOKED: Final = "Revoked"
EVENT_REFUSED: Final = "RevocationRefused"
EVENT_DELAYED: Final = "RevocationDelayed"
# Waiting for the issuer's check (it is not Ready, or this process has not
# checked it yet) before the certificate can be verified against its CA.
UNCHECKED_RETRY: Final = 10.0
# The controller may not write the issuer's revocation ConfigMap: an
# administrator has to grant it; look again this often meanwhile.
FORBIDDEN_RETRY: Final = 120.0


class RevocationRefused(Exception):
    """The revocation can never be done as asked; the message says why."""


class Revoker:
    def __init__(
        self,
        client: AsyncClient,
        issuers: IssuerSide,
        store: RevocationStore,
        locks: IssuerLocks,
        metrics: Metrics,
        events: EventRecorder,
        on_revoked: Callable[[IssuerKey], None],
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._client = client
        self._issuers = issuers
        self._store = store
        self._locks = locks
        self._metrics = metrics
        self._events = events
        self._on_revoked = on_revoked
        self._now = now
        self.controller: Controller[str] = Controller(
            "revocations",
            self.reconcile,
            workers=2,
            backoff=Backoff(base=1.0, cap=120.0),
            gauges=QueueGauges(metrics.queue_depth, metrics.queue_delayed),
            unexpected=metrics.unexpected,
        )
        # (uid, message) of the last refusal per request, so a relist or an
        # unrelated update does not repeat the same Warning.
        self._refused: dict[str, tuple[str, str]] = {}

    # -- informer handler -------------------------------------------------------

    def on_upsert(self, obj: dict[str, Any]) -> None:
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        key = object_key(obj)
        if ANNOTATION_REVOKE in annotations and ANNOTATION_REVOKED not in annotations:
            self.controller.enqueue(key)
        else:
            self._refused.pop(key, None)

    def on_delete(self, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        self._refused.pop(key, None)
        self.controller.cancel(key)

    def on_listed(self, keys: set[str]) -> None:
        for key in [k for k in self._refused if k not in keys]:
            del self._refused[key]

    # -- reconcile ---------------------------------------------------------------

    async def reconcile(self, key: str, failures: int) -> Result:
        namespace, _, name = key.rpartition("/")
        try:
            obj = typed(
                dict(await self._client.get(CertificateRequest, name, namespace=namespace)),
                CertificateRequestObject,
            )
        except ApiError as err:
            if err.status.code == 404:
                return DONE
            raise
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if ANNOTATION_REVOKE not in annotations or ANNOTATION_REVOKED in annotations:
            return DONE
        try:
            return await self._revoke(key, obj, str(annotations[ANNOTATION_REVOKE]))
        except RevocationRefused as refusal:
            await self._refuse(key, obj, str(refusal))
            return DONE

    async def _revoke(self, key: str, obj: CertificateRequestObject, value: str) -> Result:
        issuer = addressed_issuer(obj)
        if issuer is None:
            raise RevocationRefused(
                "the request is not addressed to an azure-keyvault-issuer issuer"
            )
        try:
            reason = parse_reason(value)
        except ReasonError as err:
            raise RevocationRefused(str(err)) from None
        ready = find_condition(conditions_of(obj), str(CertificateRequestCondition.READY))
        if ready is None or ready.reason != "Issued":
            state = f"Ready reason {ready.reason}" if ready is not None else "no Ready condition"
            raise RevocationRefused(
                f"the request is not Issued ({state}): only an issued certificate can be "
                "revoked; the annotation is acted on if the request is issued later"
            )
        leaf = first_certificate((obj.get("status") or {}).get("certificate"))
        if leaf is None:
            raise RevocationRefused("status.certificate holds no readable certificate")
        view, checked = self._issuers.lookup(issuer)
        if view is None:
            raise RevocationRefused(f"{issuer} does not exist")
        if checked is None:
            self._issuers.request_check(issuer)
            await self._delay(
                key, obj, f"{issuer} is not Ready; the revocation waits for its next check"
            )
            return Result.retry(UNCHECKED_RETRY)
        checked = _verify(leaf, checked, issuer)
        serial = f"{leaf.serial_number:x}"
        revocation = Revocation(
            serial=leaf.serial_number,
            reason=reason,
            revoked_at=self._now().replace(microsecond=0),
            not_after=leaf.not_valid_after_utc,
            ca_key_id=key_id(checked.key_info.public_key),
            request=key,
        )
        where = "{}/{}".format(*self._store.where(issuer))
        try:
            recorded = await self._record(issuer, revocation)
        except ApiError as err:
            if not permissions.is_forbidden(err):
                raise
            message = (
                f"certificate serial {serial} cannot be recorded as revoked in ConfigMap "
                f"{where}: {self._store.permission(issuer).missing()}; retried every "
                f"{FORBIDDEN_RETRY:.0f}s"
            )
            await self._forbidden(key, obj, message)
            return Result.retry(FORBIDDEN_RETRY)
        confirmed = await self._mark(obj, recorded)
        if not confirmed:
            # Recorded (the next CRL lists it), but the request cannot carry
            # the confirmation: say so once; the record is the fact.
            await self._forbidden(
                key,
                obj,
                f"certificate serial {serial} is revoked (recorded in ConfigMap {where}, "
                f"listed in the issuer's next CRL), but the request is not annotated "
                f"{ANNOTATION_REVOKED}: {permissions.REVOCATION.missing()}",
            )
            if recorded is not revocation:
                return DONE  # recorded before, and reported then
        self._refused.pop(key, None)
        self._metrics.revocations.labels(*issuer.labels, "accepted").inc()
        message = (
            f"certificate serial {serial} revoked ({recorded.reason}); "
            f"recorded in ConfigMap {where}"
        )
        if recorded.revoked_at != revocation.revoked_at:
            message += f" (already since {format_time(recorded.revoked_at)})"
        await self._events.record(ObjectRef.of(obj), NORMAL, EVENT_REVOKED, message)
        issuer_obj = self._issuers.issuer_object(issuer)
        if issuer_obj is not None:
            await self._events.record(
                ObjectRef.of(issuer_obj),
                NORMAL,
                EVENT_REVOKED,
                f"certificate serial {serial} of CertificateRequest {key} revoked "
                f"({recorded.reason})",
            )
        log.info("revoked serial %s, issued by %s (%s)", serial, issuer, recorded.reason)
        audit.emit(
            audit.revoked(
                request=audit.RequestRef.of(CERTIFICATE_REQUEST_KIND, obj),
                requester=audit.requester_of(obj),
                issuer=issuer,
                certificate=leaf,
                ca=checked.audit_ca,
                reason=str(recorded.reason),
                revoked_at=recorded.revoked_at,
                recorded_in=where,
                at=self._now(),
            )
        )
        self._on_revoked(issuer)
        return DONE

    async def _record(self, issuer: IssuerKey, revocation: Revocation) -> Revocation:
        """Add ``revocation`` to the issuer's list (or find it there): durable on return."""
        async with self._locks.hold(issuer):
            for _attempt in range(10):
                try:
                    current = await self._store.read(issuer)
                except NotOurs as err:
                    raise RevocationRefused(f"{err}; nothing recorded") from None
                existing = current.find(revocation.serial)
                if existing is not None:
                    return existing
                try:
                    await self._store.write(
                        issuer, current, revocations=current.with_revocation(revocation)
                    )
                except RevocationListConflict:
                    continue
                except OverflowError as err:
                    raise RevocationRefused(str(err)) from None
                return revocation
        raise RuntimeError("the revocation ConfigMap kept changing; retrying")

    async def _mark(self, obj: CertificateRequestObject, recorded: Revocation) -> bool:
        """Annotate the request with the accepted revocation; False when the
        controller may not (rbac.revocation is off)."""
        meta = obj.get("metadata") or {}
        value = (
            f"serial={recorded.serial_hex} reason={recorded.reason} "
            f"at={format_time(recorded.revoked_at)}"
        )
        try:
            await self._client.patch(
                CertificateRequest,
                str(meta.get("name")),
                {"metadata": {"annotations": {ANNOTATION_REVOKED: value}}},
                namespace=str(meta.get("namespace")),
                patch_type=PatchType.MERGE,
            )
        except ApiError as err:
            if permissions.is_forbidden(err):
                return False
            if err.status.code != 404:
                raise
        return True

    async def _forbidden(self, key: str, obj: CertificateRequestObject, message: str) -> None:
        """A Warning ``Forbidden`` on the request, once per distinct message."""
        if self._refused.get(key) == ("forbidden", message):
            return
        self._refused[key] = ("forbidden", message)
        log.warning("revocation of %s: %s", key, message)
        await self._events.record(ObjectRef.of(obj), WARNING, permissions.REASON_FORBIDDEN, message)

    async def _refuse(self, key: str, obj: CertificateRequestObject, message: str) -> None:
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        issuer = addressed_issuer(obj)
        if issuer is not None:
            self._metrics.revocations.labels(*issuer.labels, "refused").inc()
        if self._refused.get(key) == (uid, message):
            return
        self._refused[key] = (uid, message)
        log.warning("revocation refused: %s", message)
        await self._events.record(ObjectRef.of(obj), WARNING, EVENT_REFUSED, message)

    async def _delay(self, key: str, obj: CertificateRequestObject, message: str) -> None:
        if self._refused.get(key) == ("delay", message):
            return
        self._refused[key] = ("delay", message)
        await self._events.record(ObjectRef.of(obj), WARNING, EVENT_DELAYED, message)


def _verify(leaf: x509.Certificate, checked: CheckedIssuer, issuer: IssuerKey) -> CheckedIssuer:
    """The leaf was signed by the issuer's current CA key under its name (in a CA pool:
    by one member's); what signing with that key needs (its key identifies the CRL)."""
    for signer in [m.checked for m in checked.members] or [checked]:
        try:
            leaf.verify_directly_issued_by(signer.ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return signer
    if checked.members:
        raise RevocationRefused(
            f"certificate serial {leaf.serial_number:x} (issuer "
            f"{leaf.issuer.rfc4514_string()}) was not signed by any current member of the CA "
            f"pool of {issuer}; a certificate of a previous CA key, or of a member set aside "
            "(invalid, or its vault unreachable at the last check), is not covered by this "
            "issuer's CRLs"
        )
    try:
        leaf.verify_directly_issued_by(checked.ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise RevocationRefused(
            f"certificate serial {leaf.serial_number:x} (issuer "
            f"{leaf.issuer.rfc4514_string()}) was not signed by the current CA of {issuer} "
            f"({checked.ca_cert.subject.rfc4514_string()}); a certificate of a previous CA "
            "key is not covered by this issuer's CRL"
        ) from None
    return checked


class IssuerLocks:
    """One lock per issuer: a revocation and a CRL re-sign never interleave their
    read-modify-write of the same ConfigMap in this process (the resourceVersion
    precondition covers other processes)."""

    def __init__(self) -> None:
        self._locks: dict[IssuerKey, asyncio.Lock] = {}

    def hold(self, key: IssuerKey) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())
