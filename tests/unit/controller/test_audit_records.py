"""Audit records (akv_issuer.controller.observability.audit): their fields from a real
certificate and CSR, and how they come out of the controller's log setup
(JSON object, text suffix, redaction, kept at any --log-level)."""

from __future__ import annotations

import base64
import datetime as dt
import io
import ipaddress
import json
import logging
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from akv_issuer.controller.core import IssuerKey
from akv_issuer.controller.observability import audit
from akv_issuer.runtime.logs import setup_logging

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
SANS = [
    x509.DNSName("app.example.com"),
    x509.IPAddress(ipaddress.ip_address("10.0.0.7")),
    x509.RFC822Name("ops@example.com"),
    x509.UniformResourceIdentifier("spiffe://cluster.local/ns/a/sa/b"),
]
CA = audit.CAKey("https://v.vault.azure.net/keys/ca/0123", "ca", "0123", "CN=Test CA")
REQUEST_OBJ = {
    "metadata": {"name": "cr-1", "namespace": "team-a", "uid": "u-1"},
    "spec": {"username": "alice", "uid": "a-1", "groups": ["devs", "system:authenticated"]},
}


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate() -> x509.Certificate:
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "app.example.com")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x1A2B3C4D5E6F)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(SANS), critical=False)
        .sign(key, hashes.SHA256())
    )


def _csr() -> bytes:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wanted.example.com")]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("wanted.example.com")]), False)
        .sign(_key(), hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


def test_issued_record_fields() -> None:
    record = audit.issued(
        request=audit.RequestRef.of("CertificateRequest", REQUEST_OBJ),
        requester=audit.requester_of(REQUEST_OBJ),
        issuer=IssuerKey("Issuer", "team-a", "ca"),
        certificate=_certificate(),
        ca=CA,
        at=NOW,
    )
    assert record == {
        "event": "issued",
        "time": "2026-03-01T12:00:00Z",
        "issuer": {"kind": "Issuer", "namespace": "team-a", "name": "ca"},
        "ca": {
            "key_id": "https://v.vault.azure.net/keys/ca/0123",
            "key_name": "ca",
            "key_version": "0123",
            "subject": "CN=Test CA",
        },
        "request": {
            "kind": "CertificateRequest",
            "namespace": "team-a",
            "name": "cr-1",
            "uid": "u-1",
        },
        "requester": {
            "username": "alice",
            "uid": "a-1",
            "groups": ["devs", "system:authenticated"],
        },
        "serial": "1a2b3c4d5e6f",
        "subject": "CN=app.example.com",
        "sans": {
            "dns": ["app.example.com"],
            "ip": ["10.0.0.7"],
            "email": ["ops@example.com"],
            "uri": ["spiffe://cluster.local/ns/a/sa/b"],
        },
        "not_before": "2026-03-01T12:00:00Z",
        "not_after": "2026-03-31T12:00:00Z",
        "is_ca": False,
    }


def test_refused_record_names_what_was_asked_when_the_csr_parses() -> None:
    common = {
        "request": audit.RequestRef.of("CertificateSigningRequest", {"metadata": {"name": "x"}}),
        "requester": audit.requester_of({}),
        "issuer": None,
        "reason": "InvalidCSR",
        "message": "InvalidCSR: RSA key of 1024 bits",
        "ca": None,
        "at": NOW,
    }
    parsed = audit.refused(csr_pem=_csr(), **common)  # type: ignore[arg-type]
    assert parsed["requested"] == {
        "subject": "CN=wanted.example.com",
        "sans": {"dns": ["wanted.example.com"], "ip": [], "email": [], "uri": []},
    }
    assert parsed["reason"] == "InvalidCSR"
    assert parsed["requester"] == {"username": "", "uid": "", "groups": []}
    assert "serial" not in parsed
    garbage = audit.refused(csr_pem=b"not a CSR", **common)  # type: ignore[arg-type]
    assert garbage["requested"] is None


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger(audit.AUDIT_LOGGER).level)
    stream = io.StringIO()
    yield stream
    root.handlers[:], root.level = saved[0], saved[1]
    logging.getLogger(audit.AUDIT_LOGGER).setLevel(saved[2])


def _record() -> dict[str, object]:
    return audit.issued(
        request=audit.RequestRef.of("CertificateRequest", REQUEST_OBJ),
        requester=audit.requester_of(REQUEST_OBJ),
        issuer=IssuerKey("ClusterIssuer", "", "ca"),
        certificate=_certificate(),
        ca=CA,
        at=NOW,
    )


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_records_survive_both_formats_and_a_warning_level(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    monkeypatch.setattr("sys.stderr", captured)
    setup_logging(fmt, "warning", always_info=(audit.AUDIT_LOGGER,))
    logging.getLogger("akv_issuer.controller").info("chatter")
    audit.emit(_record())
    (line,) = captured.getvalue().splitlines()
    if fmt == "json":
        entry = json.loads(line)
        assert entry["logger"] == "akv_issuer.audit"
        fields = entry["audit"]
        assert entry["msg"] == (
            "certificate issued: serial 1a2b3c4d5e6f, CertificateRequest team-a/cr-1, "
            "requester alice"
        )
    else:
        assert " akv_issuer.audit: certificate issued: serial 1a2b3c4d5e6f" in line
        fields = json.loads(line.partition(" audit=")[2])
    assert fields["serial"] == "1a2b3c4d5e6f"
    assert fields["sans"]["dns"] == ["app.example.com"]


def test_record_values_pass_the_redaction(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stderr", captured)
    setup_logging("json", "info", always_info=(audit.AUDIT_LOGGER,))
    record = _record()
    record["message"] = "client_secret=hunter2-hunter2"  # chosen by a requester, say
    audit.emit(record)
    assert "hunter2" not in captured.getvalue()


@pytest.mark.parametrize("version", [b"\x01", b"\x02"])
def test_refused_record_of_a_csr_with_a_bad_version_has_no_requested_fields(
    version: bytes,
) -> None:
    # Issue 15 (hostile CSRs): InvalidVersion is no ValueError; it escaped as a
    # traceback after the Failed write and the refusal went unrecorded.
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "v.example.com")]))
        .sign(key, hashes.SHA256())
    )
    der = csr.public_bytes(serialization.Encoding.DER)
    at = der.index(b"\x02\x01\x00")  # the request info's version INTEGER 0
    bad = der[:at] + b"\x02\x01" + version + der[at + 3 :]
    body = base64.b64encode(bad).decode()
    pem = f"-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"
    assert audit.requested_fields(pem.encode()) is None
