"""The pure CA rules of akv_issuer.ca: which certificate holds a key, the
template of a root's successor, the signature scheme, what may be rotated and
how, and root certification with a local signer standing in for Key Vault."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import NameOID

from akv_issuer import ca, pki
from akv_issuer.keyvault import KeyInfo

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@functools.cache
def private_key(kind: str) -> PrivateKey:
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    return ec.generate_private_key({"p256": ec.SECP256R1(), "p384": ec.SECP384R1()}[kind])


class LocalSigner:
    """Signs digests with a local key and answers in Key Vault's raw format."""

    def __init__(self, key: PrivateKey) -> None:
        self.key = key
        self.calls = 0

    async def sign_digest(self, algorithm: pki.SignatureAlgorithm, digest: bytes) -> bytes:
        self.calls += 1
        prehashed = utils.Prehashed(algorithm.hash_algorithm)
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(digest, algorithm.rsa_padding(), prehashed)
        r, s = utils.decode_dss_signature(self.key.sign(digest, ec.ECDSA(prehashed)))
        size = (self.key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def key_info(
    kind: str, version: str = "v1", *, enabled: bool = True, ops: tuple[str, ...] = ("sign",)
) -> KeyInfo:
    public = private_key(kind).public_key()
    return KeyInfo(
        vault_url="https://ca.vault.azure.net",
        name="ca-key",
        version=version,
        kid=f"https://ca.vault.azure.net/keys/ca-key/{version}",
        kty="RSA" if kind.startswith("rsa") else "EC",
        public_key=public,
        enabled=enabled,
        key_ops=ops,
    )


def name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
        ]
    )


def certificate(
    subject_key: PrivateKey,
    subject: x509.Name,
    *,
    issuer_key: PrivateKey | None = None,
    issuer: x509.Name | None = None,
    ca_constraints: x509.BasicConstraints | None = None,
    lifetime: dt.timedelta = dt.timedelta(days=30),
    pss: bool = False,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW - dt.timedelta(days=1) + lifetime)
    )
    if ca_constraints is not None:
        builder = builder.add_extension(ca_constraints, critical=True)
    signing_key = issuer_key or subject_key
    if pss:
        assert isinstance(signing_key, rsa.RSAPrivateKey)
        return builder.sign(
            signing_key,
            hashes.SHA256(),
            rsa_padding=padding.PSS(padding.MGF1(hashes.SHA256()), hashes.SHA256.digest_size),
        )
    return builder.sign(signing_key, hashes.SHA256())


def root(kind: str = "p256", *, path_length: int | None = 1, pss: bool = False) -> x509.Certificate:
    return certificate(
        private_key(kind),
        name("Root"),
        ca_constraints=x509.BasicConstraints(ca=True, path_length=path_length),
        pss=pss,
    )


def pem(*certs: x509.Certificate) -> str:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs).decode()


# ---- which certificate holds a key ----------------------------------------------------------


def test_the_certificate_holding_a_key_is_found_in_a_chain() -> None:
    ca_cert = root("p256")
    leaf = certificate(private_key("p384"), name("Leaf"), issuer_key=private_key("p256"))
    assert ca.certificate_for([leaf, ca_cert], private_key("p256").public_key()) == ca_cert
    assert ca.certificate_for([leaf, ca_cert], private_key("p384").public_key()) == leaf
    assert ca.certificate_for([leaf], private_key("rsa2048").public_key()) is None


def test_holds_key_tells_a_different_key_from_no_certificate() -> None:
    text = pem(root("p256"))
    assert ca.holds_key(text, private_key("p256").public_key()) is True
    assert ca.holds_key(text, private_key("p384").public_key()) is False
    assert ca.holds_key("no certificate here", private_key("p256").public_key()) is None


# ---- the successor of a root ----------------------------------------------------------------


def test_a_successor_keeps_subject_and_path_length_and_by_default_the_lifetime() -> None:
    old = root(path_length=2)
    template = ca.RootTemplate.renewing(old)
    assert template.subject == old.subject
    assert template.path_length == 2
    assert template.lifetime == dt.timedelta(days=30)
    longer = ca.RootTemplate.renewing(old, lifetime=dt.timedelta(days=365))
    assert longer.lifetime == dt.timedelta(days=365)


def test_a_successor_of_a_root_without_path_length_or_constraints_has_none() -> None:
    assert ca.RootTemplate.renewing(root(path_length=None)).path_length is None
    bare = certificate(private_key("p256"), name("Bare"))
    assert ca.RootTemplate.renewing(bare).path_length is None


# ---- the signature scheme -------------------------------------------------------------------


def test_the_default_scheme_follows_the_key() -> None:
    assert ca.signature_algorithm(private_key("p384").public_key()) == "ES384"
    assert ca.signature_algorithm(private_key("rsa3072").public_key()) == "RS384"
    assert ca.signature_algorithm(private_key("rsa2048").public_key(), pss=True) == "PS256"


def test_a_pss_signed_ca_keeps_pss() -> None:
    old = root("rsa2048", pss=True)
    assert pki.is_pss_signed(old)
    assert ca.signature_algorithm(private_key("rsa2048").public_key(), ca_cert=old) == "PS256"
    # A new key version of a bigger size: PSS stays, the hash follows the size.
    assert ca.signature_algorithm(private_key("rsa3072").public_key(), ca_cert=old) == "PS384"
    plain = root("rsa2048")
    assert ca.signature_algorithm(private_key("rsa2048").public_key(), ca_cert=plain) == "RS256"


def test_an_explicit_algorithm_wins_but_must_fit_the_key() -> None:
    rsa_key = private_key("rsa2048").public_key()
    explicit = pki.SignatureAlgorithm.RS512
    assert ca.signature_algorithm(rsa_key, explicit, ca_cert=root("rsa2048", pss=True)) == "RS512"
    with pytest.raises(pki.AlgorithmError, match="does not fit"):
        ca.signature_algorithm(private_key("p256").public_key(), explicit)


# ---- what may be re-certified ---------------------------------------------------------------


def test_only_a_self_signed_ca_is_a_root_to_renew() -> None:
    ca.check_root(root())
    leaf = certificate(private_key("p384"), name("Leaf"))
    with pytest.raises(ca.NotACACertificate) as not_ca:
        ca.check_root(leaf)
    assert not_ca.value.subject == "O=Example,CN=Leaf"
    intermediate = certificate(
        private_key("p384"),
        name("Intermediate"),
        issuer_key=private_key("p256"),
        issuer=name("Root"),
        ca_constraints=x509.BasicConstraints(ca=True, path_length=0),
    )
    with pytest.raises(ca.NotARoot) as not_root:
        ca.check_root(intermediate)
    assert (not_root.value.subject, not_root.value.issuer) == (
        "O=Example,CN=Intermediate",
        "O=Example,CN=Root",
    )


def test_a_key_version_that_may_not_sign_is_refused() -> None:
    ca.check_signing_key(key_info("p256"))
    with pytest.raises(ca.KeyNotUsable, match=r"ca-key/v1 is disabled"):
        ca.check_signing_key(key_info("p256", enabled=False))
    with pytest.raises(ca.KeyNotUsable, match="does not permit the sign operation"):
        ca.check_signing_key(key_info("p256", ops=("verify",)))


# ---- root certification ---------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "pss"), [("p384", False), ("rsa2048", True)])
def test_certify_root_signs_the_template_through_the_signer(kind: str, pss: bool) -> None:
    old = root(kind, path_length=3, pss=pss)
    template = ca.RootTemplate.renewing(old, lifetime=dt.timedelta(days=90))
    public = private_key(kind).public_key()
    algorithm = ca.signature_algorithm(public, ca_cert=old)
    signer = LocalSigner(private_key(kind))
    new = asyncio.run(ca.certify_root(template, public, algorithm, signer, NOW))
    assert signer.calls == 1
    assert new.subject == new.issuer == old.subject
    assert new.serial_number != old.serial_number
    assert new.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 3
    assert new.not_valid_before_utc == NOW
    assert new.not_valid_after_utc == NOW + dt.timedelta(days=90)
    assert pki.is_pss_signed(new) is pss
    new.verify_directly_issued_by(new)
    pki.check_ca(new, public, NOW)


def test_the_signers_own_error_passes_through_unchanged() -> None:
    class Fenced(Exception):
        pass

    class Refusing:
        async def sign_digest(self, algorithm: pki.SignatureAlgorithm, digest: bytes) -> bytes:
            raise Fenced

    template = ca.RootTemplate(name("Root"), dt.timedelta(days=1))
    public = private_key("p256").public_key()
    with pytest.raises(Fenced):
        asyncio.run(
            ca.certify_root(template, public, pki.SignatureAlgorithm.ES256, Refusing(), NOW)
        )


def test_a_signer_of_another_key_is_caught_before_anything_is_returned() -> None:
    template = ca.RootTemplate(name("Root"), dt.timedelta(days=1))
    public = private_key("p256").public_key()
    wrong = LocalSigner(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(pki.SignatureError):
        asyncio.run(ca.certify_root(template, public, pki.SignatureAlgorithm.ES256, wrong, NOW))


# ---- rotation steps -------------------------------------------------------------------------


def current(latest: KeyInfo, holder: KeyInfo, cert: x509.Certificate) -> ca.CurrentCA:
    return ca.CurrentCA(cert=cert, key=holder, latest=latest, secret_version="s1")


def test_a_root_whose_key_version_is_the_newest_gets_a_new_version() -> None:
    v1 = key_info("p256")
    plan = ca.plan_rotation(current(v1, v1, root()), key_name="ca-key", secret_name="ca-pem")
    assert plan.step is ca.RotationStep.NEW_VERSION
    assert (plan.key_name, plan.secret_name) == ("ca-key", "ca-pem")
    assert plan.template == ca.RootTemplate.renewing(root())


def test_a_newest_version_without_certificate_is_certified_not_rotated_again() -> None:
    v1, v2 = key_info("p256"), key_info("p256", "v2")
    state = current(v2, v1, root())
    assert state.pending
    plan = ca.plan_rotation(state, key_name="ca-key", secret_name="ca-key")
    assert plan.step is ca.RotationStep.CERTIFY_PENDING


def test_a_new_key_gets_its_own_secret() -> None:
    v1 = key_info("p256")
    plan = ca.plan_rotation(
        current(v1, v1, root()),
        key_name="ca-key",
        secret_name="ca-key",
        new_key_name="ca-key-2027",
        lifetime=dt.timedelta(days=7),
    )
    assert plan.step is ca.RotationStep.NEW_KEY
    assert (plan.key_name, plan.secret_name) == ("ca-key-2027", "ca-key-2027")
    assert plan.template.lifetime == dt.timedelta(days=7)


def test_an_intermediate_is_not_rotated() -> None:
    v1 = key_info("p384")
    intermediate = certificate(
        private_key("p384"),
        name("Intermediate"),
        issuer_key=private_key("p256"),
        issuer=name("Root"),
        ca_constraints=x509.BasicConstraints(ca=True, path_length=0),
    )
    with pytest.raises(ca.NotARoot):
        ca.plan_rotation(current(v1, v1, intermediate), key_name="ca-key", secret_name="ca-key")


def test_key_shape_names_size_or_curve() -> None:
    assert ca.key_shape(key_info("rsa3072")) == "RSA 3072"
    assert ca.key_shape(key_info("p384")) == "EC P-384"
