"""Lint every certificate and CRL the project makes (docs/linting.md).

The controller harness of the cluster tier (tests/support/controller_harness.py)
is reused as tests/e2e reuses it.
"""

from __future__ import annotations

from support.controller_harness import issuer_crds, manager_role
from support.lint.fixtures import cli_lint, controller_lint

__all__ = ["cli_lint", "controller_lint", "issuer_crds", "manager_role"]
