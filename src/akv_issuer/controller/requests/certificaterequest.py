"""cert-manager CertificateRequests (``cert-manager.io/v1``): read and written.

Read: ``spec.issuerRef`` (ours when its group is ours and its kind one of
our kinds; an empty kind means ``Issuer``, as in cert-manager; an Issuer is
looked up in the request's own namespace), the Approved/Denied conditions,
``spec.request``, ``spec.duration``, ``spec.usages``, ``spec.isCA``, and for
the audit records the requester (``spec.username``, ``spec.uid``,
``spec.groups``, which cert-manager's webhook fills in from the creating
user's authenticated identity and keeps immutable).

Written, through the status subresource with server-side apply under our
field manager (cert-manager's ``conditions`` list is a map keyed by type, so
the apply owns ``Ready`` and ``InvalidRequest`` and never touches
``Approved``/``Denied``): ``Ready`` with reason ``Pending``, ``Issued``,
``Failed`` or ``Denied``; ``InvalidRequest=True`` when the request itself is
at fault; ``failureTime`` with every final failure; ``certificate`` and
``ca`` when issued. ``lastTransitionTime`` moves only when the status of a
condition changes.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import TypedDict

from lightkube import ApiError

from akv_issuer.controller.api import (
    CERT_MANAGER_GROUP,
    CERT_MANAGER_VERSION,
    CERTIFICATE_REQUEST_KIND,
    CERTIFICATE_REQUESTS,
    CertificateRequestCondition,
    CertificateRequestReason,
    Condition,
    conditions_of,
    find_condition,
    format_time,
    make_condition,
    parse_go_duration,
)
from akv_issuer.controller.api.objects import (
    CertificateRequestObject,
    CertificateRequestStatus,
    ConditionFields,
    HasMetadata,
    IssuerRef,
    ObjectMeta,
    typed,
)
from akv_issuer.controller.core import CheckedIssuer, addressed_issuer
from akv_issuer.controller.observability.audit import Requester, requester_of
from akv_issuer.controller.requests.decide import RequestView
from akv_issuer.controller.requests.kind import (
    Denied,
    Failed,
    Pending,
    RequestConflict,
    StatusUpdate,
)
from akv_issuer.pki import DEFAULT_DURATION, DEFAULT_USAGES, IssuanceRequest
from akv_issuer.runtime.kubeapi import APPLY_PATCH, PARTIAL_METADATA, ApiResource, KubeApi

API_VERSION = f"{CERT_MANAGER_GROUP}/{CERT_MANAGER_VERSION}"
READY = str(CertificateRequestCondition.READY)
APPROVED = str(CertificateRequestCondition.APPROVED)
DENIED = str(CertificateRequestCondition.DENIED)
INVALID_REQUEST = str(CertificateRequestCondition.INVALID_REQUEST)
FINAL_REASONS = frozenset(
    {
        str(CertificateRequestReason.ISSUED),
        str(CertificateRequestReason.FAILED),
        str(CertificateRequestReason.DENIED),
    }
)


class _Metadata(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    creationTimestamp: str
    annotations: dict[str, str]  # the revoker's revoke/revoked


class _Spec(TypedDict, total=False):
    issuerRef: IssuerRef


class _Status(TypedDict, total=False):
    conditions: list[ConditionFields]


class RequestFields(TypedDict, total=False):
    """What the informer decodes of each CertificateRequest: what :func:`view`
    and the revoker's handler read (no CSR, certificate, CA or managedFields,
    ~5 KB of the ~5.6 KB of a finished one). Lists and watch events of
    finished requests are decoded into this only; the flow keeps whole the
    few it works on."""

    metadata: _Metadata
    spec: _Spec
    status: _Status


def is_finished(conditions: tuple[Condition, ...]) -> bool:
    """Ready with reason Issued, Failed or Denied, or InvalidRequest=True."""
    ready = find_condition(conditions, READY)
    if ready is not None and ready.reason in FINAL_REASONS:
        return True
    invalid = find_condition(conditions, INVALID_REQUEST)
    return invalid is not None and invalid.status == "True"


def view(obj: CertificateRequestObject) -> RequestView:
    conditions = conditions_of(obj)
    approved = find_condition(conditions, APPROVED)
    denied = find_condition(conditions, DENIED)
    return RequestView.read(
        obj,
        issuer=addressed_issuer(obj),
        finished=is_finished(conditions),
        approved=approved is not None and approved.status == "True",
        denied=(
            denied.message or "The CertificateRequest was denied by an approval controller"
            if denied is not None and denied.status == "True"
            else None
        ),
    )


class CertificateRequests:
    """The request kind of cert-manager's CertificateRequests."""

    name = "certificaterequests"
    object_kind = CERTIFICATE_REQUEST_KIND
    resource: ApiResource = CERTIFICATE_REQUESTS
    shape: type = RequestFields

    def __init__(self, api: KubeApi, field_manager: str) -> None:
        self._api = api
        self._field_manager = field_manager

    def view(self, obj: CertificateRequestObject) -> RequestView:
        return view(obj)

    def csr(self, obj: CertificateRequestObject) -> str:
        return str((obj.get("spec") or {}).get("request") or "")

    def requester(self, obj: CertificateRequestObject) -> Requester:
        return requester_of(obj)

    # Pending is a state of this kind: it waits for its issuer as long as it takes.
    wait_limit: dt.timedelta | None = None

    async def admit(
        self, obj: CertificateRequestObject, issuer: CheckedIssuer
    ) -> Denied | Failed | None:
        return None  # approved (by an approver): nothing more to admit

    def parameters(
        self, obj: CertificateRequestObject, issuer: CheckedIssuer
    ) -> tuple[str, IssuanceRequest]:
        spec = obj.get("spec") or {}
        duration = spec.get("duration")
        usages = spec.get("usages")
        return self.csr(obj), IssuanceRequest(
            duration=parse_go_duration(duration) if duration else DEFAULT_DURATION,
            usages=tuple(usages) if usages else DEFAULT_USAGES,
            is_ca=bool(spec.get("isCA")),
        )

    def shows(self, obj: CertificateRequestObject, update: StatusUpdate) -> bool:
        if not isinstance(update, Pending):
            return False
        ready = find_condition(conditions_of(obj), READY)
        return (
            ready is not None
            and ready.status == "False"
            and ready.reason == CertificateRequestReason.PENDING
            and ready.message == update.message
        )

    async def write(
        self, obj: CertificateRequestObject, update: StatusUpdate, now: dt.datetime
    ) -> HasMetadata | None:
        old_ready = find_condition(conditions_of(obj), READY)
        precondition = None
        status: CertificateRequestStatus
        if isinstance(update, Pending):
            ready = _ready(
                "False", CertificateRequestReason.PENDING, update.message, old_ready, now
            )
            status = {"conditions": [ready]}
        elif isinstance(update, Denied):
            message = f"The CertificateRequest was denied: {update.message}"
            ready = _ready("False", CertificateRequestReason.DENIED, message, old_ready, now)
            status = {"conditions": [ready], "failureTime": format_time(now)}
        elif isinstance(update, Failed):
            ready = _ready("False", CertificateRequestReason.FAILED, update.message, old_ready, now)
            conditions = [ready]
            if update.invalid:
                conditions.append(
                    make_condition(
                        CertificateRequestCondition.INVALID_REQUEST,
                        "True",
                        CertificateRequestReason.FAILED,
                        update.message,
                        observed_generation=None,
                        now=now,
                    )
                )
            status = {"conditions": conditions, "failureTime": format_time(now)}
        else:
            ready = _ready(
                "True", CertificateRequestReason.ISSUED, "Certificate issued", old_ready, now
            )
            status = {
                "conditions": [ready],
                "certificate": _b64(update.certificate_pem),
                "ca": _b64(update.ca_pem),
            }
            # A precondition: if the request changed since we read it (maybe
            # another replica finished it), the write fails with 409 instead
            # of replacing a certificate that is already there.
            precondition = str((obj.get("metadata") or {}).get("resourceVersion") or "") or None
        return await self._apply(obj, status, precondition)

    async def _apply(
        self,
        obj: CertificateRequestObject,
        status: CertificateRequestStatus,
        resource_version: str | None,
    ) -> HasMetadata:
        meta = obj.get("metadata") or {}
        name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
        metadata: ObjectMeta = {"name": name, "namespace": namespace}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        body: CertificateRequestObject = {
            "apiVersion": API_VERSION,
            "kind": CERTIFICATE_REQUEST_KIND,
            "metadata": metadata,
            "status": status,
        }
        try:
            # The flow reads only the written object's metadata, so the API
            # server answers with PartialObjectMetadata and neither it nor we
            # encode and decode the whole request with its certificate again
            # (~4.8 KB -> ~0.7 KB per write).
            written = await self._api.patch(
                CERTIFICATE_REQUESTS,
                name,
                dict(body),
                namespace=namespace,
                subresource="status",
                content_type=APPLY_PATCH,
                force=True,
                field_manager=self._field_manager,
                accept=PARTIAL_METADATA,
            )
        except ApiError as err:
            if err.status.code == 409:
                raise RequestConflict(f"{namespace}/{name}") from err
            raise
        return typed(written, HasMetadata)


def _ready(
    status: str, reason: str, message: str, old: Condition | None, now: dt.datetime
) -> ConditionFields:
    condition = make_condition(
        CertificateRequestCondition.READY,
        status,
        reason,
        message,
        observed_generation=None,
        now=now,
    )
    if old is not None and old.status == status and old.last_transition_time:
        condition["lastTransitionTime"] = old.last_transition_time
    return condition


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
