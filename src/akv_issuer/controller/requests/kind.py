"""What a request kind must tell the request flow, and the updates it writes.

The request flow (:mod:`.flow`) is written once; each kind of request
(cert-manager's CertificateRequest, Kubernetes' CertificateSigningRequest and
PodCertificateRequest) is a small adapter that only *reads* a request's parameters and *writes* its
result in its own fields, like the request object helpers of cert-manager's
issuer-lib. Adding a third kind means writing one more adapter.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol, TypeVar

from akv_issuer.controller.api.objects import HasMetadata
from akv_issuer.controller.core import CheckedIssuer
from akv_issuer.controller.observability.audit import Requester
from akv_issuer.controller.requests.decide import RequestView
from akv_issuer.pki import IssuanceRequest
from akv_issuer.runtime.kubeapi import ApiResource


@dataclass(frozen=True, slots=True)
class Pending:
    """Not finished: waiting for the issuer, or retrying a transient error."""

    reason: str  # IssuerNotFound, IssuerNotReady, RetryableError
    message: str  # the whole line a user reads, reason first


@dataclass(frozen=True, slots=True)
class Denied:
    message: str
    # "Denied": an approver denied it (CertificateRequest); any other reason:
    # the signer's own policy refused it (PodCertificateRequest, which has no
    # approval), in the API's words where it has them (UnsupportedKeyType).
    reason: str = "Denied"


@dataclass(frozen=True, slots=True)
class Failed:
    """Can never succeed: the CSR or the parameters are wrong, or the retry budget is spent."""

    reason: str  # InvalidCSR, PolicyViolation, InvalidRequest, RetryBudgetExhausted
    message: str
    invalid: bool  # the request itself is at fault (not the budget)


@dataclass(frozen=True, slots=True)
class Issued:
    certificate_pem: bytes  # the leaf, then the intermediates below the root
    ca_pem: bytes  # the root, or the top of the chain


StatusUpdate = Pending | Denied | Failed | Issued


class RequestConflict(Exception):
    """The request changed since it was read (HTTP 409): read it again and decide anew."""


# The kind's object type (api.objects: CertificateRequestObject, KubeCSRObject).
O_contra = TypeVar("O_contra", bound=HasMetadata, contravariant=True)


class RequestKind(Protocol[O_contra]):
    name: str  # plural resource name: the work queue's and the log's name
    object_kind: str  # the API kind, as audit records name it
    resource: ApiResource  # where requests of this kind are watched, read and written
    # The fields the informer decodes for the flow (and the revoker): a
    # TypedDict (akv_issuer.runtime.decoding); what the flow keeps it reads whole.
    shape: type

    def view(self, obj: O_contra) -> RequestView:
        """What the state machine needs: addressed issuer, approval, finished."""
        ...

    # How long a request of this kind waits for a missing or not-Ready issuer
    # before it ends Failed; None: as long as it takes (a kind with a Pending
    # state). A PodCertificateRequest's status cannot say Pending.
    wait_limit: dt.timedelta | None

    async def admit(self, obj: O_contra, issuer: CheckedIssuer) -> Denied | Failed | None:
        """For a kind that nothing approves (PodCertificateRequest): whether the
        issuer's policy allows the request, checked right before it is signed;
        None: allowed. Kinds with an approval step return None."""
        ...

    def parameters(self, obj: O_contra, issuer: CheckedIssuer) -> tuple[str, IssuanceRequest]:
        """The base64 PEM CSR and the issuance parameters; ``ValueError`` names a
        bad field. ``issuer`` for a kind whose issuer decides the identity."""
        ...

    def csr(self, obj: O_contra) -> str:
        """The base64 PEM CSR as written (for the record of a refusal, which
        names what was asked for even when the other parameters are bad)."""
        ...

    def requester(self, obj: O_contra) -> Requester:
        """Who created the request, as the API server recorded it."""
        ...

    def shows(self, obj: O_contra, update: StatusUpdate) -> bool:
        """Whether ``obj`` already shows ``update`` (so writing it would be a no-op)."""
        ...

    async def write(
        self, obj: O_contra, update: StatusUpdate, now: dt.datetime
    ) -> HasMetadata | None:
        """Write ``update`` into the request's status; the object as written (at
        least its metadata: the flow reads its resourceVersion), or None when
        this kind has no field for it. Raises :class:`RequestConflict` when the
        request changed since ``obj`` was read."""
        ...
