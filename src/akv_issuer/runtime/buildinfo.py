"""Which build runs: the version and the commit, for ``akv-issuer --version``,
the controller's start-up line and the ``akv_issuer_build_info`` metric.

The version has one source, ``version`` in pyproject.toml: it is the installed
distribution's metadata, read here at run time (``akv-issuer --version``, the
start-up log line, the ``akv_issuer_build_info`` metric), and the release
tooling reads the same field for the chart, the image tag and its labels
(docs/versioning.md). The commit is known only where the build recorded it:
the image sets ``AKV_ISSUER_COMMIT`` from its ``REVISION`` build argument.
"""

from __future__ import annotations

import os
import platform
import re
from typing import NamedTuple

DISTRIBUTION = "azure-keyvault-issuer"
COMMIT_ENV = "AKV_ISSUER_COMMIT"
# A git object name, abbreviated or full, "-dirty" when built from a changed tree.
_COMMIT = re.compile(r"[0-9a-f]{7,64}(-dirty)?")


class BuildInfo(NamedTuple):
    version: str
    commit: str  # "" when unknown
    python: str

    def describe(self) -> str:
        """``0.1.0 (commit 1a2b3c4, Python 3.12.14)``."""
        return f"{self.version} (commit {self.commit or 'unknown'}, Python {self.python})"


def version() -> str:
    """The installed distribution's version; ``0+unknown`` when it is not installed."""
    # Imported here: only --version, the start-up line and the metrics need it.
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as distribution_version

    try:
        return distribution_version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"


def commit() -> str:
    """The commit recorded at build time (``AKV_ISSUER_COMMIT``), or "" when unknown."""
    value = os.environ.get(COMMIT_ENV, "").strip().lower()
    return value if _COMMIT.fullmatch(value) else ""


def build_info() -> BuildInfo:
    return BuildInfo(version(), commit(), platform.python_version())
