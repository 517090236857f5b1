"""``helm template`` for the upstream charts the dev cluster installs from their
Go modules (cert-manager's RBAC, trust-manager's RBAC, the Workload Identity
webhook): one place that runs it, reads its objects and turns a failure into
one line."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightkube import codecs


def template(
    helm: Path,
    release: str,
    chart: Path,
    namespace: str,
    *,
    sets: Iterable[str] = (),
    show_only: Iterable[str] = (),
    error: type[Exception] = RuntimeError,
) -> list[Any]:
    """The chart's objects as lightkube objects, rendered with ``--set`` values
    and only the ``show_only`` templates (all when empty); a failure raises
    ``error`` with helm's last line of stderr."""
    args = [str(helm), "template", release, str(chart), "--namespace", namespace]
    for value in sets:
        args += ["--set", value]
    for name in show_only:
        args += ["--show-only", name]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"]
        raise error(f"helm template failed: {lines[-1]}")
    return [obj for obj in codecs.load_all_yaml(proc.stdout) if obj is not None]
