"""helm for the dev cluster and its tests: ``helm template`` for the upstream
charts installed from their Go modules (cert-manager's RBAC, trust-manager's
RBAC, the Workload Identity webhook), and helm commands against a cluster
with values (cert-manager's chart, ours in the node tests). One place that
runs it and turns a failure into one line."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from lightkube import codecs


def _helm(args: Sequence[str], what: str, error: type[Exception], timeout: float) -> str:
    """helm's stdout; a failure raises ``error`` with its last line of stderr."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"]
        raise error(f"helm {what} failed: {lines[-1]}")
    return proc.stdout


def run(
    helm: Path,
    kubeconfig: Path,
    args: Sequence[str],
    values: dict[str, Any] | None = None,
    *,
    error: type[Exception] = RuntimeError,
) -> str:
    """``helm args`` against the cluster of ``kubeconfig`` with ``values`` (a
    values file); its stdout."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(values or {}, handle)
    try:
        return _helm(
            [str(helm), "--kubeconfig", str(kubeconfig), *args, "-f", handle.name],
            args[0],
            error,
            300,
        )
    finally:
        Path(handle.name).unlink()


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
    rendered = _helm(args, "template", error, 120)
    return [obj for obj in codecs.load_all_yaml(rendered) if obj is not None]
