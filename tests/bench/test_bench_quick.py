"""Keeps the benchmark harness working: `python -m bench` with BENCH_QUICK=1.

No thresholds: speed is measured by `make bench` (bench/RESULTS.md), never
asserted here. This only checks that every scenario ran and that
results.json has each headline key as a number or as null with a reason.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.run import HEADLINE_KEYS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(420)
def test_quick_benchmark_writes_every_key(tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_QUICK": "1"}
    env.pop("AKV_DEVCLUSTER_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--out-dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["quick"] is True
    assert results["scenarios"]["errors"] == []
    for key in HEADLINE_KEYS:
        value = results[key]
        if value is None:
            assert results["null_reasons"].get(key), f"{key} is null without a reason"
        else:
            assert isinstance(value, (int, float)), (key, value)
            assert math.isfinite(value), (key, value)
    machine = results["machine"]
    assert machine["cores"] >= 1
    assert len(machine["load_average_start"]) == 3
    assert len(results["commit"]) == 40
    # Every scenario produced its part of the report.
    scenarios = results["scenarios"]
    assert scenarios["bursts"]
    assert scenarios["bursts"][0]["issued"] == results["config"]["n"]
    assert scenarios["apiserver_baseline"]["throughput_per_s"] > 0
    assert scenarios["finished"]["finished_requests"] == results["config"]["finished"]
    assert scenarios["profile"]["summary"]["samples"] > 0
    # The many-requests case: the copies through etcd are listed by the controller.
    assert scenarios["scale"]["finished_requests"] == results["config"]["scale"]
    assert scenarios["scale"]["trickle"]["count"] > 0
    if "ours" in scenarios["cert_manager"]:  # else skipped, with its reason in null_reasons
        assert scenarios["cert_manager"]["ours"]["cpu_ms_per_cert"]["ours"] is not None
    # Pod certificates beside CertificateRequests (scenario 8), same sizes.
    pods = scenarios["pod_certificates"]
    assert pods["pod"]["burst"]["issued"] == results["config"]["pod_n"]
    assert pods["certificate_request"]["burst"]["issued"] == results["config"]["pod_n"]
    assert pods["pod"]["trickle"]["count"] == results["config"]["pod_samples"]
    for burst in scenarios["bursts"]:
        assert burst["ceiling_per_s"] <= burst["ceiling_kv_per_s"]
        assert burst["ceiling_per_s"] <= scenarios["apiserver_baseline"]["throughput_per_s"]
    report = (tmp_path / "RESULTS.md").read_text()
    for heading in (
        "## Headline",
        "## Throughput",
        "## Memory and start-up",
        "## Key Vault",
        "## Pod certificates beside CertificateRequests",
    ):
        assert heading in report
    assert (tmp_path / "profile.md").is_file()
