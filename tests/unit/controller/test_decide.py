"""The CertificateRequest state machine (BRIEF section 3), branch by branch."""

import datetime as dt
from typing import Any

import pytest

from akv_issuer.controller.api import GROUP
from akv_issuer.controller.core import IssuerView
from akv_issuer.controller.requests.certificaterequest import view
from akv_issuer.controller.requests.decide import (
    GiveUp,
    Ignore,
    MarkDenied,
    RequestView,
    Retry,
    SetPending,
    Sign,
    WaitForApproval,
    after_transient_error,
    decide,
)

NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)


def request(
    *conditions: tuple[str, str, str],
    kind: str = "Issuer",
    group: str = GROUP,
) -> RequestView:
    obj: dict[str, Any] = {
        "metadata": {
            "namespace": "team-a",
            "name": "cr",
            "uid": "u1",
            "creationTimestamp": "2026-01-01T11:00:00Z",
        },
        "spec": {"issuerRef": {"name": "ca", "kind": kind, "group": group}},
        "status": {
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": f"{r} msg"}
                for t, s, r in conditions
            ]
        },
    }
    return view(obj)


APPROVED = ("Approved", "True", "cert-manager.io")


def issuer(
    status: str | None = "True", observed: int | None = 2, generation: int = 2
) -> IssuerView:
    conditions = []
    if status is not None:
        cond: dict[str, Any] = {"type": "Ready", "status": status, "reason": "Checked"}
        if observed is not None:
            cond["observedGeneration"] = observed
        conditions.append(cond)
    return IssuerView.from_object(
        {"metadata": {"generation": generation}, "status": {"conditions": conditions}}
    )


def run(req: RequestView, iss: IssuerView | None = None) -> Any:
    return decide(req, iss)


@pytest.mark.parametrize(
    ("kind", "group"),
    [
        ("Issuer", "cert-manager.io"),
        ("Issuer", ""),
        ("AWSPCAIssuer", GROUP),
        ("ClusterIssuer", "x.io"),
    ],
)
def test_requests_for_other_issuers_are_ignored(kind: str, group: str) -> None:
    assert isinstance(run(request(APPROVED, kind=kind, group=group), issuer()), Ignore)


@pytest.mark.parametrize(
    "final",
    [
        ("Ready", "True", "Issued"),
        ("Ready", "False", "Failed"),
        ("Ready", "False", "Denied"),
        ("InvalidRequest", "True", "BadCSR"),
    ],
)
def test_finished_requests_are_left_alone(final: tuple[str, str, str]) -> None:
    req = request(APPROVED, final)
    assert req.finished
    assert isinstance(run(req, issuer()), Ignore)


def test_pending_request_is_not_finished() -> None:
    assert not request(APPROVED, ("Ready", "False", "Pending")).finished


def test_unapproved_request_waits_even_if_issuer_is_ready() -> None:
    assert isinstance(run(request(), issuer()), WaitForApproval)
    assert isinstance(run(request(("Approved", "False", "x")), issuer()), WaitForApproval)


def test_denied_request_is_marked_denied_even_without_issuer() -> None:
    action = run(request(("Denied", "True", "policy")), None)
    assert isinstance(action, MarkDenied)
    assert action.message == "policy msg"


def test_missing_issuer_leaves_request_pending_issuer_not_found() -> None:
    action = run(request(APPROVED), None)
    assert isinstance(action, SetPending)
    assert action.reason == "IssuerNotFound"
    assert action.event_reason == "WaitingForIssuerExist"
    assert "team-a" in action.message


@pytest.mark.parametrize(
    "iss",
    [
        issuer(status="False"),
        issuer(status=None),
        issuer(status="True", observed=1, generation=2),
        issuer(status="True", observed=None, generation=2),
    ],
)
def test_issuer_not_ready_or_stale_leaves_request_pending(iss: IssuerView) -> None:
    action = run(request(APPROVED), iss)
    assert isinstance(action, SetPending)
    assert action.reason == "IssuerNotReady"
    assert action.event_reason == "WaitingForIssuerReady"


def test_approved_request_with_ready_issuer_is_signed() -> None:
    assert isinstance(run(request(APPROVED, ("Ready", "False", "Pending")), issuer()), Sign)
    assert isinstance(run(request(APPROVED, kind="ClusterIssuer"), issuer()), Sign)


def test_empty_kind_means_issuer() -> None:
    req = request(APPROVED, kind="")
    assert req.issuer is not None
    assert req.issuer.kind == "Issuer"
    assert isinstance(run(req, issuer()), Sign)


BUDGET = dt.timedelta(hours=1)
CREATED = NOW - dt.timedelta(minutes=10)


def test_transient_error_within_budget_retries_with_backoff() -> None:
    assert after_transient_error(CREATED, NOW, BUDGET, 4.0, None) == Retry(4.0)


def test_retry_after_longer_than_backoff_is_honoured() -> None:
    assert after_transient_error(CREATED, NOW, BUDGET, 4.0, 30.0) == Retry(30.0)


def test_last_retry_lands_on_the_deadline() -> None:
    created = NOW - BUDGET + dt.timedelta(seconds=5)
    assert after_transient_error(created, NOW, BUDGET, 60.0, None) == Retry(5.0)


def test_spent_budget_gives_up() -> None:
    outcome = after_transient_error(NOW - BUDGET, NOW, BUDGET, 1.0, None)
    assert isinstance(outcome, GiveUp)
    assert "1h" in outcome.message
