"""``akv-issuer ca rotate``: rotate a root CA held in Key Vault to a new key
version (or a new key), the steps of :mod:`akv_issuer.ca.rotation`, which
explains why they happen in this order; here the arguments, the dry run, the
output and one-line errors."""

from __future__ import annotations

import argparse
import datetime
import sys

from cryptography.hazmat.primitives import serialization

from akv_issuer import ca, pki
from akv_issuer.cli import common
from akv_issuer.cli.errors import CLIError
from akv_issuer.keyvault import Cause, KeyVaultError


def register(ca_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _describe_duration(value: datetime.timedelta) -> str:
    if value.total_seconds() % 86400 == 0:
        return f"{value.days}d"
    return f"{int(value.total_seconds()) // 3600}h{int(value.total_seconds()) % 3600 // 60}m"


async def _current(vault: ca.CAVault, key_name: str, secret_name: str) -> ca.CurrentCA:
    """The CA certificate in the secret's latest version and the key version it holds."""
    try:
        return await ca.current_ca(vault, key_name, secret_name)
    except ca.CASecretNotFound:
        raise CLIError(
            f"secret {secret_name} not found: `ca rotate` renews a CA stored by "
            f"`ca create --upload-secret` (or name it with --secret-name)"
        ) from None
    except ca.KeyVersionUnreadable as exc:
        raise exc.error from None
    except ca.NoKeyVersionForCA as exc:
        raise CLIError(str(exc)) from None


def _plan(args: argparse.Namespace, current: ca.CurrentCA, secret_name: str) -> ca.RotationPlan:
    try:
        return ca.plan_rotation(
            current,
            key_name=args.key_name,
            secret_name=secret_name,
            new_key_name=args.new_key_name,
            lifetime=args.lifetime,
        )
    except ca.NotACACertificate as exc:
        raise CLIError(
            f"the certificate in secret {secret_name} ({exc.subject}) is not a CA certificate"
        ) from None
    except ca.NotARoot as exc:
        raise CLIError(
            f"the CA in secret {secret_name} ({exc.subject}) is an intermediate issued by "
            f"{exc.issuer}; `ca rotate` renews self-signed roots only: create a key version, "
            f"then `akv-issuer ca csr --key-version VERSION`, have the parent sign it, and "
            f"`akv-issuer ca import --key-version VERSION --chain FILE` (docs/rotation.md)"
        ) from None


def _action(args: argparse.Namespace, plan: ca.RotationPlan) -> str:
    current = plan.current
    if plan.step is ca.RotationStep.NEW_KEY:
        return (
            f"create key {plan.key_name} ({ca.key_shape(current.key)}), a new key beside "
            f"{args.key_name}"
        )
    if plan.step is ca.RotationStep.CERTIFY_PENDING:
        return (
            f"certify the newest key version {current.latest.version}, which has no CA "
            f"certificate yet (made after {current.key.version}); no new version"
        )
    return f"rotate key {args.key_name}: a new version ({ca.key_shape(current.key)})"


def _dry_run(plan: ca.RotationPlan, action: str, secret_name: str) -> None:
    current, template = plan.current, plan.template
    now = datetime.datetime.now(datetime.UTC)
    path_length = "none" if template.path_length is None else template.path_length
    print(f"current key version: {current.key.kid} ({ca.key_shape(current.key)})")
    print(f"current CA (secret {secret_name}, version {current.secret_version}):")
    print(common.describe_certificate(current.cert))
    print(f"will {action}")
    print(
        f"will create a self-signed root: subject {template.subject.rfc4514_string()}, path "
        f"length {path_length}, lifetime {_describe_duration(template.lifetime)} (not after "
        f"about {(now + template.lifetime).replace(microsecond=0).isoformat()}), a new serial"
    )
    print(f"will store it as a new version of secret {plan.secret_name}")
    print("dry run: nothing changed")


async def _rotate(args: argparse.Namespace) -> int:
    secret_name = args.secret_name or args.key_name
    if args.new_key_name is not None and args.new_key_name == args.key_name:
        raise CLIError("--new-key-name must differ from --key-name")
    async with common.open_vault(args) as session:
        vault = session.ca_vault
        current = await _current(vault, args.key_name, secret_name)
        plan = _plan(args, current, secret_name)
        action = _action(args, plan)
        if plan.step is ca.RotationStep.NEW_KEY:
            try:
                await ca.refuse_existing_key(vault, plan.key_name)
            except ca.KeyExists as exc:
                raise CLIError(f"{exc}; --new-key-name must name a new key") from None
        if args.dry_run:
            _dry_run(plan, action, secret_name)
            return 0

        new_key = await ca.new_key_version(vault, plan)
        if plan.step is ca.RotationStep.NEW_KEY:
            print(f"created key {new_key.kid}", file=sys.stderr)
        elif plan.step is ca.RotationStep.NEW_VERSION:
            print(f"rotated key: new version {new_key.kid}", file=sys.stderr)
        algorithm = pki.SignatureAlgorithm(args.algorithm) if args.algorithm else None
        try:
            root = await ca.certify_new_root(
                vault,
                plan,
                new_key,
                datetime.datetime.now(datetime.UTC),
                algorithm=algorithm,
                pss=args.pss,
            )
        except ca.KeyNotUsable as exc:
            raise CLIError(str(exc)) from None
        except (KeyVaultError, pki.PKIError) as exc:
            if isinstance(exc, KeyVaultError) and exc.cause is Cause.SOFT_DELETED:
                raise common.soft_deleted_error(
                    "secret", session.vault_url, plan.secret_name
                ) from None
            raise CLIError(
                f"{exc}; key version {new_key.version} of {new_key.name} has no CA certificate "
                f"yet: run the same `ca rotate` again to certify it"
            ) from None
    old, cert = current.cert, root.cert
    common.write_output(args.out, cert.public_bytes(serialization.Encoding.PEM))
    print(f"stored in secret {plan.secret_name} (version {root.secret_version})", file=sys.stderr)
    print(common.describe_certificate(cert), file=sys.stderr)
    print(f"key:         {new_key.kid}", file=sys.stderr)
    print(f"algorithm:   {root.algorithm}", file=sys.stderr)
    print(
        f"previous CA: serial {old.serial_number:x}, key version {current.key.version}, "
        f"not after {old.not_valid_after_utc.isoformat()}; keep trusting it until the "
        f"certificates it issued have expired",
        file=sys.stderr,
    )
    return 0
