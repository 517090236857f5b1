"""Pure X.509 logic for the issuer: no I/O, no Kubernetes, no Key Vault.

CSR checks (:func:`parse_csr`), the certificate template
(:func:`build_certificate`), the signature algorithms
(:class:`SignatureAlgorithm`, :func:`ca_signature_algorithm`), remote-signature
assembly (:func:`sign_certificate`, :func:`sign_csr`), CRLs (:func:`build_crl`,
:func:`sign_crl`, through the same remote route), the root CA template
(:func:`build_root_ca`), CA checks (:func:`check_ca`) and chains
(:func:`load_ca_chain`, the one reading of a CA secret for both the CLI and
the controller; :func:`split_chain`). Every failure is a
:class:`PKIError` subclass with a one-line ``reason``.
"""

from akv_issuer.pki.algorithms import (
    CAPublicKey,
    SignatureAlgorithm,
    ca_signature_algorithm,
    check_algorithm,
    default_algorithm,
    is_pss_signed,
    verify_signature,
)
from akv_issuer.pki.ca import build_root_ca, check_ca
from akv_issuer.pki.chain import (
    CAChain,
    is_self_signed,
    issued_by,
    load_ca_chain,
    load_certificates,
    order_chain,
    split_chain,
    to_pem,
)
from akv_issuer.pki.crl import RevokedCertificate, build_crl, sign_crl
from akv_issuer.pki.csr import (
    CSR_PARSE_ERRORS,
    MAX_CSR_PEM_BYTES,
    MAX_RSA_BITS,
    MIN_RSA_BITS,
    check_csr,
    parse_csr,
)
from akv_issuer.pki.errors import (
    AlgorithmError,
    CAError,
    CAErrorKind,
    CSRError,
    PKIError,
    PolicyError,
    SignatureError,
)
from akv_issuer.pki.issuance import (
    DEFAULT_DURATION,
    CertificatePlan,
    ClampReason,
    IssuancePolicy,
    IssuanceRequest,
    IssuerProfile,
    authority_key_identifier,
    build_certificate,
    derived_serial_number,
    random_serial_number,
)
from akv_issuer.pki.signing import RemoteSigner, sign_certificate, sign_csr
from akv_issuer.pki.usages import (
    CA_KEY_USAGE,
    DEFAULT_USAGES,
    KNOWN_USAGES,
    issued_key_usage,
    resolve_usages,
)

__all__ = [
    "CA_KEY_USAGE",
    "CSR_PARSE_ERRORS",
    "DEFAULT_DURATION",
    "DEFAULT_USAGES",
    "KNOWN_USAGES",
    "MAX_CSR_PEM_BYTES",
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "AlgorithmError",
    "CAChain",
    "CAError",
    "CAErrorKind",
    "CAPublicKey",
    "CSRError",
    "CertificatePlan",
    "ClampReason",
    "IssuancePolicy",
    "IssuanceRequest",
    "IssuerProfile",
    "PKIError",
    "PolicyError",
    "RemoteSigner",
    "RevokedCertificate",
    "SignatureAlgorithm",
    "SignatureError",
    "authority_key_identifier",
    "build_certificate",
    "build_crl",
    "build_root_ca",
    "ca_signature_algorithm",
    "check_algorithm",
    "check_ca",
    "check_csr",
    "default_algorithm",
    "derived_serial_number",
    "is_pss_signed",
    "is_self_signed",
    "issued_by",
    "issued_key_usage",
    "load_ca_chain",
    "load_certificates",
    "order_chain",
    "parse_csr",
    "random_serial_number",
    "resolve_usages",
    "sign_certificate",
    "sign_crl",
    "sign_csr",
    "split_chain",
    "to_pem",
    "verify_signature",
]
