"""The lint harness itself: both linters catch the RFC violations issue 23
found, a CA/B Forum finding never fails a test, and a waiver covers exactly
its (lint, case) and nothing else. Certificates made here with cryptography,
no Key Vault: what is tested is the harness, not the issuer."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from support.lint.linters import (
    Artefact,
    Finding,
    Kind,
    LintCase,
    Severity,
    check_pss_signature,
    classify,
    lint_all,
    run_zlint,
    waivers_for,
)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
CA_KEY = ec.generate_private_key(ec.SECP384R1())
CA_NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Harness CA"),
    ]
)


def _ca() -> x509.Certificate:
    public = CA_KEY.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(CA_NAME)
        .issuer_name(CA_NAME)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(CA_KEY, hashes.SHA384())
    )


CA = _ca()
CA_DER = CA.public_bytes(serialization.Encoding.DER)


def _leaf(
    *,
    key_encipherment: bool = False,
    sans: list[x509.GeneralName] | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    subject_key = key or ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "app.example.com")]))
        .issuer_name(CA_NAME)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=key_encipherment,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(sans or [x509.DNSName("app.example.com")]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(CA_KEY.public_key()),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False
        )
        .sign(CA_KEY, hashes.SHA384())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _names(findings: list[Finding]) -> set[tuple[str, str]]:
    return {(f.linter, f.lint) for f in findings}


def test_a_clean_ec_leaf_has_no_failing_finding() -> None:
    reports = lint_all([Artefact("clean", Kind.CERTIFICATE, _leaf(), CA_DER)], [])
    assert reports["clean"].failing == []
    # Public-TLS rules it does not follow (no AIA, no certificate policies)
    # are reported as informational.
    informational = _names(reports["clean"].informational)
    assert ("zlint", "e_sub_cert_aia_missing") in informational
    assert ("zlint", "e_sub_cert_certificate_policies_missing") in informational


def test_key_encipherment_on_an_ec_leaf_fails_in_both_linters() -> None:
    report = lint_all([Artefact("ke", Kind.CERTIFICATE, _leaf(key_encipherment=True), CA_DER)], [])[
        "ke"
    ]
    assert {
        ("zlint", "e_ecdsa_allowed_ku"),
        ("pkilint", "pkix.key_usage_value_prohibited_for_ec"),
    } <= (_names(report.failing))
    assert "keyEncipherment" in report.failure_message()


def test_a_revocation_after_this_update_fails() -> None:
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(5)
        .revocation_date(NOW + dt.timedelta(days=3))
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(CA_NAME)
        .last_update(NOW)
        .next_update(NOW + dt.timedelta(days=1))
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(CA_KEY.public_key()),
            critical=False,
        )
        .add_revoked_certificate(entry)
        .sign(CA_KEY, hashes.SHA384())
    )
    der = crl.public_bytes(serialization.Encoding.DER)
    report = lint_all([Artefact("crl", Kind.CRL, der, CA_DER)], [])["crl"]
    assert ("zlint", "e_crl_revocation_time_after_this_update") in _names(report.failing)


def test_zlint_lints_a_batch_in_order() -> None:
    good, bad = _leaf(), _leaf(key_encipherment=True)
    found = run_zlint([good, bad, good])
    assert [("e_ecdsa_allowed_ku" in {f.lint for f in fs}) for fs in found] == [False, True, False]


def test_a_waiver_covers_its_case_and_lint_only() -> None:
    spiffe = "spiffe://cluster.local/ns/default/sa/app"
    wildcard = "*.apps.example.com"
    sans = [x509.UniformResourceIdentifier(spiffe), x509.DNSName(wildcard)]
    der = _leaf(sans=sans)
    waived_case = LintCase("waived", spiffe_uris=(spiffe,), wildcard_names=(wildcard,))
    reports = lint_all(
        [
            Artefact("waived", Kind.CERTIFICATE, der, CA_DER),
            Artefact("other", Kind.CERTIFICATE, der, CA_DER),
        ],
        waivers_for([waived_case, LintCase("other")]),
    )
    expected = {
        ("pkilint", "pkix.invalid_uri_syntax"),
        ("pkilint", "pkix.invalid_domain_name_syntax"),
    }
    assert reports["waived"].failing == []
    assert {(f.linter, f.lint) for f, _ in reports["waived"].waived} == expected
    # The same findings on a case without those waivers fail.
    assert expected <= _names(reports["other"].failing)


def test_a_waiver_with_a_message_covers_that_value_only() -> None:
    (waiver,) = waivers_for([LintCase("c", wildcard_names=("*.a.example.com",))])
    finding = Finding(
        "pkilint",
        "pkix.invalid_domain_name_syntax",
        Severity.ERROR,
        'Invalid domain name syntax: "bad_name.example.com"',
        "pkilint",
    )
    assert classify("c", [finding], [waiver]).failing == [finding]


def _pss_root(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "PSS Root")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256(), rsa_padding=padding.PSS(padding.MGF1(hashes.SHA256()), 32))
        .public_bytes(serialization.Encoding.DER)
    )


def test_pss_signatures_are_verified_by_the_harness() -> None:
    der = _pss_root(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    case = LintCase("pss-root", pss_signed=True)
    report = lint_all([Artefact(case.id, Kind.CERTIFICATE, der, der)], waivers_for([case]))
    # pkilint's chain linter cannot verify PSS: waived for this case...
    assert ("pkilint-chain", "pkix.signature_verification_failed") in {
        (f.linter, f.lint) for f, _ in report[case.id].waived
    }
    check_pss_signature(Artefact(case.id, Kind.CERTIFICATE, der, der))
    # ...so the harness verifies it: another key's certificate of the same name fails,
    other = _pss_root(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(InvalidSignature):
        check_pss_signature(Artefact(case.id, Kind.CERTIFICATE, der, other))
    # and a case declared PSS-signed that is not fails with what is wrong.
    with pytest.raises(AssertionError, match="not RSASSA-PSS"):
        check_pss_signature(Artefact(case.id, Kind.CERTIFICATE, CA_DER, CA_DER))
