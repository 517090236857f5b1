"""When renewal of a CA certificate is due (pure)."""

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from akv_issuer.controller.ca_renewal import renewal_due_at

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
