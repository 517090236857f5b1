"""``akv-issuer ca``: create a root CA for a Key Vault key, or a CSR to make the
key an intermediate under an existing root, and import the returned chain;
rotate a root to a new key version; sign a CRL (``ca crl``, in cli/crl.py).

The CA certificate lives in a Key Vault secret named like the key by default,
the convention of the Go version's ``hack/create_ca_cert``.

``ca rotate`` exists because rotating a Key Vault CA by hand is several steps
that must happen in one order: a new key version, a root certificate for it
(same subject and path length, signed by that version through Key Vault), and
that certificate stored as a new version of the CA secret. The running issuer
(``keyVersion`` unset) keeps signing with the old version until the new secret
version holds a certificate for the new one, then switches at its next check;
so the command never stores a certificate for a key version it has not just
certified, and a key version left without a certificate (a failed run, or Key
Vault's own rotation policy) is certified by running the command again rather
than by rotating once more. Intermediates are not renewed here: their parent
signs them, through ``ca csr`` / ``ca import`` with ``--key-version``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from akv_issuer import pki
from akv_issuer.cli import common, crl
from akv_issuer.cli.errors import CLIError
from akv_issuer.keyvault import PEM_CONTENT_TYPE, ErrorKind, KeyInfo, KeyVaultError


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

    rotate = ca_commands.add_parser(
        "rotate",
        help="rotate a root CA made by `ca create`: new key version, new root, new secret version",
        description="Rotate a self-signed root CA whose key is in Key Vault: create a new "
        "version of the key (Key Vault's rotate), a root certificate with the same subject and "
        "path length signed by that version, and store it as a new version of the CA secret. "
        "A running issuer with keyVersion unset switches to it at its next check. If the "
        "key's newest version has no CA certificate yet (e.g. Key Vault's rotation policy made "
        "it), that version is certified instead of creating another one.",
    )
    common.add_vault_arguments(rotate, key_version=False)
    rotate.add_argument(
        "--secret-name", default=None, help="CA secret name (default: the key's name)"
    )
    rotate.add_argument(
        "--new-key-name",
        default=None,
        metavar="NAME",
        help="move to a new key NAME of the same type instead of a new version (refused if it "
        "exists); the certificate goes to the secret NAME and issuers must be pointed at it",
    )
    rotate.add_argument(
        "--lifetime",
        type=common.parse_duration,
        default=None,
        help="validity of the new CA certificate (default: the current one's lifetime)",
    )
    common.add_algorithm_arguments(rotate, " (default when the current CA uses it)")
    rotate.add_argument(
        "--dry-run",
        action="store_true",
        help="print the current key version and CA and what would be created; change nothing",
    )
    rotate.add_argument("--out", default=None, help="write the new PEM here (default: stdout)")
    rotate.set_defaults(handler=_rotate)

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


def _algorithm(args: argparse.Namespace, public_key: pki.CAPublicKey) -> pki.SignatureAlgorithm:
    if args.algorithm is not None:
        algorithm = pki.SignatureAlgorithm(args.algorithm)
        pki.check_algorithm(public_key, algorithm)
        return algorithm
    return pki.default_algorithm(public_key, pss=args.pss)


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
        algorithm = _algorithm(args, key.public_key)
        plan = pki.build_root_ca(
            key.public_key,
            subject,
            lifetime=args.lifetime,
            now=datetime.datetime.now(datetime.UTC),
            path_length=args.path_length,
        )
        cert = await pki.sign_certificate(
            plan.builder, key.public_key, algorithm, vault.signer(key)
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
        algorithm = _algorithm(args, key.public_key)
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


# ---- ca rotate ------------------------------------------------------------------------------


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _shape(key: KeyInfo) -> str:
    """A key's type and size or curve, e.g. ``RSA 3072`` or ``EC-HSM P-384``."""
    if isinstance(key.public_key, rsa.RSAPublicKey):
        return f"{key.kty} {key.public_key.key_size}"
    return f"{key.kty} {_CURVE_NAMES.get(key.public_key.curve.name, key.public_key.curve.name)}"


_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


@dataclass(frozen=True)
class _CurrentCA:
    cert: x509.Certificate
    key: KeyInfo  # the key version the certificate holds
    latest: KeyInfo  # the key's newest version (the same, unless one is pending)
    secret_version: str

    @property
    def pending(self) -> bool:
        """The newest key version has no CA certificate (a policy rotation, a failed run)."""
        return self.key.version != self.latest.version


async def _current_ca(vault: common.VaultSession, secret_name: str) -> _CurrentCA:
    """The CA certificate in the secret's latest version and the key version it holds."""
    access = vault.access
    latest = await access.get_key(vault.vault_url, vault.key_name, None, common.AUTH)
    try:
        secret = await access.get_secret(vault.vault_url, secret_name, None, common.AUTH)
    except KeyVaultError as exc:
        if exc.kind is ErrorKind.NOT_FOUND:
            raise CLIError(
                f"secret {secret_name} not found: `ca rotate` renews a CA stored by "
                f"`ca create --upload-secret` (or name it with --secret-name)"
            ) from None
        raise
    certs = pki.load_certificates(secret.value)
    by_key = {_spki(c.public_key()): c for c in reversed(certs)}
    found = by_key.get(_spki(latest.public_key))
    if found is not None:
        return _CurrentCA(found, latest, latest, secret.version)
    versions = await access.list_key_versions(vault.vault_url, vault.key_name, common.AUTH)
    for version in versions:
        if version.version == latest.version:
            continue
        key = await access.get_key(vault.vault_url, vault.key_name, version.version, common.AUTH)
        found = by_key.get(_spki(key.public_key))
        if found is not None:
            return _CurrentCA(found, key, latest, secret.version)
    raise CLIError(
        f"secret {secret_name} holds no certificate for any of the {len(versions)} newest "
        f"versions of key {vault.key_name}; it is not this key's CA"
    )


def _check_root(current: _CurrentCA, secret_name: str) -> None:
    cert = current.cert
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CLIError(
            f"the certificate in secret {secret_name} ({cert.subject.rfc4514_string()}) is not "
            f"a CA certificate"
        )
    if not pki.is_self_signed(cert):
        raise CLIError(
            f"the CA in secret {secret_name} ({cert.subject.rfc4514_string()}) is an "
            f"intermediate issued by {cert.issuer.rfc4514_string()}; `ca rotate` renews "
            f"self-signed roots only: create a key version, then `akv-issuer ca csr "
            f"--key-version VERSION`, have the parent sign it, and `akv-issuer ca import "
            f"--key-version VERSION --chain FILE` (docs/rotation.md)"
        )


def _describe_duration(value: datetime.timedelta) -> str:
    if value.total_seconds() % 86400 == 0:
        return f"{value.days}d"
    return f"{int(value.total_seconds()) // 3600}h{int(value.total_seconds()) % 3600 // 60}m"


async def _rotate(args: argparse.Namespace) -> int:
    secret_name = args.secret_name or args.key_name
    if args.new_key_name is not None and args.new_key_name == args.key_name:
        raise CLIError("--new-key-name must differ from --key-name")
    async with common.open_vault(args) as vault:
        current = await _current_ca(vault, secret_name)
        _check_root(current, secret_name)
        old = current.cert
        lifetime = args.lifetime or (old.not_valid_after_utc - old.not_valid_before_utc)
        path_length = old.extensions.get_extension_for_class(
            x509.BasicConstraints
        ).value.path_length
        pss = args.pss or pki.is_pss_signed(old)
        target_secret = args.new_key_name or secret_name
        now = datetime.datetime.now(datetime.UTC)
        if args.new_key_name is not None:
            action = (
                f"create key {args.new_key_name} ({_shape(current.key)}), a new key beside "
                f"{args.key_name}"
            )
        elif current.pending:
            action = (
                f"certify the newest key version {current.latest.version}, which has no CA "
                f"certificate yet (made after {current.key.version}); no new version"
            )
        else:
            action = f"rotate key {args.key_name}: a new version ({_shape(current.key)})"
        if args.new_key_name is not None:
            await _refuse_existing_key(vault, args.new_key_name)
        if args.dry_run:
            print(f"current key version: {current.key.kid} ({_shape(current.key)})")
            print(f"current CA (secret {secret_name}, version {current.secret_version}):")
            print(common.describe_certificate(old))
            print(f"will {action}")
            print(
                f"will create a self-signed root: subject {old.subject.rfc4514_string()}, path "
                f"length {'none' if path_length is None else path_length}, "
                f"lifetime {_describe_duration(lifetime)} (not after about "
                f"{(now + lifetime).replace(microsecond=0).isoformat()}), a new serial"
            )
            print(f"will store it as a new version of secret {target_secret}")
            print("dry run: nothing changed")
            return 0

        if args.new_key_name is not None:
            new_key = await _new_key_like(vault, args.new_key_name, current.key)
            print(f"created key {new_key.kid}", file=sys.stderr)
        elif current.pending:
            new_key = current.latest
        else:
            new_key = await vault.access.rotate_key(vault.vault_url, args.key_name, common.AUTH)
            print(f"rotated key: new version {new_key.kid}", file=sys.stderr)
        try:
            cert, algorithm, version = await _certify(
                vault,
                new_key,
                old.subject,
                lifetime,
                path_length,
                pss,
                args,
                target_secret,
            )
        except (KeyVaultError, pki.PKIError) as exc:
            raise CLIError(
                f"{exc}; key version {new_key.version} of {new_key.name} has no CA certificate "
                f"yet: run the same `ca rotate` again to certify it"
            ) from None
    pem = cert.public_bytes(serialization.Encoding.PEM)
    common.write_output(args.out, pem)
    print(f"stored in secret {target_secret} (version {version})", file=sys.stderr)
    print(common.describe_certificate(cert), file=sys.stderr)
    print(f"key:         {new_key.kid}", file=sys.stderr)
    print(f"algorithm:   {algorithm}", file=sys.stderr)
    print(
        f"previous CA: serial {old.serial_number:x}, key version {current.key.version}, "
        f"not after {old.not_valid_after_utc.isoformat()}; keep trusting it until the "
        f"certificates it issued have expired",
        file=sys.stderr,
    )
    return 0


async def _refuse_existing_key(vault: common.VaultSession, name: str) -> None:
    try:
        existing = await vault.access.get_key(vault.vault_url, name, None, common.AUTH)
    except KeyVaultError as exc:
        if exc.kind is not ErrorKind.NOT_FOUND:
            raise
    else:
        raise CLIError(f"key {existing.kid} already exists; --new-key-name must name a new key")


async def _new_key_like(vault: common.VaultSession, name: str, like: KeyInfo) -> KeyInfo:
    public = like.public_key
    if isinstance(public, rsa.RSAPublicKey):
        size, curve = public.key_size, None
    else:
        size, curve = None, _CURVE_NAMES.get(public.curve.name, public.curve.name)
    return await vault.access.create_key(
        vault.vault_url, name, common.AUTH, kty=like.kty, size=size, curve=curve
    )


async def _certify(
    vault: common.VaultSession,
    key: KeyInfo,
    subject: x509.Name,
    lifetime: datetime.timedelta,
    path_length: int | None,
    pss: bool,
    args: argparse.Namespace,
    secret_name: str,
) -> tuple[x509.Certificate, pki.SignatureAlgorithm, str]:
    """The root for ``key`` signed by it through Key Vault, stored in ``secret_name``."""
    if not key.enabled:
        raise CLIError(f"key {key.kid} is disabled")
    if "sign" not in key.key_ops:
        raise CLIError(f"key {key.kid} does not permit the sign operation")
    if args.algorithm is not None:
        algorithm = pki.SignatureAlgorithm(args.algorithm)
        pki.check_algorithm(key.public_key, algorithm)
    else:
        algorithm = pki.default_algorithm(key.public_key, pss=pss)
    plan = pki.build_root_ca(
        key.public_key,
        subject,
        lifetime=lifetime,
        now=datetime.datetime.now(datetime.UTC),
        path_length=path_length,
    )
    cert = await pki.sign_certificate(plan.builder, key.public_key, algorithm, vault.signer(key))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    version = await vault.set_secret(secret_name, pem, PEM_CONTENT_TYPE)
    return cert, algorithm, version
