"""Keeps the throttling budget's benchmark working: `python -m bench.budget --quick`
(a vault scaled down to 25 HSM RSA-4096 signatures per 10 s, 40 requests).

No thresholds on speed or latency (measured by `make bench-budget`, docs/benchmarks.md).
What is checked is what the budget promises whatever the machine's speed: with it, a
burst against a vault whose limit the emulator enforces gets far fewer 429s (none
unless the machine is so loaded that calls arrive late); without it, the same burst
runs into them; every request is issued either way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(420)
def test_quick_budget_benchmark(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop("AKV_DEVCLUSTER_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.budget", "--quick", "--out-dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = json.loads((tmp_path / "budget.json").read_text())
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
