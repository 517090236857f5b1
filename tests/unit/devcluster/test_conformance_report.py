"""How the conformance runner reads Ginkgo's JSON report and sets an issuer's
failures against its baseline's (akv_devcluster.conformance; pure functions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from akv_devcluster.conformance import (
    FLAKE_ATTEMPTS,
    ConformanceError,
    Target,
    TargetResult,
    compare,
    parse_report,
    summary_lines,
    target_argv,
)

SAME_KEY = (
    "should issue another certificate with the same private key if the existing "
    "certificate and CertificateRequest are deleted"
)


def _spec(label: str, text: str, state: str, message: str = "") -> dict[str, Any]:
    return {
        "ContainerHierarchyTexts": ["[Conformance] Certificates", f"with issuer type {label}"],
        "LeafNodeText": text,
        "LeafNodeType": "It",
        "State": state,
        "RunTime": 1_500_000_000,
        "Failure": {"Message": message} if message else {},
    }


def _report(tmp_path: Path, label: str, specs: list[dict[str, Any]]) -> TargetResult:
    path = tmp_path / f"{label}.json"
    suite_nodes = [{"LeafNodeType": "SynchronizedBeforeSuite", "State": "passed"}]
    path.write_text(json.dumps([{"SuiteSucceeded": False, "SpecReports": suite_nodes + specs}]))
    return TargetResult(Target(label, "certificates"), parse_report(path), 10.0, 1)


def test_report_keeps_only_its_specs_with_state_time_and_failure(tmp_path: Path) -> None:
    result = _report(
        tmp_path,
        "AKV ClusterIssuer",
        [
            _spec("AKV ClusterIssuer", "basic", "passed"),
            _spec("AKV ClusterIssuer", SAME_KEY, "failed", "not signed by same private key"),
            _spec("AKV ClusterIssuer", "gateway", "skipped"),
            _spec("AKV ClusterIssuer", "slow", "timedout"),
        ],
    )
    assert [s.state for s in result.specs] == ["passed", "failed", "skipped", "timedout"]
    assert result.specs[0].seconds == 1.5
    assert result.specs[1].failure == "not signed by same private key"
    assert result.counts() == {"passed": 1, "failed": 2, "skipped": 1, "total": 4}


def test_failure_for_both_is_the_suites_failure_for_ours_only_is_ours(tmp_path: Path) -> None:
    ours = _report(
        tmp_path,
        "AKV Issuer",
        [
            _spec("AKV Issuer", "basic", "passed"),
            _spec("AKV Issuer", SAME_KEY, "failed", "different keys"),
            _spec("AKV Issuer", "CA basicConstraint", "failed", "Certificate not Ready"),
        ],
    )
    baseline = _report(
        tmp_path,
        "CA Issuer",
        [
            _spec("CA Issuer", "basic", "passed"),
            _spec("CA Issuer", SAME_KEY, "failed", "different keys"),
            _spec("CA Issuer", "CA basicConstraint", "passed"),
        ],
    )
    comparison = compare(ours, baseline)
    assert comparison.suite_failures == [SAME_KEY]
    assert [s.text for s in comparison.our_failures] == [
        "[Conformance] Certificates with issuer type AKV Issuer CA basicConstraint"
    ]
    assert comparison.only_ours == comparison.only_baseline == []


def test_a_spec_the_baseline_did_not_run_is_ours_when_it_fails(tmp_path: Path) -> None:
    ours = _report(tmp_path, "AKV", [_spec("AKV", "ed25519", "failed", "boom")])
    baseline = _report(tmp_path, "CA", [])
    comparison = compare(ours, baseline)
    assert comparison.suite_failures == []
    assert len(comparison.our_failures) == 1
    assert comparison.only_ours == ["ed25519"]


def test_unreadable_report_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ConformanceError, match="cannot read the Ginkgo report"):
        parse_report(tmp_path / "broken.json")


def test_argv_names_the_issuer_and_writes_the_manifest(tmp_path: Path) -> None:
    target = Target(
        "AKV Issuer",
        "certificates",
        issuer_manifest="kind: Issuer\n",
        unsupported=("Ed25519", "IssueCA"),
    )
    argv = target_argv(
        Path("/bin/suite"),
        target,
        kubeconfig=Path("/k"),
        report=tmp_path / "r.json",
        workdir=tmp_path,
        feature_gates=("A=true", "B=false"),
    )
    manifest = tmp_path / "akv-issuer.yaml"
    assert manifest.read_text() == "kind: Issuer\n"
    assert f"--issuer-manifest={manifest}" in argv
    assert "--unsupported-features=Ed25519,IssueCA" in argv
    assert "--feature-gates=A=true,B=false" in argv
    assert "--suite=certificates" in argv
    assert "--name=AKV Issuer" in argv


def test_a_spec_that_passed_on_its_second_attempt_is_reported_flaky(tmp_path: Path) -> None:
    flaky = _spec("AKV ClusterIssuer", "ingress with annotations", "passed") | {"NumAttempts": 2}
    result = _report(
        tmp_path, "AKV ClusterIssuer", [flaky, _spec("AKV ClusterIssuer", "basic", "passed")]
    )
    assert [(s.attempts, s.flaky, s.failed) for s in result.specs] == [
        (2, True, False),
        (1, False, False),
    ]
    assert result.counts()["passed"] == 2
    assert summary_lines([result])[1:] == [
        "  flaky, passed on attempt 2: AKV ClusterIssuer: ingress with annotations"
    ]


def test_every_run_retries_a_failed_spec_once(tmp_path: Path) -> None:
    argv = target_argv(
        tmp_path / "conformance",
        Target("CA Issuer", "certificates", issuer_ref="cert-manager.io/ClusterIssuer/ca"),
        kubeconfig=tmp_path / "kubeconfig",
        report=tmp_path / "report.json",
        workdir=tmp_path,
    )
    assert f"--ginkgo.flake-attempts={FLAKE_ATTEMPTS}" in argv
    assert FLAKE_ATTEMPTS == 2
