"""build_certificate: cert-manager CA-issuer parity and the improvements."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    ExtensionOID,
    NameOID,
    ObjectIdentifier,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from akv_issuer import pki
from akv_issuer.pki import (
    CAError,
    CAErrorKind,
    ClampReason,
    CSRError,
    IssuancePolicy,
    IssuanceRequest,
    IssuerProfile,
    PolicyError,
    build_certificate,
)
from support.pki import (
    LocalSigner,
    ca_key,
    der,
    make_csr,
    name,
    openssl_verify_strict,
    private_key,
    raw_extension_value,
    raw_subject_of_certificate,
    raw_subject_of_csr,
    run_openssl,
    sign_locally,
)

NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
ALLOW_CA = IssuerProfile(policy=IssuancePolicy(allow_ca=True))


def _root(
    *,
    not_before: datetime.datetime = NOW - DAY,
    lifetime: datetime.timedelta = 365 * DAY,
    path_length: int | None = None,
) -> x509.Certificate:
    key = ca_key("p256")
    plan = pki.build_root_ca(
        key.public_key(), "Template CA", lifetime=lifetime, now=not_before, path_length=path_length
    )
    return sign_locally(plan.builder, key)


CA = _root()


def _issue(
    csr: x509.CertificateSigningRequest | None = None,
    request: IssuanceRequest | None = None,
    profile: IssuerProfile | None = None,
    ca: x509.Certificate = CA,
    now: datetime.datetime = NOW,
) -> tuple[pki.CertificatePlan, x509.Certificate]:
    plan = build_certificate(
        csr or make_csr(private_key("p256")),
        request or IssuanceRequest(),
        ca,
        profile or IssuerProfile(),
        now,
    )
    return plan, sign_locally(plan.builder, ca_key("p256"))


_E = TypeVar("_E", bound=x509.ExtensionType)


def _ext(cert: x509.Certificate, kind: type[_E]) -> x509.Extension[_E]:
    return cert.extensions.get_extension_for_class(kind)


def test_defaults_match_cert_manager() -> None:
    plan, cert = _issue()
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc == NOW + 90 * DAY
    assert not plan.clamped
    assert plan.clamped_by is None
    assert cert.serial_number == plan.serial_number
    assert (plan.not_before, plan.not_after) == (NOW, NOW + 90 * DAY)
    key_usage = _ext(cert, x509.KeyUsage)
    assert key_usage.critical
    # The CSR key is ECDSA P-256: of the default usages only digital signature
    # (RFC 8813 section 3 forbids keyEncipherment; cert-manager's CA issuer
    # v1.21 still sets it). RSA keys keep both, see below.
    assert key_usage.value == x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    constraints = _ext(cert, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=False, path_length=None)
    assert cert.issuer == CA.subject


def test_key_identifiers() -> None:
    _, cert = _issue()
    ski = _ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    aki = _ext(cert, x509.AuthorityKeyIdentifier)
    assert not aki.critical
    ca_ski = _ext(CA, x509.SubjectKeyIdentifier).value
    assert isinstance(ca_ski, x509.SubjectKeyIdentifier)
    assert isinstance(aki.value, x509.AuthorityKeyIdentifier)
    assert aki.value.key_identifier == ca_ski.digest


def test_authority_key_id_computed_when_ca_has_none() -> None:
    key = ca_key("p384")
    ca = sign_locally(
        x509.CertificateBuilder()
        .subject_name(name("No SKI CA"))
        .issuer_name(name("No SKI CA"))
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 10 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True),
        key,
    )
    plan = build_certificate(
        make_csr(private_key("p256")), IssuanceRequest(), ca, IssuerProfile(), NOW
    )
    cert = sign_locally(plan.builder, key)
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki == x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())


def test_subject_is_copied_byte_for_byte() -> None:
    subject = x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(
                        NameOID.COUNTRY_NAME, "DE", x509.name._ASN1Type.PrintableString
                    )
                ]
            ),
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(
                        NameOID.ORGANIZATION_NAME, "Ünïcode GmbH", x509.name._ASN1Type.BMPString
                    ),
                    x509.NameAttribute(
                        NameOID.ORGANIZATIONAL_UNIT_NAME, "ops", x509.name._ASN1Type.PrintableString
                    ),
                ]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.EMAIL_ADDRESS, "pki@example.com")]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(ObjectIdentifier("1.3.6.1.4.1.99999.1"), "custom")]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.COMMON_NAME, "app.example.com")]
            ),
        ]
    )
    csr = make_csr(private_key("p256"), subject=subject)
    _, cert = _issue(csr)
    assert raw_subject_of_certificate(cert) == raw_subject_of_csr(csr)


def test_all_san_types_are_copied() -> None:
    sans: list[x509.GeneralName] = [
        x509.DNSName("app.example.com"),
        x509.DNSName("*.app.example.com"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
        x509.RFC822Name("ops@example.com"),
        x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/app"),
        # A UPN otherName (UTF8String "user@example.com"), as Windows logins use.
        x509.OtherName(ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x10user@example.com"),
    ]
    csr = make_csr(private_key("p256"), sans=sans)
    _, cert = _issue(csr)
    san = _ext(cert, x509.SubjectAlternativeName)
    assert not san.critical
    assert list(san.value) == sans
    san_oid = ExtensionOID.SUBJECT_ALTERNATIVE_NAME
    assert raw_extension_value(cert.tbs_certificate_bytes, san_oid) == raw_extension_value(
        csr.tbs_certrequest_bytes, san_oid
    )


def test_san_is_critical_when_subject_is_empty(tmp_path: Path) -> None:
    csr = make_csr(private_key("p256"), subject=x509.Name([]))
    _, cert = _issue(csr)
    assert len(cert.subject) == 0
    assert _ext(cert, x509.SubjectAlternativeName).critical


def test_refuses_csr_without_subject_and_sans() -> None:
    csr = make_csr(private_key("p256"), subject=x509.Name([]), sans=())
    with pytest.raises(CSRError, match="neither a subject nor subject alternative names"):
        _issue(csr)


def test_other_csr_extensions_are_dropped() -> None:
    csr = make_csr(
        private_key("p256"),
        extensions=[
            (x509.TLSFeature([x509.TLSFeatureType.status_request]), False),
            (
                x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.7"), b"\x05\x00"),
                False,
            ),
            (x509.SubjectKeyIdentifier(b"\x01" * 20), False),
        ],
    )
    _, cert = _issue(csr)
    oids = {extension.oid for extension in cert.extensions}
    assert oids == {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    }
    ski = _ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())


def test_usages_become_key_usage_and_extended_key_usage() -> None:
    request = IssuanceRequest(
        usages=("signing", "key agreement", "encipher only", "server auth", "client auth")
    )
    _, cert = _issue(request=request)
    key_usage = _ext(cert, x509.KeyUsage).value
    assert isinstance(key_usage, x509.KeyUsage)
    assert key_usage.digital_signature
    assert key_usage.key_agreement
    assert key_usage.encipher_only
    assert not key_usage.key_encipherment
    eku = _ext(cert, x509.ExtendedKeyUsage)
    assert not eku.critical
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def test_only_extended_usages_gives_no_key_usage() -> None:
    _, cert = _issue(request=IssuanceRequest(usages=("server auth",)))
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.KeyUsage)


def test_unknown_usage_is_named() -> None:
    with pytest.raises(PolicyError, match="unknown usage 'teleport'"):
        _issue(request=IssuanceRequest(usages=("digital signature", "teleport")))


def test_cert_sign_without_is_ca_is_refused() -> None:
    with pytest.raises(PolicyError) as info:
        _issue(request=IssuanceRequest(usages=("digital signature", "cert sign")))
    assert info.value.reason == "usage 'cert sign' requires isCA: true"
    plan, _ = _issue(
        request=IssuanceRequest(usages=("digital signature", "cert sign"), is_ca=True),
        profile=ALLOW_CA,
    )
    assert plan.is_ca


def _key_usage(**bits: bool) -> x509.KeyUsage:
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{n: bits.get(n, False) for n in names})


def test_csr_key_usage_that_agrees_is_accepted() -> None:
    csr = make_csr(
        private_key("p256"),
        extensions=[
            (_key_usage(digital_signature=True, key_encipherment=True), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
        ],
    )
    request = IssuanceRequest(usages=("digital signature", "key encipherment", "server auth"))
    _issue(csr, request)


def test_csr_key_usage_that_disagrees_is_refused() -> None:
    # RSA: the default usages are issued as they are, so digital signature
    # alone neither matches the request nor what is issued.
    csr = make_csr(private_key("rsa2048"), extensions=[(_key_usage(digital_signature=True), True)])
    with pytest.raises(CSRError) as info:
        _issue(csr)
    assert info.value.reason == (
        "CSR key usages (digital signature) do not match the requested usages "
        "(digital signature, key encipherment)"
    )


def test_csr_extended_key_usage_that_disagrees_is_refused() -> None:
    csr = make_csr(
        private_key("p256"),
        extensions=[(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)],
    )
    with pytest.raises(CSRError) as info:
        _issue(csr, IssuanceRequest(usages=("digital signature", "server auth")))
    assert info.value.reason == (
        "CSR extended key usages (code signing) do not match the requested usages (server auth)"
    )


def test_csr_basic_constraints_that_disagree_are_refused() -> None:
    csr = make_csr(
        private_key("p256"), extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)]
    )
    with pytest.raises(CSRError, match="CA=true but the request has isCA: false"):
        _issue(csr)


def test_cert_manager_style_ca_csr_is_accepted_and_gets_crl_sign() -> None:
    # cert-manager puts the request's usages plus certSign into an isCA CSR.
    csr = make_csr(
        private_key("p256"),
        extensions=[
            (_key_usage(digital_signature=True, key_encipherment=True, key_cert_sign=True), True),
            (x509.BasicConstraints(ca=True, path_length=None), True),
        ],
    )
    plan, cert = _issue(csr, IssuanceRequest(is_ca=True), ALLOW_CA)
    assert plan.is_ca
    constraints = _ext(cert, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=True, path_length=None)
    key_usage = _ext(cert, x509.KeyUsage).value
    assert isinstance(key_usage, x509.KeyUsage)
    assert key_usage.key_cert_sign
    assert key_usage.crl_sign


def test_ca_is_refused_unless_allowed() -> None:
    with pytest.raises(PolicyError) as info:
        _issue(request=IssuanceRequest(is_ca=True))
    assert info.value.reason == "the issuer's policy does not allow CA certificates (isCA: true)"


@pytest.mark.parametrize(
    ("requested", "csr_path_length", "policy_max", "ca_path_length", "expected"),
    [
        (None, None, None, None, None),
        (3, None, None, None, 3),
        (3, None, 1, None, 1),
        (None, None, 2, None, 2),
        (None, None, None, 2, 1),
        (5, None, 4, 3, 2),
        (None, 0, None, None, 0),
        (2, 1, None, None, 1),
    ],
)
def test_path_length_is_capped(
    requested: int | None,
    csr_path_length: int | None,
    policy_max: int | None,
    ca_path_length: int | None,
    expected: int | None,
) -> None:
    extensions = []
    if csr_path_length is not None:
        extensions.append((x509.BasicConstraints(ca=True, path_length=csr_path_length), True))
    csr = make_csr(private_key("p256"), extensions=extensions)
    profile = IssuerProfile(policy=IssuancePolicy(allow_ca=True, max_path_length=policy_max))
    plan, cert = _issue(
        csr,
        IssuanceRequest(is_ca=True, path_length=requested),
        profile,
        _root(path_length=ca_path_length),
    )
    assert plan.path_length == expected
    assert _ext(cert, x509.BasicConstraints).value == x509.BasicConstraints(
        ca=True, path_length=expected
    )


def test_ca_with_path_length_zero_cannot_issue_a_ca() -> None:
    with pytest.raises(PolicyError) as info:
        _issue(request=IssuanceRequest(is_ca=True), profile=ALLOW_CA, ca=_root(path_length=0))
    assert info.value.reason == (
        "the issuing CA has path length 0 and cannot issue CA certificates (isCA: true)"
    )
    # ...but it still issues leaves.
    _issue(ca=_root(path_length=0))


def test_name_constraints_are_copied_for_a_ca() -> None:
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName("example.com")],
        excluded_subtrees=[x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))],
    )
    csr = make_csr(private_key("p256"), extensions=[(constraints, True)])
    _, cert = _issue(csr, IssuanceRequest(is_ca=True), ALLOW_CA)
    copied = _ext(cert, x509.NameConstraints)
    assert copied.critical
    assert copied.value == constraints


def test_name_constraints_are_refused_for_a_leaf() -> None:
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName("example.com")], excluded_subtrees=None
    )
    csr = make_csr(private_key("p256"), extensions=[(constraints, True)])
    with pytest.raises(CSRError, match="only allowed with isCA: true"):
        _issue(csr)


def test_not_after_is_clamped_to_the_ca() -> None:
    ca = _root(lifetime=30 * DAY)
    plan, cert = _issue(ca=ca)
    assert plan.clamped
    assert plan.clamped_by is ClampReason.CA_EXPIRY
    assert cert.not_valid_after_utc == ca.not_valid_after_utc


def test_max_duration_clamps() -> None:
    profile = IssuerProfile(policy=IssuancePolicy(max_duration=7 * DAY))
    plan, cert = _issue(profile=profile)
    assert plan.clamped_by is ClampReason.MAX_DURATION
    assert cert.not_valid_after_utc == NOW + 7 * DAY


def test_short_durations_are_allowed() -> None:
    plan, cert = _issue(request=IssuanceRequest(duration=datetime.timedelta(minutes=3)))
    assert cert.not_valid_after_utc == NOW + datetime.timedelta(minutes=3)
    assert not plan.clamped


@pytest.mark.parametrize("duration", [datetime.timedelta(0), -DAY])
def test_non_positive_duration_is_refused(duration: datetime.timedelta) -> None:
    with pytest.raises(PolicyError, match="duration must be positive"):
        _issue(request=IssuanceRequest(duration=duration))


def test_backdate_moves_not_before_but_not_before_the_ca() -> None:
    _, cert = _issue(profile=IssuerProfile(backdate=datetime.timedelta(minutes=5)))
    assert cert.not_valid_before_utc == NOW - datetime.timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + 90 * DAY
    _, cert = _issue(profile=IssuerProfile(backdate=30 * DAY))
    assert cert.not_valid_before_utc == CA.not_valid_before_utc


def test_sub_second_now_is_truncated() -> None:
    plan, cert = _issue(now=NOW + datetime.timedelta(microseconds=999_999))
    assert plan.not_before == NOW == cert.not_valid_before_utc


def test_ca_not_valid_at_now_is_a_ca_error() -> None:
    with pytest.raises(CAError) as info:
        _issue(now=NOW + 400 * DAY)
    assert info.value.kind is CAErrorKind.EXPIRED
    with pytest.raises(CAError) as info:
        _issue(now=NOW - 2 * DAY)
    assert info.value.kind is CAErrorKind.NOT_YET_VALID


def test_profile_urls_are_added() -> None:
    profile = IssuerProfile(
        crl_distribution_points=("http://pki.example.com/ca.crl", "ldap://pki/ca"),
        ocsp_servers=("http://ocsp.example.com",),
        issuing_certificate_urls=("http://pki.example.com/ca.crt",),
    )
    _, cert = _issue(profile=profile)
    points = _ext(cert, x509.CRLDistributionPoints)
    assert not points.critical
    assert isinstance(points.value, x509.CRLDistributionPoints)
    assert [p.full_name for p in points.value] == [
        [x509.UniformResourceIdentifier("http://pki.example.com/ca.crl")],
        [x509.UniformResourceIdentifier("ldap://pki/ca")],
    ]
    access = _ext(cert, x509.AuthorityInformationAccess).value
    assert isinstance(access, x509.AuthorityInformationAccess)
    assert [(a.access_method, a.access_location.value) for a in access] == [
        (AuthorityInformationAccessOID.OCSP, "http://ocsp.example.com"),
        (AuthorityInformationAccessOID.CA_ISSUERS, "http://pki.example.com/ca.crt"),
    ]


def test_invalid_profile_values_are_policy_errors() -> None:
    with pytest.raises(PolicyError, match="backdate must not be negative"):
        IssuerProfile(backdate=-DAY)
    with pytest.raises(PolicyError, match="maxDuration must be positive"):
        IssuancePolicy(max_duration=datetime.timedelta(0))
    with pytest.raises(PolicyError, match="maxPathLength must not be negative"):
        IssuancePolicy(max_path_length=-1)


def test_csr_is_rechecked() -> None:
    csr = make_csr(ec.generate_private_key(ec.SECP256K1()))
    with pytest.raises(CSRError, match="secp256k1"):
        _issue(csr)


async def test_full_profile_certificate_passes_openssl(tmp_path: Path) -> None:
    # Real time: openssl verify checks validity against its own clock.
    now = datetime.datetime.now(datetime.UTC)
    key = ca_key("p384")
    root_plan = pki.build_root_ca(
        key.public_key(), "Profile CA", lifetime=30 * DAY, now=now, path_length=1
    )
    algorithm = pki.default_algorithm(key.public_key())
    root = await pki.sign_certificate(
        root_plan.builder, key.public_key(), algorithm, LocalSigner(key)
    )
    profile = IssuerProfile(
        policy=IssuancePolicy(allow_ca=True),
        backdate=datetime.timedelta(minutes=1),
        crl_distribution_points=("http://pki.example.com/ca.crl",),
        ocsp_servers=("http://ocsp.example.com",),
        issuing_certificate_urls=("http://pki.example.com/ca.crt",),
    )
    for csr, request in [
        (
            make_csr(private_key("rsa2048"), subject=x509.Name([])),
            IssuanceRequest(usages=("server auth", "digital signature")),
        ),
        (make_csr(private_key("p256"), subject=name("Sub CA")), IssuanceRequest(is_ca=True)),
    ]:
        plan = build_certificate(csr, request, root, profile, now)
        cert = await pki.sign_certificate(
            plan.builder, key.public_key(), algorithm, LocalSigner(key)
        )
        assert plan.clamped_by is ClampReason.CA_EXPIRY
        result = openssl_verify_strict(tmp_path, root, cert)
        assert result.returncode == 0, result.stdout + result.stderr
        (tmp_path / "cert.pem").write_bytes(der(cert))
        text = run_openssl(
            "x509", "-inform", "DER", "-in", tmp_path / "cert.pem", "-text", "-noout"
        )
        assert text.returncode == 0, text.stderr
        assert "CRL Distribution Points" in text.stdout
        assert "OCSP - URI:http://ocsp.example.com" in text.stdout


# Properties of the template, over durations, CA lifetimes, backdates and SANs.

_dns_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
_dns_names = st.lists(
    st.builds(lambda labels: ".".join(labels), st.lists(_dns_label, min_size=1, max_size=4)),
    min_size=1,
    max_size=5,
    unique=True,
)
_CAS = {days: _root(lifetime=datetime.timedelta(days=days)) for days in (2, 30, 3650)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    duration=st.timedeltas(min_value=datetime.timedelta(seconds=1), max_value=20 * 365 * DAY),
    ca_days=st.sampled_from(sorted(_CAS)),
    backdate=st.timedeltas(min_value=datetime.timedelta(0), max_value=3 * DAY),
    offset=st.timedeltas(
        min_value=datetime.timedelta(0), max_value=DAY - datetime.timedelta(seconds=1)
    ),
    dns_names=_dns_names,
    max_duration=st.none()
    | st.timedeltas(min_value=datetime.timedelta(seconds=1), max_value=400 * DAY),
)
def test_template_invariants(
    duration: datetime.timedelta,
    ca_days: int,
    backdate: datetime.timedelta,
    offset: datetime.timedelta,
    dns_names: list[str],
    max_duration: datetime.timedelta | None,
) -> None:
    ca = _CAS[ca_days]
    now = NOW + offset
    sans = [x509.DNSName(n) for n in dns_names]
    csr = make_csr(private_key("p256"), sans=sans)
    profile = IssuerProfile(policy=IssuancePolicy(max_duration=max_duration), backdate=backdate)
    plan, cert = _issue(csr, IssuanceRequest(duration=duration), profile, ca, now)
    assert cert.not_valid_before_utc <= cert.not_valid_after_utc <= ca.not_valid_after_utc
    assert cert.not_valid_before_utc >= ca.not_valid_before_utc
    assert (plan.not_before, plan.not_after) == (
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
    )
    asked_not_after = (now.replace(microsecond=0) + duration).replace(microsecond=0)
    assert cert.not_valid_after_utc <= asked_not_after
    assert plan.clamped == (cert.not_valid_after_utc < asked_not_after)
    assert 0 < cert.serial_number < 2**159
    serial_der = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 8) // 8, "big")
    assert len(serial_der) <= 20
    assert list(_ext(cert, x509.SubjectAlternativeName).value) == sans


# ---- key usages right for the subject key (RFC 3279, 8813, 8410/9295) ----------------


def _bits(cert: x509.Certificate) -> frozenset[str]:
    return pki.usages.key_usage_bits(_ext(cert, x509.KeyUsage).value)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("rsa2048", {"digital_signature", "key_encipherment"}),
        ("p256", {"digital_signature"}),
        ("p384", {"digital_signature"}),
        ("ed25519", {"digital_signature"}),
    ],
)
@pytest.mark.parametrize("cert_manager_csr", [False, True], ids=["plain-csr", "cert-manager-csr"])
def test_default_usages_fit_the_subject_key(
    kind: str, expected: set[str], cert_manager_csr: bool
) -> None:
    """cert-manager's default usages (digital signature, key encipherment),
    with or without them in the CSR as cert-manager encodes them for every key
    type: issued, and keyEncipherment only for an RSA key."""
    extensions = (
        [(_key_usage(digital_signature=True, key_encipherment=True), True)]
        if cert_manager_csr
        else []
    )
    csr = make_csr(private_key(kind), extensions=extensions)
    _, cert = _issue(csr, IssuanceRequest())
    assert _bits(cert) == expected
    assert _ext(cert, x509.KeyUsage).critical


@pytest.mark.parametrize(
    ("kind", "usages", "expected"),
    [
        # RSA: no keyAgreement (RFC 3279 2.3.1 lists it for no RSA certificate).
        (
            "rsa2048",
            ("digital signature", "data encipherment", "key agreement", "encipher only"),
            {"digital_signature", "data_encipherment"},
        ),
        # ECDSA: keyAgreement (ECDH) stays, the encipherments go.
        (
            "p256",
            ("content commitment", "key encipherment", "data encipherment", "key agreement"),
            {"content_commitment", "key_agreement"},
        ),
        (
            "p384",
            ("key agreement", "decipher only", "key encipherment"),
            {"key_agreement", "decipher_only"},
        ),
        # Ed25519: signatures only (RFC 9295), crl sign for a CRL issuer.
        (
            "ed25519",
            ("digital signature", "key agreement", "key encipherment", "crl sign", "server auth"),
            {"digital_signature", "crl_sign"},
        ),
    ],
)
def test_requested_usages_the_key_cannot_use_are_left_out(
    kind: str, usages: tuple[str, ...], expected: set[str]
) -> None:
    _, cert = _issue(make_csr(private_key(kind)), IssuanceRequest(usages=usages))
    assert _bits(cert) == expected


@pytest.mark.parametrize(
    ("kind", "usages", "reason"),
    [
        (
            "p256",
            ("key encipherment", "server auth"),
            "usages (key encipherment) do not fit the ECDSA P-256 subject key "
            "(RFC 8813 section 3); ask for one of content commitment, crl sign, "
            "digital signature, key agreement",
        ),
        (
            "ed25519",
            ("key agreement", "data encipherment"),
            "usages (data encipherment, key agreement) do not fit the Ed25519 subject key "
            "(RFC 8410 section 5 (RFC 9295)); ask for one of content commitment, crl sign, "
            "digital signature",
        ),
        (
            "rsa2048",
            ("key agreement",),
            "usages (key agreement) do not fit the RSA 2048-bit subject key "
            "(RFC 3279 section 2.3.1); ask for one of content commitment, crl sign, "
            "data encipherment, digital signature, key encipherment",
        ),
    ],
)
def test_usages_of_which_the_key_can_use_none_are_refused(
    kind: str, usages: tuple[str, ...], reason: str
) -> None:
    # Leaving them all out would leave out the KeyUsage extension, which
    # allows every use.
    with pytest.raises(PolicyError) as info:
        _issue(make_csr(private_key(kind)), IssuanceRequest(usages=usages))
    assert info.value.reason == reason


def test_csr_asking_for_exactly_what_is_issued_is_accepted() -> None:
    # A client that already leaves keyEncipherment out for its ECDSA key.
    csr = make_csr(private_key("p256"), extensions=[(_key_usage(digital_signature=True), True)])
    _, cert = _issue(csr, IssuanceRequest())
    assert _bits(cert) == {"digital_signature"}


def test_csr_asking_for_another_usage_the_key_could_have_is_refused() -> None:
    csr = make_csr(
        private_key("p256"),
        extensions=[(_key_usage(digital_signature=True, key_agreement=True), True)],
    )
    with pytest.raises(CSRError) as info:
        _issue(csr, IssuanceRequest())
    assert info.value.reason == (
        "CSR key usages (digital signature, key agreement) do not match the requested usages "
        "(digital signature, key encipherment)"
    )


_CA_BITS = {"digital_signature", "key_cert_sign", "crl_sign"}


@pytest.mark.parametrize("kind", ["rsa2048", "rsa4096", "p256", "p521", "ed25519"])
@pytest.mark.parametrize(
    ("usages", "csr_bits"),
    [
        # cert-manager's default-usage CA CSR: its usages plus certSign.
        ((), {"digital_signature": True, "key_encipherment": True, "key_cert_sign": True}),
        # `akv-issuer ca csr` puts no key usage in the CSR.
        ((), None),
        # A CSR asking for exactly the CA usages.
        (
            ("digital signature", "key encipherment"),
            {"digital_signature": True, "key_cert_sign": True, "crl_sign": True},
        ),
        (("cert sign", "crl sign", "data encipherment", "server auth"), None),
    ],
    ids=["cert-manager-defaults", "no-csr-usage", "exact-csr", "explicit-usages"],
)
def test_ca_certificates_get_cert_sign_crl_sign_and_digital_signature_only(
    kind: str, usages: tuple[str, ...], csr_bits: dict[str, bool] | None
) -> None:
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=True, path_length=None), True)
    ]
    if csr_bits is not None:
        extensions.append((_key_usage(**csr_bits), True))
    csr = make_csr(private_key(kind), extensions=extensions)
    plan, cert = _issue(csr, IssuanceRequest(usages=usages, is_ca=True), ALLOW_CA)
    assert plan.is_ca
    assert _bits(cert) == _CA_BITS


# -- a signer-chosen identity (PodCertificateRequests, issue 25) --------------------------

POD_NAMES = (
    x509.UniformResourceIdentifier("spiffe://cluster.example.com/ns/apps/sa/web"),
    x509.DNSName("web.apps.svc"),
)


def test_signer_names_replace_whatever_the_csr_names() -> None:
    """The identity is the signer's: the CSR's subject and SANs are not used,
    the subject is empty and the SAN extension critical (RFC 5280 4.2.1.6)."""
    csr = make_csr(private_key("p256"), subject=name("evil.example.com"))
    _, cert = _issue(csr, IssuanceRequest(names=POD_NAMES))
    assert len(cert.subject) == 0
    san = _ext(cert, x509.SubjectAlternativeName)
    assert san.critical
    assert list(san.value) == list(POD_NAMES)


def test_an_empty_stub_csr_gets_the_signer_names() -> None:
    stub = make_csr(private_key("p256"), subject=x509.Name([]), sans=())
    with pytest.raises(CSRError, match="neither a subject nor subject alternative names"):
        _issue(stub)  # without names such a CSR names no one
    _, cert = _issue(stub, IssuanceRequest(names=POD_NAMES))
    assert list(_ext(cert, x509.SubjectAlternativeName).value) == list(POD_NAMES)


def test_not_before_now_ignores_the_issuers_backdate() -> None:
    backdated = IssuerProfile(backdate=datetime.timedelta(hours=1))
    request = IssuanceRequest(duration=DAY, names=POD_NAMES, not_before_now=True)
    plan, cert = _issue(request=request, profile=backdated)
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == DAY
    plan, _ = _issue(request=IssuanceRequest(duration=DAY), profile=backdated)
    assert plan.not_before == NOW - datetime.timedelta(hours=1)


def test_min_duration_refuses_a_certificate_clamped_below_it() -> None:
    expiring = _root(not_before=NOW - 364 * DAY)  # expires NOW + 1 day
    ok = IssuanceRequest(duration=DAY / 2, min_duration=datetime.timedelta(hours=1))
    _issue(request=ok, ca=expiring)
    late = NOW + DAY - datetime.timedelta(minutes=30)
    with pytest.raises(
        PolicyError, match=r"less than the shortest lifetime allowed .*CA certificate expires"
    ):
        _issue(request=ok, ca=expiring, now=late)
    capped = IssuerProfile(policy=IssuancePolicy(max_duration=datetime.timedelta(minutes=30)))
    with pytest.raises(PolicyError, match=r"policy\.maxDuration caps it"):
        _issue(request=ok, profile=capped)
