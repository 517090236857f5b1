"""The test tiers, set by folder (tests/README.md).

Every test belongs to exactly one tier, given by the folder it lives in; the
marker is added at collection (``support.plugin``), never written on a test.
``pytest -m <tier>`` selects exactly that tier and ``make <tier>`` runs it.
A test file in a folder of no tier stops the collection with a one-line error
naming the folder, so the tiers always add up to the whole suite.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

# Folder (relative to the repository root) -> tier; the longest matching folder
# wins. What each tier needs: its marker's description in pyproject.toml.
FOLDERS = {
    "tests/unit": "unit",
    "tests/keyvault": "emulator",
    "tests/cli": "emulator",
    "tools/tests/emulator": "emulator",
    "tests/integration": "cluster",
    "tests/lint": "cluster",
    "tools/tests/cluster": "cluster",
    "tests/deploy": "deploy",
    "tests/e2e": "e2e",
    "tools/tests/e2e": "e2e",
    "tests/node": "node",
    "tools/tests/node": "node",
    "tests/bench": "harness",
    "tests/chaos": "harness",
}


class NoTier(Exception):
    """A test file outside every tier's folder."""


def tier_of(path: Path, root: Path) -> str:
    """The tier of the test file at ``path`` (``root``: the repository)."""
    relative = PurePosixPath(path.resolve().relative_to(root.resolve()).as_posix())
    matches = [folder for folder in FOLDERS if relative.is_relative_to(PurePosixPath(folder))]
    if not matches:
        raise NoTier(
            f"{relative} is in no test tier: add its folder to FOLDERS in tests/support/tiers.py"
        )
    return FOLDERS[max(matches, key=len)]
