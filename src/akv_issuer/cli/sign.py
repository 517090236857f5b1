"""``akv-issuer sign``: sign one CSR with the Key Vault CA key, without Kubernetes.

It applies the same template and checks as the controller does for a
CertificateRequest, so what it prints is what the issuer would issue.
"""

from __future__ import annotations

import argparse
import datetime
import sys

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
        "--ca-secret-version", default=None, help="CA secret version (default: latest)"
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
        "key encipherment)",
    )
    parser.add_argument("--ca", action="store_true", help="issue a CA certificate")
    parser.add_argument(
        "--path-length",
        type=common.non_negative_int,
        default=None,
        help="with --ca: basicConstraints path length",
    )
    parser.add_argument(
        "--algorithm",
        choices=[alg.value for alg in pki.SignatureAlgorithm],
        default=None,
        help="signature algorithm (default: from the CA key)",
    )
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
        secret = await vault.get_secret(args.ca_secret or args.key_name, args.ca_secret_version)
        chain = pki.load_ca_chain(secret, key.public_key, now)
        algorithm = (
            pki.SignatureAlgorithm(args.algorithm)
            if args.algorithm
            else pki.default_algorithm(key.public_key)
        )
        plan = pki.build_certificate(csr, request, chain.ca, profile, now)
        cert = await pki.sign_certificate(
            plan.builder, key.public_key, algorithm, vault.signer(key)
        )
    certificate_pem, ca_pem = pki.split_chain(cert, chain.certificates)
    common.write_output(args.out, certificate_pem)
    if args.ca_out:
        common.write_output(args.ca_out, ca_pem)
    print(common.describe_certificate(cert), file=sys.stderr)
    if plan.clamped:
        print(f"note:        NotAfter shortened ({plan.clamped_by})", file=sys.stderr)
    return 0
