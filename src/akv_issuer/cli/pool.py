"""``akv-issuer ca pool-member``: one member of a CA pool in one step.

A CA pool (``spec.pool``, docs/api.md "CA pools") is several Key Vault keys, each in a
vault of its own, each with an intermediate CA under one root. This command makes one
member: it reads (or creates) the member's key, has the member key sign a CSR for itself
(proof that the key signs), has the root's Key Vault key certify it as an intermediate CA
(path length 0 by default, NotAfter within the root's), checks the chain as the
controller will, and stores intermediate + root chain in a secret of the member's vault
(by default named like the key, where the controller looks by default). It prints the
``pool.members`` entry to paste into the issuer.

The same as ``ca csr`` (member) + ``sign --ca`` (root) + ``ca import`` (member), without
files in between.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from akv_issuer import ca, pki
from akv_issuer.cli import common
from akv_issuer.cli.errors import CLIError

PEM_CONTENT_TYPE = "application/x-pem-file"
_MEMBER_NAME = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


def register(ca_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = ca_commands.add_parser(
        "pool-member",
        help="make one member of a CA pool: an intermediate for a key in its vault, "
        "certified by the root's Key Vault key",
        description="Certify the Key Vault key --key-name in --vault-url as an intermediate CA "
        "under the root whose key is --root-key-name in --root-vault-url (its CA chain in the "
        "secret --root-ca-secret), check the chain and store it in a secret of the member's "
        "vault; print the spec.pool.members entry. Run once per vault of the pool.",
    )
    common.add_vault_arguments(parser)
    parser.add_argument(
        "--create-key",
        choices=[kind.value for kind in common.KeyKind],
        default=None,
        help="create the member's key first (refused if a key of that name exists)",
    )
    root = parser.add_argument_group("the pool's root")
    root.add_argument("--root-vault-url", required=True, help="vault of the root CA's key")
    root.add_argument("--root-key-name", required=True, help="the root CA's Key Vault key")
    root.add_argument(
        "--root-ca-secret",
        default=None,
        help="secret in the root's vault holding the root certificate (default: its key name)",
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--common-name", help="the intermediate's common name")
    group.add_argument(
        "--subject", help="the intermediate's subject as an RFC 4514 string (CN=...,O=...)"
    )
    parser.add_argument(
        "--member-name",
        default=None,
        help="the member's name in spec.pool (a DNS label; default: derived from the key name)",
    )
    parser.add_argument(
        "--lifetime",
        type=common.parse_duration,
        default=datetime.timedelta(days=1825),
        help="validity of the intermediate (default 1825d; clamped to the root's NotAfter)",
    )
    parser.add_argument(
        "--path-length",
        type=common.non_negative_int,
        default=0,
        help="basicConstraints path length of the intermediate (default 0: it signs leaves only)",
    )
    parser.add_argument(
        "--secret-name",
        default=None,
        help="secret in the member's vault to store the chain in (default: the key's name)",
    )
    common.add_algorithm_arguments(parser, algorithm_note=common.CA_SCHEME_NOTE)
    parser.add_argument("--out", default=None, help="also write the chain PEM here")
    parser.set_defaults(handler=_pool_member)


def _subject(args: argparse.Namespace) -> x509.Name:
    if args.common_name is not None:
        if not args.common_name.strip():
            raise CLIError("--common-name must not be empty")
        return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, args.common_name)])
    try:
        name = x509.Name.from_rfc4514_string(args.subject)
    except ValueError as exc:
        raise CLIError(f"--subject: {exc}") from None
    if len(name) == 0:
        raise CLIError("--subject must not be empty")
    return name


def _member_name(args: argparse.Namespace) -> str:
    name = args.member_name or re.sub(r"[^a-z0-9-]", "-", args.key_name.lower()).strip("-")[:63]
    if re.fullmatch(_MEMBER_NAME, name) is None:
        raise CLIError(
            f"--member-name {name!r}: a pool member's name is a DNS label "
            f"(lower-case letters, digits and '-')"
        )
    return name


async def _pool_member(args: argparse.Namespace) -> int:
    subject = _subject(args)
    member_name = _member_name(args)
    if (args.root_vault_url.rstrip("/").lower(), args.root_key_name.lower()) == (
        args.vault_url.rstrip("/").lower(),
        args.key_name.lower(),
    ):
        raise CLIError("the member's key is the root's key: a pool member needs a key of its own")
    secret_name = args.secret_name or args.key_name
    now = datetime.datetime.now(datetime.UTC)
    async with common.open_vault(args) as member:
        root = common.VaultSession(member.access, args.root_vault_url, args.root_key_name, None)
        root_key = await root.get_key()
        root_chain, _ = await root.load_ca(
            args.root_ca_secret or args.root_key_name,
            None,
            root_key,
            now,
            version_option="--root-ca-secret",
        )
        algorithm = common.ca_algorithm(args, root_chain.ca, root_key)
        await member.check_name_free("secret", secret_name)
        if args.create_key is not None:
            key = await member.create_key(common.KeyKind(args.create_key))
            print(f"created key {key.kid}", file=sys.stderr)
        else:
            key = await member.get_key()
        if key.public_key == root_key.public_key:
            raise CLIError(
                f"key {args.key_name!r} holds the root's key: a pool member needs a key of its own"
            )
        # The member key signs its own request: it exists, may sign, and is the one certified.
        csr = await pki.sign_csr(
            subject,
            key.public_key,
            ca.signature_algorithm(key.public_key, None),
            member.signer(key),
            [
                x509.Extension(
                    x509.oid.ExtensionOID.BASIC_CONSTRAINTS,
                    True,
                    x509.BasicConstraints(ca=True, path_length=args.path_length),
                )
            ],
        )
        request = pki.IssuanceRequest(
            duration=args.lifetime,
            usages=pki.DEFAULT_USAGES,
            is_ca=True,
            path_length=args.path_length,
        )
        profile = pki.IssuerProfile(policy=pki.IssuancePolicy(allow_ca=True))
        plan = pki.build_certificate(csr, request, root_chain.ca, profile, now)
        cert = await pki.sign_certificate(
            plan.builder, root_key.public_key, algorithm, root.signer(root_key)
        )
        chain_pem = b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (cert, *root_chain.certificates)
        )
        # The controller's own check of a member's CA.
        chain = pki.load_ca_chain(chain_pem, key.public_key, now)
        version = await member.set_secret(secret_name, chain.pem().decode(), PEM_CONTENT_TYPE)
    if args.out:
        common.write_output(args.out, chain.pem())
    print(common.describe_certificate(cert), file=sys.stderr)
    print(
        f"stored {len(chain.certificates)} certificate(s) in secret {secret_name} "
        f"(version {version}) of {args.vault_url}",
        file=sys.stderr,
    )
    if plan.clamped:
        print(f"note:        NotAfter shortened ({plan.clamped_by})", file=sys.stderr)
    entry = [
        f"- name: {member_name}",
        f"  keyVaultBaseURL: {args.vault_url}",
        f"  keyName: {args.key_name}",
    ]
    if secret_name != args.key_name:
        entry.append(f"  caSecretName: {secret_name}")
    print("\n".join(entry))
    return 0
