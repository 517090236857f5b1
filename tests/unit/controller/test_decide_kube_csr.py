"""Kubernetes CSRs: which ones we sign, and the issuance parameters read from them."""

import datetime as dt
import re
from typing import Any

import pytest

from akv_issuer.controller.api import GROUP
from akv_issuer.controller.core import IssuerView
from akv_issuer.controller.requests.decide import Ignore, SetPending, Sign, WaitForApproval, decide
from akv_issuer.controller.requests.kubecsr import cluster_issuer_of_signer, issuance_request, view
from akv_issuer.pki import DEFAULT_DURATION, DEFAULT_USAGES

SIGNER = f"clusterissuers.{GROUP}/root"
READY = IssuerView.from_object(
    {
        "metadata": {"generation": 1},
        "status": {"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 1}]},
    }
)


def csr(
    *conditions: str, signer: str = SIGNER, certificate: str | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "c", "uid": "u", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"signerName": signer, "request": "", **spec},
        "status": {
            "conditions": [{"type": t, "status": "True"} for t in conditions],
            "certificate": certificate,
        },
    }


@pytest.mark.parametrize(
    ("signer", "name"),
    [
        (SIGNER, "root"),
        (f"issuers.{GROUP}/team-a.ca", None),  # namespaced Issuers never sign CSRs
        (f"clusterissuers.{GROUP}/", None),
        (f"clusterissuers.{GROUP}/a/b", None),
        ("clusterissuers.cert-manager.io/root", None),
        ("kubernetes.io/kube-apiserver-client", None),
    ],
)
def test_cluster_issuer_of_signer(signer: str, name: str | None) -> None:
    assert cluster_issuer_of_signer(signer, GROUP) == name


@pytest.mark.parametrize(
    ("obj", "issuer", "expected"),
    [
        (csr("Approved"), READY, Sign),
        (csr(), READY, WaitForApproval),
        (csr("Denied"), READY, Ignore),
        (csr("Approved", "Denied"), READY, Ignore),
        (csr("Approved", "Failed"), READY, Ignore),
        (csr("Approved", certificate="LS0t"), READY, Ignore),
        (csr("Approved", signer="example.com/other"), READY, Ignore),
        (csr("Approved"), None, SetPending),
        (csr("Approved"), IssuerView(generation=2, ready=READY.ready), SetPending),
    ],
)
def test_decide_kube_csr(obj: dict[str, Any], issuer: IssuerView | None, expected: type) -> None:
    assert isinstance(decide(view(obj), issuer), expected)


def test_missing_issuer_is_named_in_the_pending_message() -> None:
    action = decide(view(csr("Approved")), None)
    assert isinstance(action, SetPending)
    assert action.reason == "IssuerNotFound"
    assert action.message == "ClusterIssuer root does not exist"


def test_issuance_defaults() -> None:
    request = issuance_request(csr("Approved"))
    assert (request.duration, tuple(request.usages), request.is_ca) == (
        DEFAULT_DURATION,
        tuple(DEFAULT_USAGES),
        False,
    )


def test_expiration_seconds_wins_over_the_duration_annotation() -> None:
    obj = csr("Approved", expirationSeconds=3600, usages=["client auth"])
    obj["metadata"]["annotations"] = {
        "experimental.cert-manager.io/request-duration": "48h",
        "experimental.cert-manager.io/request-is-ca": "true",
    }
    request = issuance_request(obj)
    assert request.duration == dt.timedelta(hours=1)
    assert tuple(request.usages) == ("client auth",)
    assert request.is_ca is True
    del obj["spec"]["expirationSeconds"]
    assert issuance_request(obj).duration == dt.timedelta(hours=48)


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            {"experimental.cert-manager.io/request-duration": "2 days"},
            "annotation experimental.cert-manager.io/request-duration: ",
        ),
        (
            {"experimental.cert-manager.io/request-is-ca": "yes"},
            'annotation experimental.cert-manager.io/request-is-ca must be "true" or "false"',
        ),
    ],
)
def test_bad_annotations_are_named(annotations: dict[str, str], message: str) -> None:
    obj = csr("Approved")
    obj["metadata"]["annotations"] = annotations
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        issuance_request(obj)
