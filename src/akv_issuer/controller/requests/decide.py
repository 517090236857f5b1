"""The state machine of a request, as pure functions, for every request kind.

Everything that decides *what* to do with a request lives here and takes its
inputs as plain values (the request as a :class:`RequestView`, the issuer's
observed state, the time); the request flow (:mod:`.flow`) only carries the
decision out, and each request kind only reads its fields into the view.
Keeping it pure makes every branch unit-testable without a cluster and keeps
the state machine in one place, as cert-manager's issuer-lib does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from akv_issuer.controller.api import (
    CertificateRequestEvent,
    PendingReason,
    parse_time,
)
from akv_issuer.controller.api.objects import HasMetadata
from akv_issuer.controller.core import IssuerKey, IssuerView


@dataclass(frozen=True, slots=True)
class RequestView:
    """What the state machine needs to know of a request, whatever its kind.

    Each request kind reads its own fields into this (see ``RequestKind.view``).
    """

    uid: str
    created: dt.datetime | None
    resource_version: int  # 0 when unreadable: "not newer than anything"
    issuer: IssuerKey | None  # the issuer it is addressed to; None: not one of ours
    finished: bool  # issued, failed or denied for good: nothing left to do
    approved: bool
    denied: str | None  # the denial's message, for a kind that records a denial
    # Whether the requester is known to be allowed to use the issuer. Only a
    # Kubernetes CSR for a namespaced Issuer's signer has to show it (a
    # SubjectAccessReview, made outside the flow, see kubecsr.py); until then
    # it is not signed. A CertificateRequest lives in its Issuer's namespace,
    # where whoever may create it may use the Issuer.
    referable: bool = True
    # A request addressed to us that can never be signed as written (a
    # PodCertificateRequest naming a malformed signer of our group, or a
    # namespaced Issuer of another namespace): ended at once.
    refusal: Refuse | None = None

    @classmethod
    def read(
        cls,
        obj: HasMetadata,
        *,
        issuer: IssuerKey | None,
        finished: bool,
        approved: bool,
        denied: str | None = None,
        referable: bool = True,
        refusal: Refuse | None = None,
    ) -> RequestView:
        """The view of ``obj``: identity and age from its metadata, the rest as
        its kind read it."""
        meta = obj.get("metadata") or {}
        try:
            resource_version = int(meta.get("resourceVersion") or 0)
        except (TypeError, ValueError):
            resource_version = 0
        return cls(
            uid=str(meta.get("uid") or ""),
            created=parse_time(meta.get("creationTimestamp")),
            resource_version=resource_version,
            issuer=issuer,
            finished=finished,
            approved=approved,
            denied=denied,
            referable=referable,
            refusal=refusal,
        )


# -- decisions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refuse:
    """End the request now: Denied (``denied``) or Failed, with ``reason``."""

    reason: str
    message: str
    denied: bool


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


Action = Ignore | WaitForApproval | MarkDenied | SetPending | Sign | Refuse


def decide(request: RequestView, issuer: IssuerView | None) -> Action:
    """What to do with ``request`` given its issuer (None when it does not exist)."""
    if request.issuer is None:
        return Ignore("addressed to another issuer")
    if request.finished:
        return Ignore("already finished")
    if request.refusal is not None:
        return request.refusal
    if request.denied is not None:
        return MarkDenied(request.denied)
    if not request.approved:
        return WaitForApproval()
    if not request.referable:
        # Checked first, so that a requester without the right learns nothing
        # of the issuer (not even whether it exists).
        return Ignore("the requester's right to use the issuer is not established yet")
    return _wait_for_issuer(request.issuer, issuer) or Sign()


def _wait_for_issuer(key: IssuerKey, issuer: IssuerView | None) -> SetPending | None:
    """Why an approved request must wait for its issuer, or None when it may be signed."""
    # An Issuer is looked up in the request's own namespace only; say which.
    where = f" in namespace {key.namespace}" if key.namespace else ""
    if issuer is None:
        return SetPending(
            PendingReason.ISSUER_NOT_FOUND,
            f"{key.kind} {key.name}{where} does not exist",
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
        f"{key.kind} {key.name} is not ready ({detail})",
        CertificateRequestEvent.WAITING_FOR_ISSUER_READY,
    )


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
