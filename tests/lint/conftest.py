"""Lint every certificate and CRL the project makes (docs/linting.md).

The controller integration harness (tests/integration/controller) is reused
as tests/e2e reuses it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "controller"))

from controller_harness import issuer_crds, manager_role
from lint_fixtures import cli_lint, controller_lint

__all__ = ["cli_lint", "controller_lint", "issuer_crds", "manager_role"]
