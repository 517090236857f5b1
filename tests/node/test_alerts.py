"""The alerting rules of docs/metrics.md, checked and evaluated by promtool.

promtool comes from Debian's `prometheus` package (downloaded with `apt-get
download` and unpacked into the user cache, about a second; nothing is
installed and no Go build is needed), so this lives in the node tier, the one
that needs Debian's packages and is skipped in one line where they are not.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from akv_devcluster import binaries
from support.deploy import REPO, run

METRICS_DOC = REPO / "docs" / "metrics.md"


def _promtool() -> str:
    target = binaries.cache_root() / "promtool-debian" / "promtool"
    with binaries.file_lock(target.with_name(".lock"), "waiting for another promtool unpack"):
        if target.is_file():
            return str(target)
        apt_get = shutil.which("apt-get")
        assert apt_get, "promtool comes from Debian's prometheus package: no apt-get here"
        with tempfile.TemporaryDirectory() as tmp:
            download = run([apt_get, "download", "prometheus"], cwd=Path(tmp), timeout=300)
            if download.returncode != 0:
                # No package lists yet on a fresh machine: fetch them once, retry.
                run([apt_get, "-o", "DPkg::Lock::Timeout=300", "update", "-qq"], timeout=600)
                download = run([apt_get, "download", "prometheus"], cwd=Path(tmp), timeout=300)
            debs = list(Path(tmp).glob("prometheus_*.deb"))
            assert debs, f"apt-get download prometheus failed: {download.stderr.strip()}"
            unpack = run(["dpkg-deb", "-x", str(debs[0]), str(Path(tmp) / "root")])
            assert unpack.returncode == 0, unpack.stderr
            target.parent.mkdir(parents=True, exist_ok=True)
            staged = target.with_name("promtool.partial")
            shutil.copy2(Path(tmp) / "root" / "usr" / "bin" / "promtool", staged)
            staged.rename(target)
    return str(target)


@pytest.fixture(scope="module")
def promtool() -> str:
    return _promtool()


def _prometheus_rule() -> dict[str, Any]:
    text = METRICS_DOC.read_text()
    for block in re.findall(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        document = yaml.safe_load(block)
        if isinstance(document, dict) and document.get("kind") == "PrometheusRule":
            return document
    raise AssertionError("docs/metrics.md shows no PrometheusRule")


def _rule(name: str) -> dict[str, Any]:
    for group in _prometheus_rule()["spec"]["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                assert isinstance(rule, dict)
                return rule
    raise AssertionError(f"no alert {name} in docs/metrics.md")


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": _prometheus_rule()["spec"]["groups"]}))
    return path


def test_every_documented_rule_is_valid(promtool: str, rules_file: Path) -> None:
    result = run([promtool, "check", "rules", str(rules_file)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _no_leader_test(
    promtool: str, rules_file: Path, series: list[dict[str, str]], fires: bool
) -> subprocess.CompletedProcess[str]:
    rule = _rule("AKVIssuerNoLeader")
    expected = [{"exp_labels": rule.get("labels", {}), "exp_annotations": rule["annotations"]}]
    test = {
        "rule_files": [rules_file.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                # Something else is scraped, so the rule is not trivially empty.
                "input_series": [{"series": 'up{job="other"}', "values": "1x30"}, *series],
                "alert_rule_test": [
                    {
                        "eval_time": "25m",
                        "alertname": "AKVIssuerNoLeader",
                        "exp_alerts": expected if fires else [],
                    }
                ],
            }
        ],
    }
    path = rules_file.with_name("test.yml")
    path.write_text(yaml.safe_dump(test))
    return run([promtool, "test", "rules", str(path)], cwd=rules_file.parent)


@pytest.mark.parametrize(
    ("case", "series", "fires"),
    [
        ("nothing scraped", [], True),
        (
            "no replica leads",
            [
                {"series": 'akv_issuer_leader{pod="a"}', "values": "0x30"},
                {"series": 'akv_issuer_leader{pod="b"}', "values": "0x30"},
            ],
            True,
        ),
        # The only replica led, then vanished: its series goes stale after 5m.
        ("scrapes stopped", [{"series": 'akv_issuer_leader{pod="a"}', "values": "1x5 _x25"}], True),
        (
            "one replica leads",
            [
                {"series": 'akv_issuer_leader{pod="a"}', "values": "1x30"},
                {"series": 'akv_issuer_leader{pod="b"}', "values": "0x30"},
            ],
            False,
        ),
    ],
)
def test_no_leader_alert(
    promtool: str,
    rules_file: Path,
    case: str,
    series: list[dict[str, str]],
    fires: bool,
) -> None:
    result = _no_leader_test(promtool, rules_file, series, fires)
    assert result.returncode == 0, f"{case}: {result.stdout}{result.stderr}"


def test_promtool_would_catch_the_old_expression(promtool: str, tmp_path: Path) -> None:
    # The expression the docs had: with nothing scraped it never fires. If
    # promtool passed this case too, the tests above would prove nothing.
    groups = _prometheus_rule()["spec"]["groups"]
    for group in groups:
        for rule in group["rules"]:
            if rule.get("alert") == "AKVIssuerNoLeader":
                rule["expr"] = "sum(akv_issuer_leader) < 1"
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}))
    result = _no_leader_test(promtool, rules_file, [], fires=True)
    assert result.returncode != 0
    assert "AKVIssuerNoLeader" in result.stdout + result.stderr
