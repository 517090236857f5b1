"""``akv-issuer check``: a preflight of an issuer, without Kubernetes.

Reads the key, the CA certificate and the permissions as the controller's issuer
check does, through the same steps (:mod:`akv_issuer.controller.issuers.vault_steps`,
:mod:`~akv_issuer.controller.issuers.key_protection`), and prints one line per
step: ``ok ...`` for one that passed, ``<Ready reason>: <message> -- fix: ...`` for
one that failed, in the reasons the controller would set. Unlike the controller
it goes on after a failure as far as the steps allow (the CA is read even when
the key cannot be), and it asks Key Vault for one test signature (``keys/sign/action``),
which the controller's check does not. Exit status 0 when the issuer would be
Ready, 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from akv_issuer import pki
from akv_issuer.cli import common
from akv_issuer.cli.errors import CLIError
from akv_issuer.controller.api import (
    ISSUER_KINDS,
    AmbientAuth,
    IssuerReason,
    IssuerSpec,
    KubernetesSecretCA,
    SpecError,
    parse_issuer_spec,
)
from akv_issuer.controller.core import CheckFailed, KeyProtection, keyvault_failure
from akv_issuer.controller.issuers.key_protection import check_key_protection
from akv_issuer.controller.issuers.signing_key import issuer_algorithm
from akv_issuer.controller.issuers.vault_steps import (
    MatchedCA,
    match_ca,
    read_key,
    read_vault_ca,
)
from akv_issuer.keyvault import KeyInfo, KeyVaultError

T = TypeVar("T")

# What to do about each reason, in one clause (docs/troubleshooting.md says more).
FIXES: dict[str, str] = {
    IssuerReason.INVALID_SPEC: "fix the field the message names",
    IssuerReason.FORBIDDEN: (
        "assign the role of docs/azure-roles.md that grants it, on that key, secret or "
        "certificate (or fix the credential Entra ID refused)"
    ),
    IssuerReason.KEY_VAULT_NETWORK_DENIED: (
        "allow this network in the vault's firewall, or use a private endpoint"
    ),
    IssuerReason.KEY_VAULT_API_VERSION_UNSUPPORTED: (
        "set AKV_KEYVAULT_API_VERSION to a version the vault serves"
    ),
    IssuerReason.KEY_VAULT_UNREACHABLE: "check DNS, network and the vault URL, then try again",
    IssuerReason.THROTTLED: "try again later",
    IssuerReason.KEY_NOT_FOUND: "check the vault URL, key name and version",
    IssuerReason.KEY_DISABLED: "enable the key version or rotate to a new one",
    IssuerReason.KEY_NOT_USABLE: (
        "use an RSA (>= 2048) or EC P-256/384/521 key with the sign operation, or another "
        "signature algorithm"
    ),
    IssuerReason.CA_SECRET_NOT_FOUND: (
        "store the CA certificate (akv-issuer ca create --upload-secret, or ca import)"
    ),
    IssuerReason.CA_CERTIFICATE_NOT_FOUND: "check the certificate object's name and version",
    IssuerReason.CA_SECRET_DISABLED: "enable the secret, or store a new version",
    IssuerReason.CA_INVALID: "store the CA certificate (PEM) of this key",
    IssuerReason.CA_KEY_MISMATCH: (
        "store the CA certificate of this key, or point at the matching key and secret"
    ),
    IssuerReason.CA_EXPIRED: "renew the CA certificate (akv-issuer ca rotate, or ca create)",
    IssuerReason.CA_NOT_YET_VALID: "wait, or check the clocks",
    IssuerReason.KEY_EXPORTABLE: (
        "use a key created without exportable and release policy (akv-issuer ca rotate "
        "--new-key-name), or set spec.allowExportableKey: true"
    ),
    IssuerReason.KEY_ATTESTATION_FAILED: (
        "see the message; az keyvault key get-attestation shows the HSM's answer; or set "
        "spec.allowExportableKey: true"
    ),
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="preflight: read the key, the CA and the permissions as the controller would",
        description=(
            "Check an issuer before creating it: read its Key Vault key, its CA certificate "
            "and the permissions as the controller's issuer check does, sign one test "
            "digest, and print one line per step in the controller's Ready reasons, with "
            "what to do. Give an Issuer/ClusterIssuer manifest, or the vault options. "
            "Authenticates as this shell's identity (DefaultAzureCredential: AZURE_* "
            "variables, workload identity, managed identity or az login), not as the "
            "issuer's spec.auth. Exit status 0 when the issuer would be Ready, 1 otherwise."
        ),
    )
    parser.add_argument(
        "--issuer-manifest",
        metavar="FILE",
        default=None,
        help="an Issuer or ClusterIssuer YAML manifest (the first in the file); instead of "
        "the vault options",
    )
    vault = parser.add_argument_group("Key Vault (without --issuer-manifest)")
    vault.add_argument("--vault-url", default=None, help="vault base URL (spec.keyVaultBaseURL)")
    vault.add_argument("--key-name", default=None, help="the CA key (spec.keyName)")
    vault.add_argument("--key-version", default=None, help="key version (default: latest)")
    vault.add_argument(
        "--secret-name", default=None, help="CA secret (spec.caSecretName; default: the key's name)"
    )
    vault.add_argument("--secret-version", default=None, help="CA secret version")
    vault.add_argument(
        "--certificate-name",
        default=None,
        help="read the CA from this Key Vault certificate object instead "
        "(spec.caSource.keyVaultCertificate)",
    )
    vault.add_argument(
        "--signature-algorithm",
        choices=[alg.value for alg in pki.SignatureAlgorithm],
        default=None,
        help="spec.signatureAlgorithm (default: from the key and the CA)",
    )
    vault.add_argument(
        "--allow-exportable-key",
        action="store_true",
        help="spec.allowExportableKey: accept a key that can leave Key Vault",
    )
    parser.add_argument(
        "--ca-file",
        default=None,
        help="the CA certificate (chain) PEM to check instead of reading it: for a manifest "
        "whose CA is in a Kubernetes Secret, which this command does not read",
    )
    parser.add_argument(
        "--no-sign",
        action="store_true",
        help="skip the test signature (keys/sign/action is then not checked)",
    )
    parser.add_argument(
        "--tls-ca-file",
        default=os.environ.get("AKV_TLS_CA_FILE") or None,
        help="PEM CA bundle to trust for a non-Azure endpoint such as the emulator "
        "(env AKV_TLS_CA_FILE)",
    )
    parser.add_argument(
        "--timeout",
        type=common.parse_duration,
        default=dt.timedelta(seconds=30),
        help="timeout of each Key Vault call (default 30s)",
    )
    parser.set_defaults(handler=run)


@dataclass
class Report:
    """The lines printed, and whether any step failed or could not be done."""

    lines: list[str] = field(default_factory=list)
    failed: bool = False

    def ok(self, text: str) -> None:
        self.lines.append(f"ok: {text}")

    def note(self, text: str) -> None:
        self.lines.append(f"note: {text}")

    def failure(self, err: CheckFailed) -> None:
        self.failed = True
        fix = FIXES.get(str(err.reason))
        line = f"{err.reason}: {' '.join(err.message.split())}"
        self.lines.append(f"{line} -- fix: {fix}" if fix else line)

    def skipped(self, text: str) -> None:
        self.failed = True
        self.lines.append(f"skipped: {text}")


def _manifest_spec(path: str) -> tuple[dict[str, Any], str]:
    text = common.read_file(path, "issuer manifest").decode(errors="replace")
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise CLIError(f"{path} is not YAML{where}") from None
    for document in documents:
        if isinstance(document, dict) and document.get("kind") in ISSUER_KINDS:
            spec = document.get("spec")
            name = (document.get("metadata") or {}).get("name") or "?"
            return (spec if isinstance(spec, dict) else {}), f"{document['kind']} {name}"
    raise CLIError(f"{path} holds no Issuer or ClusterIssuer")


def _flags_spec(args: argparse.Namespace) -> dict[str, Any]:
    if not args.vault_url or not args.key_name:
        raise CLIError("give --issuer-manifest, or --vault-url and --key-name")
    spec: dict[str, Any] = {"keyVaultBaseURL": args.vault_url, "keyName": args.key_name}
    if args.key_version:
        spec["keyVersion"] = args.key_version
    if args.certificate_name:
        if args.secret_name or args.secret_version:
            raise CLIError("--certificate-name reads the CA from a certificate, not a secret")
        spec["caSource"] = {"keyVaultCertificate": {"name": args.certificate_name}}
    if args.secret_name:
        spec["caSecretName"] = args.secret_name
    if args.secret_version:
        spec["caSecretVersion"] = args.secret_version
    if args.signature_algorithm:
        spec["signatureAlgorithm"] = args.signature_algorithm
    if args.allow_exportable_key:
        spec["allowExportableKey"] = True
    return spec


def _spec_of(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if args.issuer_manifest is None:
        return _flags_spec(args), "issuer"
    given = [
        f"--{name.replace('_', '-')}"
        for name in (
            "vault_url",
            "key_name",
            "key_version",
            "secret_name",
            "secret_version",
            "certificate_name",
            "signature_algorithm",
        )
        if getattr(args, name)
    ] + (["--allow-exportable-key"] if args.allow_exportable_key else [])
    if given:
        raise CLIError(f"--issuer-manifest takes the issuer from the file; drop {' '.join(given)}")
    return _manifest_spec(args.issuer_manifest)


async def _step(report: Report, call: Awaitable[T]) -> T | None:
    """One step: its value, or None after reporting its failure."""
    try:
        return await call
    except CheckFailed as err:
        report.failure(err)
        return None


async def run(args: argparse.Namespace) -> int:
    raw, what = _spec_of(args)
    report = Report()
    try:
        spec = parse_issuer_spec(raw)
    except SpecError as err:
        report.failure(CheckFailed(IssuerReason.INVALID_SPEC, str(err)))
        _print(report, what)
        return 1
    if not isinstance(spec.auth, AmbientAuth):
        report.note(
            "spec.auth is not used: this command authenticates as this shell's identity "
            "(DefaultAzureCredential); the controller will use the issuer's"
        )
    args.vault_url, args.key_name, args.key_version = (
        spec.key_vault_base_url,
        spec.key_name,
        spec.key_version,
    )
    now = dt.datetime.now(dt.UTC)
    async with common.open_vault(args) as session:
        if spec.pool is None:
            await _check(report, session, spec, args, now)
        else:
            await _check_pool(report, session, spec, args, now)
    _print(report, what)
    return 1 if report.failed else 0


async def _check_pool(
    report: Report,
    session: common.VaultSession,
    spec: IssuerSpec,
    args: argparse.Namespace,
    now: dt.datetime,
) -> None:
    """spec.pool: every member as a single-key issuer, its lines prefixed with its name
    (--ca-file stands for the issuer's own key's CA only). The pool's own rules (one
    root, a key once, whose CA a member holds) are the controller's (status.members)."""
    ca_file = args.ca_file
    for index, (name, member) in enumerate(spec.member_specs()):
        args.ca_file = ca_file if index == 0 else None
        member_session = common.VaultSession(
            session.access, member.key_vault_base_url, member.key_name, member.key_version
        )
        start = len(report.lines)
        await _check(report, member_session, member, args, now)
        report.lines[start:] = [f"pool member {name!r}: {line}" for line in report.lines[start:]]
    args.ca_file = ca_file
    report.note(
        "the pool's own rules (every member under one root, no key twice) are checked by "
        "the controller: see status.members"
    )


async def _check(
    report: Report,
    session: common.VaultSession,
    spec: IssuerSpec,
    args: argparse.Namespace,
    now: dt.datetime,
) -> None:
    kv, auth = session.access, common.AUTH
    key = await _step(report, read_key(kv, spec, auth, now))
    if key is not None:
        report.ok(f"key {key.kid}: {key.kty}, enabled, may sign")
    ca_text = await _ca_text(report, session, spec, args)
    matched: MatchedCA | None = None
    if key is not None and ca_text is not None:
        matched = await _step(report, match_ca(kv, spec, auth, ca_text, key, now))
        if matched is not None:
            _report_ca(report, spec, matched)
    if key is None:
        return
    # The rest needs the key only: checked even when the CA is not there yet.
    signing_key = matched.key_info if matched is not None else key
    try:
        algorithm = issuer_algorithm(
            spec, signing_key, matched.ca.ca if matched is not None else None
        )
    except CheckFailed as err:
        report.failure(err)
        return
    protection = await _step(report, check_key_protection(kv, spec, auth, signing_key, now))
    if protection is not None:
        _report_protection(report, protection)
    if args.no_sign:
        report.note("no test signature (--no-sign): keys/sign/action not checked")
        return
    await _test_signature(report, session, spec, signing_key, algorithm)


def _report_protection(report: Report, protection: KeyProtection) -> None:
    found = protection.attestation
    text = "key protection: " + (
        "not exportable, no release policy"
        if not (protection.exportable or protection.has_release_policy)
        else "exportable or with a release policy, allowed by allowExportableKey"
    )
    if found is not None:
        roots = ", ".join(f"{r.subject} sha256 {r.sha256}" for r in found.roots) or "none"
        text += (
            f"; Managed HSM attestation checked (private-key statement sha256 "
            f"{found.private_key_attestation_sha256}; roots: {roots}): verify it with "
            f"Microsoft's validator (docs/api.md, Key protection)"
        )
    elif protection.attestation_error is not None:
        text += (
            f"; attestation failed, allowed by allowExportableKey: {protection.attestation_error}"
        )
    report.ok(text)


async def _ca_text(
    report: Report, session: common.VaultSession, spec: IssuerSpec, args: argparse.Namespace
) -> str | None:
    if args.ca_file is not None:
        return common.read_file(args.ca_file, "CA").decode(errors="replace")
    if isinstance(spec.ca_source, KubernetesSecretCA):
        report.skipped(
            f"{spec.ca_description} is a Kubernetes Secret, which this command does not read: "
            f"pass its PEM with --ca-file (kubectl get secret {spec.ca_source.name} -o "
            f"jsonpath='{{.data.{spec.ca_source.key.replace('.', chr(92) + '.')}}}' | base64 -d)"
        )
        return None
    return await _step(report, read_vault_ca(session.access, spec, common.AUTH))


def _report_ca(report: Report, spec: IssuerSpec, matched: MatchedCA) -> None:
    ca = matched.ca.ca
    report.ok(
        f"CA {ca.subject.rfc4514_string()} ({spec.ca_description}): a CA valid until "
        f"{ca.not_valid_after_utc.isoformat()}, holding key version {matched.key_info.version}"
        + (f", chain of {len(matched.ca.certificates)}" if len(matched.ca.certificates) > 1 else "")
    )
    if matched.pending_key_version is not None:
        report.note(
            f"KeyVersionPending: key version {matched.pending_key_version} is newer and has no "
            f"CA certificate yet; the issuer signs with version {matched.key_info.version}"
        )


async def _test_signature(
    report: Report,
    session: common.VaultSession,
    spec: IssuerSpec,
    key: KeyInfo,
    algorithm: pki.SignatureAlgorithm,
) -> None:
    """One sign call, as every certificate costs: a throwaway CSR signed by the key
    and verified against its public key (pki.sign_csr checks the signature)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "akv-issuer check")])
    try:
        await pki.sign_csr(subject, key.public_key, algorithm, session.signer(key))
    except KeyVaultError as err:
        report.failure(keyvault_failure(err, f"key {spec.key_name!r}", IssuerReason.KEY_NOT_FOUND))
        return
    except pki.PKIError as err:
        report.failure(CheckFailed(IssuerReason.KEY_NOT_USABLE, err.reason))
        return
    report.ok(f"Key Vault signed a test digest with {algorithm} (keys/sign/action granted)")


def _print(report: Report, what: str) -> None:
    for line in report.lines:
        print(line)
    if report.failed:
        print(f"not ready: the {what} would not be Ready")
    else:
        print(f"ready: the {what} would be Ready (Checked)")
