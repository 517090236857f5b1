"""Options and helpers shared by the Key Vault commands."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import enum
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from akv_issuer import ca, pki
from akv_issuer.cli.errors import CLIError
from akv_issuer.controller.api import parse_go_duration
from akv_issuer.keyvault import (
    Ambient,
    Cause,
    ErrorKind,
    KeyInfo,
    KeyVaultAccess,
    KeyVaultError,
    KeyVaultOptions,
    KeyVaultSigner,
)

_DAYS = re.compile(r"^([0-9]+)d$")


def parse_duration(text: str) -> datetime.timedelta:
    """Go duration syntax as in cert-manager (``2160h``, ``1h30m``), plus whole
    days (``365d``) because CA lifetimes are written in days or years."""
    days = _DAYS.match(text)
    if days:
        value = datetime.timedelta(days=int(days.group(1)))
    else:
        try:
            value = parse_go_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc}; whole days such as 365d work too") from None
    if value <= datetime.timedelta(0):
        raise argparse.ArgumentTypeError(f"duration must be positive, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def add_algorithm_arguments(
    parser: argparse.ArgumentParser, pss_note: str = "", algorithm_note: str = ""
) -> None:
    """``--algorithm`` and ``--pss`` of the commands that sign with the CA key."""
    parser.add_argument(
        "--algorithm",
        choices=[alg.value for alg in pki.SignatureAlgorithm],
        default=None,
        help="signature algorithm (default: from the key; RSA by size, EC by curve"
        + algorithm_note
        + ")",
    )
    parser.add_argument(
        "--pss",
        action="store_true",
        help="with the default algorithm of an RSA key, use RSASSA-PSS instead of PKCS#1 v1.5"
        + pss_note,
    )


CA_SCHEME_NOTE = "; RSASSA-PSS when the CA certificate is PSS-signed"
"""``algorithm_note`` of the commands that sign with an existing CA: one
signature scheme per CA (:func:`akv_issuer.pki.ca_signature_algorithm`)."""


def ca_algorithm(
    args: argparse.Namespace, ca_cert: x509.Certificate | None, key: KeyInfo
) -> pki.SignatureAlgorithm:
    """``--algorithm`` if given (checked against the key), else the CA's own
    scheme: PSS when ``--pss`` or when ``ca_cert`` is PSS-signed
    (:func:`akv_issuer.ca.signature_algorithm`)."""
    explicit = pki.SignatureAlgorithm(args.algorithm) if args.algorithm is not None else None
    return ca.signature_algorithm(key.public_key, explicit, ca_cert=ca_cert, pss=args.pss)


def add_vault_arguments(parser: argparse.ArgumentParser, *, key_version: bool = True) -> None:
    """The vault, key and connection options; ``key_version=False`` for a command that
    decides the version itself (``ca rotate``)."""
    group = parser.add_argument_group("Key Vault")
    group.add_argument(
        "--vault-url",
        required=True,
        help="vault base URL, e.g. https://my-vault.vault.azure.net",
    )
    group.add_argument("--key-name", required=True, help="name of the Key Vault key (the CA key)")
    if key_version:
        group.add_argument("--key-version", default=None, help="key version (default: latest)")
    else:
        parser.set_defaults(key_version=None)
    group.add_argument(
        "--tls-ca-file",
        default=os.environ.get("AKV_TLS_CA_FILE") or None,
        help="PEM CA bundle to trust for a non-Azure endpoint such as the emulator "
        "(env AKV_TLS_CA_FILE); Azure's public endpoints need none",
    )
    group.add_argument(
        "--timeout",
        type=parse_duration,
        default=datetime.timedelta(seconds=30),
        help="timeout of each Key Vault call (default 30s)",
    )


def read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CLIError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise CLIError(f"{what} path is a directory: {path}") from None


def write_output(path: str | None, data: bytes) -> None:
    """Write to ``path``, or to standard output when none is given."""
    if path is None or path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror or exc}") from None


def describe_certificate(cert: x509.Certificate) -> str:
    """The summary a person checks: subject, issuer, serial, fingerprint, validity."""
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return "\n".join(
        [
            f"subject:     {cert.subject.rfc4514_string()}",
            f"issuer:      {cert.issuer.rfc4514_string()}",
            f"serial:      {cert.serial_number:x}",
            f"sha256:      {fingerprint}",
            f"not before:  {cert.not_valid_before_utc.isoformat()}",
            f"not after:   {cert.not_valid_after_utc.isoformat()}",
        ]
    )


class KeyKind(enum.StrEnum):
    """Key types ``ca create --create-key`` offers: software keys, as Key Vault
    Standard has; an HSM key is created with az and then used by name."""

    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    EC_P521 = "ec-p521"


_KEY_KIND_PARAMS: dict[KeyKind, tuple[str, int | None, str | None]] = {
    KeyKind.RSA_2048: ("RSA", 2048, None),
    KeyKind.RSA_3072: ("RSA", 3072, None),
    KeyKind.RSA_4096: ("RSA", 4096, None),
    KeyKind.EC_P256: ("EC", None, "P-256"),
    KeyKind.EC_P384: ("EC", None, "P-384"),
    KeyKind.EC_P521: ("EC", None, "P-521"),
}


@dataclass
class VaultSession:
    """The one key (and its secrets) a CLI invocation works with."""

    access: KeyVaultAccess
    vault_url: str
    key_name: str
    key_version: str | None

    @property
    def ca_vault(self) -> ca.CAVault:
        """The vault as the CA rules reach it."""
        return ca.CAVault(self.access, self.vault_url, AUTH)

    async def get_key(self) -> KeyInfo:
        key = await self.access.get_key(self.vault_url, self.key_name, self.key_version, AUTH)
        try:
            ca.check_signing_key(key)
        except ca.KeyNotUsable as exc:
            raise CLIError(str(exc)) from None
        return key

    async def create_key(self, kind: KeyKind) -> KeyInfo:
        # Key Vault would silently add a new version to an existing key, which
        # rotates a CA key out from under every issuer that uses "latest".
        try:
            existing = await self.access.get_key(self.vault_url, self.key_name, None, AUTH)
        except KeyVaultError as exc:
            if exc.kind is not ErrorKind.NOT_FOUND:
                raise
        else:
            raise CLIError(f"key {existing.kid} already exists; drop --create-key to use it")
        kty, size, curve = _KEY_KIND_PARAMS[kind]
        try:
            return await self.access.create_key(
                self.vault_url, self.key_name, AUTH, kty=kty, size=size, curve=curve
            )
        except KeyVaultError as exc:
            raise _soft_deleted(exc, "key", self.vault_url, self.key_name) from None

    async def check_name_free(self, kind: str, name: str) -> None:
        """Refuse, before any change, a name held by a soft-deleted key or secret."""
        if await self.access.is_soft_deleted(self.vault_url, kind, name, AUTH):
            raise soft_deleted_error(kind, self.vault_url, name)

    def signer(self, key: KeyInfo) -> KeyVaultSigner:
        return self.access.signer(key, AUTH)

    async def get_secret(self, name: str, version: str | None) -> str:
        secret = await self.access.get_secret(self.vault_url, name, version, AUTH)
        return secret.value

    async def load_ca(
        self,
        name: str,
        version: str | None,
        key: KeyInfo,
        now: datetime.datetime,
        *,
        version_option: str,
    ) -> tuple[pki.CAChain, str]:
        """The CA chain of ``key`` in secret ``name``, and the secret version it
        came from: ``version`` if given, else the newest version holding a
        certificate for the key (:func:`akv_issuer.ca.ca_of_key_version`).
        ``version_option`` names the command's option for the secret version,
        for messages."""
        try:
            return await ca.ca_of_key_version(self.ca_vault, name, key, now, secret_version=version)
        except (ca.SecretVersionsUnlisted, ca.NoSecretVersionForKey) as exc:
            raise CLIError(f"{exc}; name the version that does with {version_option}") from None

    async def set_secret(self, name: str, value: str, content_type: str) -> str:
        try:
            secret = await self.access.set_secret(
                self.vault_url, name, value, AUTH, content_type=content_type
            )
        except KeyVaultError as exc:
            raise _soft_deleted(exc, "secret", self.vault_url, name) from None
        return secret.version


def _soft_deleted(exc: KeyVaultError, kind: str, vault_url: str, name: str) -> Exception:
    """A name held by a soft-deleted key or secret (409): the way out, in one line.
    Any other error is returned as it is."""
    if exc.cause is not Cause.SOFT_DELETED:
        return exc
    return soft_deleted_error(kind, vault_url, name)


def soft_deleted_error(kind: str, vault_url: str, name: str) -> CLIError:
    vault = (urlsplit(vault_url).hostname or vault_url).split(".")[0]
    where = f"--vault-name {vault} --name {name}"
    return CLIError(
        f"{kind} {name!r} in {vault_url} is soft-deleted and its name cannot be reused until "
        f"it is recovered ('az keyvault {kind} recover {where}') or purged "
        f"('az keyvault {kind} purge {where}')"
    )


# The CLI authenticates like az-based tooling: DefaultAzureCredential picks up
# environment credentials, workload identity, managed identity or an az login.
AUTH = Ambient()


@contextlib.asynccontextmanager
async def open_vault(args: argparse.Namespace) -> AsyncIterator[VaultSession]:
    # From the environment: AKV_KEYVAULT_API_VERSION, for a vault without the SDK's default.
    options = KeyVaultOptions.from_env(
        timeout=args.timeout.total_seconds(), tls_ca_file=args.tls_ca_file
    )
    try:
        options.validate()
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    async with KeyVaultAccess(options) as access:
        yield VaultSession(access, args.vault_url, args.key_name, args.key_version)
