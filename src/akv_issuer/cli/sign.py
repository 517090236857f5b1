"""``akv-issuer sign``: sign one CSR with the Key Vault CA key, without Kubernetes.

It applies the same template and checks as the controller does for a
CertificateRequest, so what it prints is what the issuer would issue.
"""

from __future__ import annotations

import argparse
import datetime
import sys

from cryptography import x509

from akv_issuer import pki
from akv_issuer.cli import common
from akv_issuer.cli.errors import CLIError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sign",
        help="sign one CSR with the Key Vault CA key (no Kubernetes needed)",
        description="Sign a PKCS#10 request with the Key Vault key and the CA certificate held "
        "in the CA secret; write the certificate followed by its intermediates.",
    )
    common.add_vault_arguments(parser)
    parser.add_argument(
        "--ca-secret", default=None, help="secret holding the CA chain (default: the key's name)"
    )
    parser.add_argument(
        "--ca-secret-version",
        default=None,
        help="CA secret version (default: the newest holding a certificate for the key version)",
    )
    parser.add_argument("--csr", required=True, help="PEM CSR file")
    parser.add_argument(
        "--duration",
        type=common.parse_duration,
        default=pki.DEFAULT_DURATION,
        help="validity (default 2160h, 90 days; clamped to the CA's NotAfter)",
    )
    parser.add_argument(
        "--usage",
        action="append",
        default=None,
        choices=sorted(pki.KNOWN_USAGES),
        metavar="USAGE",
        help="a cert-manager key usage; repeat for several (default: digital signature, "
        "key encipherment); usages the CSR's key type cannot have are left out, and a CA "
        "certificate gets cert sign, crl sign and digital signature",
    )
    parser.add_argument("--ca", action="store_true", help="issue a CA certificate")
    parser.add_argument(
        "--path-length",
        type=common.non_negative_int,
        default=None,
        help="with --ca: basicConstraints path length",
    )
    common.add_algorithm_arguments(parser, algorithm_note=common.CA_SCHEME_NOTE)
    parser.add_argument(
        "--out", default=None, help="write leaf + intermediates PEM here (default: stdout)"
    )
    parser.add_argument(
        "--ca-out", default=None, help="also write the root (or top of the chain) PEM here"
    )
    parser.set_defaults(handler=_sign)


async def _sign(args: argparse.Namespace) -> int:
    if args.path_length is not None and not args.ca:
        raise CLIError("--path-length needs --ca")
    csr = pki.parse_csr(common.read_file(args.csr, "--csr"))
    request = pki.IssuanceRequest(
        duration=args.duration,
        usages=tuple(args.usage) if args.usage else pki.DEFAULT_USAGES,
        is_ca=args.ca,
        path_length=args.path_length,
    )
    # Offline signing is an operator's own decision: allow CA requests when asked for.
    profile = pki.IssuerProfile(policy=pki.IssuancePolicy(allow_ca=True))
    now = datetime.datetime.now(datetime.UTC)
    async with common.open_vault(args) as vault:
        key = await vault.get_key()
        chain, _ = await vault.load_ca(
            args.ca_secret or args.key_name,
            args.ca_secret_version,
            key,
            now,
            version_option="--ca-secret-version",
        )
        algorithm = common.ca_algorithm(args, chain.ca, key)
        plan = pki.build_certificate(csr, request, chain.ca, profile, now)
        cert = await pki.sign_certificate(
            plan.builder, key.public_key, algorithm, vault.signer(key)
        )
    certificate_pem, ca_pem = pki.split_chain(cert, chain.certificates)
    common.write_output(args.out, certificate_pem)
    if args.ca_out:
        common.write_output(args.ca_out, ca_pem)
    print(common.describe_certificate(cert), file=sys.stderr)
    print(f"algorithm:   {algorithm}", file=sys.stderr)
    print(f"key usage:   {_key_usage(cert)}", file=sys.stderr)
    if plan.clamped:
        print(f"note:        NotAfter shortened ({plan.clamped_by})", file=sys.stderr)
    return 0


def _key_usage(cert: x509.Certificate) -> str:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "none (no KeyUsage extension)"
    return pki.usages.describe_key_usage_bits(pki.usages.key_usage_bits(usage))
