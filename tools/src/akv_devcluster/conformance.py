"""cert-manager's issuer conformance specs against issuers of a dev cluster.

The specs are cert-manager's own (``test/e2e/suite/conformance``, Certificates
and Kubernetes CertificateSigningRequests), built into a Ginkgo test binary by
``hack/cert-manager-conformance`` (``binaries.CERT_MANAGER_CONFORMANCE``).
:func:`run_targets` runs that binary once per :class:`Target` (one issuer
reference each, several at a time), reads each run's Ginkgo JSON report and
returns the outcome of every spec; :func:`compare` sets an issuer's failures
against a baseline's (cert-manager's own CA issuer through the same specs):
what fails for both is the suite's, what fails only for the issuer is the
issuer's.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Ginkgo's spec states that count as failed (the rest: passed, skipped, pending).
FAILED_STATES = frozenset({"failed", "panicked", "interrupted", "aborted", "timedout"})
# Attempts Ginkgo makes at a spec before it counts as failed (--ginkgo.flake-attempts),
# for ours and the baseline alike. Some specs race cert-manager's own controllers:
# "ingress with annotations" compares the Certificate's status.notAfter with the
# Secret's certificate while ingress-shim's updates of a fresh Certificate can make
# cert-manager replace a revision's CertificateRequest, so a second certificate
# lands between the two reads (seen once for ours, whose signing takes ~150 ms
# against the CA issuer's instant one). A spec that passed only on its second
# attempt is reported as flaky (summary), never hidden.
FLAKE_ATTEMPTS = 2


class ConformanceError(Exception):
    """The suite could not run (bad arguments, no report); one-line message."""


@dataclass(frozen=True)
class Target:
    """One issuer reference to run one suite against.

    ``suite`` is ``certificates`` or ``csr``. The issuer is an existing
    cluster-scoped one (``issuer_ref`` ``group/Kind/name``, certificates
    suite), a fixed ``signer_name`` (csr suite), or ``issuer_manifest``: YAML
    the binary creates in every spec's namespace (an Issuer and whatever it
    needs), with ``signer_name`` then a template over ``{namespace}`` and
    ``{name}``. ``unsupported`` lists features whose specs are not defined;
    every entry must be justified in docs/e2e.md.
    """

    label: str
    suite: str
    issuer_ref: str = ""
    issuer_manifest: str = ""
    signer_name: str = ""
    unsupported: tuple[str, ...] = ()


@dataclass(frozen=True)
class SpecResult:
    text: str
    state: str
    seconds: float
    failure: str = ""
    attempts: int = 1

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    @property
    def flaky(self) -> bool:
        """Passed, but not on its first attempt."""
        return not self.failed and self.attempts > 1


@dataclass
class TargetResult:
    target: Target
    specs: list[SpecResult]
    seconds: float
    exit_code: int
    output_tail: str = ""

    def counts(self) -> dict[str, int]:
        counted = Counter("failed" if s.failed else s.state for s in self.specs)
        return {state: counted.get(state, 0) for state in ("passed", "failed", "skipped")} | {
            "total": len(self.specs)
        }

    def failed(self) -> dict[str, SpecResult]:
        return {s.text: s for s in self.specs if s.failed}


@dataclass
class Comparison:
    """One issuer's run set against its baseline's."""

    ours: TargetResult
    baseline: TargetResult
    suite_failures: list[str] = field(default_factory=list)
    our_failures: list[SpecResult] = field(default_factory=list)
    # Specs one run defined and the other did not (different feature sets).
    only_ours: list[str] = field(default_factory=list)
    only_baseline: list[str] = field(default_factory=list)


def parse_report(path: Path) -> list[SpecResult]:
    """The It specs of a Ginkgo v2 JSON report (``--ginkgo.json-report``)."""
    try:
        reports: list[dict[str, Any]] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConformanceError(f"cannot read the Ginkgo report {path}: {exc}") from exc
    specs: list[SpecResult] = []
    for report in reports:
        for spec in report.get("SpecReports") or []:
            if spec.get("LeafNodeType") != "It":
                continue
            text = " ".join([*(spec.get("ContainerHierarchyTexts") or []), spec["LeafNodeText"]])
            failure = spec.get("Failure") or {}
            specs.append(
                SpecResult(
                    text=text,
                    state=str(spec.get("State")),
                    seconds=int(spec.get("RunTime") or 0) / 1e9,
                    failure=str(failure.get("Message") or "").strip(),
                    attempts=int(spec.get("NumAttempts") or 1),
                )
            )
    return specs


def target_argv(
    binary: Path,
    target: Target,
    *,
    kubeconfig: Path,
    report: Path,
    workdir: Path,
    kubectl: Path | None = None,
    feature_gates: Sequence[str] = (),
    timeout_minutes: int = 20,
) -> list[str]:
    argv = [
        str(binary),
        "-test.timeout=0",
        f"--ginkgo.timeout={timeout_minutes}m",
        f"--ginkgo.json-report={report}",
        f"--ginkgo.flake-attempts={FLAKE_ATTEMPTS}",
        "--ginkgo.no-color",
        f"--kubeconfig={kubeconfig}",
        f"--suite={target.suite}",
        f"--name={target.label}",
    ]
    if kubectl is not None:
        argv.append(f"--kubectl={kubectl}")
    if target.issuer_ref:
        argv.append(f"--issuer-ref={target.issuer_ref}")
    if target.issuer_manifest:
        manifest = workdir / f"{_slug(target.label)}.yaml"
        manifest.write_text(target.issuer_manifest)
        argv.append(f"--issuer-manifest={manifest}")
    if target.signer_name:
        argv.append(f"--signer-name={target.signer_name}")
    if target.unsupported:
        argv.append("--unsupported-features=" + ",".join(target.unsupported))
    if feature_gates:
        argv.append("--feature-gates=" + ",".join(feature_gates))
    return argv


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


def run_target(
    binary: Path,
    target: Target,
    *,
    kubeconfig: Path,
    workdir: Path,
    kubectl: Path | None = None,
    feature_gates: Sequence[str] = (),
    timeout_minutes: int = 20,
) -> TargetResult:
    """Run one suite against one issuer; its output goes to ``workdir/<label>.log``."""
    workdir.mkdir(parents=True, exist_ok=True)
    report = workdir / f"{_slug(target.label)}.json"
    log = workdir / f"{_slug(target.label)}.log"
    argv = target_argv(
        binary,
        target,
        kubeconfig=kubeconfig,
        report=report,
        workdir=workdir,
        kubectl=kubectl,
        feature_gates=feature_gates,
        timeout_minutes=timeout_minutes,
    )
    started = time.monotonic()
    with log.open("wb") as out:
        # Ginkgo ends its own run at --ginkgo.timeout; the margin covers its
        # cleanup and report writing.
        proc = subprocess.run(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=timeout_minutes * 60 + 120,
            check=False,
        )
    seconds = time.monotonic() - started
    tail = log.read_text(errors="replace")[-3000:]
    if not report.is_file():
        raise ConformanceError(
            f"{target.label}: no Ginkgo report (exit {proc.returncode}); output ends:\n{tail}"
        )
    return TargetResult(target, parse_report(report), seconds, proc.returncode, tail)


def run_targets(
    binary: Path,
    targets: Sequence[Target],
    *,
    kubeconfig: Path,
    workdir: Path,
    parallel: int = 3,
    kubectl: Path | None = None,
    feature_gates: Sequence[str] = (),
    timeout_minutes: int = 20,
) -> list[TargetResult]:
    """Run every target, ``parallel`` binaries at a time; results in target order."""
    labels = [t.label for t in targets]
    if len(set(labels)) != len(labels):
        raise ConformanceError(f"target labels must be unique: {labels}")
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = [
            pool.submit(
                run_target,
                binary,
                target,
                kubeconfig=kubeconfig,
                workdir=workdir,
                kubectl=kubectl,
                feature_gates=feature_gates,
                timeout_minutes=timeout_minutes,
            )
            for target in targets
        ]
        return [f.result() for f in futures]


def _spec_key(result: TargetResult, spec: SpecResult) -> str:
    # Spec texts start with the container texts, which name the issuer (the
    # suite's Name); compare on what follows it.
    marker = f"with issuer type {result.target.label} "
    return spec.text.split(marker, 1)[1] if marker in spec.text else spec.text


def compare(ours: TargetResult, baseline: TargetResult) -> Comparison:
    """A spec failing for both is the suite's; failing only for ours is ours."""
    our_specs = {_spec_key(ours, s): s for s in ours.specs}
    base_specs = {_spec_key(baseline, s): s for s in baseline.specs}
    comparison = Comparison(ours, baseline)
    for key, spec in sorted(our_specs.items()):
        if not spec.failed:
            continue
        base = base_specs.get(key)
        if base is not None and base.failed:
            comparison.suite_failures.append(key)
        else:
            comparison.our_failures.append(spec)
    comparison.only_ours = sorted(set(our_specs) - set(base_specs))
    comparison.only_baseline = sorted(set(base_specs) - set(our_specs))
    return comparison


def summary_lines(results: Sequence[TargetResult]) -> list[str]:
    lines = []
    for result in results:
        counts = result.counts()
        lines.append(
            f"{result.target.label:<40} {result.target.suite:<12} "
            f"passed {counts['passed']:>2}  failed {counts['failed']:>2}  "
            f"skipped {counts['skipped']:>2}  of {counts['total']:>2}  "
            f"({result.seconds:.0f} s)"
        )
    for result in results:
        for spec in result.specs:
            if spec.flaky:
                lines.append(
                    f"  flaky, passed on attempt {spec.attempts}: {result.target.label}: "
                    f"{_spec_key(result, spec)}"
                )
    return lines
