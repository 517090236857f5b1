"""Lint certificates and CRLs with two established linters (docs/linting.md).

- **zlint** (Go module ``github.com/zmap/zlint/v3``, ``cmd/zlint``, pinned in
  ``hack/zlint`` and built into the user cache by ``make binaries``): RFC 5280,
  3279, 5480, 8813, ... lints, "Community" lints, and CA/B Forum and root-store
  lints. One process lints a whole batch: one DER file per artefact (zlint reads
  only the first PEM block and picks PEM or DER from the file suffix), one JSON
  line per file, in order.
- **pkilint** (PyPI, dev dependency): its RFC 5280 certificate linter, its
  issuer/subject chain linter (names, key identifiers, the signature) and its
  RFC 5280 CRL linter, through its Python API: the validators are built once and
  run in this process, no start-up per artefact (its CLI's exit code counts INFO
  findings too, so it would need its JSON parsed anyway).

A finding at warning level or above from an RFC-level lint fails the test of its
artefact unless WAIVERS waives exactly that lint for exactly that artefact case.
CA/B Forum and root-store lints (zlint sources in INFORMATIONAL_SOURCES) are
reported, never fatal: they bind publicly trusted TLS/S/MIME CAs, and this
issuer is a private CA. pkilint's own CA/B Forum linters are not run.
"""

from __future__ import annotations

import enum
import json
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from pkilint import document, loader, pkix, validation
from pkilint.bin import lint_pkix_signer_signee_cert_chain as pkilint_chain
from pkilint.pkix import certificate, crl, extension, name

from akv_devcluster import binaries

# ---------------------------------------------------------------------------
# Artefacts and findings


class Kind(enum.Enum):
    CERTIFICATE = "certificate"
    CRL = "crl"


@dataclass(frozen=True)
class Artefact:
    """One certificate or CRL the project made, named by its case.

    ``issuer_der`` is the certificate whose key signed it (the artefact itself
    for a self-signed root); pkilint's chain linter checks a certificate's pair."""

    case: str
    kind: Kind
    der: bytes
    issuer_der: bytes | None = None


class Severity(enum.IntEnum):
    """Both linters' levels on one scale (higher is worse)."""

    INFO = 1  # zlint info, pkilint INFO and NOTICE
    WARNING = 2  # zlint warn, pkilint WARNING
    ERROR = 3  # zlint error and fatal, pkilint ERROR and FATAL


@dataclass(frozen=True)
class Finding:
    linter: str  # "zlint", "pkilint", "pkilint-chain" or "pkilint-crl"
    lint: str  # zlint's lint name or pkilint's finding code
    severity: Severity
    message: str
    source: str  # zlint's lint source (RFC5280, CABF_BR, ...); "pkilint" for pkilint

    @property
    def informational(self) -> bool:
        return self.severity < Severity.WARNING or self.source in INFORMATIONAL_SOURCES

    def __str__(self) -> str:
        text = f"{self.linter} {self.severity.name} {self.lint} [{self.source}]"
        return f"{text}: {self.message}" if self.message else text


# ---------------------------------------------------------------------------
# What does not bind a private CA, and the linters' known false positives

INFORMATIONAL_SOURCES: dict[str, str] = {
    # zlint lint sources whose rules bind publicly trusted CAs only. A private
    # CA is not audited against them and its relying parties do not check them
    # (a 2-year private TLS leaf, an organisation-chosen subject, a root that is
    # not in any browser's store are all fine).
    "CABF_BR": "CA/B Forum TLS Baseline Requirements: publicly trusted TLS CAs only",
    "CABF_EV": "CA/B Forum EV Guidelines: publicly trusted EV certificates only",
    "CABF_CS_BR": "CA/B Forum Code Signing BRs: publicly trusted code signing CAs only",
    "CABF_SMIME_BR": "CA/B Forum S/MIME BRs: publicly trusted S/MIME CAs only",
    "Mozilla": "Mozilla Root Store Policy: CAs in Mozilla's root store only",
    "Apple": "Apple Root Certificate Program: CAs in Apple's root store only",
    "Chrome": "Chrome Root Program: CAs in Chrome's root store only",
    "ETSI_ESI": "ETSI EN 319 412: EU qualified trust service providers only",
}


@dataclass(frozen=True)
class Waiver:
    """Waives ``lint`` of ``linter`` for the artefact ``case`` only; with
    ``message`` set, only findings whose message contains it."""

    linter: str
    lint: str
    case: str
    reason: str
    message: str = ""

    def covers(self, case: str, finding: Finding) -> bool:
        return (
            self.case == case
            and self.linter == finding.linter
            and self.lint == finding.lint
            and self.message in finding.message
        )


# Reasons, one per known false positive (docs/linting.md repeats them).
PSS_CHAIN = (
    "pkilint's chain linter verifies every RSA signature as PKCS#1 v1.5, so an "
    "RSASSA-PSS signature never verifies there; the harness verifies it with "
    "cryptography instead (check_pss_signature), and zlint lints the PSS parameters"
)
SPIFFE_URI = (
    "pkilint's RFC linter checks URIs with a web-URL validator that knows only "
    "web schemes; spiffe://trust-domain/path is a valid RFC 3986 URI (SPIFFE X.509-SVID)"
)
WILDCARD_DNS = (
    "pkilint's RFC linter takes a SAN dNSName as a host name; a leading '*.' label is "
    "the wildcard RFC 6125/9525 define for TLS server names, and zlint's wildcard "
    "lints (bare wildcard, wildcard not first) check its form"
)

SINGLE_LABEL_DNS = (
    "pkilint's RFC linter checks a dNSName with a validator that requires a top-level "
    "domain; a single label (a Kubernetes Service's short name, 'app') is in RFC 1034's "
    "preferred name syntax that RFC 5280 4.2.1.6 asks for"
)

REQUESTED_KU_EKU = (
    "the request asks for exactly digital signature + key encipherment + client auth, "
    "one of the two usage sets Kubernetes' kube-apiserver-client-kubelet signer takes "
    "(what an RSA kubelet client asks for); the issuer signs the usages requested, as "
    "Kubernetes' own signers and cert-manager's CA issuer do. RFC 5280 4.2.1.12 limits "
    "such a certificate's use to purposes both extensions allow (TLS client "
    "authentication with digitalSignature); zlint reads it as forbidding the issuance"
)

# Waivers that no property of a case implies: each names its case exactly.
NAMED_WAIVERS = (
    Waiver(
        "zlint",
        "e_key_usage_and_extended_key_usage_inconsistent",
        "ctrl-kcsr-rsa-client-by-rsa2048",
        REQUESTED_KU_EKU,
    ),
)


def waivers_for(cases: Iterable[LintCase]) -> list[Waiver]:
    """The waivers of these cases: one (linter, lint, case) per known false
    positive the case's content triggers, and the NAMED_WAIVERS of these cases."""
    found: list[Waiver] = []
    for case in cases:
        found += [w for w in NAMED_WAIVERS if w.case == case.id]
        if case.pss_signed and case.kind is Kind.CERTIFICATE:
            found.append(
                Waiver("pkilint-chain", "pkix.signature_verification_failed", case.id, PSS_CHAIN)
            )
        for uri in case.spiffe_uris:
            found.append(Waiver("pkilint", "pkix.invalid_uri_syntax", case.id, SPIFFE_URI, uri))
        for dns in case.wildcard_names:
            found.append(
                Waiver("pkilint", "pkix.invalid_domain_name_syntax", case.id, WILDCARD_DNS, dns)
            )
        for dns in case.single_label_names:
            found.append(
                Waiver(
                    "pkilint",
                    "pkix.invalid_domain_name_syntax",
                    case.id,
                    SINGLE_LABEL_DNS,
                    f'"{dns}"',
                )
            )
    return found


@dataclass(frozen=True)
class LintCase:
    """A case of the artefact matrix as the tests declare it (before it is made):
    its id and what about its content a waiver may depend on."""

    id: str
    kind: Kind = Kind.CERTIFICATE
    pss_signed: bool = False
    spiffe_uris: tuple[str, ...] = ()
    wildcard_names: tuple[str, ...] = ()
    single_label_names: tuple[str, ...] = ()


# ---------------------------------------------------------------------------
# Results


@dataclass
class Report:
    """Every finding of one artefact, sorted into what fails and what does not."""

    case: str
    failing: list[Finding] = field(default_factory=list)
    waived: list[tuple[Finding, Waiver]] = field(default_factory=list)
    informational: list[Finding] = field(default_factory=list)

    def failure_message(self) -> str:
        lines = [f"{self.case}: {len(self.failing)} RFC-level finding(s) not waived:"]
        lines += [f"  {finding}" for finding in self.failing]
        return "\n".join(lines)


def classify(case: str, findings: Iterable[Finding], waivers: Sequence[Waiver]) -> Report:
    report = Report(case)
    for finding in findings:
        waiver = next((w for w in waivers if w.covers(case, finding)), None)
        if waiver is not None:
            report.waived.append((finding, waiver))
        elif finding.informational:
            report.informational.append(finding)
        else:
            report.failing.append(finding)
    return report


def lint_all(artefacts: Sequence[Artefact], waivers: Sequence[Waiver]) -> dict[str, Report]:
    """Lint every artefact with both linters (zlint in one process for all)."""
    zlint_findings = run_zlint([a.der for a in artefacts])
    reports: dict[str, Report] = {}
    for artefact, from_zlint in zip(artefacts, zlint_findings, strict=True):
        findings = [*from_zlint, *run_pkilint(artefact)]
        reports[artefact.case] = classify(artefact.case, findings, waivers)
    return reports


def write_report(reports: dict[str, Report], path: Path) -> None:
    """Everything found, failing or not, for a person to read (the tests print its path)."""
    lines: list[str] = []
    for case, report in sorted(reports.items()):
        lines.append(f"{case}")
        lines += [f"  FAIL   {f}" for f in report.failing]
        lines += [f"  WAIVED {f}  -- {w.reason}" for f, w in report.waived]
        lines += [f"  INFO   {f}" for f in report.informational if f.severity > Severity.INFO]
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------
# zlint

_ZLINT_SEVERITY = {
    "info": Severity.INFO,
    "notice": Severity.INFO,
    "warn": Severity.WARNING,
    "error": Severity.ERROR,
    "fatal": Severity.ERROR,
}


def zlint_path() -> Path:
    """The pinned zlint; built (under the cache lock) if it is not yet."""
    return binaries.ensure_binary(binaries.ZLINT)


@cache
def zlint_sources() -> dict[str, str]:
    """Lint name -> lint source (RFC5280, CABF_BR, ...), from zlint's own registry."""
    out = subprocess.run(
        [str(zlint_path()), "-list-lints-json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    sources: dict[str, str] = {}
    for line in out.splitlines():
        if line.strip():
            entry = json.loads(line)
            sources[entry["name"]] = entry["source"]
    return sources


def run_zlint(ders: Sequence[bytes]) -> list[list[Finding]]:
    """zlint's findings (info and above) for each DER certificate or CRL, in order."""
    if not ders:
        return []
    sources = zlint_sources()
    with tempfile.TemporaryDirectory(prefix="akv-zlint-") as tmp:
        paths = []
        for index, der in enumerate(ders):
            path = Path(tmp, f"{index:04d}.der")
            path.write_bytes(der)
            paths.append(str(path))
        proc = subprocess.run(
            [str(zlint_path()), *paths], capture_output=True, text=True, check=False, timeout=300
        )
    if proc.returncode != 0:
        raise AssertionError(f"zlint failed (exit {proc.returncode}): {proc.stderr.strip()}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if len(lines) != len(ders):
        raise AssertionError(f"zlint printed {len(lines)} results for {len(ders)} files")
    found: list[list[Finding]] = []
    for line in lines:
        results: dict[str, dict[str, str]] = json.loads(line)
        found.append(
            [
                Finding(
                    "zlint",
                    lint,
                    _ZLINT_SEVERITY[result["result"]],
                    result.get("details", ""),
                    sources.get(lint, "Unknown"),
                )
                for lint, result in sorted(results.items())
                if result["result"] in _ZLINT_SEVERITY
            ]
        )
    return found


# ---------------------------------------------------------------------------
# pkilint

_PKILINT_SEVERITY = {
    validation.ValidationFindingSeverity.FATAL: Severity.ERROR,
    validation.ValidationFindingSeverity.ERROR: Severity.ERROR,
    validation.ValidationFindingSeverity.WARNING: Severity.WARNING,
    validation.ValidationFindingSeverity.NOTICE: Severity.INFO,
    validation.ValidationFindingSeverity.INFO: Severity.INFO,
}


@cache
def _certificate_validator() -> Any:
    """pkilint's RFC 5280 certificate linter (what its lint_pkix_cert runs)."""
    return certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(
            name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS
        ),
        [
            certificate.create_issuer_validator_container([]),
            certificate.create_validity_validator_container(),
            certificate.create_subject_validator_container([]),
            certificate.create_extensions_validator_container([]),
            certificate.create_spki_validator_container([]),
        ],
    )


@cache
def _crl_validator() -> Any:
    """pkilint's RFC 5280 CRL linter, PKIX profile, type CRL (what its
    ``lint_crl -t CRL -p PKIX`` runs; the BR profile is CA/B Forum's)."""
    return crl.create_pkix_crl_validator_container(
        [
            pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
            pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS),
        ],
        [
            crl.create_issuer_validator_container([]),
            crl.create_validity_validator_container([]),
            crl.create_extensions_validator_container([]),
        ],
    )


@cache
def _chain_validators() -> tuple[Any, Any, Any]:
    """pkilint's issuer/subject chain linter (lint_pkix_signer_signee_cert_chain):
    the decoders, the issuer-side and the subject-side validators, as that
    command builds them."""
    return (
        pkilint_chain.create_decoder_validation_container(),
        pkilint_chain.create_issuer_validation_container(),
        pkilint_chain.create_subject_validation_container(),
    )


def _findings(linter: str, results: Iterable[Any]) -> list[Finding]:
    found = []
    for result in results:
        for description in result.finding_descriptions:
            severity = _PKILINT_SEVERITY.get(description.finding.severity)
            if severity is None:  # DEBUG
                continue
            found.append(
                Finding(
                    linter,
                    description.finding.code,
                    severity,
                    description.message or "",
                    "pkilint",
                )
            )
    return found


def run_pkilint(artefact: Artefact) -> list[Finding]:
    """pkilint's findings (NOTICE and INFO included, as INFO) for one artefact."""
    if artefact.kind is Kind.CRL:
        doc = loader.RFC5280CertificateListDocumentLoader().load_der_document(
            artefact.der, artefact.case
        )
        return _findings("pkilint-crl", _crl_validator().validate(doc.root))
    cert_loader = loader.RFC5280CertificateDocumentLoader()
    doc = cert_loader.load_der_document(artefact.der, artefact.case)
    found = _findings("pkilint", _certificate_validator().validate(doc.root))
    if artefact.issuer_der is not None:
        collection: dict[str, document.Document] = {}
        issuer = cert_loader.load_der_document(artefact.issuer_der, "issuer", "issuer", collection)
        collection["issuer"] = issuer
        subject = cert_loader.load_der_document(artefact.der, "subject", "subject", collection)
        collection["subject"] = subject
        decoders, issuer_side, subject_side = _chain_validators()
        results = [
            *decoders.validate(issuer.root),
            *decoders.validate(subject.root),
            *issuer_side.validate(issuer.root),
            *subject_side.validate(subject.root),
        ]
        found += _findings("pkilint-chain", results)
    return found


def check_pss_signature(artefact: Artefact) -> None:
    """A CA whose own certificate is PSS-signed signs with PSS (issue 23, 4);
    the signature verifies (what the PSS_CHAIN waiver leaves unchecked by pkilint)."""
    if artefact.kind is Kind.CRL:
        signed: x509.Certificate | x509.CertificateRevocationList = x509.load_der_x509_crl(
            artefact.der
        )
    else:
        signed = x509.load_der_x509_certificate(artefact.der)
    assert signed.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.RSASSA_PSS, (
        f"{artefact.case} is signed with {signed.signature_algorithm_oid.dotted_string}, "
        "not RSASSA-PSS, though its CA's certificate is PSS-signed"
    )
    assert artefact.issuer_der is not None, artefact.case
    issuer = x509.load_der_x509_certificate(artefact.issuer_der)
    if isinstance(signed, x509.Certificate):
        signed.verify_directly_issued_by(issuer)
    else:
        public_key = issuer.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey), artefact.case
        assert signed.is_signature_valid(public_key), f"{artefact.case}: bad signature"


# ---------------------------------------------------------------------------
# One linted matrix


@dataclass
class LintRun:
    """A matrix of cases, the artefacts made for them (or why not), linted."""

    cases: dict[str, LintCase]
    artefacts: dict[str, Artefact]
    errors: dict[str, str]
    reports: dict[str, Report]
    report_path: Path

    @classmethod
    def lint(
        cls,
        cases: Sequence[LintCase],
        artefacts: dict[str, Artefact],
        errors: dict[str, str],
        report_path: Path,
    ) -> LintRun:
        ids = [c.id for c in cases]
        assert len(ids) == len(set(ids)), (
            f"case ids repeat: {sorted(i for i in ids if ids.count(i) > 1)}"
        )
        unknown = set(artefacts) - set(ids)
        assert not unknown, f"artefacts made for no declared case: {sorted(unknown)}"
        ordered = [artefacts[c.id] for c in cases if c.id in artefacts]
        reports = lint_all(ordered, waivers_for(cases))
        write_report(reports, report_path)
        return cls({c.id: c for c in cases}, artefacts, errors, reports, report_path)

    def check(self, case_id: str) -> None:
        """Fail unless the case's artefact was made, has no RFC-level finding
        that is not waived, is PSS-signed (and verifies) when its CA is, and
        needs each of its waivers."""
        case = self.cases[case_id]
        if case_id in self.errors:
            raise AssertionError(f"{case_id} was not made: {self.errors[case_id]}")
        artefact = self.artefacts[case_id]
        report = self.reports[case_id]
        assert not report.failing, f"{report.failure_message()}\n(all findings: {self.report_path})"
        if case.pss_signed:
            check_pss_signature(artefact)
        used = {waiver for _, waiver in report.waived}
        unused = [w for w in waivers_for([case]) if w not in used]
        assert not unused, f"{case_id}: waivers no finding needed (remove them): {unused}"
