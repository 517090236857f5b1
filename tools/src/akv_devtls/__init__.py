"""TLS server certificates for the local development tools, signed by a throwaway CA.

The Key Vault emulator (``akv_emulator.tls``) and the dev cluster's API server
(``akv_devcluster.kubeconfig``) each make a short-lived local CA with
:func:`akv_issuer.pki.build_root_ca` and one server certificate under it. The
server certificate is the same in both, so it is built here once.

Why a top-level package of its own: it belongs to the development
distribution (``tools/``, azure-keyvault-issuer-devtools) like both of its
users, never to the production package ``akv_issuer``, and being neither
``akv_emulator`` nor ``akv_devcluster`` it keeps those two from importing each
other. It is not part of ``akv_issuer.pki``, which is about the certificates the
issuer signs, not about the test tools' own TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CLOCK_SKEW", "server_certificate", "subject_alt_name"]

# How far certificates are backdated, for clients whose clock is a little behind.
CLOCK_SKEW = datetime.timedelta(minutes=5)


def subject_alt_name(names: Iterable[str]) -> x509.SubjectAlternativeName:
    """IP address entries for names that parse as one, DNS names for the rest, in order."""
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def server_certificate(
    ca_key: CertificateIssuerPrivateKeyTypes,
    ca_cert: x509.Certificate,
    names: Iterable[str],
    *,
    common_name: str,
    lifetime: datetime.timedelta,
    now: datetime.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A fresh P-256 key and a TLS server certificate for ``names`` signed by the local CA.

    Valid from ``now`` for ``lifetime``, like :func:`akv_issuer.pki.build_root_ca`
    (pass ``now - CLOCK_SKEW`` to backdate both alike).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
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
        .add_extension(subject_alt_name(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert
