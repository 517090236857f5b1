"""Every kind of certificate and CRL `akv-issuer` makes (roots of each key type
and algorithm, intermediates as docs/install.md makes them, rotated roots,
leaves of each key and SAN type, CRLs of each shape) passes zlint's and
pkilint's RFC-level lints, waivers aside (tests/support/lint/linters.py)."""

from __future__ import annotations

import pytest

from support.lint.cli_artefacts import CLI_CASES
from support.lint.linters import LintCase, LintRun


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda case: case.id)
def test_cli_artefact_passes_the_rfc_lints(cli_lint: LintRun, case: LintCase) -> None:
    cli_lint.check(case.id)
