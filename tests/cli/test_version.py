"""Which build runs: `akv-issuer --version`, the controller's first log line and
its `akv_issuer_build_info` series all name pyproject.toml's version (the one
source, docs/versioning.md) and the commit the image recorded (AKV_ISSUER_COMMIT)."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from akv_issuer.controller.observability.metrics import Metrics

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


def test_the_controller_logs_its_version_when_it_starts(tmp_path: Path) -> None:
    # A kubeconfig for an API server that is not there: the controller starts
    # (and keeps retrying), which is all this needs to see.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: not-a-real-token}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    process = subprocess.Popen(
        [
            AKV_ISSUER,
            "controller",
            "--kubeconfig",
            str(kubeconfig),
            "--metrics-bind-address",
            "0",
            "--health-probe-bind-address",
            "0",
            "--log-format",
            "json",
        ],
        env=_env(COMMIT),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        lines = []
        for line in process.stderr:  # ends when the process does (the test's timeout bounds it)
            lines.append(line)
            if " starting (" in line:
                break
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert lines, "the controller printed nothing"
    record = json.loads(lines[-1])
    assert record["level"] == "info"
    assert record["msg"].startswith(
        f"akv-issuer {VERSION} (commit {COMMIT}, Python {platform.python_version()}) starting ("
    ), lines


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
