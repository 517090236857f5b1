"""``akv-issuer ca``: create a root CA for a Key Vault key, or a CSR to make the
key an intermediate under an existing root, and import the returned chain;
rotate a root to a new key version (``ca rotate``, in cli/rotate.py); sign a
CRL (``ca crl``, in cli/crl.py).

The CA certificate lives in a Key Vault secret named like the key by default,
the convention of the Go version's ``hack/create_ca_cert``. The CA rules
themselves (root certification, key-version discovery, rotation) are
:mod:`akv_issuer.ca`'s, shared with the controller; this is the shell:
arguments, output, one-line errors.
"""

from __future__ import annotations

import argparse
import datetime
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from akv_issuer import ca, pki
from akv_issuer.cli import common, crl, pool, rotate
from akv_issuer.cli.errors import CLIError
from akv_issuer.keyvault import PEM_CONTENT_TYPE


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ca_parser = subparsers.add_parser("ca", help="create or import the CA of a Key Vault key")
    ca_commands = ca_parser.add_subparsers(dest="ca_command", metavar="COMMAND", required=True)

    create = ca_commands.add_parser(
        "create",
        help="create a self-signed root CA certificate signed by the Key Vault key",
        description="Create a self-signed root CA certificate whose key is the Key Vault key; "
        "the key signs it through Key Vault's sign operation and never leaves the vault.",
    )
    common.add_vault_arguments(create)
    create.add_argument(
        "--create-key",
        choices=[kind.value for kind in common.KeyKind],
        default=None,
        help="create the key first (refused if a key of that name exists)",
    )
    _add_subject_arguments(create)
    create.add_argument(
        "--lifetime",
        type=common.parse_duration,
        default=datetime.timedelta(days=3650),
        help="validity of the CA certificate (default 3650d)",
    )
    create.add_argument(
        "--path-length",
        type=common.non_negative_int,
        default=None,
        help="basicConstraints path length (default: none, unlimited)",
    )
    common.add_algorithm_arguments(create)
    create.add_argument(
        "--upload-secret",
        nargs="?",
        const="",
        default=None,
        metavar="SECRET_NAME",
        help="store the PEM in a Key Vault secret (default name: the key's name)",
    )
    create.add_argument("--out", default=None, help="write the PEM here (default: stdout)")
    create.set_defaults(handler=_create)

    csr = ca_commands.add_parser(
        "csr",
        help="create a CSR for the Key Vault key, to be signed by an existing root",
        description="Create a PKCS#10 request for the Key Vault key so that an existing root "
        "(or another CA) can certify it as an intermediate CA; then store the returned chain "
        "with `akv-issuer ca import`.",
    )
    common.add_vault_arguments(csr)
    _add_subject_arguments(csr)
    csr.add_argument(
        "--path-length",
        type=common.non_negative_int,
        default=None,
        help="path length to ask for in the CSR's basicConstraints",
    )
    common.add_algorithm_arguments(csr)
    csr.add_argument("--out", default=None, help="write the CSR PEM here (default: stdout)")
    csr.set_defaults(handler=_csr)

    rotate.register(ca_commands)

    imp = ca_commands.add_parser(
        "import",
        help="check a CA chain against the Key Vault key and store it in the CA secret",
        description="Find the certificate of the Key Vault key in a PEM chain, check that it is "
        "a valid CA (same public key, CA constraints, valid now), order its issuers after it, "
        "and store that chain in the CA secret (the checks the controller runs on the secret).",
    )
    common.add_vault_arguments(imp)
    imp.add_argument("--chain", required=True, help="PEM file: the CA certificate and its parents")
    imp.add_argument("--secret-name", default=None, help="CA secret name (default: the key's name)")
    imp.set_defaults(handler=_import)

    crl.register(ca_commands)
    pool.register(ca_commands)


def _add_subject_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--common-name", help="the CA's common name")
    group.add_argument(
        "--subject",
        help="the CA's full subject as an RFC 4514 string, e.g. 'CN=Internal CA,O=Example'",
    )


def _subject(args: argparse.Namespace) -> x509.Name:
    if args.common_name is not None:
        if not args.common_name.strip():
            raise CLIError("--common-name must not be empty")
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, args.common_name)])
    try:
        name = x509.Name.from_rfc4514_string(args.subject)
    except ValueError as exc:
        raise CLIError(f"--subject is not an RFC 4514 name: {exc}") from None
    if len(name) == 0:
        raise CLIError("--subject must not be empty")
    return name


async def _create(args: argparse.Namespace) -> int:
    subject = _subject(args)
    async with common.open_vault(args) as vault:
        if args.upload_secret is not None:
            # Before the key is made: a soft-deleted secret would refuse the upload.
            await vault.check_name_free("secret", args.upload_secret or args.key_name)
        if args.create_key is not None:
            key = await vault.create_key(common.KeyKind(args.create_key))
            print(f"created key {key.kid}", file=sys.stderr)
        else:
            key = await vault.get_key()
        algorithm = common.ca_algorithm(args, None, key)
        template = ca.RootTemplate(subject, args.lifetime, args.path_length)
        cert = await ca.certify_root(
            template,
            key.public_key,
            algorithm,
            vault.signer(key),
            datetime.datetime.now(datetime.UTC),
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        if args.upload_secret is not None:
            secret_name = args.upload_secret or args.key_name
            version = await vault.set_secret(secret_name, pem.decode(), PEM_CONTENT_TYPE)
            print(f"stored in secret {secret_name} (version {version})", file=sys.stderr)
    common.write_output(args.out, pem)
    print(common.describe_certificate(cert), file=sys.stderr)
    print(f"key:         {key.kid}", file=sys.stderr)
    print(f"algorithm:   {algorithm}", file=sys.stderr)
    return 0


async def _csr(args: argparse.Namespace) -> int:
    subject = _subject(args)
    async with common.open_vault(args) as vault:
        key = await vault.get_key()
        algorithm = common.ca_algorithm(args, None, key)
        extensions = [
            x509.Extension(
                x509.oid.ExtensionOID.BASIC_CONSTRAINTS,
                True,
                x509.BasicConstraints(ca=True, path_length=args.path_length),
            )
        ]
        request = await pki.sign_csr(
            subject, key.public_key, algorithm, vault.signer(key), extensions
        )
    common.write_output(args.out, request.public_bytes(serialization.Encoding.PEM))
    print(f"CSR for {subject.rfc4514_string()} with key {key.kid}", file=sys.stderr)
    return 0


async def _import(args: argparse.Namespace) -> int:
    data = common.read_file(args.chain, "--chain")
    pki.load_certificates(data)  # a file that holds no certificate fails before the vault is asked
    secret_name = args.secret_name or args.key_name
    async with common.open_vault(args) as vault:
        key = await vault.get_key()
        chain = pki.load_ca_chain(data, key.public_key, datetime.datetime.now(datetime.UTC))
        version = await vault.set_secret(secret_name, chain.pem().decode(), PEM_CONTENT_TYPE)
    print(common.describe_certificate(chain.ca), file=sys.stderr)
    print(
        f"stored {len(chain.certificates)} certificate(s) in secret {secret_name} "
        f"(version {version})",
        file=sys.stderr,
    )
    return 0
