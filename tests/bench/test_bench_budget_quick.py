"""Keeps the throttling budget's benchmark working: `python -m bench.budget --quick`
(a vault scaled down to 25 HSM RSA-4096 signatures per 10 s, 40 requests).

No thresholds on speed or latency (measured by `make bench-budget`, docs/benchmarks.md).
What is checked is what the budget promises whatever the machine's speed: with it, a
burst against a vault whose limit the emulator enforces gets far fewer 429s (none
unless the machine is so loaded that calls arrive late); without it, the same burst
runs into them; every request is issued either way."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.benchrun import run_quick


@pytest.mark.timeout(420)
def test_quick_budget_benchmark(tmp_path: Path) -> None:
    results = run_quick("bench.budget", tmp_path, timeout=400)
    assert results["errors"] == []
    cases = {case["case"]: case for case in results["cases"]}
    assert set(cases) == {"burst-on", "burst-off", "neighbours-on", "neighbours-off"}
    for case in cases.values():
        assert case["issued"] == case["n"]
        assert case["failed"] == 0
    # No 429 with the budget, or on a loaded machine (a call delayed past the budget's
    # 0.25 s slack) far fewer than without it.
    assert cases["burst-off"]["vault_429"] > 0
    assert cases["burst-on"]["vault_429"] * 10 <= cases["burst-off"]["vault_429"]
    assert cases["neighbours-on"]["vault_429"] * 10 <= cases["neighbours-off"]["vault_429"]
    assert cases["neighbours-on"]["trickle"]["count"] == results["config"]["trickle"]
    assert cases["neighbours-off"]["trickle"]["count"] == results["config"]["trickle"]
