"""Which build runs: `akv-issuer --version`, the controller's first log line and
its `akv_issuer_build_info` series all name pyproject.toml's version (the one
source, docs/versioning.md) and the commit the image recorded (AKV_ISSUER_COMMIT)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from akv_issuer.controller.metrics import Metrics

AKV_ISSUER = str(Path(sys.executable).with_name("akv-issuer"))
REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _env(commit: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AKV_ISSUER_COMMIT"}
    return env if commit is None else env | {"AKV_ISSUER_COMMIT": commit}


@pytest.mark.parametrize(
    ("commit", "shown"),
    [
        (None, "unknown"),
        (COMMIT, COMMIT),
        ("1a2b3c4-dirty", "1a2b3c4-dirty"),
        # Not a commit: never echoed (the value reaches logs and metric labels).
        ("main; rm -rf /", "unknown"),
        ("", "unknown"),
    ],
)
def test_version_names_the_release_and_the_commit(commit: str | None, shown: str) -> None:
    result = subprocess.run(
        [AKV_ISSUER, "--version"], env=_env(commit), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    python = platform.python_version()
    assert result.stdout == f"akv-issuer {VERSION} (commit {shown}, Python {python})\n"
    assert result.stderr == ""


def test_usage_offers_version() -> None:
    # Without a command: the usage error, which names --version.
    result = subprocess.run([AKV_ISSUER], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--version" in result.stderr


def test_the_controller_logs_its_version_first(tmp_path: Path) -> None:
    # A missing kubeconfig ends the controller right after start-up; the
    # version line comes before anything can go wrong.
    result = subprocess.run(
        [
            AKV_ISSUER,
            "controller",
            "--kubeconfig",
            str(tmp_path / "missing.kubeconfig"),
            "--metrics-bind-address",
            "0",
            "--health-probe-bind-address",
            "0",
            "--log-format",
            "json",
        ],
        env=_env(COMMIT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    first = result.stderr.splitlines()[0]
    assert f'"msg": "akv-issuer {VERSION} (commit {COMMIT}, Python ' in first, first
    assert '"level": "info"' in first


@pytest.mark.parametrize(("commit", "shown"), [(COMMIT, COMMIT), (None, "unknown")])
def test_build_info_series_is_one_with_version_commit_and_python(
    monkeypatch: pytest.MonkeyPatch, commit: str | None, shown: str
) -> None:
    monkeypatch.delenv("AKV_ISSUER_COMMIT", raising=False)
    if commit is not None:
        monkeypatch.setenv("AKV_ISSUER_COMMIT", commit)
    text = generate_latest(Metrics().registry).decode()
    (line,) = [line for line in text.splitlines() if line.startswith("akv_issuer_build_info{")]
    labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
    assert labels == {"version": VERSION, "commit": shown, "python": platform.python_version()}
    assert line.endswith(" 1.0")
