"""Kubernetes CSRs: which ones we sign, and the issuance parameters read from them."""

import datetime as dt
import re
from typing import Any

import pytest

from akv_issuer.controller.api import GROUP
from akv_issuer.controller.core import IssuerKey, IssuerView
from akv_issuer.controller.requests.csr_references import reference_review
from akv_issuer.controller.requests.decide import Ignore, SetPending, Sign, WaitForApproval, decide
from akv_issuer.controller.requests.kubecsr import (
    SignerNameError,
    cluster_issuer_of_signer,
    issuance_request,
    issuer_of_signer,
    view,
)
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
        (f"issuers.{GROUP}/team-a.ca", None),  # an Issuer's, see issuer_of_signer
        (f"clusterissuers.{GROUP}/", None),
        (f"clusterissuers.{GROUP}/a/b", None),
        ("clusterissuers.cert-manager.io/root", None),
        ("kubernetes.io/kube-apiserver-client", None),
    ],
)
def test_cluster_issuer_of_signer(signer: str, name: str | None) -> None:
    assert cluster_issuer_of_signer(signer, GROUP) == name


@pytest.mark.parametrize(
    ("signer", "issuer"),
    [
        (SIGNER, IssuerKey("ClusterIssuer", "", "root")),
        (f"issuers.{GROUP}/team-a.ca", IssuerKey("Issuer", "team-a", "ca")),
        # The namespace is a DNS label: it ends at the first dot, the name may hold more.
        (f"issuers.{GROUP}/team-a.ca.v2", IssuerKey("Issuer", "team-a", "ca.v2")),
        ("issuers.cert-manager.io/team-a.ca", None),
        (f"issuers.{GROUP}.example/team-a.ca", None),
        ("kubernetes.io/kube-apiserver-client", None),
    ],
)
def test_issuer_of_signer(signer: str, issuer: IssuerKey | None) -> None:
    assert issuer_of_signer(signer, GROUP) == issuer


@pytest.mark.parametrize(
    "signer",
    [
        f"issuers.{GROUP}/ca",  # no namespace
        f"issuers.{GROUP}/team-a.",  # no name
        f"issuers.{GROUP}/Team-A.ca",
        f"issuers.{GROUP}/team-a.ca/x",
        f"clusterissuers.{GROUP}/",
        f"clusterissuers.{GROUP}/a/b",
    ],
)
def test_a_malformed_signer_name_of_our_group_is_an_error_naming_it(signer: str) -> None:
    with pytest.raises(SignerNameError, match=re.escape(repr(signer))):
        issuer_of_signer(signer, GROUP)


def test_a_namespaced_issuers_csr_waits_for_its_reference_review() -> None:
    obj = csr("Approved", signer=f"issuers.{GROUP}/team-a.ca")
    unchecked = view(obj)
    assert unchecked.issuer == IssuerKey("Issuer", "team-a", "ca")
    assert unchecked.referable is False
    # Neither signed nor told whether the Issuer exists before the review allows it.
    assert isinstance(decide(unchecked, READY), Ignore)
    assert isinstance(decide(unchecked, None), Ignore)
    allowed = view(obj, lambda o: True)
    assert isinstance(decide(allowed, READY), Sign)
    assert isinstance(decide(allowed, None), SetPending)
    # Before approval the review changes nothing.
    assert isinstance(
        decide(view(csr(signer=f"issuers.{GROUP}/team-a.ca")), READY), WaitForApproval
    )
    # A ClusterIssuer's CSR needs no review.
    assert view(csr("Approved")).referable is True


def test_the_reference_review_asks_what_cert_manager_asks() -> None:
    obj = csr(
        "Approved",
        signer=f"issuers.{GROUP}/team-a.ca",
        username="system:serviceaccount:team-a:app",
        groups=["system:serviceaccounts", "system:authenticated"],
        uid="u-1",
        extra={"authentication.kubernetes.io/pod-name": ["app-0"]},
    )
    review = reference_review(obj, IssuerKey("Issuer", "team-a", "ca"), "*")
    assert (review["apiVersion"], review["kind"]) == (
        "authorization.k8s.io/v1",
        "SubjectAccessReview",
    )
    assert review["spec"] == {
        "user": "system:serviceaccount:team-a:app",
        "groups": ["system:serviceaccounts", "system:authenticated"],
        "uid": "u-1",
        "extra": {"authentication.kubernetes.io/pod-name": ["app-0"]},
        "resourceAttributes": {
            "group": "cert-manager.io",
            "resource": "signers",
            "verb": "reference",
            "namespace": "team-a",
            "name": "*",
            "version": "*",
        },
    }


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
