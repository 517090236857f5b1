"""The test tiers add up: every test file is in exactly one tier, every tier is a
registered marker and a make target that `make test` runs (tests/README.md)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from support.tiers import FOLDERS, NoTier, tier_of

REPO = Path(__file__).resolve().parents[2]


def _markers() -> dict[str, str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]
    lines = config["ini_options"]["markers"]
    return dict(line.split(":", 1) for line in lines)


def _test_files() -> list[Path]:
    return sorted(
        path
        for root in (REPO / "tests", REPO / "tools" / "tests")
        for path in root.rglob("test_*.py")
        if "support" not in path.relative_to(root).parts
    )


def test_every_tier_is_a_marker_and_every_marker_but_session_end_a_tier() -> None:
    assert set(_markers()) - {"session_end"} == set(FOLDERS.values())


def test_every_tier_folder_exists() -> None:
    missing = [folder for folder in FOLDERS if not (REPO / folder).is_dir()]
    assert not missing


def test_every_test_file_has_a_tier() -> None:
    files = _test_files()
    assert len(files) > 50
    for path in files:
        assert tier_of(path, REPO) in FOLDERS.values()


def test_the_longest_folder_decides_and_a_file_outside_every_folder_is_named() -> None:
    assert tier_of(REPO / "tools/tests/emulator/test_x.py", REPO) == "emulator"
    assert tier_of(REPO / "tests/integration/controller/test_x.py", REPO) == "cluster"
    with pytest.raises(NoTier, match=r"^tests/elsewhere/test_x.py is in no test tier: add its"):
        tier_of(REPO / "tests/elsewhere/test_x.py", REPO)


def test_make_has_a_target_per_tier_and_make_test_runs_them_all() -> None:
    makefile = (REPO / "Makefile").read_text()
    for tier in set(FOLDERS.values()):
        assert re.search(rf"^{tier}: .*\n\t@\$\(TIER\) {tier} \d+ ", makefile, re.MULTILINE), tier
    (prerequisites,) = re.findall(r"^test: (?!export)(.*)$", makefile, re.MULTILINE)
    ran = prerequisites.replace("$(NODE_TIER)", "node").split()
    assert set(FOLDERS.values()) <= set(ran)


def test_no_test_file_edits_sys_path() -> None:
    # `support` is importable through pytest's `pythonpath` (pyproject.toml).
    edits = [
        path
        for root in (REPO / "tests", REPO / "tools" / "tests")
        for path in root.rglob("*.py")
        if re.search(r"sys\.path\.(insert|append)|sys\.path\s*\+?=", path.read_text())
    ]
    assert not edits
