"""CA bundles: loading, ordering and the cert-manager status split."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from akv_issuer import pki
from akv_issuer.pki import CAError, CAErrorKind
from support.pki import ca_key, der, make_csr, pem, private_key, sign_locally

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)
ALLOW_CA = pki.IssuerProfile(policy=pki.IssuancePolicy(allow_ca=True))


def _root(kind: str, subject: str) -> x509.Certificate:
    key = ca_key(kind)
    plan = pki.build_root_ca(key.public_key(), subject, lifetime=30 * DAY, now=NOW - DAY)
    return sign_locally(plan.builder, key)


def _issue(
    csr_kind: str, parent: x509.Certificate, parent_kind: str, *, is_ca: bool
) -> x509.Certificate:
    plan = pki.build_certificate(
        make_csr(private_key(csr_kind)),
        pki.IssuanceRequest(is_ca=is_ca),
        parent,
        ALLOW_CA,
        NOW,
    )
    return sign_locally(plan.builder, ca_key(parent_kind))


ROOT = _root("p384", "Chain Root")
INTERMEDIATE = _issue("p256", ROOT, "p384", is_ca=True)
LEAF = _issue("rsa2048", INTERMEDIATE, "p256", is_ca=False)
OTHER_ROOT = _root("p521", "Unrelated Root")


def test_loads_pem_with_text_whitespace_and_other_blocks() -> None:
    key_block = ca_key("p256").private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    data = (
        b"\n  Bag Attributes: friendlyName ca\n"
        + pem(INTERMEDIATE)
        + b"\n"
        + key_block
        + b"subject=/CN=Chain Root\n"
        + pem(ROOT)
        + b"\n\n"
    )
    assert pki.load_certificates(data) == [INTERMEDIATE, ROOT]
    assert pki.load_certificates(data.decode()) == [INTERMEDIATE, ROOT]


def test_loads_der() -> None:
    assert pki.load_certificates(b"\n" + der(ROOT) + b"\n") == [ROOT]


def _root_whose_der_ends_in_whitespace() -> x509.Certificate:
    # A fixed Ed25519 key signs deterministically, so this search finds the same
    # certificate every run: the regression for a loader that stripped the last
    # signature byte (CI failed on it about once in 40 runs with random keys).
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Whitespace Root")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    for serial in range(1, 10_000):
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(start + 30 * DAY)
            .sign(key, None)
        )
        if der(cert)[-1:].isspace():
            return cert
    raise AssertionError("no certificate whose DER ends in a whitespace byte")


def test_loads_der_whose_signature_ends_in_a_whitespace_byte() -> None:
    cert = _root_whose_der_ends_in_whitespace()
    assert der(cert)[-1:].isspace()
    assert pki.load_certificates(der(cert)) == [cert]
    assert pki.load_certificates(b" \r\n" + der(cert) + b"\n\n") == [cert]


def test_refuses_der_followed_by_other_bytes() -> None:
    with pytest.raises(CAError, match="neither PEM nor a DER certificate"):
        pki.load_certificates(der(ROOT) + b"trailing")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "the CA bundle is empty"),
        ("  \n ", "the CA bundle is empty"),
        (b"not a certificate", "the CA bundle is neither PEM nor a DER certificate"),
        (b"\x30\x03\x02\x01\x01", "the CA bundle is neither PEM nor a DER certificate"),
        (
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "the CA bundle holds no PEM certificate",
        ),
        (b"-----BEGIN CERTIFICATE-----\nMIIB", "the CA bundle holds no PEM certificate"),
    ],
)
def test_load_refuses(data: bytes | str, reason: str) -> None:
    with pytest.raises(CAError) as info:
        pki.load_certificates(data)
    assert info.value.kind is CAErrorKind.INVALID
    assert info.value.reason == reason


def test_load_names_the_broken_block() -> None:
    broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    with pytest.raises(CAError, match="PEM block 2 of the CA bundle is not a certificate"):
        pki.load_certificates(pem(ROOT) + broken)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_arbitrary_bundle_raises_only_ca_error(data: bytes | str) -> None:
    outcome = _load_outcome(data)
    assert outcome is CAErrorKind.INVALID or all(
        isinstance(cert, x509.Certificate) for cert in outcome
    )


def _load_outcome(data: bytes | str) -> CAErrorKind | list[x509.Certificate]:
    """The certificates, or the CAError kind; any other exception escapes."""
    try:
        return pki.load_certificates(data)
    except CAError as exc:
        return exc.kind


@pytest.mark.parametrize(
    "given_order",
    [
        [LEAF, INTERMEDIATE, ROOT],
        [ROOT, INTERMEDIATE, LEAF],
        [INTERMEDIATE, LEAF, ROOT],
        [ROOT, LEAF, INTERMEDIATE, LEAF],
    ],
)
def test_order_chain(given_order: list[x509.Certificate]) -> None:
    assert pki.order_chain(given_order) == [LEAF, INTERMEDIATE, ROOT]


def test_order_chain_refuses_unrelated_certificates() -> None:
    with pytest.raises(CAError, match="do not form a single chain"):
        pki.order_chain([LEAF, INTERMEDIATE, ROOT, OTHER_ROOT])


def test_order_chain_refuses_gaps() -> None:
    # Leaf and root without the intermediate are two separate chains.
    with pytest.raises(CAError, match="do not form a single chain"):
        pki.order_chain([LEAF, ROOT])


def _ca_secret(data: bytes, key_kind: str) -> tuple[x509.Certificate, ...]:
    return pki.load_ca_chain(data, ca_key(key_kind).public_key(), NOW).certificates


def test_ca_secret_with_the_ca_alone_or_with_its_parents() -> None:
    assert _ca_secret(pem(ROOT), "p384") == (ROOT,)
    assert _ca_secret(pem(INTERMEDIATE), "p256") == (INTERMEDIATE,)
    assert _ca_secret(pem(INTERMEDIATE) + pem(ROOT), "p256") == (INTERMEDIATE, ROOT)
    assert _ca_secret(pem(ROOT) + pem(INTERMEDIATE), "p256") == (INTERMEDIATE, ROOT)
    assert _ca_secret(der(INTERMEDIATE), "p256") == (INTERMEDIATE,)


# Same subject as ROOT, another key: by name it looks like INTERMEDIATE's issuer.
IMPOSTOR_ROOT = _root("p521", "Chain Root")


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        (pem(LEAF) + pem(INTERMEDIATE) + pem(ROOT), (INTERMEDIATE, ROOT)),
        (pem(INTERMEDIATE) + pem(IMPOSTOR_ROOT), (INTERMEDIATE,)),
    ],
    ids=["leaf-in-front", "root-by-name-only"],
)
def test_cli_and_controller_read_a_ca_secret_the_same_way(
    secret: bytes, expected: tuple[x509.Certificate, ...]
) -> None:
    """Two CA secrets on which the CLI and the controller used to disagree.

    Before, the CLI (``ca import``, ``sign``) ran ``order_chain`` over the whole
    secret and ``check_ca`` on its lowest certificate, while the controller's
    issuer check picked the certificate holding the Key Vault key and followed
    issuers by subject name alone:

    - ``leaf-in-front`` (a leaf issued by the CA, the CA, the root; e.g. a
      ``fullchain.pem``): the CLI refused it (``not-a-ca``, it checked the
      leaf), the controller accepted it (Ready, chain CA + root).
    - ``root-by-name-only`` (the CA and a root that has the CA's issuer name
      but another key): the CLI refused it (``invalid``: not one chain), the
      controller accepted it and published the impostor as the CA's parent.

    Now both call ``load_ca_chain``: the CA is the certificate of the key, its
    issuers follow by verified signature, anything else is left out. Both
    secrets are accepted, with the chain below.
    """
    assert _ca_secret(secret, "p256") == expected


def test_ca_secret_verdicts() -> None:
    intermediate_key = ca_key("p256").public_key()
    # No certificate holds the key: the lowest one is judged, as a single CA was.
    with pytest.raises(CAError) as mismatch:
        pki.load_ca_chain(pem(ROOT), intermediate_key, NOW)
    assert mismatch.value.kind is CAErrorKind.MISMATCH
    with pytest.raises(CAError) as leaf:
        pki.load_ca_chain(pem(INTERMEDIATE) + pem(LEAF), ca_key("p521").public_key(), NOW)
    assert leaf.value.kind is CAErrorKind.NOT_A_CA
    # The CA itself is checked at `now`.
    with pytest.raises(CAError) as expired:
        pki.load_ca_chain(pem(INTERMEDIATE) + pem(ROOT), intermediate_key, NOW + 120 * DAY)
    assert expired.value.kind is CAErrorKind.EXPIRED
    with pytest.raises(CAError) as early:
        pki.load_ca_chain(pem(INTERMEDIATE), intermediate_key, NOW - DAY)
    assert early.value.kind is CAErrorKind.NOT_YET_VALID
    with pytest.raises(CAError) as invalid:
        pki.load_ca_chain(b"no certificate here", intermediate_key, NOW)
    assert invalid.value.kind is CAErrorKind.INVALID


def test_ca_secret_with_an_old_certificate_of_the_same_key() -> None:
    """A re-issued CA certificate next to the expired one: the valid one is the CA."""
    key = ca_key("p256")
    old_plan = pki.build_root_ca(key.public_key(), "Old", lifetime=DAY, now=NOW - 10 * DAY)
    old = sign_locally(old_plan.builder, key)
    secret = pem(old) + pem(ROOT) + pem(INTERMEDIATE)
    chain = pki.load_ca_chain(secret, key.public_key(), NOW)
    assert chain.certificates == (INTERMEDIATE, ROOT)
    assert chain.ca == INTERMEDIATE
    assert chain.pem() == pem(INTERMEDIATE) + pem(ROOT)
    with pytest.raises(CAError) as only_old:
        pki.load_ca_chain(pem(old), key.public_key(), NOW)
    assert only_old.value.kind is CAErrorKind.EXPIRED


def test_split_with_the_root_held() -> None:
    certificate, ca = pki.split_chain(LEAF, [INTERMEDIATE, ROOT])
    assert certificate == pem(LEAF) + pem(INTERMEDIATE)
    assert ca == pem(ROOT)


def test_split_directly_under_a_root() -> None:
    leaf = _issue("p256", ROOT, "p384", is_ca=False)
    certificate, ca = pki.split_chain(leaf, [ROOT])
    assert certificate == pem(leaf)
    assert ca == pem(ROOT)


def test_split_without_the_root_gives_the_top_as_ca() -> None:
    certificate, ca = pki.split_chain(LEAF, [INTERMEDIATE])
    assert certificate == pem(LEAF) + pem(INTERMEDIATE)
    assert ca == pem(INTERMEDIATE)


def test_split_refuses_a_leaf_from_another_ca() -> None:
    with pytest.raises(CAError):
        pki.split_chain(LEAF, [OTHER_ROOT])
    with pytest.raises(CAError, match="no CA certificate"):
        pki.split_chain(LEAF, [])


@pytest.mark.parametrize(
    ("leaf", "chain"),
    [
        (LEAF, (INTERMEDIATE, ROOT)),
        (LEAF, (INTERMEDIATE,)),
        (_issue("p256", ROOT, "p384", is_ca=False), (ROOT,)),
    ],
)
def test_a_ca_chain_splits_its_leaves_as_split_chain_does(
    leaf: x509.Certificate, chain: tuple[x509.Certificate, ...]
) -> None:
    ca_chain = pki.CAChain(chain)
    expected = pki.split_chain(leaf, list(chain))
    assert ca_chain.split(leaf) == expected
    assert ca_chain.split(leaf) == expected  # the second from the cached parts


def test_a_ca_chain_refuses_a_leaf_it_did_not_issue() -> None:
    with pytest.raises(CAError, match="not the leaf"):
        pki.CAChain((OTHER_ROOT,)).split(LEAF)


def test_self_signed() -> None:
    assert pki.is_self_signed(ROOT)
    assert not pki.is_self_signed(INTERMEDIATE)
    assert pki.issued_by(LEAF, INTERMEDIATE)
    assert not pki.issued_by(LEAF, ROOT)
