"""Keeps the CA pool benchmark working: `python -m bench.pools --quick` (four emulated
vaults at 12 HSM RSA-4096 signatures per 10 s each, bursts of 16, one vault killed
mid-burst).

No thresholds on speed beyond what the pool promises whatever the machine's speed
(figures: `make bench-pools`, docs/benchmarks.md): every request is issued and none
fails, also while a member's vault is down; the pool issues clearly faster than one
of its vaults alone (the vaults, scaled down, are the limit); every certificate
verifies against the pool's root with the chain of the member that signed it; after
the kill the dead member signs nothing, it is set aside and the others sign."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.benchrun import run_quick


@pytest.mark.timeout(300)
def test_quick_pools_benchmark(tmp_path: Path) -> None:
    results = run_quick("bench.pools", tmp_path, timeout=280)
    assert results["errors"] == []
    cases = {case["case"]: case for case in results["cases"]}
    assert set(cases) == {"single", "pool", "outage"}
    for case in cases.values():
        assert case["issued"] == case["n"], case
        assert case["failed"] == 0, case
        assert case["verified"] == case["issued"], case["problems"]
        assert case["problems"] == []
    assert cases["single"]["signed_by"] == {"a": cases["single"]["n"]}
    assert set(cases["pool"]["signed_by"]) == {"a", "b", "c", "d"}
    # One vault's window holds 12 signatures: the single issuer needs a second window.
    assert cases["pool"]["throughput_per_s"] > 2 * cases["single"]["throughput_per_s"]
    outage = cases["outage"]["outage"]
    assert outage["killed"] == "a"
    assert outage["killed_signs_after_kill"] == 0
    # The others signed what was left (requests Ready later may have been signed before).
    after = outage["signs_after_kill"]
    assert set(after) <= {"b", "c", "d"}
    assert sum(after.values()) >= 1
    assert cases["outage"]["signed_by"]["a"] == cases["outage"]["signs"]["a"]
    assert outage["set_aside_s"] is not None
