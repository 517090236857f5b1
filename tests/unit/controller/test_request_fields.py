"""What the informer decodes of a request (its kind's shape) is what the flow
and the revoker read: a real finished CertificateRequest, as the API server
served it, read through the shape and whole gives the same view."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from akv_issuer.controller.api import GROUP
from akv_issuer.controller.requests import certificaterequest, kubecsr
from akv_issuer.controller.revocation.store import ANNOTATION_REVOKE
from akv_issuer.runtime.decoding import ObjectDecoder, Partial

ISSUED = Path(__file__).parent / "data" / "certificaterequest_issued.json"


def test_an_issued_request_through_its_shape() -> None:
    raw = ISSUED.read_bytes()
    full: dict[str, Any] = json.loads(raw)
    obj = ObjectDecoder(certificaterequest.RequestFields).decode_object(raw)
    assert isinstance(obj, Partial)
    assert "managedFields" not in obj["metadata"]
    assert set(obj["spec"]) == {"issuerRef"}
    assert set(obj["status"]) == {"conditions"}
    assert len(json.dumps(obj)) < len(raw) / 4
    partial_view = certificaterequest.view(obj)
    assert partial_view == certificaterequest.view(full)
    assert partial_view.finished
    assert partial_view.approved
    assert partial_view.issuer is not None
    assert partial_view.issuer.name == "bench"
    assert obj.whole() == full


def test_the_fields_the_revoker_and_the_flow_read_survive() -> None:
    full: dict[str, Any] = json.loads(ISSUED.read_bytes())
    full["metadata"]["annotations"] = {ANNOTATION_REVOKE: "keyCompromise", "other": "x"}
    full["status"]["conditions"][1]["observedGeneration"] = 1
    full["unknown"] = {"nested": [1, 2, 3]}
    obj = ObjectDecoder(certificaterequest.RequestFields).decode_object(json.dumps(full))
    assert obj["metadata"]["annotations"][ANNOTATION_REVOKE] == "keyCompromise"
    assert "unknown" not in obj
    assert certificaterequest.view(obj) == certificaterequest.view(full)


def test_a_pending_request_without_status() -> None:
    full = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {"name": "r", "namespace": "ns", "uid": "u", "resourceVersion": "9"},
        "spec": {"request": "Q1NS", "issuerRef": {"group": GROUP, "kind": "Issuer", "name": "i"}},
    }
    obj = ObjectDecoder(certificaterequest.RequestFields).decode_object(json.dumps(full))
    view = certificaterequest.view(obj)
    assert view == certificaterequest.view(full)
    assert not view.finished
    assert not view.approved
    assert view.resource_version == 9


def test_a_kubernetes_csr_through_its_shape() -> None:
    full = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": "c", "uid": "u", "resourceVersion": "3", "managedFields": []},
        "spec": {
            "request": "Q1NS" * 300,
            "signerName": f"clusterissuers.{GROUP}/ca",
            "usages": ["digital signature"],
        },
        "status": {
            "conditions": [{"type": "Approved", "status": "True", "reason": "r", "message": "m"}],
            "certificate": "Q0VSVA==",
        },
    }
    obj = ObjectDecoder(kubecsr.CSRFields).decode_object(json.dumps(full))
    assert "request" not in obj["spec"]
    view = kubecsr.view(obj)
    assert view == kubecsr.view(full)
    assert view.finished
    assert view.issuer is not None
    assert view.issuer.name == "ca"
