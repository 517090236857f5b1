"""Running a benchmark scenario module's quick variant from a test (tests/bench)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def run_quick(module: str, out_dir: Path, *, timeout: float) -> dict[str, Any]:
    """``python -m <module> --quick --out-dir <out_dir>`` in a world of its own (not the
    session's dev cluster); asserts it exited 0 and returns the JSON it wrote
    (``<out_dir>/<last part of module>.json``)."""
    env = dict(os.environ)
    env.pop("AKV_DEVCLUSTER_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", module, "--quick", "--out-dir", str(out_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results: dict[str, Any] = json.loads(
        (out_dir / f"{module.rsplit('.', 1)[-1]}.json").read_text()
    )
    return results
