"""Keeps the chaos harness working: `python -m bench.chaos` with CHAOS_QUICK=1.

Small counts, a subset of the Key Vault faults, one kill of the leader:
`make chaos` measures (bench/CHAOS.md); this only checks that each scenario
ran, that chaos.json records the commit, machine and load, and the
invariants the suite exists for: nothing lost, nothing signed twice, no
crash on a hostile CSR.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(420)
def test_quick_chaos_run_holds_the_invariants(tmp_path: Path) -> None:
    env = {**os.environ, "CHAOS_QUICK": "1"}
    env.pop("AKV_DEVCLUSTER_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--out-dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    results = json.loads((tmp_path / "chaos.json").read_text())
    assert results["config"]["quick"] is True
    assert results["errors"] == []
    assert len(results["commit"]) == 40
    assert len(results["machine"]["load_average_start"]) == 3
    rows = {row["scenario"]: row for row in results["scenarios"]}
    assert set(rows) == set(results["config"]["quick_scenarios"])
    for name, row in rows.items():
        assert row["created"] > 0, name
        assert row["lost"] == 0, (name, row)
        assert row["signed_more_than_once"] == 0, (name, row)
        assert row["issued"] + row["failed"] == row["created"], (name, row)
    assert rows["split-brain"]["fencing"]["fenced"] is True
    assert rows["watch-410"]["notes"]["gone_410_seen_by_leader"] >= 1
    hostile = rows["hostile-csrs"]
    assert hostile["crashes"] == 0, results["hostile"]["crashes"]
    assert hostile["cli"]["signed"] > 0
    assert hostile["cli"]["refused"] > 0
    report = (tmp_path / "CHAOS.md").read_text()
    assert "| scenario | created | issued | failed | signed > 1 | lost |" in report
