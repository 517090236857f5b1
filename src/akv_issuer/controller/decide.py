"""The state machine of CertificateRequests and Kubernetes CSRs as pure functions.

Everything that decides *what* to do with a request lives here and takes its
inputs as plain values (the request, the issuer's observed state, the time);
the reconciler only carries the decision out. Keeping it pure makes every
branch unit-testable without a cluster and keeps the state machine in one
place, as cert-manager's issuer-lib does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from akv_issuer.controller.api import (
    CertificateRequestCondition,
    CertificateRequestEvent,
    CertificateRequestReason,
    PendingReason,
)

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


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Condition:
        gen = raw.get("observedGeneration")
        return cls(
            type=str(raw.get("type", "")),
            status=str(raw.get("status", "")),
            reason=str(raw.get("reason") or ""),
            message=str(raw.get("message") or ""),
            last_transition_time=raw.get("lastTransitionTime"),
            observed_generation=int(gen) if gen is not None else None,
        )


def find_condition(conditions: tuple[Condition, ...], type_: str) -> Condition | None:
    for cond in conditions:
        if cond.type == type_:
            return cond
    return None


def parse_time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def format_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class IssuerRef:
    name: str
    kind: str
    group: str


@dataclass(frozen=True, slots=True)
class RequestView:
    namespace: str
    name: str
    uid: str
    created: dt.datetime | None
    issuer_ref: IssuerRef
    conditions: tuple[Condition, ...]

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> RequestView:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        ref = spec.get("issuerRef") or {}
        status = obj.get("status") or {}
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            created=parse_time(meta.get("creationTimestamp")),
            issuer_ref=IssuerRef(
                name=str(ref.get("name") or ""),
                # cert-manager treats an empty kind as a namespaced Issuer.
                kind=str(ref.get("kind") or "Issuer"),
                group=str(ref.get("group") or ""),
            ),
            conditions=tuple(Condition.from_dict(c) for c in status.get("conditions") or ()),
        )

    def condition(self, type_: str) -> Condition | None:
        return find_condition(self.conditions, type_)


@dataclass(frozen=True, slots=True)
class IssuerView:
    """What the state machine needs to know of an issuer object."""

    generation: int
    ready: Condition | None

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> IssuerView:
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        conditions = tuple(Condition.from_dict(c) for c in status.get("conditions") or ())
        return cls(
            generation=int(meta.get("generation") or 0), ready=find_condition(conditions, READY)
        )

    def is_ready(self) -> bool:
        ready = self.ready
        if ready is None or ready.status != "True":
            return False
        # A Ready condition written for an older spec says nothing about the
        # current one: treat it as not ready until the check catches up.
        # One without observedGeneration (the Go version wrote such) is not ours.
        if self.generation == 0:
            return True
        return (
            ready.observed_generation is not None and ready.observed_generation >= self.generation
        )


# -- decisions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ignore:
    why: str


@dataclass(frozen=True, slots=True)
class WaitForApproval:
    pass


@dataclass(frozen=True, slots=True)
class MarkDenied:
    message: str


@dataclass(frozen=True, slots=True)
class SetPending:
    reason: str  # IssuerNotFound / IssuerNotReady
    message: str
    event_reason: str


@dataclass(frozen=True, slots=True)
class Sign:
    pass


Action = Ignore | WaitForApproval | MarkDenied | SetPending | Sign


def is_ours(ref: IssuerRef, group: str, kinds: frozenset[str]) -> bool:
    return ref.group == group and ref.kind in kinds


def is_finished(request: RequestView) -> bool:
    ready = request.condition(READY)
    if ready is not None and ready.reason in FINAL_REASONS:
        return True
    invalid = request.condition(INVALID_REQUEST)
    return invalid is not None and invalid.status == "True"


def decide(
    request: RequestView,
    issuer: IssuerView | None,
    *,
    group: str,
    kinds: frozenset[str],
) -> Action:
    """What to do with ``request`` given its issuer (None when it does not exist)."""
    if not is_ours(request.issuer_ref, group, kinds):
        return Ignore("issuerRef names another issuer type")
    if is_finished(request):
        return Ignore("already finished")
    denied = request.condition(DENIED)
    if denied is not None and denied.status == "True":
        return MarkDenied(
            denied.message or "The CertificateRequest was denied by an approval controller"
        )
    approved = request.condition(APPROVED)
    if approved is None or approved.status != "True":
        return WaitForApproval()
    ref = request.issuer_ref
    where = f" in namespace {request.namespace}" if ref.kind == "Issuer" else ""
    return _wait_for_issuer(ref.kind, ref.name, where, issuer) or Sign()


def _wait_for_issuer(
    kind: str, name: str, where: str, issuer: IssuerView | None
) -> SetPending | None:
    """Why an approved request must wait for its issuer, or None when it may be signed."""
    if issuer is None:
        return SetPending(
            PendingReason.ISSUER_NOT_FOUND,
            f"{kind} {name}{where} does not exist",
            CertificateRequestEvent.WAITING_FOR_ISSUER_EXIST,
        )
    if issuer.is_ready():
        return None
    ready = issuer.ready
    detail = ""
    if ready is None:
        detail = "it has not been checked yet"
    elif ready.status == "True":
        detail = "its Ready condition is for an older generation"
    else:
        detail = f"{ready.reason}: {ready.message}" if ready.message else ready.reason
    return SetPending(
        PendingReason.ISSUER_NOT_READY,
        f"{kind} {name} is not ready ({detail})",
        CertificateRequestEvent.WAITING_FOR_ISSUER_READY,
    )


# -- Kubernetes CertificateSigningRequests (certificates.k8s.io/v1) --------------

# Kubernetes' own condition types; a signer adds only Failed.
CSR_APPROVED = "Approved"
CSR_DENIED = "Denied"
CSR_FAILED = "Failed"


@dataclass(frozen=True, slots=True)
class KubeCSRView:
    name: str
    uid: str
    created: dt.datetime | None
    signer_name: str
    conditions: tuple[Condition, ...]
    has_certificate: bool

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> KubeCSRView:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        return cls(
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            created=parse_time(meta.get("creationTimestamp")),
            signer_name=str(spec.get("signerName") or ""),
            conditions=tuple(Condition.from_dict(c) for c in status.get("conditions") or ()),
            has_certificate=bool(status.get("certificate")),
        )

    def condition_true(self, type_: str) -> bool:
        found = find_condition(self.conditions, type_)
        return found is not None and found.status == "True"

    def is_finished(self) -> bool:
        # Denied is final too: Kubernetes CSRs have no terminal condition for a
        # signer to add after a denial, so there is nothing left to do.
        return (
            self.has_certificate
            or self.condition_true(CSR_FAILED)
            or self.condition_true(CSR_DENIED)
        )


def cluster_issuer_of_signer(signer_name: str, group: str) -> str | None:
    """The ClusterIssuer a signerName ``clusterissuers.<group>/<name>`` names, else None.

    Only ClusterIssuers sign Kubernetes CSRs: a CSR is cluster-scoped, so a
    namespaced Issuer serving one would let anyone who may create CSRs use a
    namespace's CA without any right in that namespace.
    """
    prefix = f"clusterissuers.{group}/"
    if not signer_name.startswith(prefix):
        return None
    name = signer_name[len(prefix) :]
    return name if name and "/" not in name else None


def decide_kube_csr(csr: KubeCSRView, issuer: IssuerView | None, *, group: str) -> Action:
    """What to do with a Kubernetes CSR given its ClusterIssuer (None if missing)."""
    name = cluster_issuer_of_signer(csr.signer_name, group)
    if name is None:
        return Ignore("signerName names another signer")
    if csr.is_finished():
        return Ignore("already finished")
    if not csr.condition_true(CSR_APPROVED):
        return WaitForApproval()
    return _wait_for_issuer("ClusterIssuer", name, "", issuer) or Sign()


@dataclass(frozen=True, slots=True)
class Retry:
    delay: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    message: str


def after_transient_error(
    created: dt.datetime | None,
    now: dt.datetime,
    budget: dt.timedelta,
    backoff_delay: float,
    retry_after: float | None,
) -> Retry | GiveUp:
    """A throttled or transient signing failure: retry, or fail once the budget is spent.

    The budget runs from the request's creationTimestamp, so a restart of the
    controller does not reset it. A retry that would land past the deadline is
    shortened to land on it, so the final attempt happens before giving up.
    """
    delay = max(backoff_delay, retry_after or 0.0)
    if created is None:
        return Retry(delay)
    deadline = created + budget
    if now >= deadline:
        return GiveUp(f"retry budget of {_human(budget)} since the request was created is spent")
    remaining = (deadline - now).total_seconds()
    return Retry(min(delay, remaining))


def _human(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"
