"""When renewal of a CA certificate is due (pure)."""

import asyncio
import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from akv_issuer.controller.api import parse_issuer_spec
from akv_issuer.controller.ca_lifecycle.renewal import renew_if_due, renewal_due_at
from akv_issuer.controller.core import Renewal
from akv_issuer.keyvault import KeyInfo
from akv_issuer.pki import SignatureAlgorithm, build_root_ca, load_ca_chain

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def ca(lifetime: dt.timedelta) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "CA")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(START)
        .not_valid_after(START + lifetime)
        .sign(key, hashes.SHA256())
    )


def test_default_is_the_last_third_of_the_lifetime() -> None:
    assert renewal_due_at(ca(dt.timedelta(days=300)), None) == START + dt.timedelta(days=200)


def test_renew_before_counts_back_from_not_after() -> None:
    cert = ca(dt.timedelta(days=3650))
    due = renewal_due_at(cert, dt.timedelta(days=30))
    assert due == START + dt.timedelta(days=3620)


def _due_renewal(spec_extra: dict[str, object]) -> Renewal:
    """What renew_if_due reports for a due root without automatic renewal: no
    Key Vault call is made on that path, so none is given."""
    key = ec.generate_private_key(ec.SECP256R1())
    plan = build_root_ca(key.public_key(), "Due CA", lifetime=dt.timedelta(days=30), now=START)
    cert = plan.builder.sign(key, hashes.SHA256())
    now = START + dt.timedelta(days=29)
    chain = load_ca_chain(cert.public_bytes(serialization.Encoding.PEM), key.public_key(), now)
    spec = parse_issuer_spec(
        {"keyVaultBaseURL": "https://ca.vault.azure.net", "keyName": "ca-key", **spec_extra}
    )
    info = KeyInfo(
        vault_url="https://ca.vault.azure.net",
        name="ca-key",
        version="v1",
        kid="https://ca.vault.azure.net/keys/ca-key/v1",
        kty="EC",
        public_key=key.public_key(),
        enabled=True,
        key_ops=("sign",),
    )

    class NoKeyVault:
        def __getattr__(self, operation: str) -> Any:
            raise AssertionError(f"unexpected Key Vault call {operation}")

    no_keyvault: Any = NoKeyVault()
    unused: Any = None
    _, renewal = asyncio.run(
        renew_if_due(no_keyvault, spec, unused, info, SignatureAlgorithm.ES256, chain, now)
    )
    assert renewal is not None
    assert renewal.reason == "AutomaticRenewalOff"
    return renewal


def test_a_due_root_names_the_secret_it_is_read_from() -> None:
    message = _due_renewal({"caSecretName": "ca-pem"}).message
    assert "--upload-secret ca-pem" in message
    assert "caRenewal.automatic: true" in message


def test_a_due_root_read_from_ca_source_names_that_source() -> None:
    message = _due_renewal({"caSource": {"secret": {"name": "root-ca", "key": "ca.crt"}}}).message
    assert "CA Secret 'root-ca' (key 'ca.crt')" in message
    assert "--upload-secret" not in message
    assert "automatic" not in message  # caSource rules automatic renewal out
