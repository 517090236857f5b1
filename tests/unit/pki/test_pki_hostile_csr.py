"""Defects the chaos suite's hostile CSRs found (issue 15, scenario 7), one test each.

Each CSR here was signed (or printed a Python warning) before the fix; a
request must end either with a certificate validators accept or refused
with one clear reason.
"""

from __future__ import annotations

import datetime
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from akv_issuer import pki
from akv_issuer.pki import CSRError, IssuanceRequest, IssuerProfile, build_certificate, parse_csr
from support.pki import ca_key, make_csr, pem, private_key, sign_locally

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)


def _ca() -> x509.Certificate:
    key = ca_key("p256")
    plan = pki.build_root_ca(
        key.public_key(), "Hostile CA", lifetime=datetime.timedelta(days=365), now=NOW
    )
    return sign_locally(plan.builder, key)


def _common_name(value: str, kind: _ASN1Type = _ASN1Type.UTF8String) -> x509.Name:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the bad name is the point
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value, kind, _validate=False)])


def test_a_visible_string_in_the_subject_is_refused() -> None:
    # OpenSSL cannot load a certificate whose name holds a VisibleString.
    csr = make_csr(private_key("p256"), subject=_common_name("app", _ASN1Type.VisibleString))
    with pytest.raises(CSRError, match=r"subject attribute CN is a VisibleString; X\.509 names"):
        parse_csr(pem(csr))


@pytest.mark.parametrize("value", ["", "x" * 65])
def test_a_common_name_out_of_bounds_is_refused_without_a_python_warning(value: str) -> None:
    csr = make_csr(private_key("p256"), subject=_common_name(value))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would fail here, not pass silently
        with pytest.raises(CSRError, match=r"CSR subject is not a valid X\.509 name: .*64"):
            parse_csr(pem(csr))


def test_an_empty_subject_alternative_name_extension_is_refused() -> None:
    # openssl verify -x509_strict: "Empty Subject Alternative Name extension".
    key = private_key("p256")
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_common_name("app.example.com"))
        .add_extension(x509.SubjectAlternativeName([]), critical=False)
    )
    csr = parse_csr(pem(builder.sign(key, hashes.SHA256())))
    with pytest.raises(CSRError, match="empty subject alternative name extension"):
        build_certificate(csr, IssuanceRequest(), _ca(), IssuerProfile(), NOW)


def test_a_csr_too_large_for_a_kubernetes_object_is_refused() -> None:
    # 5,000 long DNS names: the request was created, signed, and its status
    # (as large again) could never be written; it waited forever.
    names = [x509.DNSName("a" * 63 + f".{i}.example.com") for i in range(5000)]
    csr = make_csr(private_key("p256"), sans=names)
    with pytest.raises(CSRError, match=r"CSR is \d+ bytes of PEM, more than 256 KiB"):
        parse_csr(pem(csr))
    # A large but reasonable list still parses.
    parse_csr(pem(make_csr(private_key("p256"), sans=names[:500])))
